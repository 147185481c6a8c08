"""What a generator must provide."""
from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch


@runtime_checkable
class Generator(Protocol):
    """Maps generator inputs (codes with noise applied) to images in [0, 1].

    Attributes:
        in_dim: length of one input vector.
        image_shape: (C, H, W) of one output image.
    """

    in_dim: int
    image_shape: tuple[int, int, int]

    def __call__(self, inputs: torch.Tensor) -> torch.Tensor:
        """Shape: inputs (B, in_dim) -> images (B, C, H, W), values in [0, 1]."""
        ...
