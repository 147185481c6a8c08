"""Set-up for the loss tests."""
import urllib.error

import pytest
import torch


@pytest.fixture(scope="module", autouse=True)
def one_intra_op_thread():
    """Run these small convolutions on one thread, restoring the setting afterwards.

    The tensors here are tiny, so intra-op parallelism gains nothing, while on a loaded 2-core machine
    (other test processes running) OpenMP threads waiting on each other made VGG/LPIPS calls ~50x slower.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def hub_dir(tmp_path):
    """An empty torch hub cache (where torchvision keeps downloaded weights) for the duration of a test."""
    old = torch.hub.get_dir()
    torch.hub.set_dir(str(tmp_path / "hub"))
    yield tmp_path / "hub"
    torch.hub.set_dir(old)


@pytest.fixture
def no_download(monkeypatch):
    """Every torch.hub download fails at once, as it does offline: tests never touch the network."""

    def fail(*args, **kwargs):
        raise urllib.error.URLError("network disabled in tests")

    monkeypatch.setattr(torch.hub, "download_url_to_file", fail)
    return fail
