"""How noise enters the generator input.

The paper concatenates ε ~ N(0, σ²I) to the code z, so the generator sees [z, ε] (Section III-B,
"Noise concatenation"); its ablations add ε to z instead, or use no noise. Each policy maps codes
(B, d) to generator inputs (B, out_dim(d)).
"""
from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch


@runtime_checkable
class NoisePolicy(Protocol):
    """Turns codes into generator inputs."""

    def out_dim(self, code_dim: int) -> int:
        """Length of a generator input built from a code of length ``code_dim``."""
        ...

    def __call__(self, codes: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Shape: codes (B, d) -> inputs (B, out_dim(d))."""
        ...


class ConcatNoise:
    """Concatenate Gaussian noise to the code: input = [z, ε], ε ~ N(0, σ²I) of length ``dim``.

    The paper gives neither σ nor the noise length; ``dim=32`` and ``sigma=0.1`` are this library's
    choices (small next to a unit code, so reconstruction is not swamped).

    Args:
        dim: length of ε.
        sigma: standard deviation of each component of ε.
    """

    def __init__(self, dim: int = 32, sigma: float = 0.1) -> None:
        if dim < 1 or sigma < 0:
            raise ValueError(f"ConcatNoise needs dim >= 1 and sigma >= 0; got dim={dim}, sigma={sigma}")
        self.dim, self.sigma = dim, sigma

    def out_dim(self, code_dim: int) -> int:
        return code_dim + self.dim

    def __call__(self, codes: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        eps = torch.randn(codes.shape[0], self.dim, generator=generator, device=codes.device, dtype=codes.dtype)
        return torch.cat([codes, eps * self.sigma], dim=1)

    def __repr__(self) -> str:
        return f"ConcatNoise(dim={self.dim}, sigma={self.sigma})"


class AdditiveNoise:
    """Add Gaussian noise to the code: input = z + ε, ε ~ N(0, σ²I) (the paper's "Additive Noise" ablation).

    The paper gives no σ for either policy. The default here is 0.01, not ConcatNoise's 0.1: added to a
    unit code of length d = 128, ε with σ = 0.1 has norm ≈ 0.1·√128 ≈ 1.1 and would swamp the code, while
    concatenated it sits in coordinates of its own. The ablation therefore changes σ as well as where
    ε enters; pass ``AdditiveNoise(sigma=0.1)`` (``noise=additive`` takes the default) to change only
    the latter.

    Args:
        sigma: standard deviation of each component of ε.
    """

    def __init__(self, sigma: float = 0.01) -> None:
        if sigma < 0:
            raise ValueError(f"AdditiveNoise needs sigma >= 0; got {sigma}")
        self.sigma = sigma

    def out_dim(self, code_dim: int) -> int:
        return code_dim

    def __call__(self, codes: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        eps = torch.randn(codes.shape, generator=generator, device=codes.device, dtype=codes.dtype)
        return codes + eps * self.sigma

    def __repr__(self) -> str:
        return f"AdditiveNoise(sigma={self.sigma})"


class NoNoise:
    """The code alone is the generator input (the paper's "No Noise" ablation)."""

    def out_dim(self, code_dim: int) -> int:
        return code_dim

    def __call__(self, codes: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        return codes

    def __repr__(self) -> str:
        return "NoNoise()"
