"""GLICO augmentation of a classifier's training batches.

Each example of a batch is replaced, with probability p, by a new image generated from its own code
and the code of a random other example of its class: G([slerp(z_i, z_j, t), ε]), t from
{0.1, 0.2, 0.3, 0.4} (Section IV-B). Everything happens on the batch's device: the coin flips, the
partner draw, the generator; nothing waits on the host.
"""
from __future__ import annotations

import warnings
from typing import Sequence

import torch

from glico._checks import check_images
from glico._rng import substream
from glico.interpolation import check_t_values
from glico.model import GLICO


def _whole_positive(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 1


class GLICOAugmenter:
    """Replaces each example of a batch by a GLICO sample with probability ``p``.

    Args:
        model: a fitted GLICO model; its code table rows are the training set's examples.
        p: replacement probability per example (paper: 0.5).
        seed: seeds the coin flips and the sampling; successive calls use successive seeds.
        check_inputs: validate every batch against the image contract and check ``idx`` against the code
            table on every call on every device (costs host syncs). Without it, ``idx`` is still checked
            cheaply: its dtype and shape always, its range on the CPU (a device-side assert on GPUs), and
            on the first call whether it looks like class labels (a warning).
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
        if refresh_every is not None and not _whole_positive(refresh_every):
            raise ValueError(f"refresh_every must be a whole number of calls >= 1 or None (fresh draws every call); "
                             f"got {refresh_every!r}")
        if not _whole_positive(bank_chunk):
            raise ValueError(f"bank_chunk must be a whole number of images >= 1; got {bank_chunk!r}")
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
            idx: each example's row in the model's code table, that is its position in the images the
                model was fitted on (int64), **not** its class label: the new image of example ``i`` is
                drawn between ``idx[i]``'s code and another code of that row's class.

        Returns:
            The batch with some examples replaced, in [0, 1]; same shape, dtype and device.

        Shape:
            images (B, C, H, W), idx (B,)
        """
        if self.check_inputs:
            check_images(images, "images")
        if not isinstance(idx, torch.Tensor) or idx.dtype in (torch.bool,) or idx.is_floating_point() \
                or idx.is_complex():
            got = f"dtype {idx.dtype}" if isinstance(idx, torch.Tensor) else type(idx).__name__
            raise TypeError(f"idx must be an integer tensor of training-set rows (int64); got {got}")
        if idx.shape != images.shape[:1]:
            raise ValueError(f"idx must have shape (B,) = ({images.shape[0]},); got {tuple(idx.shape)}")
        if self.p == 0.0:
            return images
        self._check_rows(idx)
        call, self._calls = self._calls, self._calls + 1
        seed = self.seed + 1_000_003 * call
        # The coin flips and the sampler read separate streams: with one stream the partner would be a
        # function of the coin (only the first p-fraction of each class would ever be a partner).
        g = torch.Generator(device=images.device)
        g.manual_seed(substream(seed, 0))
        replace = torch.rand(images.shape[0], generator=g, device=images.device) < self.p
        if self.refresh_every is not None:
            if call % self.refresh_every == 0 or self._bank is None:
                # The bank of this call's window, drawn with the seed of the window's first call (also when
                # a resumed training starts inside a window, see state_dict).
                start = call - call % self.refresh_every
                self._bank = self._draw_bank(images, substream(self.seed + 1_000_003 * start, 1))
            bank = self._bank[idx.to(self._bank.device)].to(images.device, images.dtype)
            return torch.where(replace[:, None, None, None], bank, images)
        inputs = self._inputs(idx, substream(seed, 1))
        subset = images.device.type == "cpu" if self.only_replaced is None else self.only_replaced
        with self.model._eval_generator() as generator:
            if not subset:
                synth = generator(inputs).to(images.device, images.dtype)
                return torch.where(replace[:, None, None, None], synth, images)
            rows = replace.nonzero().flatten()
            out = images.clone()
            if rows.numel():
                out[rows] = generator(inputs[rows.to(inputs.device)]).to(images.device, images.dtype)
            return out

    def _check_rows(self, idx: torch.Tensor) -> None:
        """``idx`` names rows of the code table; on the first call, warn when it looks like class labels."""
        n = self.model.codes.weight.shape[0]
        full = self.check_inputs or idx.device.type == "cpu" or not self._calls
        if full and idx.numel():
            lo, hi = int(idx.min()), int(idx.max())
            if lo < 0 or hi >= n:
                raise ValueError(f"idx must hold rows of the code table, 0..{n - 1} (positions in the {n} images "
                                 f"the model was fitted on); got values in {lo}..{hi}")
            k = self.model.num_classes
            if not self._calls and n > k and hi < k and idx.numel() > k and idx.unique().numel() < idx.numel():
                warnings.warn(f"GLICOAugmenter: idx holds only values below the number of classes ({k}), with "
                              f"repeats: it looks like class labels. idx must be each example's row in the "
                              f"training set (0..{n - 1}); with labels, examples are replaced by images of other "
                              f"classes", stacklevel=3)
        elif idx.numel():
            torch._assert_async(((idx >= 0) & (idx < n)).all())

    def state_dict(self) -> dict[str, int]:
        """What the next call's draws depend on besides the model: the number of calls made so far."""
        return {"calls": self._calls}

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Continue from :meth:`state_dict`: the next call draws what the next call of the saved augmenter
        would have (a bank is redrawn, from the seed of its window's first call)."""
        calls = state.get("calls") if isinstance(state, dict) else None
        if not _whole_positive(calls) and calls != 0:
            raise ValueError(f"GLICOAugmenter state must be {{'calls': N}} with N >= 0; got {state!r}")
        self._calls, self._bank = int(calls), None

    def _inputs(self, idx: torch.Tensor, seed: int) -> torch.Tensor:
        """Generator inputs of new images for anchors ``idx``: a same-class partner, t and noise each."""
        model = self.model
        codes = model.codes.weight.detach()
        return model.interpolator.sample_inputs(codes, idx.to(codes.device), model.class_index, self.t_values,
                                                model.noise, seed, check_indices=self.check_inputs)

    def _draw_bank(self, images: torch.Tensor, seed: int) -> torch.Tensor:
        """One new image per row of the code table (same draws as a call with idx = 0..N-1 and p = 1)."""
        inputs = self._inputs(torch.arange(self.model.codes.weight.shape[0]), seed)
        with self.model._eval_generator() as generator:
            return torch.cat([generator(chunk).to(images.device, images.dtype) for chunk in inputs.split(self.bank_chunk)])
