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
