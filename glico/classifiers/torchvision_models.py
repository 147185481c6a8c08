"""ResNet-50 and VGG-19 from torchvision, adapted to any class count, channel count and small images.

Pretrained weights come from torchvision's weights API (an enum such as ``ResNet50_Weights.IMAGENET1K_V2``),
from a local file, or not at all (random initialisation, the default). When they cannot be had (offline),
the error says where torchvision looks for the file and what else to pass.
"""
from __future__ import annotations

import logging
import math
import os
from typing import ClassVar, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models import (
    ResNet50_Weights,
    VGG19_BN_Weights,
    VGG19_Weights,
    WeightsEnum,
    resnet50,
    vgg19,
    vgg19_bn,
)

from glico._downloads import fetch_weights_enum

from .base import check_classifier_input

logger = logging.getLogger(__name__)

#: What ``weights=`` accepts: ``None`` (random), a torchvision weights enum, or the path of a local file.
Weights = Union[WeightsEnum, str, os.PathLike, None]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _fetch_state_dict(weights: WeightsEnum | str | os.PathLike) -> dict[str, Tensor]:
    """The state dict behind ``weights``: downloaded (or read from torch's hub cache) or read from a file."""
    if isinstance(weights, WeightsEnum):
        alternatives = (
            "  - pass weights=<path of that file> (any local copy of it), or\n"
            "  - pass weights=None to start from random initialisation."
        )
        return fetch_weights_enum(weights, f"pretrained weights {weights!r}", alternatives)
    if isinstance(weights, (str, os.PathLike)):
        path = os.fspath(weights)
        if not os.path.isfile(path):
            raise FileNotFoundError(
                f"weights file {path!r} does not exist; pass the path of a torchvision checkpoint (.pth), "
                f"a torchvision weights enum such as ResNet50_Weights.IMAGENET1K_V2, or None for random weights"
            )
        state = torch.load(path, map_location="cpu", weights_only=True)
        if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
            state = state["state_dict"]
        if not isinstance(state, dict):
            raise ValueError(f"{path!r} does not hold a state dict (a mapping of names to tensors)")
        # Checkpoints saved from nn.DataParallel prefix every key with "module.".
        if state and all(k.startswith("module.") for k in state):
            state = {k[len("module."):]: v for k, v in state.items()}
        return state
    raise TypeError(
        f"weights must be None, a torchvision weights enum or a file path; got {type(weights).__name__}"
    )


def load_torchvision_weights(
    net: nn.Module,
    weights: WeightsEnum | str | os.PathLike,
    *,
    first_conv: str | None = None,
    head: str | None = None,
) -> None:
    """Load pretrained weights into a torchvision network in place, adapting its first and last layers.

    Every tensor must match except, when named:
    - the first convolution (``first_conv``): ImageNet's 3-channel kernel is turned into one for the
      network's ``c`` input channels by averaging over RGB and scaling by 3/c, so that an image whose
      channels are all equal gives the same response as its RGB copy;
    - the classification head (``head``): when its shape differs (ImageNet's 1000 classes vs yours), it
      is left at its fresh initialisation.

    Args:
        net: the torchvision network (already built for its channel and class counts).
        weights: a torchvision weights enum (downloaded through torch's hub cache) or a local file holding
            the network's state dict (optionally under a ``"state_dict"`` key).
        first_conv: module name of the first convolution (e.g. ``"conv1"``, ``"features.0"``), or None.
        head: module name of the final linear layer (e.g. ``"fc"``, ``"classifier.6"``), or None.

    Raises:
        RuntimeError: the enum's file could not be downloaded or read; the message says how to fix it.
        FileNotFoundError: ``weights`` is a path that does not exist.
        RuntimeError: the file's tensors do not fit ``net`` (from ``load_state_dict``).
    """
    state = dict(_fetch_state_dict(weights))
    own = net.state_dict()
    if first_conv is not None:
        key = f"{first_conv}.weight"
        if key in state and key in own and state[key].shape != own[key].shape:
            w = state[key]
            c = own[key].shape[1]
            if w.shape[1] != 3 or w.shape[0] != own[key].shape[0]:
                raise RuntimeError(f"cannot adapt {key} of shape {tuple(w.shape)} to {tuple(own[key].shape)}")
            state[key] = w.mean(dim=1, keepdim=True).repeat(1, c, 1, 1) * (3.0 / c)
    if head is not None:
        keys = [k for k in (f"{head}.weight", f"{head}.bias") if k in state and k in own]
        if any(state[k].shape != own[k].shape for k in keys):
            logger.info("pretrained head %s has %d outputs; keeping a fresh head", head, state[keys[0]].shape[0])
            for k in keys:
                state[k] = own[k]
    net.load_state_dict(state)


class _TorchvisionClassifier(nn.Module):
    """A torchvision backbone behind the library's image contract: [0, 1] in, logits out.

    Inputs whose short side is below ``min_size`` are bilinearly upsampled to it (aspect ratio kept);
    then they are normalised with ``input_mean`` / ``input_std`` (ImageNet's statistics when pretrained
    weights were loaded, 0 / 1 otherwise). Both are buffers, so they travel with ``state_dict``.
    """

    consumes_codes: ClassVar[bool] = False

    def __init__(self, backbone: nn.Module, num_classes: int, in_channels: int, min_size: int, pretrained: bool):
        super().__init__()
        self.backbone = backbone
        self.num_classes = num_classes
        self.in_channels = in_channels
        self.min_size = min_size
        if pretrained:
            if in_channels == 3:
                mean, std = torch.tensor(IMAGENET_MEAN), torch.tensor(IMAGENET_STD)
            else:
                # A grey (or any non-RGB) channel gets the average RGB statistics.
                mean = torch.full((in_channels,), sum(IMAGENET_MEAN) / 3)
                std = torch.full((in_channels,), sum(IMAGENET_STD) / 3)
        else:
            mean, std = torch.zeros(in_channels), torch.ones(in_channels)
        self.register_buffer("input_mean", mean.view(1, -1, 1, 1))
        self.register_buffer("input_std", std.view(1, -1, 1, 1))

    def forward(self, x: Tensor) -> Tensor:
        """Logits for a batch of images.

        Args:
            x: images (B, in_channels, H, W) with values in [0, 1].

        Returns:
            logits (B, num_classes).
        """
        check_classifier_input(x, self.in_channels, type(self).__name__)
        h, w = x.shape[-2:]
        if min(h, w) < self.min_size:
            scale = self.min_size / min(h, w)
            size = (max(self.min_size, math.ceil(h * scale)), max(self.min_size, math.ceil(w * scale)))
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
        return self.backbone((x - self.input_mean) / self.input_std)


def _check_common(num_classes: int, in_channels: int, min_size: int) -> None:
    if num_classes < 1 or in_channels < 1:
        raise ValueError(f"num_classes and in_channels must be >= 1; got {num_classes}, {in_channels}")
    if min_size < 32:
        raise ValueError(
            f"min_size must be >= 32 (the backbone downsamples by 32; smaller inputs are upsampled to min_size); "
            f"got {min_size}"
        )


def _check_enum(weights: Weights, expected: tuple[type, ...], model: str) -> None:
    if isinstance(weights, WeightsEnum) and not isinstance(weights, expected):
        names = " or ".join(t.__name__ for t in expected)
        raise TypeError(f"{model} takes {names}; got {weights!r}")
    if weights is not None and not isinstance(weights, (WeightsEnum, str, os.PathLike)):
        raise TypeError(
            f"weights must be None, a torchvision weights enum or a file path; got {type(weights).__name__}"
        )


class ResNet50(_TorchvisionClassifier):
    """torchvision's ResNet-50 (the paper's downstream classifier for CUB; one of its strong f's).

    The final ``fc`` is replaced by a ``num_classes``-way layer and, when ``in_channels != 3``, the first
    convolution by one with that many input channels (pretrained RGB kernels are averaged into it, see
    :func:`load_torchvision_weights`). Images smaller than ``min_size`` on their short side are upsampled
    to it inside ``forward`` (8 px digits → 32 px). With pretrained weights the input is normalised with
    ImageNet's mean and std inside ``forward``; callers always pass [0, 1] images.

    Args:
        num_classes: number of classes.
        in_channels: channels of the input images.
        weights: None (random initialisation, default), a ``torchvision.models.ResNet50_Weights`` member
            (downloaded once into ``torch.hub.get_dir()/checkpoints``), or the path of a local file holding
            a torchvision ResNet-50 state dict (an ImageNet checkpoint; its 1000-class head is dropped unless
            it already has ``num_classes`` outputs).
        min_size: inputs whose short side is below this are bilinearly upsampled to it (>= 32).

    Raises:
        RuntimeError: pretrained weights could not be downloaded; the message lists the fixes.

    Shape:
        x: (B, in_channels, H, W) images with values in [0, 1].
        output: (B, num_classes) logits.
    """

    def __init__(self, num_classes: int, in_channels: int = 3, weights: Weights = None, *, min_size: int = 32) -> None:
        _check_common(num_classes, in_channels, min_size)
        _check_enum(weights, (ResNet50_Weights,), "ResNet50")
        net = resnet50(weights=None, num_classes=num_classes)
        if in_channels != 3:
            net.conv1 = nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
            nn.init.kaiming_normal_(net.conv1.weight, mode="fan_out", nonlinearity="relu")
        if weights is not None:
            load_torchvision_weights(net, weights, first_conv="conv1", head="fc")
        super().__init__(net, num_classes, in_channels, min_size, pretrained=weights is not None)


class VGG19(_TorchvisionClassifier):
    """torchvision's VGG-19 (one of the paper's strong f's, about 140 M parameters).

    Plain VGG-19 (configuration E, no BatchNorm) by default, as the paper names it; ``batch_norm=True``
    gives torchvision's ``vgg19_bn``, which trains far more easily from random initialisation. The last
    classifier layer is replaced by a ``num_classes``-way one and, when ``in_channels != 3``, the first
    convolution is adapted (see :func:`load_torchvision_weights`). VGG halves the resolution five times,
    so images smaller than ``min_size`` (>= 32) are upsampled to it inside ``forward``; torchvision's
    adaptive pool then feeds its 7×7×512 classifier. With pretrained weights the input is normalised
    with ImageNet's statistics inside ``forward``; callers always pass [0, 1] images.

    Args:
        num_classes: number of classes.
        in_channels: channels of the input images.
        weights: None (random initialisation, default), a ``VGG19_Weights`` member (or ``VGG19_BN_Weights``
            with ``batch_norm=True``), or the path of a local file holding the matching torchvision state
            dict (its 1000-class head is dropped unless it already has ``num_classes`` outputs).
        batch_norm: use ``vgg19_bn`` instead of ``vgg19``.
        dropout: dropout probability in the classifier (torchvision's default 0.5).
        min_size: inputs whose short side is below this are bilinearly upsampled to it (>= 32).

    Raises:
        RuntimeError: pretrained weights could not be downloaded; the message lists the fixes.

    Shape:
        x: (B, in_channels, H, W) images with values in [0, 1].
        output: (B, num_classes) logits.
    """

    def __init__(
        self,
        num_classes: int,
        in_channels: int = 3,
        weights: Weights = None,
        *,
        batch_norm: bool = False,
        dropout: float = 0.5,
        min_size: int = 32,
    ) -> None:
        _check_common(num_classes, in_channels, min_size)
        if batch_norm:
            _check_enum(weights, (VGG19_BN_Weights,), "VGG19(batch_norm=True)")
        else:
            _check_enum(weights, (VGG19_Weights,), "VGG19(batch_norm=False)")
        build = vgg19_bn if batch_norm else vgg19
        net = build(weights=None, num_classes=num_classes, dropout=dropout)
        if in_channels != 3:
            conv = nn.Conv2d(in_channels, 64, kernel_size=3, padding=1)
            nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
            nn.init.zeros_(conv.bias)
            net.features[0] = conv
        if weights is not None:
            load_torchvision_weights(net, weights, first_conv="features.0", head="classifier.6")
        super().__init__(net, num_classes, in_channels, min_size, pretrained=weights is not None)
