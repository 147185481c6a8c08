"""CUB-200-2011 in its released folder format.

``CUB_200_2011/`` holds ``images.txt`` (``<image id> <relative path>``), ``image_class_labels.txt``
(``<image id> <class id, 1-based>``), ``train_test_split.txt`` (``<image id> <1 = train, 0 = test>``),
``classes.txt`` (``<class id> <name>``; optional here: without it the names come from the image folders) and
``images/<class folder>/<file>.jpg``. The official split (5 994 train, 5 794 test, 200 classes) is used; images
are in image-id order within each split. Bounding boxes and parts are not used.

The photos have different sizes, so ``image_size`` is needed in practice (the paper uses 224 or 256).
"""
from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import torch

from glico.data.archives import default_cache_dir
from glico.data.decode import (
    check_image_size,
    decode_files,
    decoded_cache_path,
    fingerprint_files,
    load_decoded,
    save_decoded,
    to_float,
)
from glico.data.types import DataError, Dataset, ImageSet, MissingDataError

log = logging.getLogger(__name__)

_REQUIRED = ("images.txt", "image_class_labels.txt", "train_test_split.txt")


def _find_root(path: Path) -> Path:
    for candidate in (path, path / "CUB_200_2011"):
        if all((candidate / f).is_file() for f in _REQUIRED) and (candidate / "images").is_dir():
            return candidate
    if not path.exists():
        raise MissingDataError(
            f"CUB folder {path} does not exist; expected the released CUB_200_2011/ folder (or its parent)"
        )
    present = sorted(p.name for p in path.iterdir())[:10]
    raise MissingDataError(
        f"{path} is not a CUB-200-2011 folder: expected {', '.join(_REQUIRED)} and images/ in it or in "
        f"{path}/CUB_200_2011/; found {present}"
    )


def _read_table(path: Path) -> dict[int, str]:
    table: dict[int, str] = {}
    text = path.read_text(encoding="utf-8")
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        parts = line.strip().split(maxsplit=1)
        if len(parts) != 2 or not parts[0].isdigit():
            raise DataError(f"{path}, line {lineno}: expected '<id> <value>'; got {line!r}")
        key = int(parts[0])
        if key in table:
            raise DataError(f"{path}, line {lineno}: id {key} appears twice")
        table[key] = parts[1].strip()
    if not table:
        raise DataError(f"{path} is empty")
    return table


def load_cub(root: str | Path, *, image_size: int | None = None, cache_root: Path | None = None,
             cache_decoded: bool = True) -> Dataset:
    """Load CUB-200-2011 with its official train/test split into memory.

    Args:
        root: the ``CUB_200_2011/`` folder, or the folder that contains it.
        image_size: resize each image's shorter side to this (bilinear, antialiased) and centre-crop a square;
            e.g. 224 or 256. None keeps the files' size, which then must be the same for all (not true of the
            real data set).
        cache_root: where the decoded tensors are cached (default
            :func:`~glico.data.archives.default_cache_dir`).
        cache_decoded: read and write the decoded-tensor cache (keyed by the files and ``image_size``).

    Returns:
        A :class:`Dataset` named ``"cub200"``; class names as in ``classes.txt`` (e.g.
        ``"001.Black_footed_Albatross"``), labels = class id - 1. Memory: at 224 px, float32, the 11 788
        images take about 7 GB.

    Raises:
        MissingDataError: the folder or one of its index files is missing, or an image listed is missing.
        DataError: malformed index files (ids that disagree, class ids out of range), unreadable images,
            mixed sizes without ``image_size``.

    Shape:
        train.images: (N_train, 3, S, S); test.images: (N_test, 3, S, S)
    """
    image_size = check_image_size(image_size)
    root = _find_root(Path(root).expanduser())
    images = _read_table(root / "images.txt")
    labels = _read_table(root / "image_class_labels.txt")
    split = _read_table(root / "train_test_split.txt")
    if not (images.keys() == labels.keys() == split.keys()):
        raise DataError(
            f"{root}: images.txt, image_class_labels.txt and train_test_split.txt must list the same image ids "
            f"(they list {len(images)}, {len(labels)} and {len(split)})"
        )
    bad = [(i, v) for i, v in labels.items() if not v.isdigit() or int(v) < 1]
    if bad:
        raise DataError(f"{root / 'image_class_labels.txt'}: class ids must be integers >= 1; got {bad[:5]}")
    bad = [(i, v) for i, v in split.items() if v not in ("0", "1")]
    if bad:
        raise DataError(f"{root / 'train_test_split.txt'}: the flag must be 1 (train) or 0 (test); got {bad[:5]}")
    num_classes = max(int(v) for v in labels.values())
    if (root / "classes.txt").is_file():
        classes = _read_table(root / "classes.txt")
        if sorted(classes) != list(range(1, len(classes) + 1)) or len(classes) < num_classes:
            raise DataError(
                f"{root / 'classes.txt'} must number its classes 1..C and cover every class id used "
                f"(up to {num_classes}); it lists ids {sorted(classes)[:5]}..."
            )
        class_names = tuple(classes[c] for c in range(1, len(classes) + 1))
    else:
        by_class = {int(labels[i]): Path(images[i]).parent.name for i in images}
        if sorted(by_class) != list(range(1, num_classes + 1)):
            raise DataError(f"{root}: without classes.txt every class id 1..{num_classes} must have images")
        class_names = tuple(by_class[c] for c in range(1, num_classes + 1))

    ids = {flag: sorted(i for i in images if split[i] == flag) for flag in ("1", "0")}
    for flag, what in (("1", "train"), ("0", "test")):
        if not ids[flag]:
            raise DataError(f"{root / 'train_test_split.txt'} marks no image as {what}")
    paths = {flag: [root / "images" / images[i] for i in ids[flag]] for flag in ids}
    missing = [p for ps in paths.values() for p in ps if not p.is_file()]
    if missing:
        raise MissingDataError(
            f"{root}: {len(missing)} images listed in images.txt are missing, e.g. {missing[0]}"
        )
    label_t = {flag: torch.tensor([int(labels[i]) - 1 for i in ids[flag]], dtype=torch.int64) for flag in ids}

    cache_root = Path(cache_root).expanduser() if cache_root is not None else default_cache_dir()
    cache_file = None
    if cache_decoded:
        index = hashlib.sha256(b"".join((root / f).read_bytes() for f in _REQUIRED)).hexdigest()
        key = fingerprint_files(root, paths["1"] + paths["0"], extra=f"cub\0{index}\0{class_names}")
        cache_file = decoded_cache_path(cache_root, "cub200", key, image_size)
        cached = load_decoded(cache_file)
        if cached is not None:
            return Dataset(cached[0], cached[1], "cub200")

    log.info("decoding %d train and %d test CUB images from %s", len(paths["1"]), len(paths["0"]), root)
    train_u8 = decode_files(paths["1"], image_size, desc="cub200 train")
    test_u8 = decode_files(paths["0"], image_size, desc="cub200 test")
    if train_u8.shape[1:] != test_u8.shape[1:]:
        raise DataError(f"{root}: train and test images differ in size; pass image_size=N to bring both to NxN")
    if cache_file is not None:
        save_decoded(cache_file, train_u8, label_t["1"], test_u8, label_t["0"], class_names)
    return Dataset(ImageSet(to_float(train_u8), label_t["1"], class_names),
                   ImageSet(to_float(test_u8), label_t["0"], class_names), "cub200")
