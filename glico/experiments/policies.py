"""Augmentation policies for a downstream classifier's training batches: the methods GLICO is
compared with (Section V of the paper) and GLICO itself.

A policy maps a batch ``(images, labels, idx)`` to ``(images, targets)``. Targets are the hard labels
``(B,)`` for every policy except MixUp and CutMix, which return soft labels ``(B, num_classes)``;
:func:`soft_cross_entropy` takes either, so a trainer needs one loss for all of them. Every method,
the baseline included, also gets the standard random crop + flip from the trainer
(:func:`glico.experiments.augment_ops.random_crop_flip`); the policies here never apply it themselves.

torchvision provides Random Erasing, AutoAugment, RandAugment, TrivialAugmentWide, MixUp and CutMix,
and they are used here as they are; Cutout (which torchvision lacks) is written out, vectorised. A
torchvision transform called on a batch draws one set of parameters for the whole batch; the
per-image policies here (Random Erasing, the AutoAugment family) call it image by image, so every
image gets its own draw, as in the papers. MixUp and CutMix are batch-level by design (one λ, one box
per batch, as in their reference implementations). :class:`Replace` applies any of them to each
example with a probability instead (the GLICO paper's protocol for its baselines: p = 0.5).

Randomness: each policy takes a ``seed``; call ``k`` of a policy uses ``seed + 1_000_003 * k``, so a
run is reproducible and successive batches differ. torchvision draws its parameters from torch's
global CPU generator: those draws happen inside :func:`torch.random.fork_rng`, seeded, so the global
generator's state is left as it was.

Names (``"cutout"``, ``"glico+autoaugment"``, ...) are resolved by :func:`build_policy`, for the
command line; the library itself passes policy instances.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import TYPE_CHECKING, Callable, Iterator, Protocol

import torch
from torch import Tensor
from torch.nn import functional as F
from torchvision.transforms import v2 as T
from torchvision.transforms.v2 import AutoAugmentPolicy

if TYPE_CHECKING:
    from glico.augment import GLICOAugmenter

__all__ = [
    "BatchPolicy",
    "Standard",
    "Cutout",
    "RandomErasing",
    "AutoAugment",
    "RandAugment",
    "TrivialAugmentWide",
    "MixUp",
    "CutMix",
    "GLICOPolicy",
    "Compose",
    "Replace",
    "build_policy",
    "cutout_size_for",
    "policy_names",
    "soft_cross_entropy",
]

# Successive calls of one policy are seeded this far apart (the same stride as GLICOAugmenter).
_CALL_STRIDE = 1_000_003


class BatchPolicy(Protocol):
    """What a batch augmentation policy provides: one call per training step."""

    def __call__(self, images: Tensor, labels: Tensor, idx: Tensor) -> tuple[Tensor, Tensor]:
        """Augment a batch.

        Args:
            images: the batch, float in [0, 1], on the training device.
            labels: each example's class, int64.
            idx: each example's row in the training set (GLICO uses it to find the example's code).

        Returns:
            ``(images, targets)``: the augmented batch, float in [0, 1], same shape, dtype and device;
            targets are class labels ``(B,)`` int64, or soft labels ``(B, num_classes)`` whose rows sum
            to 1 (MixUp, CutMix).

        Shape:
            images (B, C, H, W), labels (B,), idx (B,) -> (B, C, H, W), (B,) or (B, num_classes)
        """
        ...


def _check_batch(images: Tensor, labels: Tensor, idx: Tensor) -> None:
    """Shape checks only: they cost no host synchronisation (the trainer checks the values once)."""
    if not isinstance(images, Tensor) or images.dim() != 4 or not images.is_floating_point():
        got = tuple(images.shape) if isinstance(images, Tensor) else type(images).__name__
        raise ValueError(f"images must be a float tensor (B, C, H, W) in [0, 1]; got {got}")
    b = images.shape[0]
    if labels.shape[:1] != (b,) or labels.dim() not in (1, 2):
        raise ValueError(f"labels must have shape (B,) or (B, num_classes) with B = {b}; got {tuple(labels.shape)}")
    if idx.shape != (b,):
        raise ValueError(f"idx must have shape (B,) = ({b},); got {tuple(idx.shape)}")


class _Seeded:
    """Per-call seeds: call k uses ``seed + 1_000_003 * k``."""

    def __init__(self, seed: int) -> None:
        self.seed = int(seed)
        self._calls = 0

    def _next_seed(self) -> int:
        s = self.seed + _CALL_STRIDE * self._calls
        self._calls += 1
        return s

    def state_dict(self) -> dict[str, int]:
        """The number of calls made so far: all the next call's draws depend on (with the seed)."""
        return {"calls": self._calls}

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Continue from :meth:`state_dict` (a resumed training draws what the uninterrupted one would)."""
        calls = state.get("calls") if isinstance(state, dict) else None
        if isinstance(calls, bool) or not isinstance(calls, int) or calls < 0:
            raise ValueError(f"{type(self).__name__} state must be {{'calls': N}} with N >= 0; got {state!r}")
        self._calls = calls


class Standard:
    """The baseline: no augmentation beyond the standard random crop + horizontal flip, which the
    trainer applies to every method's batches. So this policy is the identity.

    Returns:
        ``(images, labels)`` unchanged (the same tensors).
    """

    def __call__(self, images: Tensor, labels: Tensor, idx: Tensor) -> tuple[Tensor, Tensor]:
        _check_batch(images, labels, idx)
        return images, labels

    def state_dict(self) -> dict:
        """Nothing: the identity draws nothing."""
        return {}

    def load_state_dict(self, state: dict) -> None:
        """Nothing to restore."""

    def __repr__(self) -> str:
        return "Standard()"


class Cutout(_Seeded):
    """Cutout (DeVries & Taylor, 2017): one square hole per image, filled with ``fill``.

    The hole's centre is drawn uniformly over the image's pixels, independently per image; the
    square (rows ``cy - size // 2`` to ``cy - size // 2 + size - 1``, columns likewise) is clipped at
    the borders, so near a border fewer pixels are erased, as in the reference implementation. The
    same hole covers all channels. Applied to every image (DeVries & Taylor's p = 1; wrap it in
    :class:`Replace` for another p). Vectorised; runs on the batch's device with a generator on that
    device (no host round trip).

    Args:
        size: side of the square in pixels (DeVries & Taylor: 16 for CIFAR-10, 8 for CIFAR-100, both 32 px).
        fill: value of the erased pixels, in [0, 1] (0: black; the reference fills 0 after
            normalisation, i.e. the mean colour).
        seed: seeds the hole positions.

    Shape:
        images (B, C, H, W) -> (B, C, H, W); labels pass through.
    """

    def __init__(self, size: int = 16, fill: float = 0.0, seed: int = 0) -> None:
        super().__init__(seed)
        if int(size) < 1:
            raise ValueError(f"size must be a positive number of pixels; got {size}")
        if not 0.0 <= fill <= 1.0:
            raise ValueError(f"fill must be in [0, 1] (the image range); got {fill}")
        self.size, self.fill = int(size), float(fill)

    @torch.no_grad()
    def __call__(self, images: Tensor, labels: Tensor, idx: Tensor) -> tuple[Tensor, Tensor]:
        _check_batch(images, labels, idx)
        b, _, h, w = images.shape
        dev = images.device
        g = torch.Generator(device=dev)
        g.manual_seed(self._next_seed())
        cy = torch.randint(0, h, (b,), generator=g, device=dev)
        cx = torch.randint(0, w, (b,), generator=g, device=dev)
        y0, x0 = cy - self.size // 2, cx - self.size // 2
        rows, cols = torch.arange(h, device=dev), torch.arange(w, device=dev)
        in_rows = (rows >= y0[:, None]) & (rows < y0[:, None] + self.size)  # (B, H)
        in_cols = (cols >= x0[:, None]) & (cols < x0[:, None] + self.size)  # (B, W)
        hole = in_rows[:, None, :, None] & in_cols[:, None, None, :]  # (B, 1, H, W)
        return images.masked_fill(hole, self.fill), labels

    def __repr__(self) -> str:
        return f"Cutout(size={self.size}, fill={self.fill}, seed={self.seed})"


class RandomErasing(_Seeded):
    """Random Erasing (Zhong et al., 2020): torchvision's ``v2.RandomErasing``, applied image by image.

    Called on a batch, torchvision draws one rectangle for the whole batch (and one coin flip); here
    each image gets its own coin flip with probability ``p`` and its own rectangle, as in the paper.
    The rectangle's area is a fraction ``scale`` of the image and its aspect ratio is log-uniform in
    ``ratio``; when ten draws do not fit in the image the image is left unchanged (torchvision's rule).
    The draws are made on the host (torchvision's); the erasing runs on the batch's device.

    Args:
        p: probability that an image is erased.
        scale: range of the erased area, as a fraction of the image area.
        ratio: range of the rectangle's aspect ratio.
        value: value of the erased pixels, in [0, 1] (torchvision's default 0; torchvision's random
            normal noise would leave the image range, so it is not offered).
        seed: seeds the coin flips and the rectangles.

    Shape:
        images (B, C, H, W) -> (B, C, H, W); labels pass through.
    """

    def __init__(
        self,
        p: float = 0.5,
        scale: tuple[float, float] = (0.02, 0.33),
        ratio: tuple[float, float] = (0.3, 3.3),
        value: float = 0.0,
        seed: int = 0,
    ) -> None:
        super().__init__(seed)
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"value must be in [0, 1] (the image range); got {value}")
        self.p, self.scale, self.ratio, self.value = float(p), tuple(scale), tuple(ratio), float(value)
        self._erase = T.RandomErasing(p=p, scale=scale, ratio=ratio, value=value)

    @torch.no_grad()
    def __call__(self, images: Tensor, labels: Tensor, idx: Tensor) -> tuple[Tensor, Tensor]:
        _check_batch(images, labels, idx)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self._next_seed())
            out = torch.stack([self._erase(img) for img in images.unbind(0)])
        return out, labels

    def __repr__(self) -> str:
        return (f"RandomErasing(p={self.p}, scale={self.scale}, ratio={self.ratio}, value={self.value}, "
                f"seed={self.seed})")


@contextmanager
def _one_intra_op_thread(device: torch.device) -> Iterator[None]:
    """On CPU, run torch single-threaded for the duration (the thread count is restored after).

    One image's affine warp or sharpness filter is far too small to gain from intra-op threads, and on a
    shared or busy CPU their synchronisation made the per-image loop ~10x slower (measured: AutoAugment on
    128 CIFAR-size images, 1.2 s with 2 threads on a loaded 2-core machine, 0.11 s with 1). The setting is
    process-wide: do not run other torch work in another thread of the process meanwhile.
    """
    if device.type != "cpu":
        yield
        return
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


class _PerImageUInt8(_Seeded):
    """Runs a torchvision image transform on each image of a batch as uint8 and converts back.

    The AutoAugment family's operations are defined on 8-bit images (their magnitudes, posterize,
    solarize, equalize), so each image is quantised to uint8 (round(255 x)), transformed, and divided
    by 255. Images the transform leaves unchanged come back bit-identical (not quantised).
    torchvision supports 1-channel (grayscale: its colour operations leave it as it is) and 3-channel
    images; other channel counts are refused with a clear error. On CPU the per-image loop runs with one
    intra-op thread (see :func:`_one_intra_op_thread`).
    """

    _transform: Callable[[Tensor], Tensor]

    @torch.no_grad()
    def __call__(self, images: Tensor, labels: Tensor, idx: Tensor) -> tuple[Tensor, Tensor]:
        _check_batch(images, labels, idx)
        c = images.shape[1]
        if c not in (1, 3):
            raise ValueError(
                f"{type(self).__name__} works on 1-channel (grayscale) or 3-channel (RGB) images, as torchvision's "
                f"transform does; got {c} channels"
            )
        u8 = images.mul(255).round_().clamp_(0, 255).to(torch.uint8)
        with torch.random.fork_rng(devices=[]), _one_intra_op_thread(images.device):
            torch.manual_seed(self._next_seed())
            out = torch.stack([self._transform(img) for img in u8.unbind(0)])
        changed = (out != u8).flatten(1).any(1)
        return torch.where(changed[:, None, None, None], out.to(images.dtype) / 255, images), labels


class AutoAugment(_PerImageUInt8):
    """AutoAugment (Cubuk et al., 2019): torchvision's ``v2.AutoAugment``, one sub-policy drawn per image.

    The pixel work runs on the batch's device; the batch is processed image by image in Python
    (torchvision draws one sub-policy per call), so it costs of the order of 1 ms per 32 px image on
    one CPU core (about 0.1 s for a batch of 128). Images are quantised to uint8 for the transform
    (see :class:`_PerImageUInt8`); 1- and 3-channel images. torchvision's defaults otherwise: nearest
    interpolation, fill 0.

    Args:
        policy: the learned policy (the paper's comparison used CIFAR10's).
        seed: seeds the sub-policy choices.

    Shape:
        images (B, C, H, W) -> (B, C, H, W), C in {1, 3}; labels pass through.
    """

    def __init__(self, policy: AutoAugmentPolicy = AutoAugmentPolicy.CIFAR10, seed: int = 0) -> None:
        super().__init__(seed)
        self.policy = AutoAugmentPolicy(policy)
        self._transform = T.AutoAugment(policy=self.policy)

    def __repr__(self) -> str:
        return f"AutoAugment(policy={self.policy.name}, seed={self.seed})"


class RandAugment(_PerImageUInt8):
    """RandAugment (Cubuk et al., 2020): torchvision's ``v2.RandAugment``, ``num_ops`` operations drawn
    per image at a fixed ``magnitude``. Per image, on the batch's device, uint8 inside, 1 or 3
    channels: as :class:`AutoAugment`.

    Args:
        num_ops: operations applied in sequence to each image.
        magnitude: strength of every operation, in 0..num_magnitude_bins - 1.
        num_magnitude_bins: number of magnitude levels.
        seed: seeds the operation choices.

    Shape:
        images (B, C, H, W) -> (B, C, H, W), C in {1, 3}; labels pass through.
    """

    def __init__(self, num_ops: int = 2, magnitude: int = 9, num_magnitude_bins: int = 31, seed: int = 0) -> None:
        super().__init__(seed)
        if not 0 <= magnitude < num_magnitude_bins:
            raise ValueError(f"magnitude must be in 0..{num_magnitude_bins - 1}; got {magnitude}")
        self.num_ops, self.magnitude, self.num_magnitude_bins = int(num_ops), int(magnitude), int(num_magnitude_bins)
        self._transform = T.RandAugment(num_ops=num_ops, magnitude=magnitude, num_magnitude_bins=num_magnitude_bins)

    def __repr__(self) -> str:
        return f"RandAugment(num_ops={self.num_ops}, magnitude={self.magnitude}, seed={self.seed})"


class TrivialAugmentWide(_PerImageUInt8):
    """TrivialAugment (Müller & Hutter, 2021): torchvision's ``v2.TrivialAugmentWide``, one operation
    and one magnitude drawn per image. Per image, on the batch's device, uint8 inside, 1 or 3
    channels: as :class:`AutoAugment`.

    Args:
        num_magnitude_bins: number of magnitude levels.
        seed: seeds the operation and magnitude choices.

    Shape:
        images (B, C, H, W) -> (B, C, H, W), C in {1, 3}; labels pass through.
    """

    def __init__(self, num_magnitude_bins: int = 31, seed: int = 0) -> None:
        super().__init__(seed)
        self.num_magnitude_bins = int(num_magnitude_bins)
        self._transform = T.TrivialAugmentWide(num_magnitude_bins=num_magnitude_bins)

    def __repr__(self) -> str:
        return f"TrivialAugmentWide(seed={self.seed})"


class _MixBase(_Seeded):
    """torchvision's batch-level MixUp / CutMix, seeded; returns soft targets."""

    _mix: T.Transform

    def __init__(self, alpha: float, num_classes: int, seed: int) -> None:
        super().__init__(seed)
        if alpha <= 0:
            raise ValueError(f"alpha must be positive; got {alpha}")
        if int(num_classes) < 1:
            raise ValueError(f"num_classes must be positive; got {num_classes}")
        self.alpha, self.num_classes = float(alpha), int(num_classes)

    @torch.no_grad()
    def __call__(self, images: Tensor, labels: Tensor, idx: Tensor) -> tuple[Tensor, Tensor]:
        _check_batch(images, labels, idx)
        if labels.dim() == 1 and labels.dtype != torch.int64:
            labels = labels.long()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self._next_seed())
            out, targets = self._mix(images, labels)
        return out.as_subclass(Tensor), targets.as_subclass(Tensor)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(alpha={self.alpha}, num_classes={self.num_classes}, seed={self.seed})"


class MixUp(_MixBase):
    """MixUp (Zhang et al., 2018): torchvision's ``v2.MixUp``.

    One λ ~ Beta(alpha, alpha) per batch; each image becomes λ·x_i + (1 − λ)·x_j and its target
    λ·onehot(y_i) + (1 − λ)·onehot(y_j), where j is another example of the batch (torchvision pairs
    each example with the previous one, so the batch must be shuffled, which the trainer's batches
    are). λ is drawn on the host; the mixing runs on the batch's device.

    Args:
        alpha: Beta distribution parameter (1: λ uniform in [0, 1]).
        num_classes: number of classes (width of the soft targets).
        seed: seeds λ.

    Returns:
        ``(images, targets)``, targets (B, num_classes) float32, rows summing to 1.

    Shape:
        images (B, C, H, W) -> (B, C, H, W); labels (B,) -> targets (B, num_classes).
    """

    def __init__(self, alpha: float = 1.0, *, num_classes: int, seed: int = 0) -> None:
        super().__init__(alpha, num_classes, seed)
        self._mix = T.MixUp(alpha=alpha, num_classes=num_classes)


class CutMix(_MixBase):
    """CutMix (Yun et al., 2019): torchvision's ``v2.CutMix``.

    One λ ~ Beta(alpha, alpha) and one box of area ≈ (1 − λ)·H·W per batch (clipped at the borders);
    inside the box each image takes the pixels of its partner j (the previous example of the batch,
    as in :class:`MixUp`), and its target is weighted by the exact pixel fractions. Drawn on the host;
    the pasting runs on the batch's device.

    Args:
        alpha: Beta distribution parameter.
        num_classes: number of classes (width of the soft targets).
        seed: seeds λ and the box.

    Returns:
        ``(images, targets)``, targets (B, num_classes) float32, rows summing to 1.

    Shape:
        images (B, C, H, W) -> (B, C, H, W); labels (B,) -> targets (B, num_classes).
    """

    def __init__(self, alpha: float = 1.0, *, num_classes: int, seed: int = 0) -> None:
        super().__init__(alpha, num_classes, seed)
        self._mix = T.CutMix(alpha=alpha, num_classes=num_classes)


class GLICOPolicy:
    """GLICO (Section IV-B): each example is replaced, with the augmenter's probability p, by a GLICO
    sample interpolated between its own code and a same-class partner's. The sample keeps its anchor's
    class, so labels pass through. Runs on the batch's device (see :class:`glico.augment.GLICOAugmenter`).

    Args:
        augmenter: a :class:`glico.augment.GLICOAugmenter` over a model fitted on this training set
            (``idx`` are rows of its code table); it holds p and the seed.

    Shape:
        images (B, C, H, W) -> (B, C, H, W); labels pass through.
    """

    def __init__(self, augmenter: GLICOAugmenter) -> None:
        if not callable(augmenter):
            raise TypeError(
                f"augmenter must be a GLICOAugmenter (called as augmenter(images, idx)); got {type(augmenter).__name__}"
            )
        self.augmenter = augmenter

    def __call__(self, images: Tensor, labels: Tensor, idx: Tensor) -> tuple[Tensor, Tensor]:
        _check_batch(images, labels, idx)
        return self.augmenter(images, idx), labels

    def state_dict(self) -> dict:
        """The augmenter's state (:meth:`glico.augment.GLICOAugmenter.state_dict`)."""
        return self.augmenter.state_dict()

    def load_state_dict(self, state: dict) -> None:
        """Restore the augmenter's state."""
        self.augmenter.load_state_dict(state)

    def __repr__(self) -> str:
        return f"GLICOPolicy(p={getattr(self.augmenter, 'p', '?')})"


class Compose:
    """Two policies in sequence: ``second`` receives ``first``'s images and targets (e.g. GLICO
    replacement, then AutoAugment on the resulting batch: the paper's "GLICO + AutoAugment").

    Every policy here passes targets through untouched except MixUp and CutMix, which also accept soft
    targets, so any order works.

    Args:
        first: applied first.
        second: applied to the output of ``first``.

    Shape:
        images (B, C, H, W) -> (B, C, H, W); targets as the policies make them.
    """

    def __init__(self, first: BatchPolicy, second: BatchPolicy) -> None:
        self.first, self.second = first, second

    def __call__(self, images: Tensor, labels: Tensor, idx: Tensor) -> tuple[Tensor, Tensor]:
        images, targets = self.first(images, labels, idx)
        return self.second(images, targets, idx)

    def state_dict(self) -> dict:
        """Both policies' states (:func:`policy_state`)."""
        return {"first": policy_state(self.first), "second": policy_state(self.second)}

    def load_state_dict(self, state: dict) -> None:
        """Restore both policies' states."""
        if not isinstance(state, dict) or set(state) != {"first", "second"}:
            raise ValueError(f"Compose state must be {{'first': ..., 'second': ...}}; got {state!r}")
        load_policy_state(self.first, state["first"])
        load_policy_state(self.second, state["second"])

    def __repr__(self) -> str:
        return f"Compose({self.first!r}, {self.second!r})"


class Replace(_Seeded):
    """Each example replaced, with probability ``p``, by its version under ``policy`` (the GLICO paper's
    protocol for the baselines: "each example is replaced with probability 0.5 by its augmented
    version", as GLICO's own replacement).

    The coins are drawn per example on the host; ``policy`` is called on the chosen examples only (a
    per-image policy then costs in proportion to p; MixUp and CutMix mix the chosen examples among
    themselves), and the rest pass through unchanged. When ``policy`` returns soft targets (MixUp, CutMix)
    the unchosen examples' hard labels become one-hot rows, so the batch has one kind of target (a batch
    where no coin came up keeps its labels as they were).

    Args:
        policy: the augmentation (a :class:`BatchPolicy`).
        p: probability that an example is replaced, in [0, 1] (1: every example, the policy alone).
        seed: seeds the coins (the policy carries its own seed).

    Shape:
        images (B, C, H, W) -> (B, C, H, W); targets as ``policy`` makes them.
    """

    def __init__(self, policy: BatchPolicy, p: float, seed: int = 0) -> None:
        super().__init__(seed)
        if not callable(policy):
            raise TypeError(f"policy must be a batch policy (called as policy(images, labels, idx)); got {policy!r}")
        if isinstance(p, bool) or not 0.0 <= float(p) <= 1.0:
            raise ValueError(f"p must be a probability in [0, 1]; got {p!r}")
        self.policy, self.p = policy, float(p)

    @torch.no_grad()
    def __call__(self, images: Tensor, labels: Tensor, idx: Tensor) -> tuple[Tensor, Tensor]:
        _check_batch(images, labels, idx)
        g = torch.Generator().manual_seed(self._next_seed())
        chosen = (torch.rand(images.shape[0], generator=g) < self.p).nonzero().squeeze(1)
        if chosen.numel() == 0:
            return images, labels
        sel = chosen.to(images.device)
        out, targets = self.policy(images[sel], labels[sel], idx[sel])
        if targets.dim() == 2 and labels.dim() == 1:
            labels = F.one_hot(labels.long(), targets.shape[1]).to(targets.dtype)
        return images.index_copy(0, sel, out.to(images.dtype)), labels.index_copy(0, sel, targets.to(labels.dtype))

    def state_dict(self) -> dict:
        """Calls made (the coins' stream) and the policy's own state."""
        return {"calls": self._calls, "policy": policy_state(self.policy)}

    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict` output."""
        if not isinstance(state, dict) or set(state) != {"calls", "policy"}:
            raise ValueError(f"Replace state must be {{'calls': N, 'policy': ...}}; got {state!r}")
        super().load_state_dict({"calls": state["calls"]})
        load_policy_state(self.policy, state["policy"])

    def __repr__(self) -> str:
        return f"Replace({self.policy!r}, p={self.p}, seed={self.seed})"


#: Random Erasing's area range: torchvision's default, and the Random Erasing paper's (s_l = 0.02, s_h = 0.4).
ERASING_SCALE = (0.02, 0.33)
ERASING_SCALE_PAPER = (0.02, 0.4)


def cutout_size_for(data_name: str, image_size: int) -> int:
    """Cutout's square side by DeVries & Taylor's per-dataset setting, scaled to the image side: a
    quarter of the side for CIFAR-100 (8 px at 32 px), half of it otherwise (16 px on 32 px CIFAR-10,
    their setting, and the proportion kept on any other data)."""
    if image_size < 1:
        raise ValueError(f"image_size must be >= 1; got {image_size}")
    return max(1, image_size // 4) if data_name == "cifar100" else max(1, image_size // 2)


def _factories(
    num_classes: int,
    glico_augmenter: GLICOAugmenter | None,
    seed: int,
    image_size: int | None,
    policy_p: float | None = None,
    cutout_size: int | None = None,
    erasing_scale: tuple[float, float] = ERASING_SCALE,
) -> dict[str, Callable[[], BatchPolicy]]:
    """The names, written out once: each maps to a factory with the paper's settings."""

    def glico() -> GLICOPolicy:
        if glico_augmenter is None:
            raise ValueError(
                "the GLICO policies ('glico', 'glico+autoaugment', ...) need glico_augmenter=GLICOAugmenter(model, p, seed) "
                "built from a GLICO model fitted on the training set; none was given"
            )
        return GLICOPolicy(glico_augmenter)

    if cutout_size is None:
        # DeVries & Taylor cut half the side of a 32 px CIFAR-10 image; keep that proportion at other sizes.
        cutout_size = 16 if image_size is None else max(1, image_size // 2)

    def replaced(make: Callable[[], BatchPolicy]) -> Callable[[], BatchPolicy]:
        # The coins get their own stream (seed + 1), apart from the policy's draws.
        return make if policy_p is None else (lambda: Replace(make(), policy_p, seed=seed + 1))

    # Random Erasing has its own per-image probability (its paper's p = 0.5): policy_p sets it, not a second coin.
    erasing_p = 0.5 if policy_p is None else policy_p
    policies: dict[str, Callable[[], BatchPolicy]] = {
        "cutout": replaced(lambda: Cutout(size=cutout_size, seed=seed)),
        "random-erasing": lambda: RandomErasing(p=erasing_p, scale=erasing_scale, seed=seed),
        "autoaugment": replaced(lambda: AutoAugment(seed=seed)),
        "randaugment": replaced(lambda: RandAugment(seed=seed)),
        "trivialaugment": replaced(lambda: TrivialAugmentWide(seed=seed)),
        "mixup": replaced(lambda: MixUp(num_classes=num_classes, seed=seed)),
        "cutmix": replaced(lambda: CutMix(num_classes=num_classes, seed=seed)),
    }
    # GLICO then a policy on the whole batch, the synthetic images included (the paper's GLICO + AutoAugment).
    combined = {f"glico+{name}": (lambda make=make: Compose(glico(), make())) for name, make in policies.items()}
    # A label-keeping policy on the real images only, then GLICO's replacement: the synthetic images skip the
    # policy (they still get the standard crop + flip). Not for MixUp / CutMix, whose mixed targets GLICO's
    # class-keeping samples would contradict.
    before = {f"{name}+glico": (lambda make=make: Compose(make(), glico())) for name, make in policies.items()
              if name not in ("mixup", "cutmix")}
    return {"baseline": lambda: Standard(), **policies, "glico": glico, **combined, **before}


def policy_state(policy: BatchPolicy) -> dict | None:
    """What a policy's next draws depend on, as plain data (its ``state_dict()``), so that a resumed
    training continues the policy's draws exactly; ``None`` for a policy without ``state_dict`` (a user's
    own policy: a resumed training then restarts its draws, and says so)."""
    get = getattr(policy, "state_dict", None)
    return get() if callable(get) else None


def load_policy_state(policy: BatchPolicy, state: dict | None) -> bool:
    """Restore :func:`policy_state` output; ``False`` when there was nothing to restore (``state`` is
    ``None`` or the policy has no ``load_state_dict``)."""
    load = getattr(policy, "load_state_dict", None)
    if state is None or not callable(load):
        return False
    load(state)
    return True


def policy_names() -> tuple[str, ...]:
    """The names :func:`build_policy` accepts, in the order the comparison lists them."""
    return tuple(_factories(num_classes=1, glico_augmenter=None, seed=0, image_size=None))


def build_policy(
    name: str,
    *,
    num_classes: int,
    glico_augmenter: GLICOAugmenter | None = None,
    seed: int = 0,
    image_size: int | None = None,
    policy_p: float | None = None,
    cutout_size: int | None = None,
    erasing_scale: tuple[float, float] = ERASING_SCALE,
) -> BatchPolicy:
    """Resolve a method name (command line) to a policy with the paper's / the libraries' default settings.

    Names: baseline, cutout, random-erasing, autoaugment, randaugment, trivialaugment, mixup, cutmix,
    glico, and glico+NAME for each of the policies before it but the baseline (GLICO's replacement, then
    that policy on the whole batch, synthetic images included: ``glico+autoaugment`` is the paper's
    GLICO + AutoAugment), and NAME+glico for the label-keeping ones (cutout, random-erasing, autoaugment,
    randaugment, trivialaugment: the policy on the real images, then GLICO's replacement, so the
    synthetic images skip the policy).

    Args:
        name: the method.
        num_classes: number of classes (MixUp / CutMix targets).
        glico_augmenter: required by ``glico`` and ``glico+autoaugment``.
        seed: seeds the policy's randomness (the GLICO augmenter carries its own seed).
        image_size: side of the images in pixels; Cutout's square is half of it (16 if not given, the
            CIFAR-10 setting) unless ``cutout_size`` is given.
        policy_p: None (default): each augmentation at its own paper's setting (Cutout, the AutoAugment
            family, MixUp and CutMix on every example; Random Erasing on each image with p = 0.5).
            A probability: each example is replaced with that probability by its augmented version
            (:class:`Replace`; for Random Erasing, its own p), the GLICO paper's protocol with 0.5. Applies
            to these policies wherever they appear (``glico+NAME``, ``NAME+glico``); GLICO's replacement
            keeps the augmenter's own p.
        cutout_size: Cutout's square side in pixels (:func:`cutout_size_for` gives the per-dataset one).
        erasing_scale: Random Erasing's area range, as a fraction of the image (torchvision's
            (0.02, 0.33) by default; the Random Erasing paper's is :data:`ERASING_SCALE_PAPER`).

    Raises:
        ValueError: unknown name (the message lists the valid ones), or a GLICO name without an augmenter.
    """
    if policy_p is not None and (isinstance(policy_p, bool) or not 0.0 <= float(policy_p) <= 1.0):
        raise ValueError(f"policy_p must be None (each method's own setting) or a probability in [0, 1]; got {policy_p!r}")
    if cutout_size is not None and (isinstance(cutout_size, bool) or int(cutout_size) < 1):
        raise ValueError(f"cutout_size must be None or a positive number of pixels; got {cutout_size!r}")
    lo, hi = tuple(erasing_scale) if len(erasing_scale) == 2 else (float("nan"),) * 2
    if not 0.0 < lo <= hi <= 1.0:
        raise ValueError(f"erasing_scale must be (lo, hi) with 0 < lo <= hi <= 1 (fractions of the image); got {erasing_scale!r}")
    factories = _factories(num_classes, glico_augmenter, seed, image_size, policy_p, cutout_size, tuple(erasing_scale))
    if name not in factories:
        raise ValueError(f"unknown augmentation policy {name!r}; valid names: {', '.join(factories)}")
    return factories[name]()


def soft_cross_entropy(logits: Tensor, targets: Tensor) -> Tensor:
    """Cross-entropy, mean over the batch, against hard or soft targets.

    Hard targets give exactly ``F.cross_entropy(logits, targets)``; soft targets give
    ``mean_i -sum_k targets[i, k] log softmax(logits)[i, k]`` (the MixUp / CutMix loss), computed
    by ``F.cross_entropy``'s class-probability mode in the logits' dtype.

    Args:
        logits: unnormalised class scores.
        targets: class indices (integer), or class probabilities (float, rows summing to 1).

    Shape:
        logits (B, K); targets (B,) or (B, K) -> scalar.
    """
    if logits.dim() != 2:
        raise ValueError(f"logits must have shape (B, K); got {tuple(logits.shape)}")
    if targets.dim() == 1:
        if targets.is_floating_point():
            raise TypeError(f"hard targets (B,) must be integer class indices; got dtype {targets.dtype}")
        if targets.shape[0] != logits.shape[0]:
            raise ValueError(f"targets has {targets.shape[0]} entries for {logits.shape[0]} logits rows")
        return F.cross_entropy(logits, targets.long())
    if targets.shape != logits.shape:
        raise ValueError(
            f"soft targets must have the logits' shape {tuple(logits.shape)} (B, K); got {tuple(targets.shape)}"
        )
    if not targets.is_floating_point():
        raise TypeError(f"soft targets (B, K) must be floating-point probabilities; got dtype {targets.dtype}")
    return F.cross_entropy(logits, targets.to(logits.dtype))
