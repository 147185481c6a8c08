"""Plain-PyTorch reference implementations: the specification of every kernel.

Everything here computes in float32 whatever the storage dtype, is written to be read rather than
to be fast, and supports autograd (except where an operation is an in-place table update or a
discrete draw). The Triton kernels beside this module must agree with these functions within the
test-suite's dtype tolerance.

Slerp, as computed here (and in ``triton_slerp.py``)
--------------------------------------------------
For rows ``a``, ``b`` and weight ``t``:

1. Normalise: ``â = a / max(‖a‖, EPS)``, ``b̂ = b / max(‖b‖, EPS)``. The result therefore always lies
   on the unit sphere, whatever the norms of the inputs.
2. Angle without ``acos``: with ``u = ‖â − b̂‖ = 2 sin(θ/2)`` and ``v = ‖â + b̂‖ = 2 cos(θ/2)``,
   ``θ = 2 · atan2(u, v)`` and ``sin θ = 2uv / (u² + v²)``. Both norms are computed from the
   difference and the sum directly, so ``θ`` and ``sin θ`` keep full relative precision near 0 and
   near π (``acos(â·b̂)`` loses half the digits there).
3. ``slerp = w_a â + w_b b̂`` with ``w_a = sin((1 − t)θ) / sin θ`` and ``w_b = sin(tθ) / sin θ``.
   Below ``θ < SMALL_ANGLE`` (1e-6 rad, identical rows included) the weights are their limits
   ``1 − t`` and ``t`` (their error there is O(θ²) < 1e-12): no 0/0.
4. The result is renormalised (the identity in exact arithmetic; it removes rounding growth near
   π, where the weights grow like 1/sin θ).
5. Antipodal rows (``v < ANTIPODAL_TOL``, i.e. ``θ`` within about 1e-6 of π) have no unique great
   circle. The deterministic choice: rotate ``â`` towards the coordinate axis ``e_k`` it is most
   orthogonal to, ``k = argmin_j |â_j|`` (first such ``j``): ``slerp = cos(tθ) â + sin(tθ) p̂``
   with ``p̂ = normalise(e_k − â_k â)``. This ``p̂`` is the same for ``â`` and ``−â``, so
   ``slerp(a, b, t) == slerp(b, a, 1 − t)`` still holds. For ``d = 1`` there is no orthogonal
   direction: the result is the nearer endpoint (``â`` for ``t < ½``, ``b̂`` for ``t > ½``) and at
   ``t = ½`` exactly the positive one (``+1``).
6. Rows of zero norm stay finite (they normalise to the zero vector); codes are expected to be
   non-zero.
"""
from __future__ import annotations

from collections.abc import Sequence

import math

import torch

from ._types import ClassIndex, SampledCodes

EPS = 1e-12
"""Lower clamp for every norm that is divided by (as in ``torch.nn.functional.normalize``)."""

ANTIPODAL_TOL = 1e-6
"""Rows with ``‖â + b̂‖`` below this are treated as exactly antipodal (see the module docstring)."""

SMALL_ANGLE = 1e-6
"""Below this angle (radians) the slerp weights are their limits ``1 − t`` and ``t``."""


def _as_t_column(t: float | torch.Tensor, batch: int, device: torch.device) -> torch.Tensor:
    """``t`` as a float32 ``(B, 1)`` column (a scalar is broadcast)."""
    if isinstance(t, torch.Tensor):
        return t.to(device=device, dtype=torch.float32).reshape(-1, 1).expand(batch, 1)
    return torch.full((batch, 1), float(t), device=device, dtype=torch.float32)


def _normalise(x: torch.Tensor) -> torch.Tensor:
    return x / torch.linalg.vector_norm(x, dim=-1, keepdim=True).clamp_min(EPS)


def slerp(a: torch.Tensor, b: torch.Tensor, t: float | torch.Tensor) -> torch.Tensor:
    """Spherical linear interpolation between the normalised rows of ``a`` and ``b``.

    See the module docstring for the exact definition (angle, small-angle and antipodal handling).
    Differentiable with respect to ``a``, ``b`` and a tensor ``t``.

    Args:
        a: ``(B, d)`` floating tensor, start points (normalised first).
        b: ``(B, d)`` same dtype and device, end points (normalised first).
        t: python number or ``(B,)`` / 0-d tensor; ``t = 0`` gives ``â``, ``t = 1`` gives ``b̂``.
            Values outside ``[0, 1]`` continue along the same great circle.

    Returns:
        ``(B, d)`` unit rows in ``a``'s dtype.
    """
    out_dtype = a.dtype
    a_hat = _normalise(a.float())
    b_hat = _normalise(b.float())
    t_col = _as_t_column(t, a.shape[0], a.device)

    diff = a_hat - b_hat
    summ = a_hat + b_hat
    u2 = (diff * diff).sum(-1, keepdim=True)
    v2 = (summ * summ).sum(-1, keepdim=True)
    u = torch.linalg.vector_norm(diff, dim=-1, keepdim=True)
    v = torch.linalg.vector_norm(summ, dim=-1, keepdim=True)
    theta = 2.0 * torch.atan2(u, v)
    sin_theta = 2.0 * u * v / (u2 + v2).clamp_min(EPS)

    small = theta < SMALL_ANGLE
    antipodal = v < ANTIPODAL_TOL
    # The weights' division is masked where it is not used, so that no inf/NaN reaches backward.
    safe_sin = torch.where(small | antipodal, torch.ones_like(sin_theta), sin_theta)
    w_a = torch.where(small, 1.0 - t_col, torch.sin((1.0 - t_col) * theta) / safe_sin)
    w_b = torch.where(small, t_col, torch.sin(t_col * theta) / safe_sin)
    out = w_a * a_hat + w_b * b_hat

    # Antipodal rows: rotate towards the least-aligned coordinate axis (sign-independent choice).
    k = a_hat.abs().argmin(dim=-1, keepdim=True)
    axis = torch.zeros_like(a_hat).scatter_(-1, k, 1.0)
    p = axis - a_hat.gather(-1, k) * a_hat
    p_norm2 = (p * p).sum(-1, keepdim=True)
    p = p / p_norm2.clamp_min(EPS * EPS).sqrt()
    turned = torch.cos(t_col * theta) * a_hat + torch.sin(t_col * theta) * p
    # d = 1: no orthogonal direction exists; take the nearer endpoint, ties to the positive one.
    pick_b = (t_col > 0.5) | ((t_col == 0.5) & (b_hat.sum(-1, keepdim=True) > a_hat.sum(-1, keepdim=True)))
    turned = torch.where(p_norm2 < 0.25, torch.where(pick_b, b_hat, a_hat), turned)
    out = torch.where(antipodal, turned, out)

    return _normalise(out).to(out_dtype)


def slerp_gather(
    codes: torch.Tensor, i: torch.Tensor, j: torch.Tensor, t: float | torch.Tensor
) -> torch.Tensor:
    """``slerp(codes[i], codes[j], t)``.

    Args:
        codes: ``(N, d)`` floating table.
        i, j: ``(B,)`` integer row ids in ``[0, N)``.
        t: python number or ``(B,)`` tensor.

    Returns:
        ``(B, d)`` unit rows in ``codes``' dtype.
    """
    return slerp(codes[i], codes[j], t)


def project_rows_(codes: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """Renormalise rows ``idx`` of ``codes`` to unit L2 norm, in place; other rows are untouched.

    An optimiser-style table update: it never records autograd history (it runs under
    ``torch.no_grad()``), so it can be applied to a parameter after its step. Duplicate ids are
    harmless (every copy writes the same value). Zero rows stay zero.

    Args:
        codes: ``(N, d)`` floating table, modified in place.
        idx: ``(K,)`` integer row ids in ``[0, N)``.

    Returns:
        ``codes``.
    """
    with torch.no_grad():
        rows = codes[idx].float()
        codes[idx] = _normalise(rows).to(codes.dtype)
    return codes


def adam_rows_(
    param: torch.Tensor,
    exp_avg: torch.Tensor,
    exp_avg_sq: torch.Tensor,
    idx: torch.Tensor,
    grad: torch.Tensor,
    *,
    step: int,
    lr: float,
    beta1: float,
    beta2: float,
    eps: float,
    project: bool = True,
) -> torch.Tensor:
    """One lazy-Adam step on rows ``idx`` of a table, then (``project``) those rows renormalised.

    :class:`torch.optim.SparseAdam`'s update (to float32 rounding) for a gradient whose non-zero rows are ``idx``
    with values ``grad`` (``step`` counts the table's updates, so the bias correction is global): for
    every ``k``, with ``r = idx[k]``, ``g = grad[k]``,

        m_r ← m_r + (1 − β₁)(g − m_r),   v_r ← v_r + (1 − β₂)(g² − v_r)
        p_r ← p_r − lr·√(1 − β₂^step)/(1 − β₁^step) · m_r / (√v_r + eps)
        p_r ← p_r / max(‖p_r‖, EPS)                                   (project)

    Rows outside ``idx`` (parameter and both moments) are not touched. Math in float32, results
    stored in each tensor's dtype. ``idx`` must not repeat a row. Records no autograd history.

    Args:
        param, exp_avg, exp_avg_sq: ``(N, d)`` floating tables, modified in place.
        idx: ``(B,)`` distinct integer row ids in ``[0, N)``.
        grad: ``(B, d)`` the gradient rows, ``grad[k]`` belonging to row ``idx[k]``.
        step: the update's number, ``≥ 1``.
        lr, beta1, beta2, eps: Adam's hyper-parameters.
        project: renormalise the updated rows onto the unit sphere.

    Returns:
        ``param``.
    """
    with torch.no_grad():
        g = grad.float()
        m = exp_avg[idx].float()
        v = exp_avg_sq[idx].float()
        m = m + (g - m) * (1.0 - beta1)
        v = v + (g * g - v) * (1.0 - beta2)
        step_size = lr * math.sqrt(1.0 - beta2**step) / (1.0 - beta1**step)
        p = param[idx].float() - step_size * (m / (v.sqrt() + eps))
        if project:
            p = _normalise(p)
        exp_avg[idx] = m.to(exp_avg.dtype)
        exp_avg_sq[idx] = v.to(exp_avg_sq.dtype)
        param[idx] = p.to(param.dtype)
    return param


def class_index(labels: torch.Tensor, num_classes: int | None = None) -> ClassIndex:
    """Group the rows of a code table by class, once, for :func:`sample_codes`.

    Args:
        labels: ``(N,)`` integer class of every row, in ``[0, C)``.
        num_classes: ``C``; defaults to ``labels.max() + 1``.

    Returns:
        A :class:`ClassIndex` on ``labels``' device.
    """
    labels = labels.to(torch.int64)
    if num_classes is None:
        num_classes = int(labels.max().item()) + 1 if labels.numel() else 0
    order = torch.sort(labels, stable=True).indices
    counts = torch.bincount(labels, minlength=num_classes)
    offsets = torch.zeros(num_classes + 1, dtype=torch.int64, device=labels.device)
    offsets[1:] = torch.cumsum(counts, 0)
    return ClassIndex(order=order, offsets=offsets, labels=labels)


def draw_partners(idx: torch.Tensor, index: ClassIndex, u: torch.Tensor) -> torch.Tensor:
    """Partner of each anchor, uniform among the *other* members of its class.

    With ``n`` members in the anchor's class, ``k = floor(u · (n − 1))`` picks one of the first
    ``n − 1`` slots of the class; if that slot holds the anchor itself, the last slot is taken
    instead. Every member other than the anchor is then reached with probability ``1/(n − 1)``,
    without an inverse permutation. An anchor alone in its class is its own partner.

    Args:
        idx: ``(B,)`` anchor row ids.
        index: the class index of the table.
        u: ``(B,)`` uniforms in ``[0, 1)``.

    Returns:
        ``(B,)`` int64 partner row ids.
    """
    idx = idx.to(torch.int64)
    cls = index.labels[idx]
    start = index.offsets[cls]
    n = index.offsets[cls + 1] - start
    k = torch.minimum(torch.floor(u.double() * (n - 1).double()).to(torch.int64), (n - 2).clamp_min(0))
    candidate = index.order[start + k]
    last = index.order[start + n - 1]
    partner = torch.where(candidate == idx, last, candidate)
    return torch.where(n <= 1, idx, partner)


def sample_codes_explicit(
    codes: torch.Tensor,
    idx: torch.Tensor,
    partners: torch.Tensor,
    t: float | torch.Tensor,
    eps: torch.Tensor | None = None,
) -> torch.Tensor:
    """Generator input ``[slerp(codes[idx], codes[partners], t), eps]`` from explicit draws.

    Args:
        codes: ``(N, d)`` floating table.
        idx, partners: ``(B,)`` integer row ids.
        t: python number or ``(B,)`` tensor.
        eps: ``(B, noise_dim)`` noise, or ``None`` for no noise columns.

    Returns:
        ``(B, d + noise_dim)`` in ``codes``' dtype.
    """
    z = slerp_gather(codes, idx, partners, t)
    if eps is None:
        return z
    return torch.cat([z, eps.to(codes.dtype)], dim=1)


def sample_codes(
    codes: torch.Tensor,
    idx: torch.Tensor,
    index: ClassIndex,
    t_values: Sequence[float] | torch.Tensor,
    *,
    noise_dim: int = 0,
    sigma: float = 1.0,
    seed: int = 0,
) -> SampledCodes:
    """Class-conditional interpolated codes for a batch of anchors, unfused.

    The pipeline the Triton kernel fuses: draw a partner in the anchor's class
    (:func:`draw_partners`), draw ``t`` uniformly from ``t_values``, gather both rows, slerp, draw
    ``eps ~ N(0, sigma² I)``, concatenate. Random numbers come from a ``torch.Generator`` on
    ``codes``' device seeded with ``seed`` (the Triton kernel uses Philox with the same seed: same
    distribution, different numbers).

    Args:
        codes: ``(N, d)`` floating table.
        idx: ``(B,)`` anchor row ids.
        index: :class:`ClassIndex` of the table's labels.
        t_values: the non-empty set ``t`` is drawn from.
        noise_dim: number of noise columns appended.
        sigma: noise standard deviation.
        seed: seed of the draws.

    Returns:
        :class:`SampledCodes` with ``inputs`` ``(B, d + noise_dim)`` in ``codes``' dtype.
    """
    device = codes.device
    batch = idx.shape[0]
    gen = torch.Generator(device=device)
    gen.manual_seed(seed)
    t_set = torch.as_tensor(t_values, dtype=torch.float32, device=device).reshape(-1)

    u = torch.rand(batch, generator=gen, device=device)
    partners = draw_partners(idx, index, u)
    t = t_set[torch.randint(t_set.shape[0], (batch,), generator=gen, device=device)]
    eps = None
    if noise_dim > 0:
        eps = sigma * torch.randn(batch, noise_dim, generator=gen, device=device)
    inputs = sample_codes_explicit(codes, idx, partners, t, eps)
    return SampledCodes(inputs=inputs, partners=partners, t=t)

