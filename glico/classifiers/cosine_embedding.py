"""The small-data classifier of Barz & Denzler, "Deep Learning on Small Datasets using Cosine Loss"
(WACV 2020): the method ``[29]`` of the GLICO paper's Table I, as a downstream classifier.

The network's K outputs are an embedding ψ(x); classes are the one-hot vectors φ(y) = e_y. Training
minimises the cosine loss ``1 − ⟨φ(y), ψ(x) / ‖ψ(x)‖⟩``, optionally plus ``λ`` times the cross-entropy of a
further linear layer ξ on the normalised embedding (their "cosine + xent", λ = 0.1, their best variant).
A class is predicted by its nearest class embedding, i.e. the largest cosine similarity.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F

__all__ = ["CosineEmbeddingClassifier", "XENT_WEIGHT"]

#: Barz & Denzler's weight of the extra cross-entropy term.
XENT_WEIGHT = 0.1


class CosineEmbeddingClassifier(nn.Module):
    """Wraps a network with K outputs as Barz & Denzler's cosine-loss classifier.

    ``forward`` returns the cosine similarities of the embedding with the K one-hot class vectors (the
    normalised embedding itself, in [−1, 1]): their argmax is the prediction, so the wrapper scores like any
    classifier. :meth:`training_loss` is the loss :func:`glico.experiments.downstream.train_classifier`
    uses for a classifier that defines one.

    Args:
        net: a network mapping images to ``num_classes`` outputs (any downstream classifier).
        num_classes: K, the embedding's dimension (one-hot class embeddings).
        xent_weight: λ of the extra cross-entropy term on a linear layer over the normalised embedding
            (default 0.1, Barz & Denzler's); 0: the cosine loss alone (no extra layer).

    Shape:
        images (B, C, H, W) in [0, 1] -> (B, num_classes) cosine similarities.
    """

    def __init__(self, net: nn.Module, num_classes: int, xent_weight: float = XENT_WEIGHT) -> None:
        super().__init__()
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
            raise ValueError(f"num_classes must be an integer >= 2; got {num_classes!r}")
        if not xent_weight >= 0:
            raise ValueError(f"xent_weight must be >= 0 (0: cosine loss alone); got {xent_weight!r}")
        self.net, self.num_classes, self.xent_weight = net, num_classes, float(xent_weight)
        self.head = nn.Linear(num_classes, num_classes) if xent_weight > 0 else None

    def forward(self, images: Tensor) -> Tensor:
        out = self.net(images)
        if out.dim() != 2 or out.shape[1] != self.num_classes:
            raise ValueError(f"the wrapped network must return (B, {self.num_classes}); got {tuple(out.shape)}")
        return F.normalize(out, dim=1)

    def training_loss(self, cosines: Tensor, targets: Tensor) -> Tensor:
        """The batch's mean loss: ``1 − cos(ψ(x), t)`` against the target's direction (the one-hot vector of
        a hard label; a soft target, as MixUp makes, normalised to unit length), plus ``xent_weight`` times
        the cross-entropy of the extra layer.

        Shape:
            cosines (B, K) (the output of forward); targets (B,) class indices or (B, K) probabilities -> scalar
        """
        if targets.dim() == 1:
            if targets.is_floating_point():
                raise TypeError(f"hard targets (B,) must be integer class indices; got dtype {targets.dtype}")
            cos = cosines.gather(1, targets.long().unsqueeze(1)).squeeze(1)
        else:
            if targets.shape != cosines.shape:
                raise ValueError(f"soft targets must have shape {tuple(cosines.shape)}; got {tuple(targets.shape)}")
            cos = (cosines * F.normalize(targets.to(cosines.dtype), dim=1)).sum(1)
        loss = (1.0 - cos).mean()
        if self.head is not None:
            xent_targets = targets.long() if targets.dim() == 1 else targets.to(cosines.dtype)
            loss = loss + self.xent_weight * F.cross_entropy(self.head(cosines), xent_targets)
        return loss
