"""Triton slerp over rows, and slerp over gathered rows of a table, in one pass each.

Math (the reference, ``reference.slerp``, is the specification): per row, in float32 registers,

    â = a/‖a‖, b̂ = b/‖b‖,  u = ‖â − b̂‖, v = ‖â + b̂‖,  θ = 2·atan2(u, v),  sin θ = 2uv/(u² + v²)
    out = [sin((1 − t)θ) â + sin(tθ) b̂] / sin θ        ((1 − t) â + t b̂ below θ = 1e-6)

renormalised, with the antipodal (``v < ANTIPODAL_TOL``) and ``d = 1`` rules of the reference
(``triton_common.slerp_tile``). Each program holds ``BLOCK_B`` whole rows (``BLOCK_D ≥ d``) in
registers, so every byte of ``a``, ``b`` (or of the gathered rows) is read once and the output written
once: the kernel is bound by memory bandwidth. None of these ops supports autograd.
"""
from typing import Optional

import torch
import triton
import triton.language as tl
from torch.library import triton_op

from .triton_common import cdiv, launchable, row_block, slerp_tile


@triton.jit
def _slerp_kernel(
    a_ptr,
    b_ptr,
    ia_ptr,
    ib_ptr,
    t_ptr,
    out_ptr,
    t_scalar,
    n_rows,
    d,
    stride_a_row,
    stride_a_col,
    stride_b_row,
    stride_b_col,
    stride_t,
    stride_out_row,
    GATHER: tl.constexpr,
    HAS_T: tl.constexpr,
    BLOCK_B: tl.constexpr,
    BLOCK_D: tl.constexpr,
):
    # Row r of the output is slerp(a[ia[r]], b[ib[r]], t[r]) with GATHER, else slerp(a[r], b[r], t[r]).
    rows = tl.program_id(0).to(tl.int64) * BLOCK_B + tl.arange(0, BLOCK_B)
    row_ok = rows < n_rows
    col = tl.arange(0, BLOCK_D)
    col_ok = col < d
    col64 = col.to(tl.int64)
    mask = row_ok[:, None] & col_ok[None, :]

    if GATHER:
        ra = tl.load(ia_ptr + rows, mask=row_ok, other=0).to(tl.int64)
        rb = tl.load(ib_ptr + rows, mask=row_ok, other=0).to(tl.int64)
    else:
        ra = rows
        rb = rows
    a = tl.load(a_ptr + ra[:, None] * stride_a_row + col64[None, :] * stride_a_col, mask=mask, other=0.0)
    b = tl.load(b_ptr + rb[:, None] * stride_b_row + col64[None, :] * stride_b_col, mask=mask, other=0.0)
    if HAS_T:
        t = tl.load(t_ptr + rows * stride_t, mask=row_ok, other=0.0).to(tl.float32)
    else:
        t = tl.zeros([BLOCK_B], dtype=tl.float32) + t_scalar

    out = slerp_tile(a.to(tl.float32), b.to(tl.float32), t, col, col_ok)
    out_ptrs = out_ptr + rows[:, None] * stride_out_row + col64[None, :]
    tl.store(out_ptrs, out.to(out_ptr.dtype.element_ty), mask=mask)


def _launch(
    a: torch.Tensor,
    b: torch.Tensor,
    ia: Optional[torch.Tensor],
    ib: Optional[torch.Tensor],
    t: Optional[torch.Tensor],
    t_scalar: float,
    n_rows: int,
    traced: bool = True,
) -> torch.Tensor:
    d = a.shape[1]
    out = torch.empty((n_rows, d), dtype=a.dtype, device=a.device)
    if n_rows == 0:
        return out
    block_b, block_d, num_warps = row_block(d, n_rows, a.element_size())
    gather = ia is not None
    (launchable(_slerp_kernel) if traced else _slerp_kernel)[(cdiv(n_rows, block_b),)](
        a,
        b,
        ia if gather else a,
        ib if gather else a,
        t if t is not None else a,
        out,
        t_scalar,
        n_rows,
        d,
        a.stride(0),
        a.stride(1),
        b.stride(0),
        b.stride(1),
        t.stride(0) if t is not None else 0,
        out.stride(0),
        GATHER=gather,
        HAS_T=t is not None,
        BLOCK_B=block_b,
        BLOCK_D=block_d,
        num_warps=num_warps,
    )
    return out


@triton_op("glico_kernels::slerp", mutates_args=())
def slerp(a: torch.Tensor, b: torch.Tensor, t: Optional[torch.Tensor], t_scalar: float) -> torch.Tensor:
    """Triton slerp of rows (inputs validated by ``kernels.slerp``).

    Args:
        a, b: ``(B, d)`` same dtype/device, any strides.
        t: ``(B,)`` float tensor (any stride, 0 allowed) or ``None`` to use ``t_scalar``.
        t_scalar: the weight of every row when ``t`` is ``None``.

    Returns:
        ``(B, d)`` contiguous, ``a``'s dtype. No autograd.
    """
    return _launch(a, b, None, None, t, t_scalar, a.shape[0])


@triton_op("glico_kernels::slerp_gather", mutates_args=())
def slerp_gather(
    codes: torch.Tensor, i: torch.Tensor, j: torch.Tensor, t: Optional[torch.Tensor], t_scalar: float
) -> torch.Tensor:
    """Triton ``slerp(codes[i], codes[j], t)`` reading the rows in place (validated by
    ``kernels.slerp_gather``).

    Args:
        codes: ``(N, d)`` table, any strides.
        i, j: ``(B,)`` contiguous int32/int64 row ids in range.
        t: ``(B,)`` float tensor or ``None`` to use ``t_scalar``.
        t_scalar: the weight of every row when ``t`` is ``None``.

    Returns:
        ``(B, d)`` contiguous, ``codes``' dtype. No autograd.
    """
    return _launch(codes, codes, i, j, t, t_scalar, i.shape[0])


def slerp_direct(a: torch.Tensor, b: torch.Tensor, t: Optional[torch.Tensor], t_scalar: float) -> torch.Tensor:
    """:func:`slerp` without the ``torch.library`` dispatcher (eager fast path; see
    ``kernels._dispatch._direct``)."""
    return _launch(a, b, None, None, t, t_scalar, a.shape[0], traced=False)


def slerp_gather_direct(
    codes: torch.Tensor, i: torch.Tensor, j: torch.Tensor, t: Optional[torch.Tensor], t_scalar: float
) -> torch.Tensor:
    """:func:`slerp_gather` without the ``torch.library`` dispatcher (eager fast path)."""
    return _launch(codes, codes, i, j, t, t_scalar, i.shape[0], traced=False)
