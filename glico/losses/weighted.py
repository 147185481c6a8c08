"""Weighted sums of reconstruction losses."""
from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from torch import Tensor, nn

from glico.losses.base import ReconstructionLossBase

__all__ = ["WeightedSum"]


class WeightedSum(ReconstructionLossBase):
    """``sum_i w_i * loss_i(pred, target)``, itself a reconstruction loss.

    Example: ``WeightedSum([(1.0, PerceptualLoss()), (0.5, LaplacianPyramidLoss())])``.

    ``prepare_target`` returns a tuple with each part's prepared target, in order, so cached targets work
    for sums too. Each part checks its own inputs.

    Args:
        terms: (weight, loss) pairs; weights finite and non-negative, at least one term. Each loss must
            provide ``prepare_target`` and ``forward_prepared`` (e.g. derive from ``ReconstructionLossBase``)
            and be an ``nn.Module``.

    Shape:
        pred, target: (B, C, H, W), float in [0, 1]. Output: (B,).
    """

    def __init__(self, terms: Sequence[tuple[float, nn.Module]]) -> None:
        super().__init__()
        terms = list(terms)
        if not terms:
            raise ValueError("WeightedSum needs at least one (weight, loss) term")
        weights: list[float] = []
        losses: list[nn.Module] = []
        for i, term in enumerate(terms):
            if not isinstance(term, tuple) or len(term) != 2:
                raise TypeError(f"term {i} must be a (weight, loss) pair; got {term!r}")
            w, loss = term
            if isinstance(w, nn.Module) and not isinstance(loss, nn.Module):
                raise TypeError(f"term {i} is (loss, weight); write it as (weight, loss)")
            w = float(w)
            if not math.isfinite(w) or w < 0:
                raise ValueError(f"term {i}: weights must be finite and non-negative; got {w}")
            if not (isinstance(loss, nn.Module) and hasattr(loss, "prepare_target")
                    and hasattr(loss, "forward_prepared")):
                raise TypeError(
                    f"term {i}: {type(loss).__name__} is not a reconstruction loss (an nn.Module with "
                    f"prepare_target and forward_prepared)"
                )
            weights.append(w)
            losses.append(loss)
        self.weights = tuple(weights)
        self.losses = nn.ModuleList(losses)

    def prepare_target(self, target: Tensor) -> tuple[Any, ...]:
        """Each part's prepared target.

        Args:
            target: images, float in [0, 1].

        Returns:
            A tuple with ``loss_i.prepare_target(target)`` for each part, in order.

        Shape:
            target: (B, C, H, W).
        """
        return tuple(loss.prepare_target(target) for loss in self.losses)

    def forward_prepared(self, pred: Tensor, prepared: tuple[Any, ...]) -> Tensor:
        """Weighted sum of the parts' per-sample losses.

        Args:
            pred: generated images, float in [0, 1].
            prepared: ``prepare_target(target)``.

        Returns:
            ``sum_i w_i * loss_i.forward_prepared(pred, prepared[i])``.

        Shape:
            pred: (B, C, H, W). Output: (B,).
        """
        if len(prepared) != len(self.losses):
            raise ValueError(
                f"prepared target has {len(prepared)} parts but this WeightedSum has {len(self.losses)} losses"
            )
        total = None
        for w, loss, p in zip(self.weights, self.losses, prepared):
            value = w * loss.forward_prepared(pred, p)
            total = value if total is None else total + value
        return total

    def extra_repr(self) -> str:
        return f"weights={self.weights}"
