"""Pixel-wise L1 / L2 reconstruction loss."""
from __future__ import annotations

from torch import Tensor

from glico.losses.base import ReconstructionLossBase, check_pred

__all__ = ["PixelLoss"]


class PixelLoss(ReconstructionLossBase):
    """Mean absolute (p=1) or mean squared (p=2) pixel difference, per sample.

    ``loss[b] = mean over (C, H, W) of |pred[b] - target[b]| ** p``. Works for any channel count and any
    image size; needs no weights.

    Args:
        p: 1 for L1, 2 for L2 (mean squared error).

    Shape:
        pred, target: (B, C, H, W), float in [0, 1]. Output: (B,).
    """

    def __init__(self, p: int = 1) -> None:
        super().__init__()
        if p not in (1, 2):
            raise ValueError(f"PixelLoss supports p=1 (L1) or p=2 (L2); got p={p!r}")
        self.p = p

    def forward_prepared(self, pred: Tensor, prepared: Tensor) -> Tensor:
        """Per-sample L1 or L2 difference between ``pred`` and the target.

        Args:
            pred: generated images, float in [0, 1].
            prepared: the target images (``prepare_target`` returns them unchanged).

        Returns:
            The mean of ``|pred - target| ** p`` over (C, H, W) for each sample.

        Shape:
            pred, prepared: (B, C, H, W). Output: (B,).
        """
        check_pred(pred, prepared.shape)
        diff = pred - prepared
        err = diff.abs() if self.p == 1 else diff.square()
        return err.flatten(1).mean(dim=1)

    def extra_repr(self) -> str:
        return f"p={self.p}"
