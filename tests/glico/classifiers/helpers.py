"""Shared checks for the classifier tests."""
from __future__ import annotations

import torch
from torch import nn


def assert_raw_logits(model: nn.Module, logits: torch.Tensor) -> None:
    """No softmax anywhere in the model, and the outputs do not look like probabilities."""
    assert not any(isinstance(m, (nn.Softmax, nn.LogSoftmax, nn.Softmax2d)) for m in model.modules())
    assert torch.isfinite(logits).all()
    # Probability rows would all be >= 0 and sum to 1: logits of a random model are neither.
    assert (logits < 0).any()
    assert not torch.allclose(logits.sum(dim=1), torch.ones(logits.shape[0], dtype=logits.dtype), atol=1e-3)


def assert_gradients_everywhere(model: nn.Module, x: torch.Tensor) -> None:
    """A loss on the logits gives a non-zero gradient to the input and a finite one to every parameter."""
    model.zero_grad(set_to_none=True)
    x = x.clone().requires_grad_(True)
    logits = model(x)
    # A non-uniform weighting of the logits: a plain sum is blind to the head's bias-free directions.
    w = torch.linspace(-1.0, 1.0, logits.numel(), dtype=logits.dtype).view_as(logits)
    (logits * w).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    missing = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing, f"no (finite) gradient for {missing[:5]}"
    zero = [n for n, p in model.named_parameters() if p.grad.abs().sum() == 0]
    assert not zero, f"zero gradient for {zero[:5]}"
