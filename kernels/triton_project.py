"""Triton in-place re-projection of selected rows of a code table onto the unit sphere.

Math (reference: ``reference.project_rows_``): for every id ``r`` in ``idx``,
``codes[r] ← codes[r] / max(‖codes[r]‖, EPS)``, the norm taken in float32. One program handles
``BLOCK_B`` ids; only those rows are read and written, so the cost is O(len(idx)·d) whatever the
table's size. Ids must be distinct: two programs on one row race (one may read the row half
written by the other and store a non-unit row), so the dispatch removes repeats first unless the
caller vouches for them (``check_indices=False``, as the fit does: its batch is a permutation slice).
The update is an in-place table write and records no autograd history.

``adam_rows_`` fuses the optimiser step of those rows with the projection (reference:
``reference.adam_rows_``): one program loads ``BLOCK_B`` gradient rows and the matching rows of the
table and of both Adam moments, updates the moments and the rows, renormalises the rows and stores
all three — one launch in place of the ~15 small kernels (and the host sync of ``coalesce``) of
``torch.optim.SparseAdam`` followed by ``project_rows_``. Ids must be distinct (the fit's batch is a
slice of a permutation), or two programs would race on a row.
"""
import torch
import triton
import triton.language as tl
from torch.library import triton_op

from .triton_common import EPS, cdiv, launchable, row_block


@triton.jit
def _project_rows_kernel(
    codes_ptr,
    idx_ptr,
    n_idx,
    d,
    stride_row,
    stride_col,
    BLOCK_B: tl.constexpr,
    BLOCK_D: tl.constexpr,
):
    # codes[idx[k]] /= max(‖codes[idx[k]]‖, EPS) for the BLOCK_B ids k of this program.
    ks = tl.program_id(0).to(tl.int64) * BLOCK_B + tl.arange(0, BLOCK_B)
    k_ok = ks < n_idx
    rows = tl.load(idx_ptr + ks, mask=k_ok, other=0).to(tl.int64)
    col = tl.arange(0, BLOCK_D)
    mask = k_ok[:, None] & (col < d)[None, :]
    ptrs = codes_ptr + rows[:, None] * stride_row + col.to(tl.int64)[None, :] * stride_col
    x = tl.load(ptrs, mask=mask, other=0.0).to(tl.float32)
    norm = tl.sqrt(tl.sum(x * x, axis=1))
    y = x / tl.maximum(norm, EPS)[:, None]
    tl.store(ptrs, y.to(codes_ptr.dtype.element_ty), mask=mask)


def _project(codes: torch.Tensor, idx: torch.Tensor, traced: bool) -> None:
    n_idx = idx.shape[0]
    if n_idx == 0:
        return
    d = codes.shape[1]
    block_b, block_d, num_warps = row_block(d, n_idx, codes.element_size())
    (launchable(_project_rows_kernel) if traced else _project_rows_kernel)[(cdiv(n_idx, block_b),)](
        codes,
        idx,
        n_idx,
        d,
        codes.stride(0),
        codes.stride(1),
        BLOCK_B=block_b,
        BLOCK_D=block_d,
        num_warps=num_warps,
    )


@triton_op("glico_kernels::project_rows_", mutates_args={"codes"})
def project_rows_(codes: torch.Tensor, idx: torch.Tensor) -> None:
    """Triton in-place renormalisation of rows ``idx`` of ``codes`` (validated by
    ``kernels.project_rows_``).

    Args:
        codes: ``(N, d)`` floating table, any strides, modified in place.
        idx: ``(K,)`` contiguous int32/int64 ids in ``[0, N)``.
    """
    _project(codes, idx, traced=True)


def project_rows_direct(codes: torch.Tensor, idx: torch.Tensor) -> None:
    """:func:`project_rows_` without the ``torch.library`` dispatcher (eager fast path)."""
    _project(codes, idx, traced=False)


@triton.jit
def _adam_rows_kernel(
    p_ptr,
    m_ptr,
    v_ptr,
    idx_ptr,
    g_ptr,
    n_idx,
    d,
    stride_p,
    stride_m,
    stride_v,
    stride_g,
    stride_p_col,
    stride_m_col,
    stride_v_col,
    stride_g_col,
    step_size,
    beta1,
    beta2,
    eps,
    PROJECT: tl.constexpr,
    BLOCK_B: tl.constexpr,
    BLOCK_D: tl.constexpr,
):
    # Lazy Adam on rows idx[k] with gradient rows g[k], then (PROJECT) the rows renormalised.
    ks = tl.program_id(0).to(tl.int64) * BLOCK_B + tl.arange(0, BLOCK_B)
    k_ok = ks < n_idx
    rows = tl.load(idx_ptr + ks, mask=k_ok, other=0).to(tl.int64)
    col = tl.arange(0, BLOCK_D).to(tl.int64)
    mask = k_ok[:, None] & (col < d)[None, :]
    g = tl.load(g_ptr + ks[:, None] * stride_g + col[None, :] * stride_g_col, mask=mask, other=0.0).to(tl.float32)
    m_ptrs = m_ptr + rows[:, None] * stride_m + col[None, :] * stride_m_col
    v_ptrs = v_ptr + rows[:, None] * stride_v + col[None, :] * stride_v_col
    p_ptrs = p_ptr + rows[:, None] * stride_p + col[None, :] * stride_p_col
    m = tl.load(m_ptrs, mask=mask, other=0.0).to(tl.float32)
    v = tl.load(v_ptrs, mask=mask, other=0.0).to(tl.float32)
    p = tl.load(p_ptrs, mask=mask, other=0.0).to(tl.float32)
    m = m + (g - m) * (1.0 - beta1)
    v = v + (g * g - v) * (1.0 - beta2)
    p = p - step_size * (m / (tl.sqrt(v) + eps))
    if PROJECT:
        norm = tl.sqrt(tl.sum(p * p, axis=1))
        p = p / tl.maximum(norm, EPS)[:, None]
    tl.store(m_ptrs, m.to(m_ptr.dtype.element_ty), mask=mask)
    tl.store(v_ptrs, v.to(v_ptr.dtype.element_ty), mask=mask)
    tl.store(p_ptrs, p.to(p_ptr.dtype.element_ty), mask=mask)


def _adam(param, exp_avg, exp_avg_sq, idx, grad, step_size: float, beta1: float, beta2: float, eps: float,
          project: bool, traced: bool) -> None:
    n_idx = idx.shape[0]
    if n_idx == 0:
        return
    d = param.shape[1]
    block_b, block_d, num_warps = row_block(d, n_idx, param.element_size())
    (launchable(_adam_rows_kernel) if traced else _adam_rows_kernel)[(cdiv(n_idx, block_b),)](
        param,
        exp_avg,
        exp_avg_sq,
        idx,
        grad,
        n_idx,
        d,
        param.stride(0),
        exp_avg.stride(0),
        exp_avg_sq.stride(0),
        grad.stride(0),
        param.stride(1),
        exp_avg.stride(1),
        exp_avg_sq.stride(1),
        grad.stride(1),
        step_size,
        beta1,
        beta2,
        eps,
        PROJECT=project,
        BLOCK_B=block_b,
        BLOCK_D=block_d,
        num_warps=num_warps,
    )


@triton_op("glico_kernels::adam_rows_", mutates_args={"param", "exp_avg", "exp_avg_sq"})
def adam_rows_(
    param: torch.Tensor,
    exp_avg: torch.Tensor,
    exp_avg_sq: torch.Tensor,
    idx: torch.Tensor,
    grad: torch.Tensor,
    step_size: float,
    beta1: float,
    beta2: float,
    eps: float,
    project: bool,
) -> None:
    """Triton fused lazy-Adam step + projection of rows ``idx`` (validated by ``kernels.adam_rows_``;
    ``step_size`` = lr·√(1 − β₂^step)/(1 − β₁^step))."""
    _adam(param, exp_avg, exp_avg_sq, idx, grad, step_size, beta1, beta2, eps, project, traced=True)


def adam_rows_direct(param, exp_avg, exp_avg_sq, idx, grad, step_size, beta1, beta2, eps, project) -> None:
    """:func:`adam_rows_` without the ``torch.library`` dispatcher (eager fast path)."""
    _adam(param, exp_avg, exp_avg_sq, idx, grad, step_size, beta1, beta2, eps, project, traced=False)
