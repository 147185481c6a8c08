"""Shared helpers for the kernel tests: seeded inputs, hypothesis strategies, backend lists."""
from __future__ import annotations

import pytest
import torch
from hypothesis import strategies as st

DTYPES = (torch.float32, torch.float16, torch.bfloat16)

# Under the interpreter every Triton launch costs tens of milliseconds: keep suites small.
EXAMPLES = 20

dtypes = st.sampled_from(DTYPES)
seeds = st.integers(0, 2**31 - 1)
batches = st.integers(1, 48)
dims = st.one_of(st.sampled_from([1, 2, 3, 64, 128]), st.integers(1, 140))
ts = st.floats(0.0, 1.0, allow_nan=False, width=32)


def triton_usable() -> bool:
    """Triton runs here: on CUDA, or on CPU through the interpreter (tests/conftest.py turns it on)."""
    try:
        from kernels.triton_common import interpreting
    except ImportError:
        return False
    return torch.cuda.is_available() or interpreting()


requires_triton = pytest.mark.skipif(not triton_usable(), reason="triton is not installed")

# The backends every property is checked on: the reference, and Triton (interpreted on CPU).
BACKENDS = ["torch", pytest.param("triton", marks=requires_triton)]


def device() -> torch.device:
    """Where the Triton-vs-reference tests run: CUDA when present, else CPU (interpreter)."""
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


def rows(seed: int, batch: int, d: int, dtype: torch.dtype, layout: str = "contiguous") -> torch.Tensor:
    """A seeded ``(batch, d)`` normal matrix in ``dtype`` with the given memory layout.

    layout: ``"contiguous"``, ``"strided"`` (every other column of a wider matrix) or
    ``"transposed"`` (a transposed ``(d, batch)`` matrix).
    """
    g = torch.Generator().manual_seed(seed)
    if layout == "contiguous":
        x = torch.randn(batch, d, generator=g)
    elif layout == "strided":
        x = torch.randn(batch, 2 * d, generator=g)[:, ::2]
    elif layout == "transposed":
        x = torch.randn(d, batch, generator=g).t()
    else:
        raise ValueError(layout)
    return x.to(dtype=dtype, device=device())


layouts = st.sampled_from(["contiguous", "strided", "transposed"])


def unit(x: torch.Tensor) -> torch.Tensor:
    """Rows of ``x`` normalised in float32 (what slerp's endpoints are)."""
    x32 = x.float()
    return x32 / x32.norm(dim=1, keepdim=True).clamp_min(1e-12)


# Pairs closer than this to antipodal (π − θ, radians) are left to the antipodal tests when two float32
# implementations are compared: there slerp's plane is known only to ~1e-7/(π − θ) and the antipodal
# rule switches on at ‖â + b̂‖ = 1e-6, so two correct implementations may differ by O(1).
NEAR_ANTIPODAL = 1e-3


def assert_slerp_close(got: torch.Tensor, want: torch.Tensor, a: torch.Tensor, b: torch.Tensor,
                       dtype: torch.dtype) -> None:
    """Rows of two slerp implementations agree to the dtype's tolerance scaled by slerp's condition
    number: ``atol / sin θ`` on the far side of π/2 (the weights divide by sin θ there; measured by
    ``bench/slerp_accuracy.py``), the plain ``atol`` elsewhere. Rows within ``NEAR_ANTIPODAL`` of
    antipodal are skipped (see above). ``a``/``b`` are the inputs the rows came from."""
    from tolerances import tol

    a64, b64 = a.double(), b.double()
    a64 = a64 / a64.norm(dim=1, keepdim=True).clamp_min(1e-300)
    b64 = b64 / b64.norm(dim=1, keepdim=True).clamp_min(1e-300)
    theta = 2 * torch.atan2((a64 - b64).norm(dim=1), (a64 + b64).norm(dim=1))
    cond = torch.where(theta > torch.pi / 2, 1 / torch.sin(theta).clamp_min(1e-300), torch.ones_like(theta))
    keep = (torch.pi - theta) >= NEAR_ANTIPODAL
    g, w = got.double(), want.double()
    limit = tol(dtype)["atol"] * cond[:, None] + tol(dtype)["rtol"] * w.abs()
    bad = ((g - w).abs() > limit) & keep[:, None]
    assert not bad.any(), (
        f"{int(bad.any(1).sum())} row(s) differ beyond tolerance; worst |diff| {float((g - w).abs()[bad].max()):.3g}"
    )
