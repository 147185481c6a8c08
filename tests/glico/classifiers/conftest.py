"""Model initialisation draws from torch's global generator: seed it so every test is reproducible."""
import pytest
import torch


@pytest.fixture(autouse=True)
def _seed_global_rng():
    torch.manual_seed(0)
