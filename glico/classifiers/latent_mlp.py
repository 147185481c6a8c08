"""The "latent classifier" variant: a 3-layer MLP that classifies the codes z directly."""
from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor, nn


class LatentMLP(nn.Module):
    """A 3-layer fully connected classifier on latent codes (the paper's "latent classifier").

    Linear(code_dim, hidden) → ReLU → Linear(hidden, hidden) → ReLU → Linear(hidden, num_classes).
    With it, L_CE is computed on (z_i, y_i) instead of (G(z_i), y_i); ``consumes_codes`` is ``True``.

    Args:
        code_dim: dimension d of the codes (the paper uses 128).
        num_classes: number of classes.
        hidden: width of the two hidden layers.

    Shape:
        x: (B, code_dim) codes.
        output: (B, num_classes) logits.
    """

    consumes_codes: ClassVar[bool] = True

    def __init__(self, code_dim: int, num_classes: int, hidden: int = 256) -> None:
        super().__init__()
        if code_dim < 1 or num_classes < 1 or hidden < 1:
            raise ValueError(
                f"code_dim, num_classes and hidden must be >= 1; got {code_dim}, {num_classes}, {hidden}"
            )
        self.code_dim = code_dim
        self.num_classes = num_classes
        self.net = nn.Sequential(
            nn.Linear(code_dim, hidden),
            nn.ReLU(),
            nn.Linear(hidden, hidden),
            nn.ReLU(),
            nn.Linear(hidden, num_classes),
        )

    def forward(self, x: Tensor) -> Tensor:
        """Logits for a batch of codes.

        Args:
            x: codes (B, code_dim).

        Returns:
            logits (B, num_classes).
        """
        if not isinstance(x, torch.Tensor) or x.dim() != 2 or x.shape[1] != self.code_dim:
            got = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(f"LatentMLP expects codes of shape (B, {self.code_dim}); got {got}")
        return self.net(x)
