"""Batch-level standard augmentation on tensors (random crop with padding, horizontal flip), on the
batch's device: every method, the baseline included, trains with it (the paper's protocol)."""
from __future__ import annotations

import torch
from torch.nn import functional as F


def random_crop_flip(
    images: torch.Tensor, pad: int, flip: bool, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Randomly translate each image by up to ``pad`` pixels (reflect padding, then a random crop of
    the original size) and, if ``flip``, mirror it horizontally with probability 1/2.

    Shape:
        images (B, C, H, W) -> (B, C, H, W)
    """
    b, c, h, w = images.shape
    dev = images.device
    out = images
    if pad > 0:
        padded = F.pad(images, (pad, pad, pad, pad), mode="reflect" if pad < min(h, w) else "replicate")
        dy = torch.randint(0, 2 * pad + 1, (b,), generator=generator, device=dev)
        dx = torch.randint(0, 2 * pad + 1, (b,), generator=generator, device=dev)
        rows = (dy[:, None] + torch.arange(h, device=dev))[:, None, :, None].expand(b, c, h, w + 2 * pad)
        out = padded.gather(2, rows)
        cols = (dx[:, None] + torch.arange(w, device=dev))[:, None, None, :].expand(b, c, h, w)
        out = out.gather(3, cols)
    if flip:
        mirror = torch.rand(b, generator=generator, device=dev) < 0.5
        out = torch.where(mirror[:, None, None, None], out.flip(3), out)
    return out
