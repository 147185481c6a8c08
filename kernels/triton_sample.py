"""Triton fused class-conditional code sampler: partner draw, t draw, gather, slerp, noise — one launch.

Math (reference: ``reference.sample_codes``), per output row ``r`` with anchor ``i = idx[r]``:

    c = labels[i],  s = offsets[c],  n = offsets[c + 1] − s          (members of i's class)
    k = ⌊U₀ · (n − 1)⌋,  cand = order[s + k]                          (one of the first n − 1 slots)
    partner = order[s + n − 1] if cand == i else cand                 (uniform over the others)
    partner = i if n ≤ 1
    t = t_values[⌊U₁ · K⌋]
    inputs[r] = [slerp(codes[i], codes[partner], t), σ · N(0, 1)^noise_dim]

``U₀, U₁`` are the two first words of Philox(seed, counter = r) read as fractions of 2³²
(``⌊U · m⌋ = (word · m) >> 32``: no float rounding, bias ≤ m / 2³²); the noise of column ``j`` is
Box–Muller on Philox(seed, counter = (j + 1)·2³² + r). Streams never overlap, and a row's draws
do not depend on the batch size. The reference draws the same distributions from a
``torch.Generator``; the numbers differ.

The fused kernel reads the anchor and partner rows once and writes ``inputs``, ``partners`` and
``t`` once; the unfused pipeline materialises the gathered rows, the slerp output and the noise
before concatenating. The explicit variant (``sample_codes_explicit``) runs the same kernel with
the partners, ``t`` and ``eps`` given, for exact comparison with the reference. No autograd.
"""
from typing import Optional

import torch
import triton
import triton.language as tl
from torch.library import triton_op

from .triton_common import cdiv, launchable, next_pow2, row_block, slerp_tile


@triton.jit(do_not_specialize=["seed"])
def _sample_kernel(
    codes_ptr,
    idx_ptr,
    order_ptr,
    offsets_ptr,
    labels_ptr,
    t_set_ptr,
    partners_in_ptr,
    t_in_ptr,
    eps_ptr,
    out_ptr,
    partners_out_ptr,
    t_out_ptr,
    seed,
    sigma,
    t_scalar,
    n_rows,
    d,
    noise_dim,
    n_t,
    stride_code_row,
    stride_code_col,
    stride_t_in,
    stride_eps_row,
    stride_eps_col,
    stride_out_row,
    EXPLICIT: tl.constexpr,
    HAS_T: tl.constexpr,
    HAS_NOISE: tl.constexpr,
    BLOCK_B: tl.constexpr,
    BLOCK_D: tl.constexpr,
    BLOCK_N: tl.constexpr,
):
    # See the module docstring for the draws; EXPLICIT reads partners, t and eps instead.
    rows = tl.program_id(0).to(tl.int64) * BLOCK_B + tl.arange(0, BLOCK_B)
    row_ok = rows < n_rows
    anchor = tl.load(idx_ptr + rows, mask=row_ok, other=0).to(tl.int64)

    if EXPLICIT:
        partner = tl.load(partners_in_ptr + rows, mask=row_ok, other=0).to(tl.int64)
        if HAS_T:
            t = tl.load(t_in_ptr + rows * stride_t_in, mask=row_ok, other=0.0).to(tl.float32)
        else:
            t = tl.zeros([BLOCK_B], dtype=tl.float32) + t_scalar
    else:
        cls = tl.load(labels_ptr + anchor, mask=row_ok, other=0)
        start = tl.load(offsets_ptr + cls, mask=row_ok, other=0)
        end = tl.load(offsets_ptr + cls + 1, mask=row_ok, other=0)
        n = end - start
        r0, r1, _, _ = tl.randint4x(seed, rows)
        m = tl.maximum(n - 1, 0).to(tl.uint64)
        k = ((r0.to(tl.uint32, bitcast=True).to(tl.uint64) * m) >> 32).to(tl.int64)
        has_others = row_ok & (n > 1)
        cand = tl.load(order_ptr + start + k, mask=has_others, other=0)
        last = tl.load(order_ptr + end - 1, mask=has_others, other=0)
        partner = tl.where(cand == anchor, last, cand)
        partner = tl.where(has_others, partner, anchor)
        kt = ((r1.to(tl.uint32, bitcast=True).to(tl.uint64) * n_t) >> 32).to(tl.int64)
        t = tl.load(t_set_ptr + kt, mask=row_ok, other=0.0).to(tl.float32)
        tl.store(partners_out_ptr + rows, partner, mask=row_ok)
        tl.store(t_out_ptr + rows, t, mask=row_ok)

    col = tl.arange(0, BLOCK_D)
    col_ok = col < d
    col64 = col.to(tl.int64)
    mask = row_ok[:, None] & col_ok[None, :]
    a = tl.load(codes_ptr + anchor[:, None] * stride_code_row + col64[None, :] * stride_code_col, mask=mask, other=0.0)
    b = tl.load(codes_ptr + partner[:, None] * stride_code_row + col64[None, :] * stride_code_col, mask=mask, other=0.0)
    z = slerp_tile(a.to(tl.float32), b.to(tl.float32), t, col, col_ok)
    out_row = out_ptr + rows[:, None] * stride_out_row
    tl.store(out_row + col64[None, :], z.to(out_ptr.dtype.element_ty), mask=mask)

    if HAS_NOISE:
        ncol = tl.arange(0, BLOCK_N).to(tl.int64)
        nmask = row_ok[:, None] & (ncol < noise_dim)[None, :]
        if EXPLICIT:
            eps_ptrs = eps_ptr + rows[:, None] * stride_eps_row + ncol[None, :] * stride_eps_col
            eps = tl.load(eps_ptrs, mask=nmask, other=0.0).to(tl.float32)
        else:
            counter = (ncol[None, :] + 1) * 4294967296 + rows[:, None]
            eps = sigma * tl.randn(seed, counter)
        tl.store(out_row + d + ncol[None, :], eps.to(out_ptr.dtype.element_ty), mask=nmask)


def _noise_block(noise_dim: int) -> int:
    return max(next_pow2(max(noise_dim, 1)), 2)


def _sample(
    codes: torch.Tensor,
    idx: torch.Tensor,
    order: torch.Tensor,
    offsets: torch.Tensor,
    labels: torch.Tensor,
    t_values: torch.Tensor,
    noise_dim: int,
    sigma: float,
    seed: int,
    traced: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    n_rows, d = idx.shape[0], codes.shape[1]
    out = torch.empty((n_rows, d + noise_dim), dtype=codes.dtype, device=codes.device)
    partners = torch.empty((n_rows,), dtype=torch.int64, device=codes.device)
    t = torch.empty((n_rows,), dtype=torch.float32, device=codes.device)
    if n_rows == 0:
        return out, partners, t
    block_b, block_d, num_warps = row_block(d, n_rows, codes.element_size())
    (launchable(_sample_kernel) if traced else _sample_kernel)[(cdiv(n_rows, block_b),)](
        codes, idx, order, offsets, labels, t_values, idx, t_values, t_values, out, partners, t,
        seed, sigma, 0.0, n_rows, d, noise_dim, t_values.shape[0],
        codes.stride(0), codes.stride(1), 0, 0, 0, out.stride(0),
        EXPLICIT=False, HAS_T=True, HAS_NOISE=noise_dim > 0,
        BLOCK_B=block_b, BLOCK_D=block_d, BLOCK_N=_noise_block(noise_dim), num_warps=num_warps,
    )
    return out, partners, t


def _explicit(
    codes: torch.Tensor,
    idx: torch.Tensor,
    partners: torch.Tensor,
    t: Optional[torch.Tensor],
    t_scalar: float,
    eps: Optional[torch.Tensor],
    traced: bool,
) -> torch.Tensor:
    n_rows, d = idx.shape[0], codes.shape[1]
    noise_dim = eps.shape[1] if eps is not None else 0
    out = torch.empty((n_rows, d + noise_dim), dtype=codes.dtype, device=codes.device)
    if n_rows == 0:
        return out
    block_b, block_d, num_warps = row_block(d, n_rows, codes.element_size())
    (launchable(_sample_kernel) if traced else _sample_kernel)[(cdiv(n_rows, block_b),)](
        codes, idx, idx, idx, idx, codes, partners,
        t if t is not None else codes, eps if eps is not None else codes, out, idx, codes,
        0, 1.0, t_scalar, n_rows, d, noise_dim, 1,
        codes.stride(0), codes.stride(1),
        t.stride(0) if t is not None else 0,
        eps.stride(0) if eps is not None else 0,
        eps.stride(1) if eps is not None else 0,
        out.stride(0),
        EXPLICIT=True, HAS_T=t is not None, HAS_NOISE=noise_dim > 0,
        BLOCK_B=block_b, BLOCK_D=block_d, BLOCK_N=_noise_block(noise_dim), num_warps=num_warps,
    )
    return out


@triton_op("glico_kernels::sample_codes", mutates_args=())
def sample_codes(
    codes: torch.Tensor,
    idx: torch.Tensor,
    order: torch.Tensor,
    offsets: torch.Tensor,
    labels: torch.Tensor,
    t_values: torch.Tensor,
    noise_dim: int,
    sigma: float,
    seed: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Triton fused sampler (validated by ``kernels.sample_codes``).

    Args:
        codes: ``(N, d)`` table, any strides.
        idx: ``(B,)`` contiguous int32/int64 anchor ids.
        order, offsets, labels: the contiguous int64 tensors of a ``ClassIndex``.
        t_values: ``(K,)`` contiguous float32, ``K ≥ 1``.
        noise_dim: noise columns appended; sigma: their standard deviation; seed: Philox seed.

    Returns:
        ``(inputs (B, d + noise_dim) in codes' dtype, partners (B,) int64, t (B,) float32)``.
    """
    return _sample(codes, idx, order, offsets, labels, t_values, noise_dim, sigma, seed, traced=True)


@triton_op("glico_kernels::sample_codes_explicit", mutates_args=())
def sample_codes_explicit(
    codes: torch.Tensor,
    idx: torch.Tensor,
    partners: torch.Tensor,
    t: Optional[torch.Tensor],
    t_scalar: float,
    eps: Optional[torch.Tensor],
) -> torch.Tensor:
    """Triton ``[slerp(codes[idx], codes[partners], t), eps]`` (validated by
    ``kernels.sample_codes_explicit``).

    Args:
        codes: ``(N, d)`` table, any strides.
        idx, partners: ``(B,)`` contiguous int32/int64 ids in range.
        t: ``(B,)`` float tensor (any stride) or ``None`` to use ``t_scalar``.
        eps: ``(B, noise_dim)`` floating, any strides, or ``None``.

    Returns:
        ``(B, d + noise_dim)`` in ``codes``' dtype.
    """
    return _explicit(codes, idx, partners, t, t_scalar, eps, traced=True)


def sample_codes_direct(
    codes: torch.Tensor,
    idx: torch.Tensor,
    order: torch.Tensor,
    offsets: torch.Tensor,
    labels: torch.Tensor,
    t_values: torch.Tensor,
    noise_dim: int,
    sigma: float,
    seed: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """:func:`sample_codes` without the ``torch.library`` dispatcher (eager fast path)."""
    return _sample(codes, idx, order, offsets, labels, t_values, noise_dim, sigma, seed, traced=False)


def sample_codes_explicit_direct(
    codes: torch.Tensor,
    idx: torch.Tensor,
    partners: torch.Tensor,
    t: Optional[torch.Tensor],
    t_scalar: float,
    eps: Optional[torch.Tensor],
) -> torch.Tensor:
    """:func:`sample_codes_explicit` without the ``torch.library`` dispatcher (eager fast path)."""
    return _explicit(codes, idx, partners, t, t_scalar, eps, traced=False)
