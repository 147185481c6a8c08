"""Data sets held in memory as tensors, seeded small-sample splits, and loaders.

Images everywhere are float tensors in [0, 1], shape (N, C, H, W), on the CPU.

- :func:`load_data` resolves a SPEC string (``digits``, ``cifar10:DIR``, ``cifar100:DIR``, ``cub:DIR``,
  ``folder:PATH``) to a :class:`Dataset`; the typed loaders behind it can be called directly.
- :func:`small_sample_split` draws ``spc`` images per class with a seed, reproducibly;
  :func:`validation_split` holds out other training images of each class for choosing settings.

See ``docs/data.md``.
"""
from glico.data.archives import default_cache_dir, extract_archive
from glico.data.cifar import load_cifar10, load_cifar100
from glico.data.cub import load_cub
from glico.data.digits import load_digits
from glico.data.folder import load_image_folder
from glico.data.spec import DATA_SCHEMES, load_data
from glico.data.splits import holdout_split, small_sample_split, stratified_subsample, validation_split
from glico.data.types import DataError, Dataset, ImageSet, MissingDataError

__all__ = [
    "DATA_SCHEMES",
    "DataError",
    "Dataset",
    "ImageSet",
    "MissingDataError",
    "default_cache_dir",
    "extract_archive",
    "holdout_split",
    "load_cifar10",
    "load_cifar100",
    "load_cub",
    "load_data",
    "load_digits",
    "load_image_folder",
    "small_sample_split",
    "stratified_subsample",
    "validation_split",
]
