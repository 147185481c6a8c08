"""GLICO augmentation of a classifier's training batches.

Each example of a batch is replaced, with probability p, by a new image generated from its own code
and the code of a random other example of its class: G([slerp(z_i, z_j, t), ε]), t from
{0.1, 0.2, 0.3, 0.4} (Section IV-B). Everything happens on the batch's device: the coin flips, the
partner draw, the generator; nothing waits on the host.
"""
from __future__ import annotations

from typing import Sequence

import torch

from glico._checks import check_images
from glico._rng import substream
from glico.interpolation import check_t_values
from glico.model import GLICO


class GLICOAugmenter:
    """Replaces each example of a batch by a GLICO sample with probability ``p``.

    Args:
        model: a fitted GLICO model; its code table rows are the training set's examples.
        p: replacement probability per example (paper: 0.5).
        seed: seeds the coin flips and the sampling; successive calls use successive seeds.
        check_inputs: validate every batch against the image contract (costs one host sync per call).
        t_values: the set t is drawn from (default: the model's, the paper's {0.1, 0.2, 0.3, 0.4}).
        only_replaced: run the generator on the replaced examples only (about a fraction ``p`` of the
            batch) instead of the whole batch. The draws are the same either way and the generator runs
            in eval mode (no batch statistics), so each replaced image is the same up to float rounding;
            choosing the rows costs a host sync, so ``None`` (default) does it on the CPU, where the
            generator is a large part of a step, and not on GPUs.
        refresh_every: ``None`` (default): fresh draws (partner, t, noise) at every call. ``k``: a bank of
            one generated image per training example (per row of the code table), drawn anew every
            ``k`` calls; a replaced example takes its bank image, so the generator runs on N images every
            k steps instead of on about p·B every step (faster when k·p·B > N), at the price of reusing
            each new image for k steps. The coin flips stay fresh at every call. The bank holds N images
            in the batch's dtype and device (N·C·H·W values) and is built in chunks of ``bank_chunk``.
    """

    def __init__(self, model: GLICO, p: float = 0.5, seed: int = 0, check_inputs: bool = False,
                 t_values: Sequence[float] | None = None, only_replaced: bool | None = None,
                 refresh_every: int | None = None, bank_chunk: int = 256) -> None:
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"p must be a probability in [0, 1]; got {p}")
        for name, v in (("refresh_every", refresh_every), ("bank_chunk", bank_chunk)):
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
                raise ValueError(f"{name} must be a whole number of calls >= 1"
                                 + (" or None (fresh draws every call)" if name == "refresh_every" else "")
                                 + f"; got {v!r}")
        model._require_fitted()
        self.model, self.p, self.seed, self.check_inputs = model, float(p), int(seed), check_inputs
        self.t_values = model.t_values if t_values is None else check_t_values(t_values)
        self.only_replaced = only_replaced
        self.refresh_every, self.bank_chunk = refresh_every, bank_chunk
        self._bank: torch.Tensor | None = None
        self._calls = 0

    @torch.no_grad()
    def __call__(self, images: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        """Augment a batch.

        Args:
            images: the batch, in [0, 1].
            idx: each example's row in the model's code table (its index in the training set).

        Returns:
            The batch with some examples replaced, in [0, 1]; same shape, dtype and device.

        Shape:
            images (B, C, H, W), idx (B,)
        """
        if self.check_inputs:
            check_images(images, "images")
        if idx.shape != images.shape[:1]:
            raise ValueError(f"idx must have shape (B,) = ({images.shape[0]},); got {tuple(idx.shape)}")
        if self.p == 0.0:
            return images
        seed = self.seed + 1_000_003 * self._calls
        self._calls += 1
        # The coin flips and the sampler read separate streams: with one stream the partner would be a
        # function of the coin (only the first p-fraction of each class would ever be a partner).
        g = torch.Generator(device=images.device)
        g.manual_seed(substream(seed, 0))
        replace = torch.rand(images.shape[0], generator=g, device=images.device) < self.p
        if self.refresh_every is not None:
            if (self._calls - 1) % self.refresh_every == 0:
                self._bank = self._draw_bank(images, substream(seed, 1))
            bank = self._bank[idx.to(self._bank.device)].to(images.device, images.dtype)
            return torch.where(replace[:, None, None, None], bank, images)
        model = self.model
        codes = model.codes.weight.detach()
        inputs = model.interpolator.sample_inputs(
            codes, idx.to(codes.device), model.class_index, self.t_values, model.noise, substream(seed, 1),
            check_indices=self.check_inputs,
        )
        subset = images.device.type == "cpu" if self.only_replaced is None else self.only_replaced
        was = model.generator.training
        model.generator.eval()
        try:
            if not subset:
                synth = model.generator(inputs).to(images.device, images.dtype)
                return torch.where(replace[:, None, None, None], synth, images)
            rows = replace.nonzero().flatten()
            out = images.clone()
            if rows.numel():
                out[rows] = model.generator(inputs[rows.to(inputs.device)]).to(images.device, images.dtype)
            return out
        finally:
            model.generator.train(was)

    def _draw_bank(self, images: torch.Tensor, seed: int) -> torch.Tensor:
        """One new image per row of the code table (same draws as a call with idx = 0..N-1 and p = 1)."""
        model = self.model
        codes = model.codes.weight.detach()
        rows = torch.arange(codes.shape[0], device=codes.device)
        inputs = model.interpolator.sample_inputs(codes, rows, model.class_index, self.t_values, model.noise,
                                                  seed, check_indices=self.check_inputs)
        was = model.generator.training
        model.generator.eval()
        try:
            return torch.cat([model.generator(chunk).to(images.device, images.dtype)
                              for chunk in inputs.split(self.bank_chunk)])
        finally:
            model.generator.train(was)
