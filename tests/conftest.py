"""Test-wide set-up.

Triton's interpreter must be switched on before triton is first imported, so that on a machine
without CUDA the Triton kernels still run (on CPU tensors) and CI exercises their logic.
"""
import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402


@pytest.fixture
def gen() -> torch.Generator:
    """A seeded CPU generator: every random tensor in a test comes from one of these."""
    g = torch.Generator()
    g.manual_seed(0)
    return g


# The suite's tensors are tiny: intra-op threads gain nothing on them, and on a loaded machine
# OpenMP threads waiting on each other made small convolutions many times slower.
torch.set_num_threads(1)
