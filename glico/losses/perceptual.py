"""The VGG-16 perceptual loss of GLICO (paper, eq. 1)."""
from __future__ import annotations

import logging
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import NamedTuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models import VGG16_Weights
from torchvision.models.vgg import cfgs as _vgg_cfgs
from torchvision.models.vgg import make_layers as _vgg_make_layers

from glico._downloads import (
    FETCH_ERRORS,
    bounded_socket_timeout,
    hub_cache_path,
    missing_weights_message,
)
from glico.losses.base import ReconstructionLossBase, check_input, check_pred

__all__ = ["PerceptualLoss", "PerceptualTarget", "VGG16_LAYERS", "VGG16_RELU_INDICES"]

logger = logging.getLogger(__name__)

#: The layers the paper compares, in order.
VGG16_LAYERS = ("conv1_2", "conv2_2", "conv3_2", "conv4_2", "conv5_2")
#: Index, in ``torchvision.models.vgg16().features``, of the ReLU that follows each of ``VGG16_LAYERS``.
VGG16_RELU_INDICES = (3, 8, 13, 20, 27)
# Max-pools (each halving the size) that come before each of those layers.
_POOLS_BEFORE = (0, 1, 2, 3, 4)

# Used with weights=None or a local file (torchvision's ImageNet statistics); the weights enum brings its own.
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)

VGGWeights = Union[VGG16_Weights, str, os.PathLike, None]


class PerceptualTarget(NamedTuple):
    """The prepared target of ``PerceptualLoss``.

    Attributes:
        features: VGG activations of the target at the layers with a non-zero weight, shallowest first;
            each of shape (B, C_j, H_j, W_j).
        channels, height, width: the target's image shape, to check the prediction against.
    """

    features: tuple[Tensor, ...]
    channels: int
    height: int
    width: int


class PerceptualLoss(ReconstructionLossBase):
    """L1 distance between VGG-16 activations, GLICO's reconstruction loss.

    ``loss[b] = sum_j λ_j * mean over (C_j, H_j, W_j) of |ξ_j(pred)[b] - ξ_j(target)[b]|``, where ξ_j is the
    VGG-16 activation after the ReLU of conv1_2, conv2_2, conv3_2, conv4_2 and conv5_2 (indices 3, 8, 13, 20,
    27 of ``torchvision.models.vgg16().features``).

    Inputs in [0, 1] are normalised inside with the weights' ImageNet mean and std. Grayscale images (C=1)
    are repeated to three channels; other channel counts are refused (use ``LaplacianPyramidLoss`` or
    ``PixelLoss``). Images with a side smaller than ``min_size`` are bilinearly upsampled to ``min_size`` on
    that side first, because each of the four max-pools before conv5_2 halves the size and a 8x8 image would
    have no conv5_2 activation left; with the default 32 conv5_2 is 2x2. Only the layers up to the last one
    with a non-zero weight are run.

    The backbone is frozen (no parameter requires grad) and stays in eval mode even when ``.train()`` is
    called on this module; gradients flow to ``pred`` only.

    Args:
        weights: where the VGG-16 weights come from.
            ``VGG16_Weights.IMAGENET1K_V1`` (default): torchvision's ImageNet weights, read from the torch hub
            cache (``torch.hub.get_dir()/checkpoints/vgg16-397923af.pth``) or downloaded there. If they cannot
            be had, a RuntimeError says where to put the file and what else to do.
            A path (str or PathLike): a local ``state_dict`` file, either of a whole torchvision ``vgg16`` (keys
            ``features.0.weight``, ...) or of its ``.features`` (keys ``0.weight``, ...), loaded with
            ``torch.load(weights_only=True)``.
            ``None``: random initialisation (torchvision's scheme, from the global RNG). That is *not* a
            perceptual loss, only a fixed random-feature distance; it is meant for tests and offline smoke runs.
        layer_weights: λ_1..λ_5 for conv1_2..conv5_2, non-negative, not all zero. The default, 1/5 each, makes
            the loss the plain average over the five layers. The paper only says λ_j is "usually the weighted
            average", so this is our choice.
        min_size: the smallest image side fed to the VGG; smaller images are upsampled to it. Must leave the
            deepest used layer at least 1x1 (16 when conv5_2 is used).

    Shape:
        pred, target: (B, C, H, W) with C in {1, 3}, float in [0, 1]. Output: (B,).
    """

    def __init__(
        self,
        weights: VGGWeights = VGG16_Weights.IMAGENET1K_V1,
        layer_weights: Sequence[float] = (0.2, 0.2, 0.2, 0.2, 0.2),
        min_size: int = 32,
    ) -> None:
        super().__init__()
        self.layer_weights = _check_layer_weights(layer_weights)
        used = [j for j, w in enumerate(self.layer_weights) if w > 0]
        self._used_layers = tuple(used)
        self._capture = {VGG16_RELU_INDICES[j]: k for k, j in enumerate(used)}
        smallest = 2 ** _POOLS_BEFORE[used[-1]]
        if not isinstance(min_size, int) or min_size < smallest:
            raise ValueError(
                f"min_size must be an int >= {smallest} so that {VGG16_LAYERS[used[-1]]} keeps at least one "
                f"pixel after {_POOLS_BEFORE[used[-1]]} max-pools; got {min_size!r}"
            )
        self.min_size = min_size

        last = VGG16_RELU_INDICES[used[-1]]
        # Only the VGG-16 layers up to the deepest one needed; slicing keeps torchvision's module names
        # ("0", "2", ...), so torchvision state_dicts load into it directly.
        self.backbone = _vgg_make_layers(_vgg_cfgs["D"])[: last + 1]
        mean, std = _IMAGENET_MEAN, _IMAGENET_STD
        if weights is None:
            _init_like_torchvision(self.backbone)
            self.weights_source = "random"
            logger.warning(
                "PerceptualLoss(weights=None): the VGG-16 is randomly initialised, so this is not a perceptual "
                "loss; use it for tests or offline smoke runs only"
            )
        elif isinstance(weights, VGG16_Weights):
            state = _fetch_imagenet_state(weights)
            _load_features(self.backbone, state, source=f"{weights} ({weights.url})")
            transform = weights.transforms()
            mean, std = tuple(transform.mean), tuple(transform.std)
            self.weights_source = str(weights)
        elif isinstance(weights, (str, os.PathLike)):
            path = Path(weights)
            _load_features(self.backbone, _read_state_file(path), source=str(path))
            self.weights_source = str(path)
        else:
            raise TypeError(
                "weights must be a torchvision VGG16_Weights (e.g. VGG16_Weights.IMAGENET1K_V1), a path to a "
                f"local vgg16 state_dict file, or None for random weights; got {type(weights).__name__}"
            )
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)
        self.backbone.requires_grad_(False)
        self.backbone.eval()

    def train(self, mode: bool = True) -> PerceptualLoss:
        """Set the module's mode; the VGG backbone always stays in eval mode."""
        super().train(mode)
        self.backbone.eval()
        return self

    def _vgg_input(self, images: Tensor, name: str) -> Tensor:
        """RGB, at least ``min_size`` on each side, ImageNet-normalised. (B, C, H, W) -> (B, 3, H', W')."""
        c = images.shape[1]
        images = images.to(self.mean.dtype)  # e.g. float64 images with the float32 backbone
        if c == 1:
            images = images.expand(-1, 3, -1, -1)
        elif c != 3:
            raise ValueError(
                f"PerceptualLoss needs RGB (C=3) or grayscale (C=1) images, since VGG-16 was trained on RGB; "
                f"{name} has C={c} (shape {tuple(images.shape)}). For other channel counts use "
                f"LaplacianPyramidLoss() or PixelLoss(), which accept any C."
            )
        h, w = images.shape[-2:]
        if h < self.min_size or w < self.min_size:
            size = (max(h, self.min_size), max(w, self.min_size))
            images = F.interpolate(images, size=size, mode="bilinear", align_corners=False)
        return (images - self.mean) / self.std

    def _features(self, images: Tensor, name: str) -> tuple[Tensor, ...]:
        """Activations at the used layers, shallowest first."""
        x = self._vgg_input(images, name)
        out: list[Tensor] = []
        for i, layer in enumerate(self.backbone):
            x = layer(x)
            if i in self._capture:
                out.append(x)
        return tuple(out)

    def prepare_target(self, target: Tensor) -> PerceptualTarget:
        """VGG activations of ``target`` at the layers with a non-zero weight.

        Args:
            target: images, float in [0, 1], C in {1, 3}.

        Returns:
            The features and the target's image shape.

        Shape:
            target: (B, C, H, W).
        """
        check_input(target, "target")
        _, c, h, w = target.shape
        return PerceptualTarget(self._features(target, "target"), c, h, w)

    def forward_prepared(self, pred: Tensor, prepared: PerceptualTarget) -> Tensor:
        """Per-sample weighted L1 distance between the VGG activations of ``pred`` and the prepared ones.

        Args:
            pred: generated images, float in [0, 1], same shape as the target.
            prepared: ``prepare_target(target)``.

        Returns:
            The loss of each sample.

        Shape:
            pred: (B, C, H, W). Output: (B,).
        """
        batch = prepared.features[0].shape[0]
        check_pred(pred, (batch, prepared.channels, prepared.height, prepared.width))
        feats = self._features(pred, "pred")
        total = pred.new_zeros(batch)
        for j, fp, ft in zip(self._used_layers, feats, prepared.features):
            total = total + self.layer_weights[j] * (fp - ft).abs().flatten(1).mean(dim=1)
        return total

    def extra_repr(self) -> str:
        return f"weights={self.weights_source}, layer_weights={self.layer_weights}, min_size={self.min_size}"


def _check_layer_weights(layer_weights: Sequence[float]) -> tuple[float, ...]:
    try:
        values = tuple(float(w) for w in layer_weights)
    except (TypeError, ValueError) as e:
        raise TypeError(
            f"layer_weights must be a sequence of {len(VGG16_LAYERS)} numbers; got {layer_weights!r}"
        ) from e
    if len(values) != len(VGG16_LAYERS):
        raise ValueError(
            f"layer_weights needs one weight per layer {VGG16_LAYERS}; got {len(values)}: {values}"
        )
    if any(not math.isfinite(w) or w < 0 for w in values) or not any(w > 0 for w in values):
        raise ValueError(f"layer_weights must be finite, non-negative and not all zero; got {values}")
    return values


def _init_like_torchvision(features: nn.Sequential) -> None:
    """The initialisation torchvision's VGG gives its convolutions."""
    for m in features.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            nn.init.zeros_(m.bias)


def _fetch_imagenet_state(weights: VGG16_Weights) -> Mapping[str, Tensor]:
    """torchvision's state_dict for ``weights``, from the hub cache or downloaded; actionable error otherwise."""
    logger.info("loading %s from %s (or downloading %s)", weights, hub_cache_path(weights.url), weights.url)
    try:
        with bounded_socket_timeout():
            # Looked up at call time (not imported by name) so tests can replace it.
            return torch.hub.load_state_dict_from_url(
                weights.url, progress=False, check_hash=True, map_location="cpu", weights_only=True
            )
    except FETCH_ERRORS as e:
        # See FETCH_ERRORS: every failure to get the file means the same to the user; the cause is chained.
        alternatives = (
            "  - pass weights='/path/to/vgg16.pth' (command line: --vgg-weights /path/to/vgg16.pth), a local "
            "torchvision vgg16 state_dict (or of its .features), or\n"
            "  - use weights=None (--vgg-weights random: a random VGG-16; runs, but is not a perceptual loss), or a "
            "loss that needs no download: LaplacianPyramidLoss() or PixelLoss() (--loss laplacian, --loss pixel)."
        )
        raise RuntimeError(
            missing_weights_message(f"ImageNet VGG-16 weights ({weights})", weights.url, e, alternatives)
        ) from e


def _read_state_file(path: Path) -> Mapping[str, Tensor]:
    """The state_dict stored at ``path``, with errors that name the file and what was expected."""
    if not path.is_file():
        raise FileNotFoundError(
            f"VGG-16 weights file {path} does not exist (expected a torchvision vgg16 state_dict saved with "
            f"torch.save(model.state_dict(), path)). For torchvision's ImageNet weights pass "
            f"weights=VGG16_Weights.IMAGENET1K_V1 instead of a path."
        )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any failure to unpickle means the same thing to the user
        raise ValueError(
            f"could not read {path} as a state_dict with torch.load(weights_only=True): {type(e).__name__}: {e}. "
            f"Save weights with torch.save(model.state_dict(), path), not the whole model."
        ) from e
    if not isinstance(state, Mapping) or not all(isinstance(v, Tensor) for v in state.values()):
        raise ValueError(
            f"{path} does not hold a state_dict (a mapping from parameter names to tensors); got "
            f"{type(state).__name__}. Expected a torchvision vgg16 state_dict or that of its .features."
        )
    return state


def _load_features(features: nn.Sequential, state: Mapping[str, Tensor], source: str) -> None:
    """Load the VGG-16 feature weights out of a whole-model or a features-only state_dict."""
    if any(k.startswith("features.") for k in state):
        state = {k[len("features."):]: v for k, v in state.items() if k.startswith("features.")}
    expected = features.state_dict()
    missing = [k for k in expected if k not in state]
    if missing:
        raise ValueError(
            f"{source} is not a VGG-16 state_dict: missing keys {missing[:6]}{' ...' if len(missing) > 6 else ''} "
            f"(expected torchvision vgg16 keys such as 'features.0.weight', or '0.weight' for its .features; "
            f"found keys like {sorted(state)[:4]})"
        )
    wrong = [
        f"{k}: {tuple(state[k].shape)} != {tuple(v.shape)}" for k, v in expected.items() if state[k].shape != v.shape
    ]
    if wrong:
        raise ValueError(f"{source} does not match VGG-16's layer shapes (file != expected): {wrong[:4]}")
    features.load_state_dict({k: state[k] for k in expected}, strict=True)
    logger.info("loaded VGG-16 weights from %s", source)
