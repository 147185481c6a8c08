"""scikit-learn's handwritten digits: 1 797 8x8 grayscale images, 10 classes, shipped with scikit-learn.

The pixel values 0..16 are divided by 16. There is no official split; this loader uses a fixed, stratified
50/50 one: each class is shuffled with ``numpy.random.RandomState(0)`` and its first ``count // 2`` images go
to train, the rest to test (896 train, 901 test). The split never changes with the experiment's seed, so
small-sample splits of different seeds share one test set.
"""
from __future__ import annotations

import numpy as np
import torch

from glico.data.decode import check_image_size, resize_center_crop
from glico.data.types import Dataset, ImageSet

DIGITS_SPLIT_SEED = 0


def load_digits(*, image_size: int | None = None) -> Dataset:
    """Load scikit-learn's digits with the fixed stratified 50/50 train/test split.

    Args:
        image_size: resize (bilinear) to this side, e.g. 32 for generators that start at 32 px; None keeps 8.

    Returns:
        A :class:`Dataset` named ``"digits"``, one channel, values k/16 in [0, 1], class names ``"0"``..``"9"``.

    Shape:
        train.images: (896, 1, S, S); test.images: (901, 1, S, S); S = image_size or 8
    """
    from sklearn.datasets import load_digits as sk_load_digits

    image_size = check_image_size(image_size)
    bunch = sk_load_digits()
    images = torch.from_numpy(bunch.images.astype(np.float32) / 16.0).unsqueeze(1)
    labels = torch.from_numpy(bunch.target.astype(np.int64))
    if image_size is not None:
        images = resize_center_crop(images, image_size)
    rng = np.random.RandomState(DIGITS_SPLIT_SEED)
    train_idx, test_idx = [], []
    target = bunch.target
    for c in range(10):
        idx = np.flatnonzero(target == c)[rng.permutation(int((target == c).sum()))]
        train_idx.append(idx[: len(idx) // 2])
        test_idx.append(idx[len(idx) // 2:])
    names = tuple(str(c) for c in range(10))
    parts = []
    for idx in (train_idx, test_idx):
        sel = torch.from_numpy(np.sort(np.concatenate(idx)))
        parts.append(ImageSet(images[sel].contiguous(), labels[sel], names))
    return Dataset(parts[0], parts[1], "digits")
