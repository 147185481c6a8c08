"""What a classifier and a classification loss must provide.

GLICO's conditional term L_CE is computed by a classifier f on either the generator's output images
(the paper's default: the weak CNN) or directly on the latent codes (the "latent classifier" variant).
The same classifiers are reused downstream, where they are trained on real and GLICO-augmented images.
"""
from __future__ import annotations

from typing import ClassVar, Protocol, runtime_checkable

import torch
from torch import Tensor


@runtime_checkable
class Classifier(Protocol):
    """A classifier module (an ``nn.Module``) that returns raw logits.

    Attributes:
        consumes_codes: ``False`` when ``forward`` takes images (B, C, H, W) with values in [0, 1];
            ``True`` when it takes latent codes (B, d).
        num_classes: the number of classes, the width of the logits.

    Shape:
        x: (B, C, H, W) images in [0, 1], or (B, d) codes when ``consumes_codes`` is ``True``.
        output: (B, num_classes) logits, never softmax-normalised.
    """

    consumes_codes: ClassVar[bool]
    num_classes: int

    def forward(self, x: Tensor) -> Tensor:
        """Logits (B, num_classes) for a batch of images or codes."""
        ...

    def __call__(self, x: Tensor) -> Tensor:
        """Same as ``forward`` (through ``nn.Module.__call__``, with hooks)."""
        ...


@runtime_checkable
class ClassLoss(Protocol):
    """A classification loss that returns one value per sample; the caller reduces.

    Shape:
        logits: (B, num_classes) raw logits.
        labels: (B,) int64 class indices in 0..num_classes-1.
        output: (B,)
    """

    def __call__(self, logits: Tensor, labels: Tensor) -> Tensor:
        """Per-sample loss (B,)."""
        ...


def check_classifier_input(x: Tensor, channels: int, name: str) -> None:
    """Raise a ValueError naming ``name`` unless ``x`` is a (B, channels, H, W) tensor.

    Cheap shape check only (no pass over the data): the [0, 1] range is checked at the library's entry
    points, not on every forward.
    """
    if not isinstance(x, torch.Tensor) or x.dim() != 4 or x.shape[1] != channels:
        got = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"{name} expects images of shape (B, {channels}, H, W) with values in [0, 1]; got {got}")
