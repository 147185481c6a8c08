"""``load_data(SPEC)``: the one place where data-set names (strings) are resolved to loaders.

SPECs: ``digits``, ``cifar10:DIR``, ``cifar100:DIR``, ``cub:DIR``, ``folder:PATH``. Python code that knows
what it loads can call the typed loaders directly (``load_cifar10``, ``load_image_folder``, ...).
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from glico.data.cifar import load_cifar10, load_cifar100
from glico.data.cub import load_cub
from glico.data.digits import load_digits
from glico.data.folder import load_image_folder
from glico.data.splits import stratified_subsample
from glico.data.types import DataError, Dataset

log = logging.getLogger(__name__)

# The seed of the stratified test subsample taken by ``max_test``: fixed, so that every run with the same
# max_test is evaluated on the same images.
MAX_TEST_SEED = 0


def _digits(arg: str | None, image_size: int | None, root_cache: Path | None, download: bool) -> Dataset:
    if arg:
        raise DataError(f"the data SPEC 'digits' takes no path; got 'digits:{arg}'")
    return load_digits(image_size=image_size)


def _cifar10(arg: str | None, image_size: int | None, root_cache: Path | None, download: bool) -> Dataset:
    return load_cifar10(_need_path("cifar10", arg), image_size=image_size, download=download)


def _cifar100(arg: str | None, image_size: int | None, root_cache: Path | None, download: bool) -> Dataset:
    return load_cifar100(_need_path("cifar100", arg), image_size=image_size, download=download)


def _cub(arg: str | None, image_size: int | None, root_cache: Path | None, download: bool) -> Dataset:
    return load_cub(_need_path("cub", arg), image_size=image_size, cache_root=root_cache)


def _folder(arg: str | None, image_size: int | None, root_cache: Path | None, download: bool,
            test_fraction: float | None = None) -> Dataset:
    return load_image_folder(_need_path("folder", arg), image_size=image_size, cache_root=root_cache,
                             test_fraction=test_fraction)


_Loader = Callable[[str | None, int | None, Path | None, bool], Dataset]

# scheme -> (loader, what the SPEC looks like)
DATA_SCHEMES: dict[str, tuple[_Loader, str]] = {
    "digits": (_digits, "digits (scikit-learn's 8x8 digits)"),
    "cifar10": (_cifar10, "cifar10:DIR (DIR holds cifar-10-batches-py/)"),
    "cifar100": (_cifar100, "cifar100:DIR (DIR holds cifar-100-python/)"),
    "cub": (_cub, "cub:DIR (DIR is CUB_200_2011/ or holds it)"),
    "folder": (_folder, "folder:PATH (a folder with train/ and test/, or of class folders, or a .tar/.tar.gz/.tar.xz/.zip of one)"),
}


def _valid_specs() -> str:
    return "; ".join(form for _, form in DATA_SCHEMES.values())


def _need_path(scheme: str, arg: str | None) -> str:
    if not arg:
        raise DataError(f"the data SPEC {scheme!r} needs a path: {DATA_SCHEMES[scheme][1]}")
    return arg


def load_data(spec: str, *, image_size: int | None = None, root_cache: Path | None = None,
              max_test: int | None = None, download: bool = False, test_fraction: float | None = None) -> Dataset:
    """Load a data set named by a SPEC string into memory.

    Args:
        spec: ``digits``, ``cifar10:DIR``, ``cifar100:DIR``, ``cub:DIR`` or ``folder:PATH`` (PATH a folder
            with train/ and test/, or a .tar, .tar.gz, .tgz, .tar.xz, .txz, .tar.bz2, .tbz2 or .zip of one).
        image_size: resize every image's shorter side to this and centre-crop a square; None keeps the files'
            own size (folders and CUB then need all images the same size).
        root_cache: cache root for extracted archives and decoded tensors (default ``$GLICO_CACHE_DIR``, else
            ``~/.cache/glico``).
        max_test: keep at most this many test images, a stratified subsample with a fixed seed
            (:data:`MAX_TEST_SEED`), for quick runs; None keeps them all.
        download: allow torchvision to download CIFAR when it is missing (never done otherwise).
        test_fraction: for ``folder:PATH`` of class folders without a test split, hold out this seeded share
            of each class as the test set (:func:`glico.data.holdout_split`); without it such a folder has
            ``test = None``. Refused for every other SPEC.

    Returns:
        A :class:`Dataset`: train and test :class:`ImageSet` s, float images in [0, 1] on the CPU.

    Raises:
        DataError: an unknown scheme (the message lists the valid SPECs) or any loader's error.
        MissingDataError: a path that does not exist.

    Shape:
        train.images: (N_train, C, H, W); test.images: (min(N_test, max_test), C, H, W)
    """
    if not isinstance(spec, str) or not spec.strip():
        raise DataError(f"data SPEC must be a non-empty string; got {spec!r}. Valid: {_valid_specs()}")
    scheme, sep, arg = spec.strip().partition(":")
    if scheme not in DATA_SCHEMES:
        raise DataError(f"unknown data SPEC {spec!r} (scheme {scheme!r}); valid: {_valid_specs()}")
    if max_test is not None and (isinstance(max_test, bool) or not isinstance(max_test, int) or max_test < 1):
        raise DataError(f"max_test must be None or an integer >= 1; got {max_test!r}")
    loader, _ = DATA_SCHEMES[scheme]
    if test_fraction is not None and scheme != "folder":
        raise DataError(f"test_fraction (--test-fraction) applies to folder:PATH of class folders only; "
                        f"{scheme!r} has its own test set")
    extra = {} if test_fraction is None else {"test_fraction": test_fraction}
    data = loader(arg if sep else None, image_size, root_cache, download, **extra)
    if max_test is not None and data.test is not None and max_test < len(data.test):
        test, _ = stratified_subsample(data.test, max_test, MAX_TEST_SEED)
        log.info("kept %d of %d test images (stratified, seed %d)", len(test), len(data.test), MAX_TEST_SEED)
        data = Dataset(data.train, test, data.name)
    return data
