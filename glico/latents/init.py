"""Initialisers of the code table.

Each maps the training images (and labels, -1 for unlabelled images) to N unit-norm codes in R^d.
The paper's default is random on the sphere; it also studies codes near a hypercube vertex per class
and codes from a pretrained network's features; GLO initialises with PCA of the images.
"""
from __future__ import annotations

from typing import Callable, Protocol, runtime_checkable

import torch
from torch.nn import functional as F


@runtime_checkable
class CodeInitializer(Protocol):
    """Produces initial codes."""

    def __call__(
        self, images: torch.Tensor, labels: torch.Tensor, dim: int, generator: torch.Generator
    ) -> torch.Tensor:
        """Shape: images (N, C, H, W), labels (N,) with -1 = unlabelled -> codes (N, dim), unit norm."""
        ...


class RandomSphere:
    """Uniform on the unit sphere: normalised standard Gaussian vectors (the paper's default)."""

    def __call__(self, images, labels, dim, generator):
        z = torch.randn(images.shape[0], dim, generator=generator)
        return F.normalize(z, dim=1)

    def __repr__(self) -> str:
        return "RandomSphere()"


class HypercubeInit:
    """Each class near its own hypercube vertex: z = normalise(v_c / sqrt(d) + spread * n), n ~ N(0, I/d).

    Vertices v_c in {-1, +1}^d are drawn at random per class (distinct with overwhelming probability
    for d >= 16); unlabelled images get random codes on the sphere.

    Args:
        spread: size of the per-image perturbation relative to the vertex (both have norm ~1).
    """

    def __init__(self, spread: float = 0.5) -> None:
        if spread < 0:
            raise ValueError(f"spread must be >= 0; got {spread}")
        self.spread = spread

    def __call__(self, images, labels, dim, generator):
        n = images.shape[0]
        num_classes = int(labels.max()) + 1 if (labels >= 0).any() else 0
        vertices = torch.randint(0, 2, (max(num_classes, 1), dim), generator=generator).float() * 2 - 1
        noise = torch.randn(n, dim, generator=generator) / dim**0.5
        z = torch.randn(n, dim, generator=generator)
        labelled = labels >= 0
        z[labelled] = vertices[labels[labelled]] / dim**0.5 + self.spread * noise[labelled]
        return F.normalize(z, dim=1)

    def __repr__(self) -> str:
        return f"HypercubeInit(spread={self.spread})"


class PCAInit:
    """GLO's initialisation: the images' top-d principal components, per image, normalised.

    When there are fewer informative components than d (N - 1 or the pixel count is smaller), the
    remaining coordinates are filled with small Gaussian noise so codes stay distinct.
    """

    def __call__(self, images, labels, dim, generator):
        return _pca_codes(images.flatten(1).double(), dim, generator)

    def __repr__(self) -> str:
        return "PCAInit()"


class FeatureInit:
    """Codes from a network's features of the images (e.g. a pretrained ResNet's penultimate layer),
    reduced to d dimensions by PCA and normalised.

    Args:
        network: maps images (B, C, H, W) in [0, 1] to features (B, F) (or (B, F, 1, 1)).
        batch_size: images per forward pass.
    """

    def __init__(self, network: Callable[[torch.Tensor], torch.Tensor], batch_size: int = 256) -> None:
        self.network, self.batch_size = network, batch_size

    @torch.no_grad()
    def __call__(self, images, labels, dim, generator):
        net = self.network
        if isinstance(net, torch.nn.Module):
            net.eval()
            device = next(net.parameters(), torch.empty(0)).device
        else:
            device = torch.device("cpu")
        feats = [net(images[i : i + self.batch_size].to(device)).flatten(1).cpu() for i in range(0, len(images), self.batch_size)]
        return _pca_codes(torch.cat(feats).double(), dim, generator)

    def __repr__(self) -> str:
        return f"FeatureInit(network={type(self.network).__name__})"


def _pca_codes(x: torch.Tensor, dim: int, generator: torch.Generator) -> torch.Tensor:
    x = x - x.mean(0, keepdim=True)
    _, s, vh = torch.linalg.svd(x, full_matrices=False)
    k = min(dim, int((s > s[0] * 1e-6).sum()) if s.numel() and s[0] > 0 else 0)
    proj = x @ vh[:k].T
    proj = proj / proj.norm(dim=1).clamp_min(1e-12).mean()  # comparable scale to the noise below
    filler = torch.randn(x.shape[0], dim - k, generator=generator, dtype=x.dtype) * 1e-2
    return F.normalize(torch.cat([proj, filler], dim=1), dim=1).float()
