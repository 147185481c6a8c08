"""LPIPS (Zhang et al., 2018) as a reconstruction loss, through the ``lpips`` package."""
from __future__ import annotations

import logging
import warnings
from typing import NamedTuple

import torch.nn.functional as F
from torch import Tensor
from torchvision.models import AlexNet_Weights, SqueezeNet1_1_Weights, VGG16_Weights

from glico._downloads import FETCH_ERRORS, bounded_socket_timeout, missing_weights_message
from glico.losses.base import ReconstructionLossBase, check_input, check_pred

__all__ = ["LPIPSLoss", "LPIPSTarget"]

logger = logging.getLogger(__name__)

# The torchvision checkpoint each lpips backbone downloads when it is pretrained, and the smallest image
# side for which the backbone still has at least one pixel in its last layer.
_BACKBONE_URLS = {
    "vgg": VGG16_Weights.IMAGENET1K_V1.url,
    "alex": AlexNet_Weights.IMAGENET1K_V1.url,
    "squeeze": SqueezeNet1_1_Weights.IMAGENET1K_V1.url,
}
_SMALLEST_SIDE = {"vgg": 16, "alex": 31, "squeeze": 17}


class LPIPSTarget(NamedTuple):
    """The prepared target of ``LPIPSLoss``.

    Attributes:
        features: the target's unit-normalised backbone activations, one per LPIPS layer, each
            (B, C_j, H_j, W_j).
        channels, height, width: the target's image shape, to check the prediction against.
    """

    features: tuple[Tensor, ...]
    channels: int
    height: int
    width: int


class LPIPSLoss(ReconstructionLossBase):
    """The LPIPS distance (v0.1) of the ``lpips`` package, per sample.

    Inputs are images in [0, 1]; they are mapped to [-1, 1], the range LPIPS expects, inside this module
    (there is no flag to change that). Grayscale images (C=1) are repeated to three channels; other channel
    counts are refused. Images with a side smaller than ``min_size`` are bilinearly upsampled to it first,
    because the backbones' pooling leaves nothing of small images (AlexNet needs a side of at least 31).

    What is needed offline: the linear calibration layers of LPIPS ship inside the ``lpips`` package and are
    always loaded (they are non-negative, which keeps the distance >= 0 even with a random backbone). The
    ImageNet backbone (``pretrained=True``) is torchvision's checkpoint, read from the torch hub cache
    (``torch.hub.get_dir()/checkpoints/``) or downloaded there; if neither works a RuntimeError says where to
    put the file. ``pretrained=False`` uses a randomly initialised backbone (from the global RNG): it runs
    offline, but is not a perceptual metric; it is meant for tests.

    The network is frozen and stays in eval mode even when ``.train()`` is called on this module.

    Args:
        net: the backbone, "vgg", "alex" or "squeeze".
        pretrained: ImageNet backbone (True) or random backbone (False).
        min_size: the smallest image side fed to the backbone; smaller images are upsampled to it.

    Shape:
        pred, target: (B, C, H, W) with C in {1, 3}, float in [0, 1]. Output: (B,).
    """

    def __init__(self, net: str = "vgg", pretrained: bool = True, min_size: int = 32) -> None:
        super().__init__()
        if net not in _BACKBONE_URLS:
            raise ValueError(f"net must be one of {sorted(_BACKBONE_URLS)}; got {net!r}")
        if not isinstance(min_size, int) or min_size < _SMALLEST_SIDE[net]:
            raise ValueError(
                f"min_size must be an int >= {_SMALLEST_SIDE[net]} for net={net!r} (smaller images leave the "
                f"backbone's last layer empty); got {min_size!r}"
            )
        self.net_name = net
        self.pretrained = pretrained
        self.min_size = min_size
        import lpips  # deferred: importing lpips takes seconds and most users never need it

        try:
            with warnings.catch_warnings(), bounded_socket_timeout():
                # lpips builds its backbone with torchvision's deprecated `pretrained=` argument.
                warnings.filterwarnings("ignore", message=r"The parameter 'pretrained' is deprecated")
                warnings.filterwarnings("ignore", message=r"Arguments other than a weight enum")
                self.metric = lpips.LPIPS(net=net, pretrained=True, pnet_rand=not pretrained, verbose=False)
        except FETCH_ERRORS as e:
            # See FETCH_ERRORS: every failure to get the file means the same to the user; the cause is chained.
            if not pretrained:
                raise
            url = _BACKBONE_URLS[net]
            alternatives = (
                "  - use pretrained=False (--vgg-weights random: a random backbone; runs, but is not a perceptual "
                "metric), or another loss: PerceptualLoss(weights=<local file>) (--loss perceptual --vgg-weights "
                "FILE), LaplacianPyramidLoss() or PixelLoss() (--loss laplacian, --loss pixel)."
            )
            raise RuntimeError(
                missing_weights_message(f"ImageNet backbone of LPIPS(net={net!r})", url, e, alternatives)
            ) from e
        self.metric.requires_grad_(False)
        self.metric.eval()
        if not pretrained:
            logger.warning("LPIPSLoss(pretrained=False): random %s backbone, not a perceptual metric", net)

    def train(self, mode: bool = True) -> LPIPSLoss:
        """Set the module's mode; the LPIPS network always stays in eval mode."""
        super().train(mode)
        self.metric.eval()
        return self

    def _features(self, images: Tensor, name: str) -> tuple[Tensor, ...]:
        """Unit-normalised backbone activations of images in [0, 1], one per LPIPS layer."""
        c = images.shape[1]
        images = images.to(self.metric.scaling_layer.shift.dtype)  # e.g. float64 images, float32 network
        if c == 1:
            images = images.expand(-1, 3, -1, -1)
        elif c != 3:
            raise ValueError(
                f"LPIPSLoss needs RGB (C=3) or grayscale (C=1) images; {name} has C={c} (shape "
                f"{tuple(images.shape)}). For other channel counts use LaplacianPyramidLoss() or PixelLoss()."
            )
        h, w = images.shape[-2:]
        if h < self.min_size or w < self.min_size:
            size = (max(h, self.min_size), max(w, self.min_size))
            images = F.interpolate(images, size=size, mode="bilinear", align_corners=False)
        from lpips import normalize_tensor

        x = self.metric.scaling_layer(images * 2 - 1)
        return tuple(normalize_tensor(f) for f in self.metric.net(x))

    def prepare_target(self, target: Tensor) -> LPIPSTarget:
        """The target's normalised backbone activations.

        Args:
            target: images, float in [0, 1], C in {1, 3}.

        Returns:
            The features and the target's image shape.

        Shape:
            target: (B, C, H, W).
        """
        check_input(target, "target")
        _, c, h, w = target.shape
        return LPIPSTarget(self._features(target, "target"), c, h, w)

    def forward_prepared(self, pred: Tensor, prepared: LPIPSTarget) -> Tensor:
        """Per-sample LPIPS distance between ``pred`` and the prepared target.

        ``sum_l mean over (H_l, W_l) of w_l · (f_l(pred) - f_l(target))^2``, the computation of
        ``lpips.LPIPS.forward`` split so that the target half can be cached.

        Args:
            pred: generated images, float in [0, 1], same shape as the target.
            prepared: ``prepare_target(target)``.

        Returns:
            The distance of each sample.

        Shape:
            pred: (B, C, H, W). Output: (B,).
        """
        batch = prepared.features[0].shape[0]
        check_pred(pred, (batch, prepared.channels, prepared.height, prepared.width))
        total = pred.new_zeros(batch)
        for lin, fp, ft in zip(self.metric.lins, self._features(pred, "pred"), prepared.features):
            total = total + lin((fp - ft).square()).mean(dim=(1, 2, 3))
        return total

    def extra_repr(self) -> str:
        return f"net={self.net_name!r}, pretrained={self.pretrained}, min_size={self.min_size}"
