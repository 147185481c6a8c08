"""Reconstruction losses: how far a generated image is from the image it should reconstruct.

Every loss follows ``ReconstructionLoss``: ``loss(pred, target)`` returns one value per sample, shape (B,),
for images in [0, 1] of shape (B, C, H, W); ``prepare_target`` / ``forward_prepared`` split off the work
that depends only on the (fixed) target so a training loop can cache it.

- ``PerceptualLoss``: L1 between VGG-16 activations (GLICO's loss; C in {1, 3}).
- ``LaplacianPyramidLoss``: L1 between Laplacian pyramids (GLO's loss; any C, any size, no weights).
- ``PixelLoss``: pixel L1 or L2 (any C).
- ``LPIPSLoss``: LPIPS from the ``lpips`` package (C in {1, 3}).
- ``WeightedSum``: a weighted sum of any of these.
"""
from glico.losses.base import ReconstructionLoss, ReconstructionLossBase, concat_prepared, select_prepared
from glico.losses.laplacian import LaplacianPyramid, LaplacianPyramidLoss, laplacian_pyramid
from glico.losses.lpips_loss import LPIPSLoss, LPIPSTarget
from glico.losses.perceptual import VGG16_LAYERS, VGG16_RELU_INDICES, PerceptualLoss, PerceptualTarget
from glico.losses.pixel import PixelLoss
from glico.losses.weighted import WeightedSum

__all__ = [
    "ReconstructionLoss",
    "ReconstructionLossBase",
    "concat_prepared",
    "select_prepared",
    "PerceptualLoss",
    "PerceptualTarget",
    "VGG16_LAYERS",
    "VGG16_RELU_INDICES",
    "LaplacianPyramidLoss",
    "LaplacianPyramid",
    "laplacian_pyramid",
    "PixelLoss",
    "LPIPSLoss",
    "LPIPSTarget",
    "WeightedSum",
]
