"""Pieces shared by the Triton kernels: the in-register slerp of a tile of rows, a plain-Triton
``atan2`` (Triton's interpreter has no ``atan2``/``acos``/libdevice), and launch helpers.

All arithmetic is float32: tiles are loaded in their storage dtype and cast to float32 at once
(the interpreter cannot do bfloat16 arithmetic, and float32 is the reference's precision anyway).
"""
from functools import lru_cache

import torch
import triton
import triton.language as tl

from . import reference

# Numbers shared with the reference, as compile-time constants of the kernels.
EPS: tl.constexpr = tl.constexpr(reference.EPS)
ANTIPODAL_TOL: tl.constexpr = tl.constexpr(reference.ANTIPODAL_TOL)
SMALL_ANGLE: tl.constexpr = tl.constexpr(reference.SMALL_ANGLE)
RENORM_BELOW: tl.constexpr = tl.constexpr(0.5)
PI: tl.constexpr = tl.constexpr(3.141592653589793)
HALF_PI: tl.constexpr = tl.constexpr(1.5707963267948966)
QUARTER_PI: tl.constexpr = tl.constexpr(0.7853981633974483)
TAN_PI_8: tl.constexpr = tl.constexpr(0.41421356237309503)

# atan(x) = x · P(x²) on |x| ≤ tan(π/8): least-squares fit (float64, 2000 Chebyshev nodes in x²)
# of atan(x)/x by a degree-5 polynomial in x². Evaluated in float32 the error is ≤ 3e-8 absolute
# (≈ 1.5 ulp); tests/kernels/test_kernel_atan.py checks it against math.atan2 on a dense grid.
ATAN_C0: tl.constexpr = tl.constexpr(0.9999999993921003)
ATAN_C1: tl.constexpr = tl.constexpr(-0.33333307493429604)
ATAN_C2: tl.constexpr = tl.constexpr(0.19998210797563115)
ATAN_C3: tl.constexpr = tl.constexpr(-0.1423998291869857)
ATAN_C4: tl.constexpr = tl.constexpr(0.10572814475387406)
ATAN_C5: tl.constexpr = tl.constexpr(-0.06033241700828995)

MAX_D = 8192
"""Largest row length the Triton kernels take (a row is held in registers); ``auto`` uses the
reference beyond it."""


@triton.jit
def atan2_nonneg(y, x):
    """``atan2(y, x)`` for ``y, x ≥ 0`` (result in ``[0, π/2]``; ``(0, 0)`` gives 0).

    Range reduction: swap so that ``r = min/max ∈ [0, 1]`` (``atan2 = π/2 − atan(r)`` if swapped);
    for ``r > tan(π/8)`` use ``atan(r) = π/4 + atan((r − 1)/(r + 1))``, leaving ``|z| ≤ tan(π/8)``
    for the polynomial.
    """
    swap = y > x
    num = tl.where(swap, x, y)
    den = tl.where(swap, y, x)
    r = num / tl.maximum(den, 1e-30)
    big = r > TAN_PI_8
    z = tl.where(big, (r - 1.0) / (r + 1.0), r)
    z2 = z * z
    p = ATAN_C5
    p = p * z2 + ATAN_C4
    p = p * z2 + ATAN_C3
    p = p * z2 + ATAN_C2
    p = p * z2 + ATAN_C1
    p = p * z2 + ATAN_C0
    at = z * p
    at = tl.where(big, at + QUARTER_PI, at)
    return tl.where(swap, HALF_PI - at, at)


@triton.jit
def slerp_tile(a, b, t, col, col_ok):
    """Slerp of a float32 tile of rows, as ``reference.slerp`` defines it.

    Per element only multiplies and adds: the norms become per-row reciprocals, and the result is
    ``w_a·â + w_b·b̂`` with per-row weights. The final renormalisation (the identity in exact
    arithmetic for unit endpoints) and the antipodal rule run only for tiles holding a row with
    ``‖â + b̂‖ < RENORM_BELOW`` (within ~29° of antipodal) or a zero endpoint: elsewhere the weights' rounding keeps the norm within
    ~4e-7 of 1, and skipping the extra reduction keeps the kernel memory-bound.

    Args:
        a, b: ``[BLOCK_B, BLOCK_D]`` float32, padded columns (and padded rows) zero.
        t: ``[BLOCK_B]`` float32.
        col: ``[BLOCK_D]`` column ids; ``col_ok``: ``[BLOCK_D]`` mask of real columns.

    Returns:
        ``[BLOCK_B, BLOCK_D]`` float32 unit rows (padded columns zero).
    """
    ra = 1.0 / tl.maximum(tl.sqrt(tl.sum(a * a, axis=1)), EPS)
    rb = 1.0 / tl.maximum(tl.sqrt(tl.sum(b * b, axis=1)), EPS)
    a_hat = a * ra[:, None]
    b_hat = b * rb[:, None]
    diff = a_hat - b_hat
    summ = a_hat + b_hat
    u2 = tl.sum(diff * diff, axis=1)
    v2 = tl.sum(summ * summ, axis=1)
    u = tl.sqrt(u2)
    v = tl.sqrt(v2)
    theta = 2.0 * atan2_nonneg(u, v)

    # sin θ = 2 sin(θ/2) cos(θ/2) = 2uv/(u² + v²): full relative precision near 0 and π.
    sin_theta = 2.0 * u * v / tl.maximum(u2 + v2, EPS)
    small = theta < SMALL_ANGLE
    inv_sin = 1.0 / tl.where(small | (v < ANTIPODAL_TOL), 1.0, sin_theta)
    w_a = tl.where(small, 1.0 - t, tl.sin((1.0 - t) * theta) * inv_sin)
    w_b = tl.where(small, t, tl.sin(t * theta) * inv_sin)
    out = w_a[:, None] * a_hat + w_b[:, None] * b_hat

    # u² + v² = 2(‖â‖² + ‖b̂‖²) is 4 for unit endpoints and at most 2 when one is a zero row: then
    # w_a·â + w_b·b̂ is not a unit row and needs the renormalisation too.
    if tl.sum(((v < RENORM_BELOW) | (u2 + v2 < 3.0)).to(tl.int32), axis=0) > 0:
        # Antipodal rows: turn â towards e_k, k = argmin |â_k| (sign-independent, hence symmetric).
        antipodal = v < ANTIPODAL_TOL
        k = tl.argmin(tl.where(col_ok[None, :], tl.abs(a_hat), float("inf")), axis=1)
        onehot = col[None, :] == k[:, None]
        a_k = tl.sum(tl.where(onehot, a_hat, 0.0), axis=1)
        p = tl.where(onehot, 1.0, 0.0) - a_k[:, None] * a_hat
        p = tl.where(col_ok[None, :], p, 0.0)
        p_norm2 = tl.sum(p * p, axis=1)
        p = p * (1.0 / tl.sqrt(tl.maximum(p_norm2, EPS * EPS)))[:, None]
        angle = t * theta
        turned = tl.cos(angle)[:, None] * a_hat + tl.sin(angle)[:, None] * p
        # d = 1 (no orthogonal direction): the nearer endpoint, ties (t = 1/2) to the positive one.
        pick_b = (t > 0.5) | ((t == 0.5) & (tl.sum(b_hat, axis=1) > tl.sum(a_hat, axis=1)))
        nearer = tl.where(pick_b[:, None], b_hat, a_hat)
        turned = tl.where((p_norm2 < 0.25)[:, None], nearer, turned)
        out = tl.where(antipodal[:, None], turned, out)
        out = out * (1.0 / tl.maximum(tl.sqrt(tl.sum(out * out, axis=1)), EPS))[:, None]
    return out


@triton.jit
def _atan2_kernel(y_ptr, x_ptr, out_ptr, n, BLOCK: tl.constexpr):
    """Elementwise ``atan2_nonneg`` (used by the tests of the polynomial)."""
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    y = tl.load(y_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    x = tl.load(x_ptr + offs, mask=mask, other=1.0).to(tl.float32)
    tl.store(out_ptr + offs, atan2_nonneg(y, x), mask=mask)


def atan2(y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``atan2(y, x)`` for ``y, x ≥ 0`` with the kernels' polynomial (float32 out); for tests.

    Args:
        y, x: tensors of one shape, non-negative.
    """
    y32 = y.float().contiguous().reshape(-1)
    x32 = x.float().contiguous().reshape(-1)
    out = torch.empty_like(y32)
    n = y32.numel()
    block = 1 << 16 if interpreting() else 1024
    _atan2_kernel[(cdiv(n, block),)](y32, x32, out, n, BLOCK=block)
    return out.reshape(y.shape)


_INTERPRETING = type(_atan2_kernel).__name__ == "InterpretedFunction"


def interpreting() -> bool:
    """Whether the kernels were built by Triton's interpreter (``TRITON_INTERPRET=1`` at import)."""
    return _INTERPRETING


# Host-side integer helpers in plain Python: in Triton 3.8 ``triton.cdiv`` and
# ``triton.next_power_of_2`` are constexpr functions whose host calls cost microseconds each
# (measured on the CPU box), a noticeable share of a launch at the training batch. ``cdiv`` also
# works on torch SymInts (compile traces a symbolic batch).
def cdiv(n, block: int):
    """``ceil(n / block)`` for ``n ≥ 0``."""
    return (n + block - 1) // block


def next_pow2(n: int) -> int:
    """The smallest power of two ``≥ n`` (1 for ``n ≤ 1``)."""
    n = int(n)
    return 1 << (n - 1).bit_length() if n > 1 else 1


def launchable(kernel):
    """``torch.library.wrap_triton(kernel)`` where possible (so ``torch.compile``/export trace the
    launch), else the kernel itself (older torch refuses interpreted kernels)."""
    try:
        return torch.library.wrap_triton(kernel)
    except RuntimeError:
        return kernel


def row_block(d: int, rows: int, elem_bytes: int = 4) -> tuple[int, int, int]:
    """``(BLOCK_B, BLOCK_D, num_warps)`` for a kernel that holds ``BLOCK_B`` rows of ``d`` in
    registers.

    On a GPU a program holds about 1024 elements of each input with 4 warps: the best setting of a
    sweep on an H200 at B = 1M for float32 and bfloat16, d = 128 and 512 (``bench/tune_kernels.py``).
    ``rows`` and ``elem_bytes`` are not consulted there, so the choice stays static when
    ``torch.compile`` traces a symbolic batch. Under the interpreter each program costs about a
    millisecond whatever its size, so a launch uses few, large programs.
    """
    if _INTERPRETING:
        block_d = max(next_pow2(d), 2)
        block_b = min(next_pow2(max(int(rows), 1)), max(1, (1 << 16) // block_d))
        return block_b, block_d, 4
    return _gpu_block(int(d))  # BLOCK_D is a compile-time constant anyway; int() also unwraps a SymInt


@lru_cache(maxsize=1024)
def _gpu_block(d: int) -> tuple[int, int, int]:
    block_d = max(next_pow2(d), 2)
    block_b = max(1, min(64, 1024 // block_d))
    num_warps = 4 if block_d <= 4096 else 8
    return block_b, block_d, num_warps
