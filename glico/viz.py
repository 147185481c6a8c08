"""Pictures: image grids and loss curves."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch
from torch.nn import functional as F


def save_grid(images: torch.Tensor, path: str | Path, nrow: int, min_cell: int = 64, pad: int = 2) -> Path:
    """Save images in [0, 1] as a PNG grid, ``nrow`` images per row; small images are enlarged
    (nearest neighbour) so each cell is at least ``min_cell`` pixels wide.

    Shape:
        images (N, C, H, W) with C in {1, 3}
    """
    from torchvision.utils import save_image

    images = images.detach().float().cpu().clamp(0, 1)
    scale = max(1, -(-min_cell // images.shape[-1]))
    if scale > 1:
        images = F.interpolate(images, scale_factor=scale, mode="nearest")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_image(images, path, nrow=nrow, padding=pad, pad_value=1.0)
    return path


def class_grid(model, per_class: int = 8, seed: int = 0) -> torch.Tensor:
    """New samples of a fitted model, ``per_class`` per class, classes in rows.

    Shape:
        returns (num_classes * per_class, C, H, W)
    """
    labels = torch.arange(model.num_classes).repeat_interleave(per_class)
    return model.sample(labels, seed=seed)


def interpolation_grid(model, pairs: Sequence[tuple[int, int]], steps: int = 8) -> torch.Tensor:
    """For each (i, j) pair of training images, the images along the interpolation between their codes.

    Shape:
        returns (len(pairs) * steps, C, H, W)
    """
    return torch.cat([model.interpolate(i, j, steps=steps, seed=k) for k, (i, j) in enumerate(pairs)])


def write_fit_pictures(model, out: str | Path, train_labels: torch.Tensor, per_class: int = 8,
                       seed: int = 0, train_images: torch.Tensor | None = None) -> dict[str, str]:
    """The pictures of a fitted model in ``out``: ``reconstructions.png`` (the generator's reconstructions of
    the first ``8 * per_class`` training images; with ``train_images``, each row of originals is followed by
    the row of their reconstructions), ``samples.png`` (``per_class`` new images per class, one row per class)
    and ``interpolation.png`` (slerp between two codes, for up to six classes that have two training images;
    not written when none has).

    Returns:
        ``{"reconstructions": path, "samples": path[, "interpolation": path]}``.
    """
    out = Path(out)
    files = {}
    n = model.codes.num_codes
    # With originals, the labelled rows only: they come first in the code table (unlabelled ones follow).
    rec_idx = torch.arange(min(n if train_images is None else min(n, len(train_images)), 8 * per_class))
    rec = model.reconstruct(rec_idx.to(model.labels.device)).cpu()
    if train_images is not None:
        orig = train_images[rec_idx].to(rec.dtype).cpu()
        rows = []
        for start in range(0, rec.shape[0], per_class):
            o, r = orig[start : start + per_class], rec[start : start + per_class]
            if o.shape[0] < per_class:  # pad a short last row so originals and reconstructions stay aligned
                blank = torch.ones(per_class - o.shape[0], *o.shape[1:])
                o, r = torch.cat([o, blank]), torch.cat([r, blank])
            rows += [o, r]
        rec = torch.cat(rows)
    files["reconstructions"] = str(save_grid(rec, out / "reconstructions.png", nrow=per_class))
    files["samples"] = str(save_grid(class_grid(model, per_class, seed), out / "samples.png", nrow=per_class))
    pairs = []
    for c in range(min(model.num_classes, 6)):
        members = (train_labels == c).nonzero().flatten().tolist()
        if len(members) >= 2:
            pairs.append((members[0], members[1]))
    if pairs:
        files["interpolation"] = str(save_grid(interpolation_grid(model, pairs, steps=8), out / "interpolation.png",
                                               nrow=8))
    return files


def plot_losses(history, path: str | Path) -> Path:
    """Plot the fit's logged reconstruction and classification losses to a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 2, figsize=(9, 3.2))
    ax[0].plot(history.step, history.reconstruction)
    ax[0].set(title="reconstruction loss", xlabel="step", yscale="log")
    ax[1].plot(history.step, history.classification)
    ax[1].set(title="classification loss", xlabel="step")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
