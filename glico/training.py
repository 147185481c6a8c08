"""The fit loop: optimisers, schedule, checkpoints, progress. The model itself is in :mod:`glico.model`.

Codes are updated sparsely (SparseAdam on the rows of the batch) and only those rows are projected
back to the unit sphere after each step. Losses are logged every ``log_every`` steps, so the step
itself has no host synchronisation.
"""
from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import torch
from tqdm.auto import tqdm

from glico.model import GLICO, UNLABELED

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FitConfig:
    """Settings of a GLICO fit.

    Args:
        epochs: passes over the (labelled + unlabelled) images.
        batch_size: images per step (capped at the number of images).
        lr: Adam learning rate of the generator and classifier.
        lr_codes: SparseAdam learning rate of the codes.
        betas: Adam betas for all three.
        cosine: anneal the learning rates to 0 along a cosine.
        seed: seeds code initialisation, shuffling and noise.
        device: where to fit ("cpu", "cuda", "cuda:1", ...).
        log_every: steps between logged losses (each log is one host sync).
        checkpoint: file to write the model to every ``checkpoint_every`` steps and at the end.
        checkpoint_every: steps between checkpoints (0 = only at the end).
        progress: show a progress bar.
    """

    epochs: int = 100
    batch_size: int = 128
    lr: float = 1e-3
    lr_codes: float = 1e-2
    betas: tuple[float, float] = (0.5, 0.999)
    cosine: bool = True
    seed: int = 0
    device: str = "cpu"
    log_every: int = 50
    checkpoint: str | None = None
    checkpoint_every: int = 0
    progress: bool = True

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1:
            raise ValueError(f"epochs and batch_size must be >= 1; got epochs={self.epochs}, batch_size={self.batch_size}")
        if self.lr <= 0 or self.lr_codes <= 0:
            raise ValueError(f"learning rates must be > 0; got lr={self.lr}, lr_codes={self.lr_codes}")


@dataclass
class FitHistory:
    """Logged losses: one entry per ``log_every`` steps."""

    step: list[int] = field(default_factory=list)
    total: list[float] = field(default_factory=list)
    reconstruction: list[float] = field(default_factory=list)
    classification: list[float] = field(default_factory=list)
    seconds: float = 0.0


def resolve_device(device: str | torch.device) -> torch.device:
    """Turn a device name into a device that exists here, or raise a clear error."""
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise ValueError(f"unknown device {device!r}: use 'cpu', 'cuda' or 'cuda:N'") from e
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {device!r} was asked for, but CUDA is not available on this machine; use --device cpu")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(f"device {device!r} does not exist: this machine has {torch.cuda.device_count()} CUDA device(s)")
    elif dev.type not in ("cpu", "mps"):
        raise ValueError(f"device {device!r} is not supported; use 'cpu' or 'cuda[:N]'")
    return dev


def fit(
    model: GLICO,
    images: torch.Tensor,
    labels: torch.Tensor,
    unlabeled: torch.Tensor | None = None,
    config: FitConfig = FitConfig(),
    on_log: Callable[[int, dict[str, float]], None] | None = None,
) -> FitHistory:
    """Fit ``model``'s codes, generator and classifier: minimise L = L_rec + γ·L_cls.

    Labelled images contribute both terms; ``unlabeled`` images (transductive mode) get codes too and
    contribute only the reconstruction term.

    Args:
        model: the composed GLICO model.
        images: labelled images in [0, 1].
        labels: their classes, 0..C-1, every class present.
        unlabeled: optional unlabelled images in [0, 1].
        config: settings.
        on_log: called with (step, losses) at each log point.

    Returns:
        The logged loss history.

    Shape:
        images (N, C, H, W), labels (N,), unlabeled (M, C, H, W)
    """
    images, labels, unlabeled = model.check_training_data(images, labels, unlabeled)
    device = resolve_device(config.device)
    all_images, all_labels = images, labels
    if unlabeled is not None:
        all_images = torch.cat([images, unlabeled])
        all_labels = torch.cat([labels, torch.full((unlabeled.shape[0],), UNLABELED, dtype=torch.long)])
    g = torch.Generator().manual_seed(config.seed)
    model.to(device)
    model.init_codes(all_images, all_labels, g)
    model.to(device)
    data = all_images.to(device)
    noise_gen = torch.Generator(device=device).manual_seed(config.seed + 1)

    params = list(model.generator.parameters())
    if model.classifier is not None:
        params += list(model.classifier.parameters())
    opt = torch.optim.Adam(params, lr=config.lr, betas=config.betas)
    opt_codes = torch.optim.SparseAdam([model.codes.weight], lr=config.lr_codes, betas=config.betas)
    n = data.shape[0]
    batch = min(config.batch_size, n)
    steps_per_epoch = math.ceil(n / batch)
    total_steps = config.epochs * steps_per_epoch
    scheds = []
    if config.cosine:
        scheds = [torch.optim.lr_scheduler.CosineAnnealingLR(o, total_steps) for o in (opt, opt_codes)]

    model.train()
    history = FitHistory()
    start = time.perf_counter()
    running = torch.zeros(3, device=device)
    bar = tqdm(total=total_steps, desc="fit GLICO", unit="step", disable=not config.progress, leave=False)
    step = 0
    for _ in range(config.epochs):
        perm = torch.randperm(n, generator=g).to(device)
        for k in range(steps_per_epoch):
            idx = perm[k * batch : (k + 1) * batch]
            losses = model.step_losses(data[idx], idx, noise_generator=noise_gen)
            opt.zero_grad(set_to_none=True)
            opt_codes.zero_grad(set_to_none=True)
            losses.total.backward()
            opt.step()
            opt_codes.step()
            model.codes.project_(idx)
            for s in scheds:
                s.step()
            running += torch.stack([losses.total.detach(), losses.reconstruction.detach(), losses.classification.detach()])
            step += 1
            bar.update(1)
            if step % config.log_every == 0 or step == total_steps:
                count = step - (history.step[-1] if history.step else 0)
                tot, rec, cls = (running / count).tolist()
                running.zero_()
                if not math.isfinite(tot):
                    raise FloatingPointError(
                        f"the fit loss became non-finite at step {step} (reconstruction {rec}, classification {cls}); "
                        f"lower the learning rates. The last checkpoint, if any, is kept: {config.checkpoint}"
                    )
                history.step.append(step)
                history.total.append(tot)
                history.reconstruction.append(rec)
                history.classification.append(cls)
                bar.set_postfix(rec=f"{rec:.4f}", cls=f"{cls:.3f}")
                log.info("step %d: loss %.5f (rec %.5f, cls %.4f)", step, tot, rec, cls)
                if on_log is not None:
                    on_log(step, {"total": tot, "reconstruction": rec, "classification": cls})
            if config.checkpoint and config.checkpoint_every and step % config.checkpoint_every == 0 and step < total_steps:
                model.save(config.checkpoint, extra={"fit_config": _plain(config), "step": step})
    bar.close()
    history.seconds = time.perf_counter() - start
    model.eval()
    if config.checkpoint:
        model.save(config.checkpoint, extra={"fit_config": _plain(config), "step": step})
    return history


def _plain(config: FitConfig) -> dict:
    d = asdict(config)
    d["betas"] = list(d["betas"])
    return d
