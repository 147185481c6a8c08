"""Fixtures for the data tests; the builders themselves are in data_builders.py."""
from __future__ import annotations

from pathlib import Path

import pytest
from data_builders import build_image_folder


@pytest.fixture
def cache(tmp_path: Path) -> Path:
    """A private cache root, so no test touches ~/.cache."""
    return tmp_path / "cache"


@pytest.fixture
def image_folder(tmp_path: Path) -> Path:
    """A PNG ImageFolder: classes ant (5/3), cat (4/2), dog (3/2) train/test images, 8x8."""
    return build_image_folder(tmp_path / "imgs")


@pytest.fixture(autouse=True)
def _private_default_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Point the default cache at tmp_path too, so a test that forgets root_cache can't write to ~/.cache."""
    monkeypatch.setenv("GLICO_CACHE_DIR", str(tmp_path / "default-cache"))
