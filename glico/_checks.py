"""Input checks shared by every entry point (fit, sample, augment, losses).

The library has one image contract: float tensors in [0, 1], shape (N, C, H, W). It is checked here,
once, and every error says what was received and what is accepted.
"""
from __future__ import annotations

import torch

# Images decoded from 8-bit files and resized may overshoot [0, 1] by rounding only.
_RANGE_SLACK = 1e-4


def check_images(images: object, name: str = "images") -> torch.Tensor:
    """Check that ``images`` follows the library's image contract and return it.

    Args:
        images: the value to check.
        name: how the argument is called in error messages.

    Returns:
        ``images`` unchanged.

    Raises:
        TypeError: not a floating-point tensor.
        ValueError: wrong rank, empty, non-finite values, or values outside [0, 1].

    Shape:
        images: (N, C, H, W)
    """
    if not isinstance(images, torch.Tensor):
        raise TypeError(
            f"{name} must be a torch.Tensor of shape (N, C, H, W) with float values in [0, 1]; "
            f"got {type(images).__name__}"
        )
    if not images.is_floating_point():
        hint = " (divide uint8 images by 255)" if images.dtype == torch.uint8 else ""
        raise TypeError(
            f"{name} must be a floating-point tensor with values in [0, 1]; got dtype {images.dtype}{hint}"
        )
    if images.dim() != 4:
        raise ValueError(
            f"{name} must have shape (N, C, H, W); got {images.dim()} dimensions {tuple(images.shape)}"
        )
    if images.numel() == 0:
        raise ValueError(f"{name} is empty: shape {tuple(images.shape)}")
    if not bool(torch.isfinite(images).all()):
        bad = int((~torch.isfinite(images)).sum())
        raise ValueError(f"{name} contains {bad} NaN or infinite values; images must be finite and in [0, 1]")
    lo, hi = float(images.min()), float(images.max())
    if lo < -_RANGE_SLACK or hi > 1 + _RANGE_SLACK:
        hint = " (looks like 0..255: divide by 255)" if hi > 1.5 else ""
        raise ValueError(f"{name} must have values in [0, 1]; got min {lo:.4g}, max {hi:.4g}{hint}")
    return images


def check_labels(labels: object, n: int, name: str = "labels") -> torch.Tensor:
    """Check integer class labels for ``n`` images and return them as an int64 tensor.

    Labels must be 0..C-1 with every class in that range present at least once.

    Shape:
        labels: (N,)
    """
    if not isinstance(labels, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of integer class indices; got {type(labels).__name__}")
    if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        raise TypeError(f"{name} must hold integer class indices 0..C-1; got dtype {labels.dtype}")
    if labels.dim() != 1:
        raise ValueError(f"{name} must have shape (N,); got {tuple(labels.shape)}")
    if labels.numel() != n:
        raise ValueError(f"{name} has {labels.numel()} entries but there are {n} images; they must match")
    labels = labels.long()
    if n and int(labels.min()) < 0:
        raise ValueError(f"{name} must be in 0..C-1; got a negative label {int(labels.min())}")
    present = torch.unique(labels)
    num_classes = int(labels.max()) + 1 if n else 0
    if present.numel() != num_classes:
        missing = sorted(set(range(num_classes)) - set(present.tolist()))
        raise ValueError(
            f"{name} must use every class 0..{num_classes - 1} at least once; classes {missing[:10]} have no examples"
        )
    return labels
