"""ImageFolder data sets with train/ and test/ subfolders, or an archive of one.

Layout: ``<root>/train/<class>/<image>`` and ``<root>/test/<class>/<image>`` (images may sit in deeper
subfolders of a class folder, as in torchvision's ImageFolder). Classes are the train/ subfolder names, sorted;
test/ must have the same ones. Images within a class are taken in sorted path order, so indices (and therefore
seeded splits) are the same on every machine. ``<root>`` may also be nested inside single folders, as in
archives that hold one top-level folder (``cifar10/{train,test}/...``).
"""
from __future__ import annotations

import logging
import os
from pathlib import Path

import torch

from glico.data.archives import (
    ARCHIVE_SUFFIXES,
    archive_cache_key,
    archive_kind,
    archive_stem,
    default_cache_dir,
    extract_archive,
)
from glico.data.decode import (
    IMAGE_SUFFIXES,
    check_image_size,
    decode_files,
    decoded_cache_path,
    fingerprint_files,
    is_image_name,
    load_decoded,
    save_decoded,
    to_float,
)
from glico.data.types import DataError, Dataset, ImageSet, MissingDataError

log = logging.getLogger(__name__)

_IGNORED_DIRS = frozenset({"__MACOSX"})
_MAX_NESTING = 4
# File contents kept in memory while extracting an archive, to decode without reading the files back.
_PRELOAD_BYTES = 2 << 30


def _visible_entries(folder: Path) -> list[os.DirEntry]:
    with os.scandir(folder) as it:
        return sorted((e for e in it if not e.name.startswith(".") and e.name not in _IGNORED_DIRS),
                      key=lambda e: e.name)


def find_split_root(folder: Path, origin: Path | None = None) -> Path:
    """The folder holding ``train/`` and ``test/``: ``folder`` itself, or found by descending through
    single subfolders (an archive's top-level folder).

    Args:
        folder: where to start.
        origin: what the user named (for error messages); defaults to ``folder``.

    Returns:
        The folder that has both ``train/`` and ``test/``.

    Raises:
        DataError: no such folder; the message lists what was found.
    """
    origin = origin or folder
    current = folder
    for _ in range(_MAX_NESTING + 1):
        if (current / "train").is_dir() and (current / "test").is_dir():
            return current
        entries = _visible_entries(current)
        dirs = [e for e in entries if e.is_dir()]
        if len(dirs) != 1 or (current / "train").is_dir() or (current / "test").is_dir():
            break
        current = Path(dirs[0].path)
    found = [e.name + ("/" if e.is_dir() else "") for e in _visible_entries(current)]
    if not found:
        raise DataError(f"{origin} is empty; an image folder needs train/<class>/<image> and test/<class>/<image>")
    hint = " (found val/: rename it to test/)" if (current / "val").is_dir() else ""
    raise DataError(
        f"{origin} has no train/ and test/ folders{hint}; an image folder needs train/<class>/<image> and "
        f"test/<class>/<image>, at the top or inside a single top-level folder. Found in {current}: "
        f"{found[:10]}{' ...' if len(found) > 10 else ''}"
    )


def find_root(folder: Path, origin: Path | None = None) -> tuple[Path, bool]:
    """The folder holding the data and whether it is *flat*: ``(root, False)`` for ``root/train`` and
    ``root/test`` (:func:`find_split_root`), ``(root, True)`` for a folder of two or more class folders
    (``root/<class>/<image>``, no test split), found by descending through single subfolders.

    Raises:
        DataError: neither layout; the message lists what was found.
    """
    try:
        return find_split_root(folder, origin), False
    except DataError as split_error:
        current = folder
        for _ in range(_MAX_NESTING + 1):
            dirs = [e for e in _visible_entries(current) if e.is_dir()]
            if len(dirs) >= 2 and all(_class_images(e.path) for e in dirs):
                return current, True
            if len(dirs) != 1:
                break
            current = Path(dirs[0].path)
        raise DataError(f"{split_error} Or give a folder of class folders, <class>/<image> (a test split is then "
                        f"held out with --test-fraction F where one is needed)") from None


def _class_images(class_dir: str) -> list[str]:
    # Plain strings rather than Path objects: pathlib costs more than the file system for 10^5 files.
    files = []
    for dirpath, dirnames, filenames in os.walk(class_dir, followlinks=False):
        dirnames[:] = [d for d in dirnames if not d.startswith(".") and d not in _IGNORED_DIRS]
        files.extend(os.path.join(dirpath, f) for f in filenames if is_image_name(f))
    return sorted(files)


def scan_split(split_dir: Path) -> dict[str, list[str]]:
    """The image files of each class in one split folder.

    Args:
        split_dir: a ``train/`` or ``test/`` folder.

    Returns:
        ``{class name: sorted image paths}`` in sorted class order.

    Raises:
        DataError: no class subfolders, or a class folder with no images.
    """
    classes = [e.name for e in _visible_entries(split_dir) if e.is_dir()]
    if not classes:
        loose = sum(1 for e in _visible_entries(split_dir) if e.is_file())
        raise DataError(
            f"{split_dir} has no class subfolders (found {loose} loose files); put each class's images in "
            f"{split_dir}/<class name>/"
        )
    result = {}
    for name in classes:
        files = _class_images(os.path.join(split_dir, name))
        if not files:
            raise DataError(
                f"class {name!r} has no images: {split_dir / name} holds no files ending in "
                f"{', '.join(IMAGE_SUFFIXES)}; every class folder must hold at least one image"
            )
        result[name] = files
    loose = [e.name for e in _visible_entries(split_dir) if e.is_file()]
    if loose:
        log.warning("%s: ignoring %d files outside class folders (e.g. %s)", split_dir, len(loose), loose[0])
    return result


def _flatten(per_class: dict[str, list[str]]) -> tuple[list[str], torch.Tensor]:
    paths, labels = [], []
    for c, files in enumerate(per_class.values()):
        paths.extend(files)
        labels.extend([c] * len(files))
    return paths, torch.tensor(labels, dtype=torch.int64)


def load_image_folder(path: str | Path, *, image_size: int | None = None, cache_root: Path | None = None,
                      cache_decoded: bool = True, name: str | None = None,
                      test_fraction: float | None = None) -> Dataset:
    """Load an ImageFolder with ``train/`` and ``test/`` subfolders, or an archive of one, into memory.

    A folder of class folders (``<class>/<image>``, no ``train/`` and ``test/``) loads too: all its images
    are training images and the test set is ``None``, or, with ``test_fraction``, a seeded share of each
    class (:func:`glico.data.holdout_split`, seed 0) is held out as the test set. Such folders are decoded
    on every load (the decoded cache holds train/test folders and archives).

    Every image is decoded to RGB (grayscale files too, so that one folder gives one channel count) and
    converted to float in [0, 1]. An archive is extracted once into ``<cache_root>/archives/``. The decoded
    tensors are cached (as uint8) in ``<cache_root>/decoded/``, keyed by ``image_size`` and by the archive's
    path, size and modification time, or, for a folder, by its image files' names, sizes and modification
    times; a second load of unchanged data reads one file.

    Args:
        path: a folder, or a .tar/.tar.gz/.tgz/.tar.xz/.txz/.tar.bz2/.tbz2/.zip archive of one.
        image_size: resize each image's shorter side to this and centre-crop a square; None keeps the files'
            size, which must then be the same for all images.
        cache_root: the cache root (default :func:`~glico.data.archives.default_cache_dir`).
        cache_decoded: read and write the decoded-tensor cache.
        name: the data set's name (default: the folder's or archive's name).
        test_fraction: for a folder of class folders, the share of each class held out as the test set
            (None: no test set); refused for a folder that has its own test/.

    Returns:
        A :class:`Dataset`; classes are train/'s subfolder names, sorted.

    Raises:
        MissingDataError: ``path`` does not exist.
        DataError: not a folder or supported archive, a corrupt archive, no train/ and test/, a class without
            images, different classes in train/ and test/, unreadable images, or mixed sizes without
            ``image_size``.

    Shape:
        train.images: (N_train, 3, H, W); test.images: (N_test, 3, H, W)
    """
    image_size = check_image_size(image_size)
    src = Path(path).expanduser()
    if not src.exists():
        raise MissingDataError(
            f"image folder {src} does not exist; expected a folder with train/ and test/ or an archive "
            f"({', '.join(ARCHIVE_SUFFIXES)}) of one"
        )
    cache_root = Path(cache_root).expanduser() if cache_root is not None else default_cache_dir()
    preloaded: dict[str, bytes] | None = None
    cache_file = None
    flat = False
    if src.is_dir():
        root, flat = find_root(src)
        name = name or src.resolve().name
    elif archive_kind(src) is not None:
        name = name or archive_stem(src)
        if cache_decoded:
            # An archive's contents are fixed by its key (path, size, mtime): look the decoded tensors up
            # before touching the extracted folder, so a repeated load reads one file and nothing else.
            cache_file = decoded_cache_path(cache_root, name, "a" + archive_cache_key(src)[:15], image_size)
            cached = load_decoded(cache_file)
            if cached is not None:
                return Dataset(cached[0], cached[1], name)
        # Decode from the bytes read during extraction rather than reading 10^4-10^5 files back.
        preloaded = {}
        budget = [_PRELOAD_BYTES]

        def keep(path: str, data: bytes) -> None:
            if budget[0] >= len(data):
                preloaded[path] = data
                budget[0] -= len(data)

        root, flat = find_root(extract_archive(src, cache_root, collect=keep), origin=src)
    else:
        raise DataError(
            f"{src} is neither a folder nor an archive; accepted: a folder with train/ and test/, or a file "
            f"ending in {', '.join(ARCHIVE_SUFFIXES)}"
        )

    if flat:
        return _load_flat(root, name, image_size, test_fraction, preloaded)
    if test_fraction is not None:
        raise DataError(f"{root} has its own test/ folder, so test_fraction (--test-fraction) does not apply; drop it")
    train_classes = scan_split(root / "train")
    test_classes = scan_split(root / "test")
    if list(train_classes) != list(test_classes):
        only_train = sorted(set(train_classes) - set(test_classes))
        only_test = sorted(set(test_classes) - set(train_classes))
        raise DataError(
            f"{root}: train/ and test/ must have the same class folders; only in train/: {only_train[:10]}, "
            f"only in test/: {only_test[:10]}"
        )
    class_names = tuple(train_classes)
    train_paths, train_labels = _flatten(train_classes)
    test_paths, test_labels = _flatten(test_classes)

    if cache_decoded and cache_file is None:
        key = fingerprint_files(root, train_paths + test_paths, extra="folder")
        cache_file = decoded_cache_path(cache_root, name, key, image_size)
        cached = load_decoded(cache_file)
        if cached is not None:
            return Dataset(cached[0], cached[1], name)

    log.info("decoding %d train and %d test images from %s", len(train_paths), len(test_paths), root)
    train_u8 = decode_files(train_paths, image_size, desc=f"{name} train", preloaded=preloaded)
    test_u8 = decode_files(test_paths, image_size, desc=f"{name} test", preloaded=preloaded)
    if train_u8.shape[1:] != test_u8.shape[1:]:
        raise DataError(
            f"{root}: train images are {train_u8.shape[3]}x{train_u8.shape[2]} but test images are "
            f"{test_u8.shape[3]}x{test_u8.shape[2]}; pass image_size=N (CLI: --image-size N) to bring both to NxN"
        )
    if cache_file is not None:
        save_decoded(cache_file, train_u8, train_labels, test_u8, test_labels, class_names)
    return Dataset(ImageSet(to_float(train_u8), train_labels, class_names),
                   ImageSet(to_float(test_u8), test_labels, class_names), name)


def _load_flat(root: Path, name: str, image_size: int | None, test_fraction: float | None,
               preloaded: dict[str, bytes] | None) -> Dataset:
    """A folder of class folders: every image is a training image; ``test_fraction`` holds out a test set."""
    from glico.data.splits import holdout_split

    classes = scan_split(root)
    paths, labels = _flatten(classes)
    log.info("decoding %d images of %d class folders from %s (no test split)", len(paths), len(classes), root)
    images = ImageSet(to_float(decode_files(paths, image_size, desc=name, preloaded=preloaded)), labels,
                      tuple(classes))
    if test_fraction is None:
        return Dataset(images, None, name)
    train, test = holdout_split(images, test_fraction, seed=0)
    return Dataset(train, test, name)
