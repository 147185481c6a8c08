"""The in-memory data types every loader returns, and the errors they raise.

Small-sample experiments hold whole data sets in memory as tensors: an :class:`ImageSet` is images,
labels and class names; a :class:`Dataset` is a named pair of train and test image sets.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from glico._checks import check_images


class DataError(ValueError):
    """A data set, data path or split request that cannot be used; the message says what was received
    and what is accepted."""


class MissingDataError(FileNotFoundError, DataError):
    """A data path that does not exist or holds none of the expected files.

    It is both a :class:`FileNotFoundError` and a :class:`DataError` (hence a :class:`ValueError`), so
    callers may catch either.
    """


def _in_unit_range(images: torch.Tensor) -> bool:
    lo, hi = torch.aminmax(images)
    return bool(lo >= 0) and bool(hi <= 1)


@dataclass(frozen=True, eq=False)
class ImageSet:
    """Labelled images held in memory.

    Loaders return images on the CPU. The constructor checks the library's image contract
    (float, (N, C, H, W), values in [0, 1]) and that every label names one of ``class_names``.
    A class may have no images in a given set (e.g. a subsampled test set).

    Args:
        images: float tensor, values in [0, 1].
        labels: int64 tensor of class indices into ``class_names``.
        class_names: the name of each class, index = label.

    Shape:
        images: (N, C, H, W)
        labels: (N,)
    """

    images: torch.Tensor
    labels: torch.Tensor
    class_names: tuple[str, ...]

    def __post_init__(self) -> None:
        images = self.images
        # One pass (aminmax) in the common case; the full check, with its precise message, otherwise.
        # NaN makes both comparisons false, so it also goes to the full check.
        if not (isinstance(images, torch.Tensor) and images.is_floating_point() and images.dim() == 4
                and images.numel() and _in_unit_range(images)):
            check_images(images, "ImageSet.images")
        labels = self.labels
        if not isinstance(labels, torch.Tensor) or labels.dtype != torch.int64 or labels.dim() != 1:
            got = (f"dtype {labels.dtype}, shape {tuple(labels.shape)}" if isinstance(labels, torch.Tensor)
                   else type(labels).__name__)
            raise DataError(f"ImageSet.labels must be an int64 tensor of shape (N,); got {got}")
        if labels.numel() != self.images.shape[0]:
            raise DataError(
                f"ImageSet has {self.images.shape[0]} images but {labels.numel()} labels; they must match"
            )
        if not isinstance(self.class_names, tuple) or not all(isinstance(c, str) for c in self.class_names):
            raise DataError(
                f"ImageSet.class_names must be a tuple of str; got {type(self.class_names).__name__}"
            )
        if len(set(self.class_names)) != len(self.class_names):
            dupes = sorted({c for c in self.class_names if self.class_names.count(c) > 1})
            raise DataError(f"ImageSet.class_names must be unique; repeated: {dupes[:10]}")
        if labels.numel():
            lo, hi = int(labels.min()), int(labels.max())
            if lo < 0 or hi >= len(self.class_names):
                raise DataError(
                    f"ImageSet.labels must be in 0..{len(self.class_names) - 1} "
                    f"(one per class name); got values in {lo}..{hi}"
                )

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def num_classes(self) -> int:
        """The number of classes, ``len(class_names)`` (some may have no images in this set)."""
        return len(self.class_names)

    def class_counts(self) -> torch.Tensor:
        """The number of images of each class.

        Returns:
            int64 tensor; entry ``c`` counts the images labelled ``c``.

        Shape:
            (num_classes,)
        """
        return torch.bincount(self.labels.cpu(), minlength=self.num_classes)

    def subset(self, indices: torch.Tensor) -> ImageSet:
        """The images at ``indices`` (in that order), with the same class names.

        Args:
            indices: int64 positions into this set.

        Returns:
            A new :class:`ImageSet` (the tensors are copies).

        Shape:
            indices: (M,) -> images (M, C, H, W), labels (M,)
        """
        indices = torch.as_tensor(indices, dtype=torch.int64)
        return ImageSet(self.images[indices], self.labels[indices], self.class_names)

    def __repr__(self) -> str:
        n, c, h, w = self.images.shape
        return f"ImageSet({n} images, {c}x{h}x{w}, {self.num_classes} classes)"


@dataclass(frozen=True, eq=False)
class Dataset:
    """A named pair of train and test image sets with the same classes and image shape.

    Args:
        train: the images a small-sample split is drawn from.
        test: held-out images for evaluation; disjoint from ``train`` in every loader. ``None`` for a folder
            of class folders without a test split (fitting and training need none; scoring does).
        name: a short name for logs and reports (e.g. ``"cifar10"``).
    """

    train: ImageSet
    test: ImageSet | None
    name: str

    def __post_init__(self) -> None:
        if self.test is None:
            return
        if self.train.class_names != self.test.class_names:
            raise DataError(
                f"Dataset {self.name!r}: train and test class names differ "
                f"(train {list(self.train.class_names)[:10]}, test {list(self.test.class_names)[:10]})"
            )
        if self.train.images.shape[1:] != self.test.images.shape[1:]:
            raise DataError(
                f"Dataset {self.name!r}: train images are {tuple(self.train.images.shape[1:])} but test images "
                f"are {tuple(self.test.images.shape[1:])} (C, H, W); they must match"
            )

    def require_test(self, what: str = "scoring") -> ImageSet:
        """The test set, or a :class:`DataError` that says how to get one."""
        if self.test is None:
            raise DataError(f"{what} needs test images, and {self.name!r} is a folder of class folders without a "
                            f"test split: give --test-fraction F (test_fraction=F to load_data) to hold out a "
                            f"seeded share F of each class, or arrange the folder as train/<class>/ and "
                            f"test/<class>/")
        return self.test

    def __repr__(self) -> str:
        return f"Dataset({self.name!r}, train={self.train!r}, test={self.test!r})"
