"""CIFAR-10 and CIFAR-100 in torchvision's on-disk format (the "python version" of the original release).

``<root>/cifar-10-batches-py/{data_batch_1..5, test_batch, batches.meta}`` and
``<root>/cifar-100-python/{train, test, meta}``: pickled dicts with ``data`` (uint8, (N, 3072), channel-major
32x32 RGB) and ``labels`` (CIFAR-10) or ``fine_labels`` (CIFAR-100; this loader uses the 100 fine classes).

The files are read here rather than through ``torchvision.datasets.CIFAR10``: torchvision insists on the
release's MD5 sums (so hand-made or re-packed copies fail) and unpickles with the full, code-executing
unpickler. This reader accepts only the few NumPy constructors these files use and refuses anything else, so a
tampered file cannot run code. torchvision is used only to download, and only when asked.
"""
from __future__ import annotations

import logging
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from glico.data.decode import check_image_size, resize_center_crop, to_float
from glico.data.types import DataError, Dataset, ImageSet, MissingDataError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class _CifarLayout:
    name: str
    folder: str
    train: tuple[str, ...]
    test: tuple[str, ...]
    meta: str
    label_key: str
    names_key: str
    num_classes: int


CIFAR10 = _CifarLayout("cifar10", "cifar-10-batches-py", tuple(f"data_batch_{i}" for i in range(1, 6)),
                       ("test_batch",), "batches.meta", "labels", "label_names", 10)
CIFAR100 = _CifarLayout("cifar100", "cifar-100-python", ("train",), ("test",), "meta", "fine_labels",
                        "fine_label_names", 100)

_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
    ("numpy", "ndarray"), ("numpy", "dtype"),
    ("_codecs", "encode"),  # how protocol-2 pickles written by Python 3 store bytes
}


class _ArraysOnlyUnpickler(pickle.Unpickler):
    """Unpickles plain containers and NumPy arrays; refuses every other global (so no code runs)."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _ALLOWED_GLOBALS:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}: only NumPy arrays are expected")
        if module.startswith("numpy.core"):  # NumPy 2 moved numpy.core to numpy._core
            try:
                return super().find_class(module.replace("numpy.core", "numpy._core"), name)
            except (ImportError, AttributeError):
                pass
        return super().find_class(module, name)


def _read_pickle(path: Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as f:
            # latin1: the release was pickled by Python 2; its byte strings (array data) decode losslessly.
            obj = _ArraysOnlyUnpickler(f, encoding="latin1").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, ImportError,
            IndexError, KeyError) as exc:
        raise DataError(f"{path} is not a readable CIFAR batch file ({type(exc).__name__}: {exc})") from exc
    if not isinstance(obj, dict):
        raise DataError(f"{path} is not a CIFAR batch file: it holds a {type(obj).__name__}, not a dict")
    return {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in obj.items()}


def _read_split(folder: Path, files: tuple[str, ...], layout: _CifarLayout) -> tuple[np.ndarray, np.ndarray]:
    datas, labels = [], []
    for fname in files:
        path = folder / fname
        batch = _read_pickle(path)
        if "data" not in batch or layout.label_key not in batch:
            raise DataError(
                f"{path} is not a {layout.name} batch: it needs keys 'data' and {layout.label_key!r}; "
                f"found {sorted(batch)[:10]}"
            )
        data = np.asarray(batch["data"])
        lab = np.asarray(batch[layout.label_key], dtype=np.int64)
        if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
            raise DataError(
                f"{path}: 'data' must be uint8 of shape (N, 3072); got {data.dtype} {data.shape}"
            )
        if lab.shape != (data.shape[0],):
            raise DataError(f"{path}: {data.shape[0]} images but {lab.size} labels")
        if lab.size and (lab.min() < 0 or lab.max() >= layout.num_classes):
            raise DataError(f"{path}: labels must be in 0..{layout.num_classes - 1}; got {lab.min()}..{lab.max()}")
        datas.append(data)
        labels.append(lab)
    return np.concatenate(datas).reshape(-1, 3, 32, 32), np.concatenate(labels)


def _download(root: Path, layout: _CifarLayout) -> None:
    import torchvision.datasets as tvd

    cls = tvd.CIFAR10 if layout is CIFAR10 else tvd.CIFAR100
    log.info("downloading %s into %s", layout.name, root)
    cls(str(root), train=True, download=True)


def _to_images(data: np.ndarray, image_size: int | None) -> torch.Tensor:
    u8 = torch.from_numpy(np.ascontiguousarray(data))
    if image_size is not None and image_size != 32:
        u8 = torch.cat([resize_center_crop(chunk, image_size) for chunk in u8.split(2048)])
    return to_float(u8)


def _load_cifar(root: str | Path, layout: _CifarLayout, image_size: int | None, download: bool) -> Dataset:
    image_size = check_image_size(image_size)
    root = Path(root).expanduser()
    if root.name == layout.folder:  # the user pointed at the inner folder itself
        root = root.parent
    folder = root / layout.folder
    if not folder.is_dir():
        if download:
            root.mkdir(parents=True, exist_ok=True)
            _download(root, layout)
        else:
            where = f"{root} does not exist" if not root.exists() else f"{root} has no {layout.folder}/ folder"
            raise MissingDataError(
                f"{layout.name} not found: {where}. Expected torchvision's format, {root}/{layout.folder}/ "
                f"with {', '.join(layout.train + layout.test + (layout.meta,))}. Point at the folder that "
                f"contains {layout.folder}/, or pass download=True (CLI: --download) to fetch it (~170 MB)"
            )
    missing = [f for f in layout.train + layout.test + (layout.meta,) if not (folder / f).is_file()]
    if missing:
        raise MissingDataError(f"{folder} is incomplete: missing {missing}; expected torchvision's {layout.name} files")
    meta = _read_pickle(folder / layout.meta)
    names = meta.get(layout.names_key)
    if not isinstance(names, (list, tuple)) or len(names) != layout.num_classes:
        raise DataError(
            f"{folder / layout.meta}: {layout.names_key!r} must list {layout.num_classes} class names; "
            f"got {type(names).__name__}{'' if names is None else f' of length {len(names)}'}"
        )
    class_names = tuple(n.decode() if isinstance(n, bytes) else str(n) for n in names)
    sets = []
    for files in (layout.train, layout.test):
        data, labels = _read_split(folder, files, layout)
        sets.append(ImageSet(_to_images(data, image_size), torch.from_numpy(labels), class_names))
    log.info("loaded %s from %s: %d train, %d test images", layout.name, folder, len(sets[0]), len(sets[1]))
    return Dataset(sets[0], sets[1], layout.name)


def load_cifar10(root: str | Path, *, image_size: int | None = None, download: bool = False) -> Dataset:
    """Load CIFAR-10 (50 000 train, 10 000 test, 10 classes) from torchvision's on-disk format.

    Args:
        root: the folder that contains ``cifar-10-batches-py/`` (or that folder itself).
        image_size: resize (shorter side, bilinear, antialiased) and centre-crop to this side; None keeps 32.
        download: fetch the data with torchvision when it is not there. Never done unless asked.

    Returns:
        A :class:`Dataset` named ``"cifar10"`` with float images in [0, 1].

    Raises:
        MissingDataError: the files are not there (and ``download`` is False).
        DataError: a file that is not a CIFAR batch (including pickles that try to load anything but arrays).

    Shape:
        train.images: (50000, 3, S, S); test.images: (10000, 3, S, S); S = image_size or 32
    """
    return _load_cifar(root, CIFAR10, image_size, download)


def load_cifar100(root: str | Path, *, image_size: int | None = None, download: bool = False) -> Dataset:
    """Load CIFAR-100 (50 000 train, 10 000 test, the 100 fine classes) from torchvision's on-disk format.

    Args:
        root: the folder that contains ``cifar-100-python/`` (or that folder itself).
        image_size: resize (shorter side, bilinear, antialiased) and centre-crop to this side; None keeps 32.
        download: fetch the data with torchvision when it is not there. Never done unless asked.

    Returns:
        A :class:`Dataset` named ``"cifar100"`` with float images in [0, 1].

    Raises:
        MissingDataError: the files are not there (and ``download`` is False).
        DataError: a file that is not a CIFAR batch.

    Shape:
        train.images: (50000, 3, S, S); test.images: (10000, 3, S, S); S = image_size or 32
    """
    return _load_cifar(root, CIFAR100, image_size, download)
