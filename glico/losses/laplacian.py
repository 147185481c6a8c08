"""Laplacian-pyramid L1 loss, the reconstruction loss of GLO (Bojanowski et al., 2018)."""
from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from glico.losses.base import ReconstructionLossBase, check_input, check_pred

__all__ = ["LaplacianPyramid", "LaplacianPyramidLoss", "laplacian_pyramid"]

# The 5-tap binomial filter [1, 4, 6, 4, 1] / 16 (Burt & Adelson). Its taps are exact in binary floating
# point and sum to exactly 1, so a constant image stays exactly constant after blurring.
_BINOMIAL_5 = (1.0 / 16, 4.0 / 16, 6.0 / 16, 4.0 / 16, 1.0 / 16)


class LaplacianPyramid(NamedTuple):
    """The levels of a Laplacian pyramid, finest first.

    ``levels[j]`` for j < L-1 is the band-pass image ``g_j - up(g_{j+1})``; ``levels[L-1]`` is the low-pass
    residual ``g_{L-1}``, where ``g`` is the Gaussian pyramid (``g_0`` the image). Level j has spatial size
    about ``ceil(H / 2^j) x ceil(W / 2^j)``.
    """

    levels: tuple[Tensor, ...]


def _blur(x: Tensor) -> Tensor:
    """Separable 5x5 binomial blur of every channel, with replicated borders. (B, C, H, W) -> same."""
    b, c, h, w = x.shape
    k = torch.tensor(_BINOMIAL_5, dtype=x.dtype, device=x.device)
    y = x.reshape(b * c, 1, h, w)
    # Replicated borders keep a constant image constant (zero padding would darken the edges).
    y = F.conv2d(F.pad(y, (2, 2, 0, 0), mode="replicate"), k.view(1, 1, 1, 5))
    y = F.conv2d(F.pad(y, (0, 0, 2, 2), mode="replicate"), k.view(1, 1, 5, 1))
    return y.reshape(b, c, h, w)


def pyramid_levels(height: int, width: int, levels: int, min_size: int) -> int:
    """How many pyramid levels an image of this size gets.

    Level j has size ``ceil(s / 2^j)`` for the smaller side ``s``; levels are added while that stays at least
    ``min_size``, up to ``levels``. An image already smaller than ``min_size`` gets one level (the image).

    Args:
        height, width: the image size.
        levels: the most levels wanted.
        min_size: the smallest side a level may have.

    Returns:
        The number of levels, between 1 and ``levels``.
    """
    side = min(height, width)
    n = 1
    while n < levels:
        side = (side + 1) // 2
        if side < min_size:
            break
        n += 1
    return n


def laplacian_pyramid(images: Tensor, levels: int) -> LaplacianPyramid:
    """Laplacian pyramid of a batch of images (any channel count).

    Gaussian levels: ``g_0 = images``, ``g_{j+1} = blur(g_j)[..., ::2, ::2]`` (5-tap binomial blur,
    replicated borders). Band-pass levels: ``g_j - up(g_{j+1})`` with ``up`` bilinear interpolation back to
    the size of ``g_j``; the last level is ``g_{levels-1}`` itself. A constant image therefore has all
    band-pass levels exactly zero and its constant value in the last level.

    Args:
        images: float tensor.
        levels: number of levels (>= 1); the caller makes sure the image is big enough for them.

    Returns:
        The pyramid, finest level first.

    Shape:
        images: (B, C, H, W). Level j: (B, C, ceil(H / 2^j), ceil(W / 2^j)).
    """
    out = []
    current = images
    for _ in range(levels - 1):
        down = _blur(current)[..., ::2, ::2]
        up = F.interpolate(down, size=current.shape[-2:], mode="bilinear", align_corners=False)
        out.append(current - up)
        current = down
    out.append(current)
    return LaplacianPyramid(tuple(out))


class LaplacianPyramidLoss(ReconstructionLossBase):
    """L1 distance between Laplacian pyramids, GLO's reconstruction loss ("Lap1").

    ``loss[b] = sum_j 4^(-j) * mean over (C, H_j, W_j) of |L_j(pred)[b] - L_j(target)[b]|``, with j = 0 the
    finest level (see ``laplacian_pyramid``). The weight ``2^(-2j)`` is GLO's; combined with a *mean* per
    level it makes every pyramid coefficient count the same (level j has 4^(-j) times as many coefficients
    as level 0), i.e. the loss is the sum of absolute coefficient differences over the whole pyramid
    divided by C·H·W. Public reimplementations differ on whether level norms are sums or means; this is
    our choice, written down here.

    The number of levels is capped by the image size (see ``pyramid_levels``): the coarsest level keeps a
    side of at least ``min_size``. An 8x8 image with the defaults gets two levels (8x8, 4x4); an image smaller
    than ``min_size`` gets one level, where the loss is plain L1. Works for any channel count and needs no
    weights.

    Example: for constant images ``pred = a`` and ``target = b`` only the coarsest level differs, so
    ``loss = 4^(-(L-1)) * |a - b|`` with L the number of levels used.

    Args:
        levels: the most pyramid levels (>= 1).
        min_size: the smallest side a pyramid level may have (>= 1).

    Shape:
        pred, target: (B, C, H, W), float in [0, 1]. Output: (B,).
    """

    def __init__(self, levels: int = 5, min_size: int = 4) -> None:
        super().__init__()
        if not isinstance(levels, int) or levels < 1:
            raise ValueError(f"levels must be an int >= 1; got {levels!r}")
        if not isinstance(min_size, int) or min_size < 1:
            raise ValueError(f"min_size must be an int >= 1; got {min_size!r}")
        self.levels = levels
        self.min_size = min_size

    def prepare_target(self, target: Tensor) -> LaplacianPyramid:
        """The Laplacian pyramid of ``target``.

        Args:
            target: images, float in [0, 1].

        Returns:
            Its pyramid, finest level (the target's own shape) first.

        Shape:
            target: (B, C, H, W).
        """
        check_input(target, "target")
        n = pyramid_levels(target.shape[-2], target.shape[-1], self.levels, self.min_size)
        return laplacian_pyramid(target, n)

    def forward_prepared(self, pred: Tensor, prepared: LaplacianPyramid) -> Tensor:
        """Per-sample weighted L1 distance between the pyramid of ``pred`` and the prepared one.

        Args:
            pred: generated images, float in [0, 1].
            prepared: ``prepare_target(target)``.

        Returns:
            The loss of each sample.

        Shape:
            pred: (B, C, H, W). Output: (B,).
        """
        target_levels = prepared.levels
        check_pred(pred, target_levels[0].shape)
        pred_levels = laplacian_pyramid(pred, len(target_levels)).levels
        total = pred.new_zeros(pred.shape[0])
        for j, (p, t) in enumerate(zip(pred_levels, target_levels)):
            total = total + (p - t).abs().flatten(1).mean(dim=1) * (4.0**-j)
        return total

    def extra_repr(self) -> str:
        return f"levels={self.levels}, min_size={self.min_size}"
