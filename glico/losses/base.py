"""What every reconstruction loss provides, and the small helpers they share.

A reconstruction loss compares a batch of generated images with their targets and returns one value per
sample. The composer averages (or weights, or masks) those values itself, which is why no loss reduces over
the batch.

Every loss splits its work in two: ``prepare_target`` does everything that depends only on the target
(VGG features, a Laplacian pyramid), and ``forward_prepared`` compares a prediction with that prepared
target. The targets of GLICO are fixed images, so a training loop may prepare them once and reuse the
result at every step; ``select_prepared`` picks the rows of a batch out of such a cache.

Images follow the library's contract everywhere: float tensors in [0, 1], shape (B, C, H, W).
"""
from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import torch
from torch import Tensor, nn

from glico._checks import check_images

__all__ = ["ReconstructionLoss", "ReconstructionLossBase", "check_input", "check_pred", "concat_prepared",
           "select_prepared"]


@runtime_checkable
class ReconstructionLoss(Protocol):
    """The protocol of a reconstruction loss. Every implementation is also an ``nn.Module``.

    Images are float tensors in [0, 1] of shape (B, C, H, W); ``pred`` and ``target`` have the same shape.
    """

    def forward(self, pred: Tensor, target: Tensor) -> Tensor:
        """Per-sample loss between ``pred`` and ``target``.

        Args:
            pred: generated images in [0, 1].
            target: the images they should reconstruct, in [0, 1].

        Returns:
            One non-negative value per sample; the caller reduces over the batch.

        Shape:
            pred, target: (B, C, H, W). Output: (B,).
        """
        ...

    def prepare_target(self, target: Tensor) -> Any:
        """Precompute whatever depends only on ``target``.

        Args:
            target: images in [0, 1].

        Returns:
            An opaque value for ``forward_prepared``: a tensor or a (named) tuple whose tensors all have the
            batch as their first dimension, so that ``select_prepared`` can index it.

        Shape:
            target: (B, C, H, W).
        """
        ...

    def forward_prepared(self, pred: Tensor, prepared: Any) -> Tensor:
        """Per-sample loss against a prepared target; equals ``forward(pred, target)``.

        Args:
            pred: generated images in [0, 1].
            prepared: ``prepare_target(target)``, or rows of it picked with ``select_prepared``.

        Returns:
            One value per sample.

        Shape:
            pred: (B, C, H, W). Output: (B,).
        """
        ...


class ReconstructionLossBase(nn.Module):
    """A plain base class for reconstruction losses: subclasses write ``prepare_target`` and ``forward_prepared``.

    ``forward(pred, target)`` is defined once here as ``forward_prepared(pred, prepare_target(target))``, so
    the two paths cannot disagree. The default ``prepare_target`` checks the image contract and returns the
    target itself.
    """

    def forward(self, pred: Tensor, target: Tensor) -> Tensor:
        """Per-sample loss between ``pred`` and ``target``.

        Args:
            pred: generated images, float in [0, 1].
            target: target images, float in [0, 1], same shape as ``pred``.

        Returns:
            The loss of each sample.

        Shape:
            pred, target: (B, C, H, W). Output: (B,).
        """
        return self.forward_prepared(pred, self.prepare_target(target))

    def prepare_target(self, target: Tensor) -> Any:
        """Check ``target`` against the image contract and return it unchanged.

        Args:
            target: images, float in [0, 1].

        Returns:
            ``target``.

        Shape:
            target: (B, C, H, W).
        """
        return check_input(target, "target")

    def forward_prepared(self, pred: Tensor, prepared: Any) -> Tensor:
        """Per-sample loss against ``prepare_target(target)``; subclasses implement it.

        Args:
            pred: generated images, float in [0, 1].
            prepared: the value ``prepare_target`` returned (or rows of it).

        Returns:
            The loss of each sample.

        Shape:
            pred: (B, C, H, W). Output: (B,).
        """
        raise NotImplementedError(f"{type(self).__name__} must implement forward_prepared")


def select_prepared(prepared: Any, index: Tensor | slice | int) -> Any:
    """Pick rows (samples) out of a prepared target.

    Every tensor inside ``prepared`` (a tensor, or arbitrarily nested tuples and NamedTuples of them) is
    indexed along its first dimension; anything else (ints describing the image size, for example) is kept.
    This lets a training loop prepare the targets of the whole data set once and take a batch of them.

    Args:
        prepared: a value returned by some loss's ``prepare_target``.
        index: indices of the samples to keep, as accepted by ``Tensor.__getitem__`` on the first dimension.

    Returns:
        A value of the same structure, holding only the selected samples.
    """
    if isinstance(prepared, Tensor):
        return prepared[index]
    if isinstance(prepared, tuple):
        parts = [select_prepared(p, index) for p in prepared]
        if hasattr(prepared, "_fields"):  # a NamedTuple keeps its type
            return type(prepared)(*parts)
        return tuple(parts)
    return prepared


def concat_prepared(parts: list[Any]) -> Any:
    """Join prepared targets of consecutive chunks of images into the prepared target of all of them.

    The inverse of taking chunks with ``select_prepared``: tensors (at any depth of nested tuples and
    NamedTuples) are concatenated along their first dimension; anything else (ints describing the image
    size, for example) must be equal in every part and is kept once.

    Args:
        parts: values returned by the same loss's ``prepare_target`` for chunks of one image set, in order.

    Returns:
        A value of the same structure, holding every sample of every part.

    Raises:
        ValueError: ``parts`` is empty, or its non-tensor entries or structures differ.
    """
    if not parts:
        raise ValueError("concat_prepared needs at least one prepared target")
    first = parts[0]
    if isinstance(first, Tensor):
        return torch.cat(parts)
    if isinstance(first, tuple):
        if any(not isinstance(p, tuple) or len(p) != len(first) for p in parts):
            raise ValueError("prepared targets to concatenate have different structures")
        joined = [concat_prepared([p[k] for p in parts]) for k in range(len(first))]
        return type(first)(*joined) if hasattr(first, "_fields") else tuple(joined)
    if any(p != first for p in parts):
        raise ValueError(f"prepared targets to concatenate differ in a non-tensor entry: {[p for p in parts][:4]}")
    return first


def check_input(images: Tensor, name: str) -> Tensor:
    """``check_images`` for loss inputs, which may require grad.

    Args:
        images: the value to check (images, float in [0, 1]).
        name: how the argument is called in error messages.

    Returns:
        ``images`` unchanged.

    Shape:
        images: (B, C, H, W).
    """
    # The checks read values (min, max) and need no graph; reading a tensor that requires grad warns.
    check_images(images.detach() if isinstance(images, Tensor) else images, name)
    return images


def check_pred(pred: Tensor, expected_shape: torch.Size | tuple[int, ...]) -> Tensor:
    """Check that ``pred`` is a floating (B, C, H, W) tensor of the prepared target's shape.

    Only structure is checked, never values: ``pred`` is the generator's output inside the fit loop, and
    reading its values (min, max, finiteness) would cost host syncs at every step. Values are checked
    where images enter the library (fit, sample, augment) and on targets.

    Args:
        pred: generated images, float in [0, 1].
        expected_shape: the (B, C, H, W) shape of the target it is compared with.

    Returns:
        ``pred`` unchanged.

    Raises:
        TypeError: ``pred`` is not a floating-point tensor.
        ValueError: the shapes differ.
    """
    if not isinstance(pred, Tensor) or not pred.is_floating_point():
        got = pred.dtype if isinstance(pred, Tensor) else type(pred).__name__
        raise TypeError(f"pred must be a floating-point torch.Tensor of shape (B, C, H, W) in [0, 1]; got {got}")
    if tuple(pred.shape) != tuple(expected_shape):
        raise ValueError(
            f"pred and target must have the same shape (B, C, H, W); got pred {tuple(pred.shape)} "
            f"and target {tuple(expected_shape)}"
        )
    return pred
