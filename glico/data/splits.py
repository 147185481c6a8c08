"""Seeded, reproducible subsets of an image set: the small-sample split and stratified subsampling.

Randomness comes from ``numpy.random.RandomState``: its stream is frozen by NumPy's compatibility policy
(NEP 19), so the same seed chooses the same indices on every machine and NumPy version. (``Generator`` and
``torch.randperm`` do not promise that.) Each class is shuffled with one permutation of its images, in class
order, so the images chosen at a smaller SPC are a subset of those chosen at a larger SPC for the same seed.
"""
from __future__ import annotations

import numpy as np
import torch

from glico.data.types import DataError, ImageSet


def _class_permutations(labels: torch.Tensor, num_classes: int, seed: int) -> list[np.ndarray]:
    """For each class, the indices of its images in a seeded random order."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= int(seed) < 2**32:
        raise DataError(f"seed must be an integer in 0..2**32-1; got {seed!r}")
    rng = np.random.RandomState(int(seed))
    labels_np = labels.cpu().numpy()
    return [np.flatnonzero(labels_np == c)[rng.permutation(int((labels_np == c).sum()))]
            for c in range(num_classes)]


def small_sample_split(train: ImageSet, spc: int, seed: int) -> tuple[ImageSet, torch.Tensor]:
    """Choose ``spc`` images of every class from ``train``, reproducibly.

    The same ``(train, spc, seed)`` gives the same indices on any machine; for one seed, the images chosen at
    a smaller ``spc`` are among those chosen at a larger one. The subset is drawn from ``train`` only, so it is
    disjoint from the data set's test images.

    Args:
        train: the image set to draw from (usually ``Dataset.train``).
        spc: samples per class, at least 1 and at most the size of the smallest class.
        seed: integer in 0..2**32-1.

    Returns:
        ``(subset, indices)``: the chosen images as an :class:`ImageSet` with the same class names, and their
        int64 positions in ``train``, ascending; ``subset.images == train.images[indices]``.

    Raises:
        DataError: ``spc`` < 1, or a class has fewer than ``spc`` images (the message names the class and its
            count).

    Shape:
        indices: (spc * num_classes,)
    """
    if isinstance(spc, bool) or not isinstance(spc, (int, np.integer)):
        raise DataError(f"spc (samples per class) must be an integer >= 1; got {spc!r}")
    if spc < 1:
        raise DataError(f"spc (samples per class) must be >= 1; got {spc}")
    counts = train.class_counts()
    short = [(name, int(counts[c])) for c, name in enumerate(train.class_names) if int(counts[c]) < spc]
    if short:
        listed = ", ".join(f"{name!r} has {n}" for name, n in short[:10])
        more = f" (and {len(short) - 10} more)" if len(short) > 10 else ""
        raise DataError(
            f"spc={spc} images per class requested, but {len(short)} class(es) have fewer: {listed}{more}; "
            f"the smallest class has {int(counts.min())} images, so spc must be in 1..{int(counts.min())}"
        )
    perms = _class_permutations(train.labels, train.num_classes, seed)
    chosen = np.sort(np.concatenate([p[:spc] for p in perms]))
    indices = torch.from_numpy(chosen.astype(np.int64))
    return train.subset(indices), indices


def validation_split(train: ImageSet, spc: int, seed: int, per_class: int) -> tuple[ImageSet, torch.Tensor]:
    """Held-out images for choosing settings: ``per_class`` images of every class of ``train`` that are not in
    ``small_sample_split(train, spc, seed)``.

    They are the next ``per_class`` images of each class's seeded order (the split takes the first ``spc``),
    so the two are disjoint, the same arguments give the same images on any machine, and neither touches
    the data set's test images. Score on these, never on the test set, when tuning a recipe.

    Args:
        train: the image set the split is drawn from (usually ``Dataset.train``).
        spc: the split's samples per class.
        seed: the split's seed.
        per_class: held-out images per class, at least 1.

    Returns:
        ``(held_out, indices)``: the images and their int64 positions in ``train``, ascending.

    Raises:
        DataError: ``per_class`` < 1, or a class has fewer than ``spc + per_class`` images (the message names
            the class and the largest ``per_class`` it allows).

    Shape:
        indices: (per_class * num_classes,)
    """
    if isinstance(per_class, bool) or not isinstance(per_class, (int, np.integer)) or per_class < 1:
        raise DataError(f"validation images per class must be an integer >= 1; got {per_class!r}")
    small_sample_split(train, spc, seed)  # the split's own checks (spc, seed, class sizes)
    counts = train.class_counts()
    need = spc + per_class
    short = [(name, int(counts[c])) for c, name in enumerate(train.class_names) if int(counts[c]) < need]
    if short:
        listed = ", ".join(f"{name!r} has {n}" for name, n in short[:10])
        raise DataError(
            f"{per_class} validation images per class on top of spc={spc} need {need} training images in every "
            f"class, but {listed}; use at most {int(counts.min()) - spc} validation images per class"
        )
    perms = _class_permutations(train.labels, train.num_classes, seed)
    chosen = np.sort(np.concatenate([p[spc:need] for p in perms]))
    indices = torch.from_numpy(chosen.astype(np.int64))
    return train.subset(indices), indices


def stratified_subsample(images: ImageSet, n: int, seed: int) -> tuple[ImageSet, torch.Tensor]:
    """Choose ``n`` images keeping the class proportions of ``images``, reproducibly.

    Each class gets ``n * count / total`` images, rounded by largest remainder (ties to the lower class
    index), so the counts add up to ``n``. Used for ``max_test`` and for the digits train/test split.

    Args:
        images: the image set to draw from.
        n: how many images to keep; ``n >= len(images)`` keeps all of them (in their order).
        seed: integer in 0..2**32-1.

    Returns:
        ``(subset, indices)``: the chosen images and their int64 positions in ``images``, ascending.

    Shape:
        indices: (min(n, N),)
    """
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise DataError(f"the number of images to keep must be an integer >= 1; got {n!r}")
    total = len(images)
    if n >= total:
        return images, torch.arange(total, dtype=torch.int64)
    counts = images.class_counts().numpy().astype(np.int64)
    quota = counts * n / total
    take = np.floor(quota).astype(np.int64)
    order = np.argsort(-(quota - take), kind="stable")
    take[order[: n - int(take.sum())]] += 1
    perms = _class_permutations(images.labels, images.num_classes, seed)
    chosen = np.sort(np.concatenate([p[:k] for p, k in zip(perms, take, strict=True)]))
    indices = torch.from_numpy(chosen.astype(np.int64))
    return images.subset(indices), indices


def holdout_split(images: ImageSet, fraction: float, seed: int = 0) -> tuple[ImageSet, ImageSet]:
    """Split one labelled set into train and test, per class and reproducibly: ``round(fraction * n_c)``
    images of each class of ``n_c`` go to the test set (at least 1, and at least 1 is left for training).

    Used for a folder of class folders without a ``test/`` split (``--test-fraction``).

    Args:
        images: the labelled images.
        fraction: the share held out, in (0, 1).
        seed: integer in 0..2**32-1.

    Returns:
        ``(train, test)``, each in ascending order of position in ``images``.

    Raises:
        DataError: a fraction outside (0, 1), or a class with fewer than 2 images.
    """
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0 < fraction < 1:
        raise DataError(f"the test fraction must be a number strictly between 0 and 1; got {fraction!r}")
    counts = images.class_counts()
    small = [name for c, name in enumerate(images.class_names) if int(counts[c]) < 2]
    if small:
        raise DataError(f"holding out test images needs at least 2 images in every class; {small[:10]} have fewer")
    perms = _class_permutations(images.labels, images.num_classes, seed)
    held = [p[: min(max(1, int(round(fraction * len(p)))), len(p) - 1)] for p in perms]
    test_idx = np.sort(np.concatenate(held))
    mask = np.ones(len(images), dtype=bool)
    mask[test_idx] = False
    return (images.subset(torch.from_numpy(np.flatnonzero(mask).astype(np.int64))),
            images.subset(torch.from_numpy(test_idx.astype(np.int64))))
