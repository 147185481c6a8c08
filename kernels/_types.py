"""Typed values handed between the kernels and their callers."""
from __future__ import annotations

from typing import NamedTuple

import torch


class ClassIndex(NamedTuple):
    """Rows of a code table grouped by class, built once by :func:`kernels.class_index`.

    Row ``order[offsets[c] + k]`` is the ``k``-th member of class ``c``; class ``c`` has
    ``offsets[c + 1] - offsets[c]`` members.

    Attributes:
        order: ``(N,)`` int64 row ids sorted by class (stable: ties keep row order).
        offsets: ``(C + 1,)`` int64, ``offsets[0] == 0`` and ``offsets[C] == N``.
        labels: ``(N,)`` int64 class of every row, in ``[0, C)``.
    """

    order: torch.Tensor
    offsets: torch.Tensor
    labels: torch.Tensor

    @property
    def num_classes(self) -> int:
        """``C``, the number of classes (some may be empty)."""
        return int(self.offsets.shape[0]) - 1


class SampledCodes(NamedTuple):
    """What :func:`kernels.sample_codes` draws for a batch of anchors.

    Attributes:
        inputs: ``(B, d + noise_dim)`` generator input ``[slerp(codes[idx], codes[partners], t), eps]``,
            in the code table's dtype.
        partners: ``(B,)`` int64 row id of each anchor's partner.
        t: ``(B,)`` float32 interpolation weight of each row.
    """

    inputs: torch.Tensor
    partners: torch.Tensor
    t: torch.Tensor
