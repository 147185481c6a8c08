"""Interpolation between codes, and the class-conditional sampling of new generator inputs.

GLICO makes a new code from an image's code z_i and the code z_j of another image of the same class:
slerp(z_i, z_j, t) with t drawn from {0.1, 0.2, 0.3, 0.4} (Section IV-B). All arithmetic goes through
one seam, the :mod:`kernels` dispatch (Triton on CUDA, the PyTorch reference elsewhere).
"""
from __future__ import annotations

from typing import Protocol, Sequence, runtime_checkable

import torch

import kernels
from glico._rng import substream
from glico.noise import ConcatNoise, NoisePolicy

PAPER_T_VALUES: tuple[float, ...] = (0.1, 0.2, 0.3, 0.4)


def check_t_values(t_values: Sequence[float]) -> tuple[float, ...]:
    """``t_values`` as a tuple of floats, or a ValueError unless it is a non-empty set of numbers in [0, 1]."""
    try:
        values = tuple(float(t) for t in t_values)
    except (TypeError, ValueError):
        values = ()
    if not values or any(not 0.0 <= t <= 1.0 for t in values):
        raise ValueError(f"t_values must be a non-empty set of numbers in [0, 1]; got {t_values!r}")
    return values


@runtime_checkable
class Interpolator(Protocol):
    """Interpolates between codes and samples new generator inputs from same-class pairs."""

    def __call__(self, a: torch.Tensor, b: torch.Tensor, t: float | torch.Tensor) -> torch.Tensor:
        """Shape: a, b (B, d), t scalar or (B,) -> (B, d)."""
        ...

    def sample_inputs(
        self,
        codes: torch.Tensor,
        idx: torch.Tensor,
        index: kernels.ClassIndex,
        t_values: Sequence[float],
        noise: NoisePolicy,
        seed: int,
        check_indices: bool = True,
    ) -> torch.Tensor:
        """Generator inputs for anchors ``idx``, each interpolated with a random same-class partner.
        ``check_indices=False`` skips validating ``idx`` (a device sync) on hot paths.

        Shape: codes (N, d), idx (B,) -> (B, noise.out_dim(d))
        """
        ...


class Slerp:
    """Spherical linear interpolation (the paper's choice): stays on the unit sphere.

    With :class:`~glico.noise.ConcatNoise` the partner draw, slerp and noise run as one fused
    operation (:func:`kernels.sample_codes`). A subclass that overrides ``__call__`` is used as written:
    its sampling takes the same draws and calls it.
    """

    def __call__(self, a, b, t):
        return kernels.slerp(a, b, t)

    def sample_inputs(self, codes, idx, index, t_values, noise, seed, check_indices=True):
        return _sample_inputs(self, type(self).__call__ is Slerp.__call__, codes, idx, index, t_values, noise, seed,
                              check_indices)

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class Lerp:
    """Linear interpolation (1 - t) a + t b, *not* renormalised: the paper's "Lerp" ablation, whose
    points fall inside the sphere (Fig. 4). For the same seed it samples the same partners, t and
    noise as :class:`Slerp`, so swapping the two changes only the interpolation."""

    def __call__(self, a, b, t):
        t = torch.as_tensor(t, dtype=torch.float32, device=a.device)
        t = t[:, None] if t.dim() == 1 else t
        return (a.float() * (1 - t) + b.float() * t).to(a.dtype)

    def sample_inputs(self, codes, idx, index, t_values, noise, seed, check_indices=True):
        return _sample_inputs(self, False, codes, idx, index, t_values, noise, seed, check_indices)

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class MultiSlerp:
    """Slerp through more than two codes of a class (not in the paper): the anchor's code is slerped
    towards one same-class partner, the result towards a second, and so on, ``num_codes - 1`` partners
    in all, each step with its own t from the t set::

        z = slerp(slerp(z_i, z_j, t_1), z_k, t_2)          # num_codes = 3

    The new code stays on the unit sphere, inside the spherical hull of the codes it was made from.
    Partners are drawn independently, uniformly among the anchor's
    class, so two of them may coincide. ``MultiSlerp(2)`` samples exactly what :class:`Slerp` samples
    for the same seed; each further partner and its t come from a stream of their own.

    Args:
        num_codes: how many codes each new code is made from (anchor included), >= 2.
    """

    def __init__(self, num_codes: int = 3) -> None:
        if isinstance(num_codes, bool) or not isinstance(num_codes, int) or num_codes < 2:
            raise ValueError(f"num_codes must be a whole number >= 2 (the anchor and at least one partner); "
                             f"got {num_codes!r}")
        self.num_codes = num_codes

    def __call__(self, a, b, t):
        return kernels.slerp(a, b, t)

    def sample_inputs(self, codes, idx, index, t_values, noise, seed, check_indices=True):
        d = codes.shape[1]
        fused_noise = type(noise) is ConcatNoise
        drawn = kernels.sample_codes(codes, idx, index, t_values, noise_dim=noise.dim if fused_noise else 0,
                                     sigma=noise.sigma if fused_noise else 1.0, seed=seed,
                                     check_indices=check_indices)
        z = drawn.inputs[:, :d]
        if self.num_codes > 2:
            g = _device_generator(codes.device, substream(seed, 2))
            anchors = idx.to(codes.device)
            for _ in range(self.num_codes - 2):
                partners, t = draw_partners(index, anchors, t_values, g)
                z = kernels.slerp(z, codes[partners], t)
        if fused_noise:
            return torch.cat([z, drawn.inputs[:, d:]], dim=1)
        return noise(z, generator=_device_generator(codes.device, substream(seed, 0)))

    def __repr__(self) -> str:
        return f"{type(self).__name__}(num_codes={self.num_codes})"


def _sample_inputs(interp, fused_slerp: bool, codes, idx, index, t_values, noise, seed, check_indices):
    """Generator inputs for anchors ``idx``: the partner, t and (for ConcatNoise) ε draws of
    :func:`kernels.sample_codes`, interpolated by ``interp``. ``fused_slerp``: ``interp`` is plain
    slerp, so the kernel's own output is the answer. Other noise policies draw from a stream of their
    own (``substream(seed, 0)``), independent of the partner draw."""
    fused_noise = type(noise) is ConcatNoise  # a subclass may draw its noise differently
    drawn = kernels.sample_codes(codes, idx, index, t_values, noise_dim=noise.dim if fused_noise else 0,
                                 sigma=noise.sigma if fused_noise else 1.0, seed=seed, check_indices=check_indices)
    if fused_slerp:
        z = drawn.inputs[:, : codes.shape[1]]
    else:
        z = interp(codes[idx], codes[drawn.partners], drawn.t)
    if fused_noise:
        return drawn.inputs if fused_slerp else torch.cat([z, drawn.inputs[:, codes.shape[1]:]], dim=1)
    return noise(z, generator=_device_generator(codes.device, substream(seed, 0)))


def draw_partners(
    index: kernels.ClassIndex, idx: torch.Tensor, t_values: Sequence[float], generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """For each anchor, a partner drawn uniformly among the *other* codes of its class (the anchor
    itself only when it is alone in its class), and t drawn uniformly from ``t_values``.

    Returns:
        partners (B,) int64 row ids, t (B,) float32.
    """
    device = idx.device
    order, offsets, labels = (x.to(device) for x in (index.order, index.offsets, index.labels))
    position = torch.empty_like(order)
    position[order] = torch.arange(order.numel(), device=device)
    cls = labels[idx]
    start, count = offsets[cls], offsets[cls + 1] - offsets[cls]
    u = torch.rand(idx.shape, generator=generator, device=device)
    r = (u * (count - 1).clamp_min(1)).long().clamp_max((count - 2).clamp_min(0))
    own = position[idx] - start
    r = torch.where(r >= own, r + 1, r)
    r = torch.where(count > 1, r, own)
    partners = order[start + r]
    tv = torch.as_tensor(list(t_values), dtype=torch.float32, device=device)
    t = tv[torch.randint(0, tv.numel(), idx.shape, generator=generator, device=device)]
    return partners, t


def _device_generator(device: torch.device, seed: int) -> torch.Generator:
    g = torch.Generator(device=device)
    g.manual_seed(int(seed))
    return g
