"""Fréchet Inception Distance (FID) between real and generated images, with the feature extractor as a parameter.

FID fits a Gaussian to the features of each image set and measures the Fréchet (2-Wasserstein) distance
between the two Gaussians::

    FID = ‖μ_r − μ_g‖² + Tr(Σ_r + Σ_g − 2 (Σ_r Σ_g)^{1/2})

The default features are the 2048-d pool features of torchvision's Inception-v3 (``Inception_V3_Weights``).
Any callable mapping images ``(B, C, H, W)`` to features ``(B, F)`` can replace it, e.g. a small network for
quick CPU runs. Numbers are only comparable when the extractor, its weights, the preprocessing and the number
of images are the same (see ``docs/fid.md``).
"""
from __future__ import annotations

import itertools
import logging
import os
from collections.abc import Iterable
from typing import Callable, NamedTuple, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models import Inception_V3_Weights, WeightsEnum
from torchvision.models.inception import Inception3
from glico._progress import progress as tqdm

from glico._checks import check_images
from glico._downloads import FETCH_ERRORS, fetch_weights_enum

__all__ = [
    "FeatureExtractor",
    "FeatureStatistics",
    "InceptionFeatures",
    "InceptionWeights",
    "feature_statistics",
    "fid",
    "frechet_distance",
]

logger = logging.getLogger(__name__)

FeatureExtractor = Callable[[Tensor], Tensor]
"""Images (B, C, H, W) with values in [0, 1] -> features (B, F)."""

#: What ``InceptionFeatures(weights=...)`` accepts: a torchvision enum, the path of a local file, or None (random).
InceptionWeights = Union[Inception_V3_Weights, str, os.PathLike, None]

_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)
# Eigenvalues of a covariance below -_PSD_SLACK * (its largest eigenvalue) mean it is not a covariance at all;
# above that they are rounding (float32 features, rank-deficient estimates) and are clamped to 0.
_PSD_SLACK = 1e-4
# Relative asymmetry tolerated in a covariance (rounding); more means the argument is not one.
_SYMMETRY_SLACK = 1e-6

ArrayLike = Union[Tensor, np.ndarray]


class FeatureStatistics(NamedTuple):
    """Mean and covariance of a set of feature vectors (both float64, on the CPU).

    Attributes:
        mu: mean, shape (F,).
        sigma: unbiased covariance (divided by N - 1), shape (F, F).
    """

    mu: Tensor
    sigma: Tensor


# --------------------------------------------------------------------------------------------------------
# The distance
# --------------------------------------------------------------------------------------------------------


def _as_float64(x: ArrayLike, name: str) -> Tensor:
    if isinstance(x, Tensor):
        return x.detach().to(device="cpu", dtype=torch.float64)
    try:
        return torch.as_tensor(np.asarray(x, dtype=np.float64))
    except (TypeError, ValueError) as err:
        raise TypeError(f"{name} must be a torch.Tensor or numpy array of numbers; got {type(x).__name__}") from err


def _check_covariance(sigma: Tensor, dim: int, name: str) -> Tensor:
    if sigma.shape != (dim, dim):
        raise ValueError(f"{name} must have shape ({dim}, {dim}) to match the mean; got {tuple(sigma.shape)}")
    if not bool(torch.isfinite(sigma).all()):
        raise ValueError(f"{name} contains NaN or infinite values")
    scale = float(sigma.abs().max()) if sigma.numel() else 0.0
    asym = float((sigma - sigma.T).abs().max()) if sigma.numel() else 0.0
    if asym > _SYMMETRY_SLACK * scale:
        raise ValueError(
            f"{name} is not symmetric (max |Σ - Σᵀ| = {asym:.3g}, max |Σ| = {scale:.3g}); pass a covariance matrix"
        )
    return (sigma + sigma.T) / 2


def _check_psd(eigenvalues: Tensor, name: str) -> None:
    top = float(eigenvalues.max()) if eigenvalues.numel() else 0.0
    low = float(eigenvalues.min()) if eigenvalues.numel() else 0.0
    if low < -_PSD_SLACK * max(top, 0.0) or (top <= 0.0 and low < 0.0):
        raise ValueError(
            f"{name} is not positive semi-definite (smallest eigenvalue {low:.3g}, largest {top:.3g}); "
            f"pass a covariance matrix"
        )


def frechet_distance(mu1: ArrayLike, sigma1: ArrayLike, mu2: ArrayLike, sigma2: ArrayLike) -> float:
    """The Fréchet distance between the Gaussians N(mu1, sigma1) and N(mu2, sigma2).

    ``‖μ1 − μ2‖² + Tr(Σ1 + Σ2 − 2 (Σ1 Σ2)^{1/2})``, computed in float64 on the CPU. The trace of the
    matrix square root is taken without forming it: Σ1 Σ2 = √Σ1 · (√Σ1 Σ2), and AB has the eigenvalues of
    BA, so Σ1 Σ2 has those of the symmetric positive semi-definite matrix √Σ1 Σ2 √Σ1 (singular Σ1 included)
    and ``Tr((Σ1 Σ2)^{1/2}) = Σ_i sqrt(λ_i(√Σ1 Σ2 √Σ1))``. Both steps are symmetric eigen-decompositions,
    which are stable where a general matrix square root (``scipy.linalg.sqrtm``) can return complex values
    for rank-deficient covariances; eigenvalues that rounding makes slightly negative are clamped to 0, and
    so is the result (a squared distance). With a singular covariance the result is accurate to about
    √eps ≈ 1e-8 relative rather than eps, because √ is not Lipschitz at 0 (a property of the problem, far
    below any meaningful FID difference).

    Args:
        mu1: mean of the first Gaussian, shape (F,); a torch tensor or numpy array.
        sigma1: its covariance, shape (F, F), symmetric positive semi-definite.
        mu2: mean of the second Gaussian, shape (F,).
        sigma2: its covariance, shape (F, F).

    Returns:
        The distance (a squared distance: translating one mean by v adds ‖v‖² when the means are equal).

    Raises:
        ValueError: the feature dimensions differ, shapes are wrong, values are not finite, or a covariance
            is not symmetric positive semi-definite (beyond rounding).
    """
    mu1, mu2 = _as_float64(mu1, "mu1"), _as_float64(mu2, "mu2")
    sigma1, sigma2 = _as_float64(sigma1, "sigma1"), _as_float64(sigma2, "sigma2")
    if mu1.dim() != 1 or mu2.dim() != 1:
        raise ValueError(f"mu1 and mu2 must have shape (F,); got {tuple(mu1.shape)} and {tuple(mu2.shape)}")
    if mu1.numel() != mu2.numel():
        raise ValueError(
            f"the two feature sets have different dimensions: {mu1.numel()} and {mu2.numel()}; "
            f"compute both statistics with the same feature extractor"
        )
    if mu1.numel() == 0:
        raise ValueError("the features are empty (dimension 0)")
    if not (bool(torch.isfinite(mu1).all()) and bool(torch.isfinite(mu2).all())):
        raise ValueError("mu1 or mu2 contains NaN or infinite values")
    dim = mu1.numel()
    sigma1 = _check_covariance(sigma1, dim, "sigma1")
    sigma2 = _check_covariance(sigma2, dim, "sigma2")

    evals1, evecs1 = torch.linalg.eigh(sigma1)
    _check_psd(evals1, "sigma1")
    _check_psd(torch.linalg.eigvalsh(sigma2), "sigma2")
    sqrt1 = (evecs1 * evals1.clamp_min(0).sqrt()) @ evecs1.T
    middle = sqrt1 @ sigma2 @ sqrt1
    middle = (middle + middle.T) / 2
    trace_sqrt = torch.linalg.eigvalsh(middle).clamp_min(0).sqrt().sum()

    mean_term = (mu1 - mu2).square().sum()
    distance = mean_term + torch.trace(sigma1) + torch.trace(sigma2) - 2 * trace_sqrt
    return max(float(distance), 0.0)


# --------------------------------------------------------------------------------------------------------
# Feature statistics
# --------------------------------------------------------------------------------------------------------


def _module_device(extractor: object) -> torch.device | None:
    if isinstance(extractor, nn.Module):
        for tensor in extractor.parameters():
            return tensor.device
        for tensor in extractor.buffers():
            return tensor.device
    return None


def _batches(images: Tensor | Iterable[Tensor], batch_size: int) -> tuple[Iterable[Tensor], int | None]:
    """The batches to run and, when known, the number of images."""
    if isinstance(images, Tensor):
        check_images(images)
        return (images[i : i + batch_size] for i in range(0, images.shape[0], batch_size)), images.shape[0]
    if isinstance(images, (str, bytes)) or not isinstance(images, Iterable):
        # check_images writes the error that says what an image batch must be.
        check_images(images)
    return images, None


def feature_statistics(
    images: Tensor | Iterable[Tensor],
    extractor: FeatureExtractor,
    *,
    batch_size: int = 50,
    device: torch.device | str | None = None,
    progress: bool = True,
) -> FeatureStatistics:
    """Mean and covariance of ``extractor``'s features over a set of images, computed batch by batch.

    The features of each batch are moved to the CPU and accumulated in float64 around a shift (the first
    batch's mean), so that the covariance does not lose precision to a large common offset and the images
    never need to be held as features all at once. The extractor runs under ``torch.no_grad()``.

    Args:
        images: images (N, C, H, W) with values in [0, 1], or an iterable of such batches (a generator that
            samples images, a data loader yielding image tensors), each checked against the image contract.
        extractor: any callable mapping images (B, C, H, W) in [0, 1] to features (B, F), e.g.
            :class:`InceptionFeatures` or a small ``nn.Module``.
        batch_size: images per extractor call when ``images`` is a tensor (iterables keep their own batches).
        device: where the extractor runs; batches are moved there, and an ``nn.Module`` extractor is moved
            there too (in place, by ``.to``). None: the device of the extractor's parameters, or the images'
            own device for extractors without parameters.
        progress: show a progress bar (images processed).

    Returns:
        ``FeatureStatistics(mu (F,), sigma (F, F))``, float64 on the CPU; ``sigma`` is the unbiased covariance,
        as ``numpy.cov``.

    Raises:
        TypeError, ValueError: an image batch breaks the image contract.
        ValueError: fewer than 2 images, or the extractor returns something other than (B, F) finite features
            with the same F for every batch.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1; got {batch_size}")
    if device is not None:
        device = torch.device(device)
        if isinstance(extractor, nn.Module):
            extractor.to(device)
    else:
        device = _module_device(extractor)
    batches, total = _batches(images, batch_size)

    count = 0
    shift: Tensor | None = None
    total_sum: Tensor | None = None
    total_outer: Tensor | None = None
    with torch.no_grad(), tqdm(total=total, desc="FID features", unit="img", disable=not progress, leave=False) as bar:
        for batch in batches:
            if total is None:
                check_images(batch, "image batch")
            if device is not None:
                batch = batch.to(device)
            feats = extractor(batch)
            if not isinstance(feats, Tensor) or feats.dim() != 2 or feats.shape[0] != batch.shape[0]:
                got = tuple(feats.shape) if isinstance(feats, Tensor) else type(feats).__name__
                raise ValueError(
                    f"the feature extractor must map images (B, C, H, W) to features (B, F); "
                    f"for B={batch.shape[0]} it returned {got}"
                )
            feats = feats.detach().to(device="cpu", dtype=torch.float64)
            if not bool(torch.isfinite(feats).all()):
                raise ValueError("the feature extractor returned NaN or infinite features")
            if shift is None:
                shift = feats.mean(dim=0)
                total_sum = torch.zeros_like(shift)
                total_outer = torch.zeros(shift.numel(), shift.numel(), dtype=torch.float64)
            elif feats.shape[1] != shift.numel():
                raise ValueError(
                    f"the feature extractor returned {feats.shape[1]} features for one batch and "
                    f"{shift.numel()} for an earlier one; it must give the same dimension for every batch"
                )
            centred = feats - shift
            total_sum += centred.sum(dim=0)
            total_outer += centred.T @ centred
            count += feats.shape[0]
            bar.update(feats.shape[0])

    if count < 2 or shift is None:
        raise ValueError(f"FID needs at least 2 images per set to estimate a covariance; got {count}")
    mean_centred = total_sum / count
    sigma = (total_outer - count * torch.outer(mean_centred, mean_centred)) / (count - 1)
    sigma = (sigma + sigma.T) / 2
    if count <= shift.numel():
        logger.warning(
            "FID statistics from %d images of %d features: the covariance is rank-deficient and FID is biased "
            "upwards by small samples; compare only FIDs computed from the same number of images",
            count,
            shift.numel(),
        )
    return FeatureStatistics(mu=shift + mean_centred, sigma=sigma)


# --------------------------------------------------------------------------------------------------------
# Inception-v3 features
# --------------------------------------------------------------------------------------------------------

_FEATURE_PREFIXES_SKIPPED = ("fc.", "AuxLogits.")


def _load_inception_state(weights: Inception_V3_Weights | str | os.PathLike) -> dict[str, Tensor]:
    """The state dict behind ``weights``: torchvision's (hub cache or download) or a local file's."""
    if isinstance(weights, WeightsEnum):
        alternatives = (
            "  - pass InceptionFeatures(weights=<path of that file>) (any local copy of it), or\n"
            "  - pass another feature extractor to fid(..., extractor=...), or weights=None for random\n"
            "    Inception features; FIDs computed that way are not comparable to published ones."
        )
        return fetch_weights_enum(weights, f"Inception-v3 weights for FID ({weights!r})", alternatives)
    path = os.fspath(weights)
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"Inception weights file {path!r} does not exist; pass the path of torchvision's Inception-v3 "
            f"checkpoint (inception_v3_google-0cc3c7bd.pth), Inception_V3_Weights.IMAGENET1K_V1, or None"
        )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FETCH_ERRORS as err:
        raise ValueError(
            f"could not read {path!r} as a PyTorch checkpoint ({type(err).__name__}: {err}); pass the path of "
            f"torchvision's Inception-v3 state dict"
        ) from err
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise ValueError(f"{path!r} does not hold a state dict (a mapping of names to tensors)")
    # Checkpoints saved from nn.DataParallel prefix every key with "module.".
    if state and all(k.startswith("module.") for k in state):
        state = {k[len("module.") :]: v for k, v in state.items()}
    return state


class InceptionFeatures(nn.Module):
    """The 2048-d pool features of torchvision's Inception-v3 (before the classifier), FID's usual extractor.

    Preprocessing, inside ``forward``: images in [0, 1] are bilinearly resized to 299 × 299 (antialiased when
    shrinking, like PIL), grayscale images are repeated to three channels, and the result is normalised with
    ImageNet's mean and std; the network then applies torchvision's ``transform_input``, exactly as
    ``torchvision.models.inception_v3(weights=Inception_V3_Weights.IMAGENET1K_V1)`` does (the net effect is
    the [-1, 1] scaling the ported Google weights were trained with). The network is frozen (no parameter
    requires grad) and stays in eval mode even when ``.train()`` is called.

    These are torchvision's Inception weights, not the TensorFlow graph that published FIDs were computed with
    (``pt_inception-2015-12-05``); values are close in practice but not identical, so compare FIDs computed
    with this class with each other, not with numbers from papers.

    Args:
        weights: where the weights come from.
            ``Inception_V3_Weights.IMAGENET1K_V1`` (default): torchvision's ImageNet weights, read from the
            torch hub cache (``torch.hub.get_dir()/checkpoints/inception_v3_google-0cc3c7bd.pth``) or
            downloaded there; if they cannot be had, a RuntimeError says where to put the file and what else
            to do.
            A path: a local file holding a torchvision Inception-v3 state dict (optionally under a
            ``"state_dict"`` key; ``fc.*`` and ``AuxLogits.*`` entries are ignored, every other one must match).
            None: random weights (He-initialised convolutions, from torch's global generator). Such features
            still give a valid distance between image sets, useful for tests and for comparisons made with the
            same seed, but the numbers mean nothing outside that.

    Raises:
        RuntimeError: the enum's file could not be downloaded or read; the message lists the fixes.
        FileNotFoundError: ``weights`` is a path that does not exist.
        ValueError: the file is not a torchvision Inception-v3 state dict.
        TypeError: ``weights`` is of another kind (e.g. another model's weights enum).

    Shape:
        x: (B, C, H, W) images with values in [0, 1], C = 1 or 3, any H and W.
        output: (B, 2048) features.
    """

    feature_dim: int = 2048
    input_size: int = 299

    def __init__(self, weights: InceptionWeights = Inception_V3_Weights.IMAGENET1K_V1) -> None:
        super().__init__()
        if isinstance(weights, WeightsEnum) and not isinstance(weights, Inception_V3_Weights):
            raise TypeError(f"InceptionFeatures takes Inception_V3_Weights, a file path or None; got {weights!r}")
        if weights is not None and not isinstance(weights, (WeightsEnum, str, os.PathLike)):
            raise TypeError(
                f"weights must be Inception_V3_Weights, a file path or None; got {type(weights).__name__}"
            )
        # transform_input=True matches torchvision's pretrained model, whatever the weights, so that a local
        # copy of torchvision's file and the enum give the same features.
        net = Inception3(aux_logits=False, transform_input=True, init_weights=False)
        net.fc = nn.Identity()
        if weights is None:
            # He initialisation keeps activations at unit scale through the 94 convolutions; torchvision's
            # fixed-std init makes these features ~1e10 and the FID ~1e18, which wastes float precision.
            for module in net.modules():
                if isinstance(module, nn.Conv2d):
                    nn.init.kaiming_normal_(module.weight, mode="fan_in", nonlinearity="relu")
        else:
            state = _load_inception_state(weights)
            state = {k: v for k, v in state.items() if not k.startswith(_FEATURE_PREFIXES_SKIPPED)}
            try:
                net.load_state_dict(state)
            except RuntimeError as err:
                raise ValueError(
                    f"the weights in {os.fspath(weights)!r} are not a torchvision Inception-v3 state dict: {err}"
                ) from err
        net.requires_grad_(False)
        self.backbone = net.eval()
        self.register_buffer("input_mean", torch.tensor(_IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("input_std", torch.tensor(_IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def train(self, mode: bool = True) -> InceptionFeatures:
        """Keep the backbone in eval mode (its BatchNorm statistics are part of the feature definition)."""
        super().train(mode)
        self.backbone.eval()
        return self

    def forward(self, x: Tensor) -> Tensor:
        """Pool features of a batch of images.

        Args:
            x: images (B, C, H, W) with values in [0, 1], C = 1 or 3.

        Returns:
            features (B, 2048).
        """
        check_images(x, "x")
        channels = x.shape[1]
        if channels not in (1, 3):
            raise ValueError(f"InceptionFeatures takes 1 (grayscale) or 3 (RGB) channels; got {channels}")
        x = x.to(self.input_mean.dtype)
        if x.shape[-2:] != (self.input_size, self.input_size):
            x = F.interpolate(x, size=(self.input_size,) * 2, mode="bilinear", align_corners=False, antialias=True)
        if channels == 1:
            x = x.expand(-1, 3, -1, -1)
        return self.backbone((x - self.input_mean) / self.input_std)


# --------------------------------------------------------------------------------------------------------
# FID
# --------------------------------------------------------------------------------------------------------


def _checked_first(images: Tensor | Iterable[Tensor], name: str) -> Tensor | Iterable[Tensor]:
    """Check a tensor of images, or the first batch of an iterable; return an equivalent input."""
    if isinstance(images, Tensor):
        check_images(images, name)
        if images.shape[0] < 2:
            raise ValueError(f"FID needs at least 2 {name} images to estimate a covariance; got {images.shape[0]}")
        return images
    if isinstance(images, (str, bytes)) or not isinstance(images, Iterable):
        check_images(images, name)
    iterator = iter(images)
    first = next(iterator, None)
    if first is None:
        raise ValueError(f"{name} yielded no image batches")
    check_images(first, f"the first batch of {name}")
    return itertools.chain([first], iterator)


def fid(
    real: Tensor | Iterable[Tensor],
    fake: Tensor | Iterable[Tensor],
    extractor: FeatureExtractor | None = None,
    *,
    batch_size: int = 50,
    device: torch.device | str | None = None,
    progress: bool = True,
) -> float:
    """The Fréchet distance between the feature statistics of real and generated images.

    Args:
        real: images (N, C, H, W) with values in [0, 1], or an iterable of such batches.
        fake: generated images in the same format (any N >= 2; C, H, W as the extractor allows).
        extractor: any callable mapping images (B, C, H, W) in [0, 1] to features (B, F): an
            :class:`InceptionFeatures` (the default, built with torchvision's ImageNet weights each call;
            build one and pass it to reuse it), or e.g. a small network for CPU runs. FIDs are comparable only
            when computed with the same extractor and the same numbers of images.
        batch_size: images per extractor call.
        device: where the extractor runs (see :func:`feature_statistics`).
        progress: show progress bars.

    Returns:
        The FID (>= 0; 0 for identical feature statistics).

    Raises:
        RuntimeError: the default Inception weights are missing (offline); the message lists the fixes.
        TypeError, ValueError: inputs that are not images in [0, 1], fewer than 2 images in a set, or
            features of different dimensions for the two sets.
    """
    # Check the input (a tensor, or the first batch of an iterable) before building Inception or running
    # anything, so that bad input fails at once and by name.
    real = _checked_first(real, "real")
    fake = _checked_first(fake, "fake")
    if extractor is None:
        extractor = InceptionFeatures()
    real_stats = feature_statistics(real, extractor, batch_size=batch_size, device=device, progress=progress)
    fake_stats = feature_statistics(fake, extractor, batch_size=batch_size, device=device, progress=progress)
    if real_stats.mu.numel() != fake_stats.mu.numel():
        raise ValueError(
            f"the extractor gave {real_stats.mu.numel()} features for the real images and "
            f"{fake_stats.mu.numel()} for the fake ones; the two sets must have the same feature dimension "
            f"(for a flattening extractor: the same image size)"
        )
    return frechet_distance(real_stats.mu, real_stats.sigma, fake_stats.mu, fake_stats.sigma)
