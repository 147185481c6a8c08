"""Classification losses for the conditional term: cross-entropy and the cosine loss.

Both return one value per sample, shape (B,); the caller reduces (mean over the labelled part of a batch).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def _check(logits: Tensor, labels: Tensor) -> None:
    if logits.dim() != 2:
        raise ValueError(f"logits must have shape (B, num_classes); got {tuple(logits.shape)}")
    if labels.dim() != 1 or labels.shape[0] != logits.shape[0]:
        raise ValueError(
            f"labels must have shape (B,) = ({logits.shape[0]},) to match logits; got {tuple(labels.shape)}"
        )
    if labels.is_floating_point() or labels.dtype == torch.bool:
        raise TypeError(f"labels must be integer class indices; got dtype {labels.dtype}")


class CrossEntropy(nn.Module):
    """Softmax cross-entropy on raw logits, per sample (the paper's default L_CE).

    Args:
        label_smoothing: in [0, 1); the target puts ``1 - label_smoothing`` on the true class and spreads
            ``label_smoothing`` evenly over all classes (as in ``torch.nn.functional.cross_entropy``).

    Shape:
        logits: (B, num_classes) raw logits (not softmaxed).
        labels: (B,) class indices.
        output: (B,)
    """

    def __init__(self, label_smoothing: float = 0.0) -> None:
        super().__init__()
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1); got {label_smoothing}")
        self.label_smoothing = label_smoothing

    def forward(self, logits: Tensor, labels: Tensor) -> Tensor:
        """Per-sample cross-entropy.

        Args:
            logits: (B, num_classes) raw logits.
            labels: (B,) integer class indices.

        Returns:
            (B,) losses.
        """
        _check(logits, labels)
        return F.cross_entropy(logits, labels.long(), reduction="none", label_smoothing=self.label_smoothing)


class CosineLoss(nn.Module):
    """The cosine loss of Barz & Denzler, "Deep Learning on Small Datasets using Cosine Loss" (WACV 2020).

    ``1 − cos(logits, one_hot(y))``: one minus the cosine similarity between the output vector and the
    one-hot embedding of the label, which equals ``1 − logits[y] / ‖logits‖₂``. It lies in [0, 2], is 0
    when the output points exactly at its class and 1 when it is orthogonal to it. It is invariant to
    the scale of the logits, which Barz & Denzler argue suits small samples; GLICO's Table III found
    cross-entropy better. (Their optional extra cross-entropy term on a further layer is not included.)
    An all-zero logit row has cosine 0, so loss 1.

    Shape:
        logits: (B, num_classes) raw outputs.
        labels: (B,) class indices.
        output: (B,)
    """

    def __init__(self, eps: float = 1e-12) -> None:
        super().__init__()
        self.eps = eps

    def forward(self, logits: Tensor, labels: Tensor) -> Tensor:
        """Per-sample cosine loss.

        Args:
            logits: (B, num_classes) raw outputs.
            labels: (B,) integer class indices.

        Returns:
            (B,) losses in [0, 2].
        """
        _check(logits, labels)
        unit = F.normalize(logits, dim=1, eps=self.eps)
        # cos(v, e_y) = v_y / ‖v‖ : picking the label's component avoids materialising the one-hot.
        return 1.0 - unit.gather(1, labels.long().unsqueeze(1)).squeeze(1)
