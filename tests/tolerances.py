"""The one tolerance table of the test-suite, keyed by dtype.

Every comparison against an fp32 reference uses these numbers. They are set by what the dtype can
represent (a few ulps at unit scale), never loosened to turn a test green.
"""
import torch

TOL = {
    torch.float32: dict(atol=1e-5, rtol=1e-5),
    torch.float16: dict(atol=2e-3, rtol=2e-3),
    torch.bfloat16: dict(atol=1.6e-2, rtol=1.6e-2),
    torch.float64: dict(atol=1e-10, rtol=1e-10),
}


def tol(dtype: torch.dtype) -> dict:
    """Keyword arguments for ``torch.testing.assert_close`` for results stored in ``dtype``."""
    return TOL[dtype]
