"""Triton in-place re-projection of selected rows of a code table onto the unit sphere.

Math (reference: ``reference.project_rows_``): for every id ``r`` in ``idx``,
``codes[r] ← codes[r] / max(‖codes[r]‖, EPS)``, the norm taken in float32. One program handles
``BLOCK_B`` ids; only those rows are read and written, so the cost is O(len(idx)·d) whatever the
table's size. Duplicate ids are harmless: every copy computes the unit vector of the same row (a
copy that reads a row already written re-normalises a unit vector, a no-op up to rounding).
The update is an in-place table write and records no autograd history.
"""
import torch
import triton
import triton.language as tl
from torch.library import triton_op

from .triton_common import EPS, launchable, row_block


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
    (launchable(_project_rows_kernel) if traced else _project_rows_kernel)[(triton.cdiv(n_idx, block_b),)](
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
