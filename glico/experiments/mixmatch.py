"""MixMatch (Berthelot et al., NeurIPS 2019): the semi-supervised comparison of the GLICO paper (Tables I and V).

One step, for a labelled batch X (B images) and an unlabelled batch U (B images):

1. X̂: each labelled image once through the standard augmentation (random crop + flip); Û_1..Û_K: each
   unlabelled image K times through it.
2. Label guessing: q = Sharpen(mean_k softmax(f(Û_k)), T), with Sharpen(p, T)_i = p_i^(1/T) / Σ_j p_j^(1/T);
   no gradient flows through q.
3. W = shuffle(X̂ ∪ Û) (the one-hot labels of X̂, the guess q for each Û_k); every row r of X̂ ∪ Û is
   mixed with the row W_r: λ ~ Beta(α, α), λ' = max(λ, 1 − λ), x' = λ' x + (1 − λ') w and the same for the
   targets, so the mixed row stays closer to its own image.
4. Loss = L_X + λ_u(t) · L_U: L_X the cross-entropy of the mixed labelled rows against their soft targets;
   L_U = (1 / (L · |U'|)) Σ ‖q' − softmax(f(u'))‖² over the mixed unlabelled rows (L = number of classes);
   λ_u(t) rises linearly from 0 (:class:`MixMatchConfig`'s ``rampup_steps``).
5. An exponential moving average of the weights (decay 0.999) is the model that is evaluated.

The mixed labelled and unlabelled rows go through the network as one batch, so BatchNorm's statistics are
those of both together: what the reference implementation's interleaving of its three batches achieves.
The optimiser, schedule, budget and standard augmentation are the downstream recipe shared by every method
(:class:`glico.experiments.downstream.TrainConfig`), not MixMatch's own Adam recipe, so that the comparison
differs in the method only; this is the GLICO paper's protocol ("we repeated the same procedure").
"""
from __future__ import annotations

import copy
import logging
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn import functional as F

from glico._checks import check_images, check_labels
from glico._progress import progress as tqdm
from glico.experiments.augment_ops import random_crop_flip
from glico.experiments.downstream import TrainConfig, arithmetic, sgd_schedule
from glico.experiments.policies import soft_cross_entropy

log = logging.getLogger(__name__)

__all__ = ["MixMatchConfig", "sharpen", "mix_rows", "WeightEMA", "unlabeled_weight_for", "train_mixmatch"]

#: The MixMatch paper ramps λ_u up over its first 16 000 steps.
RAMPUP_STEPS = 16_000
#: ... capped at this share of a shorter budget, so that short budgets reach the full weight too.
RAMPUP_MAX_FRACTION = 0.4


@dataclass(frozen=True)
class MixMatchConfig:
    """MixMatch's own settings (defaults: the MixMatch paper's).

    Args:
        temperature: T of the sharpening of the guessed labels (0.5).
        augmentations: K, the augmented views of each unlabelled image averaged into a guess (2).
        alpha: α of the Beta(α, α) mixing coefficient (0.75).
        unlabeled_weight: λ_u, the weight of the unlabelled loss; None: :func:`unlabeled_weight_for`
            (75, or 150 with 100 classes or more: the paper's CIFAR-10 and CIFAR-100 values).
        rampup_steps: λ_u grows linearly from 0 to its value over this many steps; None: the paper's 16 000,
            capped at 40 % of the budget (:data:`RAMPUP_MAX_FRACTION`) so that short budgets reach it too.
        ema: decay of the moving average of the weights that is evaluated (0.999). Early in training the
            decay used is ``min(ema, (1 + t) / (10 + t))`` at step t (TensorFlow's ``num_updates`` warm-up),
            so that the average does not keep the random initialisation in short budgets.
    """

    temperature: float = 0.5
    augmentations: int = 2
    alpha: float = 0.75
    unlabeled_weight: float | None = None
    rampup_steps: int | None = None
    ema: float = 0.999

    def __post_init__(self) -> None:
        if not self.temperature > 0:
            raise ValueError(f"temperature must be > 0; got {self.temperature!r}")
        if isinstance(self.augmentations, bool) or not isinstance(self.augmentations, int) or self.augmentations < 1:
            raise ValueError(f"augmentations (K) must be an integer >= 1; got {self.augmentations!r}")
        if not self.alpha > 0:
            raise ValueError(f"alpha must be > 0; got {self.alpha!r}")
        if self.unlabeled_weight is not None and not self.unlabeled_weight >= 0:
            raise ValueError(f"unlabeled_weight must be None or >= 0; got {self.unlabeled_weight!r}")
        if self.rampup_steps is not None and (isinstance(self.rampup_steps, bool) or not isinstance(self.rampup_steps, int)
                                              or self.rampup_steps < 0):
            raise ValueError(f"rampup_steps must be None or an integer >= 0; got {self.rampup_steps!r}")
        if not 0.0 <= self.ema < 1.0:
            raise ValueError(f"ema must be in [0, 1); got {self.ema!r}")

    def rampup_for(self, steps: int) -> int:
        """The ramp-up length used in a budget of ``steps``."""
        if self.rampup_steps is not None:
            return self.rampup_steps
        return min(RAMPUP_STEPS, int(RAMPUP_MAX_FRACTION * steps))


def unlabeled_weight_for(num_classes: int) -> float:
    """The MixMatch paper's λ_u: 75 (CIFAR-10), 150 with 100 classes or more (CIFAR-100)."""
    return 150.0 if num_classes >= 100 else 75.0


def sharpen(probs: Tensor, temperature: float) -> Tensor:
    """``p_i^(1/T) / Σ_j p_j^(1/T)`` per row: T < 1 lowers the entropy, T → 0 tends to the one-hot argmax.

    Computed as a softmax of ``log(p) / T`` (stable for small T and small probabilities).

    Shape:
        probs (B, K), rows summing to 1 -> (B, K)
    """
    if probs.dim() != 2:
        raise ValueError(f"probs must have shape (B, K); got {tuple(probs.shape)}")
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0; got {temperature!r}")
    return torch.softmax(torch.log(probs.clamp_min(torch.finfo(probs.dtype).tiny)) / temperature, dim=1)


def mix_rows(x: Tensor, targets: Tensor, partner: Tensor, lam: Tensor) -> tuple[Tensor, Tensor]:
    """MixMatch's MixUp: row r becomes ``λ'_r x_r + (1 − λ'_r) x_partner[r]``, λ' = max(λ, 1 − λ), and the
    same for its target, so a mixed row stays closer to its own image (and its own kind: labelled or not).

    Args:
        x: the rows to mix.
        targets: their class probabilities.
        partner: for each row, the index of the row it is mixed with.
        lam: λ per row, in [0, 1] (λ ~ Beta(α, α)).

    Shape:
        x (N, ...), targets (N, K), partner (N,) integer, lam (N,) -> ((N, ...), (N, K))
    """
    if not (x.shape[0] == targets.shape[0] == partner.shape[0] == lam.shape[0]):
        raise ValueError(f"x, targets, partner and lam need one entry per row; got {x.shape[0]}, {targets.shape[0]}, "
                         f"{partner.shape[0]}, {lam.shape[0]}")
    lam = torch.maximum(lam, 1.0 - lam).to(x.dtype)
    lx = lam.view(-1, *([1] * (x.dim() - 1)))
    lt = lam.view(-1, 1).to(targets.dtype)
    return lx * x + (1 - lx) * x[partner], lt * targets + (1 - lt) * targets[partner]


class WeightEMA:
    """An exponential moving average of a network's floating-point state (weights and BatchNorm statistics),
    held in a copy of the network: ``avg ← d · avg + (1 − d) · current`` after each step, with
    ``d = min(decay, (1 + t) / (10 + t))`` at update t (so early averages do not keep the initialisation);
    integer buffers (BatchNorm's step counters) are copied.

    Args:
        model: the network being trained (not modified).
        decay: the long-run decay (MixMatch: 0.999).
    """

    def __init__(self, model: nn.Module, decay: float = 0.999) -> None:
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"decay must be in [0, 1); got {decay!r}")
        self.decay, self.updates = float(decay), 0
        self.model = copy.deepcopy(model)
        for p in self.model.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Fold the current state of ``model`` into the average."""
        d = min(self.decay, (1.0 + self.updates) / (10.0 + self.updates))
        self.updates += 1
        current = model.state_dict()
        for name, avg in self.model.state_dict().items():
            value = current[name]
            if avg.is_floating_point():
                avg.mul_(d).add_(value.detach().to(avg.dtype), alpha=1.0 - d)
            else:
                avg.copy_(value)


def train_mixmatch(
    classifier: nn.Module,
    images: Tensor,
    labels: Tensor,
    unlabeled: Tensor,
    num_classes: int,
    config: TrainConfig = TrainConfig(),
    mixmatch: MixMatchConfig = MixMatchConfig(),
    desc: str = "mixmatch",
) -> nn.Module:
    """Train ``classifier`` with MixMatch on a labelled sample and unlabelled images, with the downstream
    recipe ``config`` (SGD + Nesterov, its schedule and budget, the standard crop/flip as MixMatch's
    augmentation), and return the moving average of its weights (a new module, in eval mode), which is the
    model MixMatch evaluates. ``classifier`` is trained in place (its own weights are the last step's).

    Each step draws ``B = min(config.batch_size, N)`` labelled and ``B`` unlabelled images (each set in
    freshly shuffled passes). With ``unlabeled`` the labelled images themselves, this is MixMatch on
    labelled data only (the GLICO paper's Table I setting).

    Args:
        classifier: a network mapping images to ``num_classes`` logits.
        images, labels: the labelled sample.
        unlabeled: the unlabelled images (at least one).
        num_classes: the number of classes (L).
        config: the shared downstream recipe; ``precision`` / ``channels_last`` as in
            :func:`glico.experiments.downstream.train_classifier`.
        mixmatch: T, K, α, λ_u, ramp-up and EMA (:class:`MixMatchConfig`).
        desc: the progress bar's label.

    Raises:
        ValueError: bad images, labels or unlabelled images (the message says which and what is accepted).

    Shape:
        images (N, C, H, W) in [0, 1], labels (N,), unlabeled (M, C, H, W) in [0, 1]
    """
    check_images(images)
    labels = check_labels(labels, images.shape[0])
    check_images(unlabeled, "unlabeled")
    if tuple(unlabeled.shape[1:]) != tuple(images.shape[1:]):
        raise ValueError(f"unlabeled images have shape {tuple(unlabeled.shape[1:])}; the labelled ones "
                         f"{tuple(images.shape[1:])}: give unlabelled images of the same size and channels")
    if unlabeled.shape[0] < 1:
        raise ValueError("MixMatch needs at least one unlabelled image")
    if int(labels.max()) >= num_classes:
        raise ValueError(f"labels go up to {int(labels.max())}, beyond num_classes={num_classes}")
    dev = torch.device(config.device)
    bf16, fmt = arithmetic(config)
    classifier.to(dev, memory_format=fmt).train()
    x, y, u = images.to(dev), labels.to(dev), unlabeled.to(dev)
    n, m = x.shape[0], u.shape[0]
    batch = min(config.batch_size, n)
    k_views = mixmatch.augmentations
    weight = mixmatch.unlabeled_weight if mixmatch.unlabeled_weight is not None else unlabeled_weight_for(num_classes)
    rampup = mixmatch.rampup_for(config.steps)
    opt, sched = sgd_schedule(classifier, config)
    g_host = torch.Generator().manual_seed(config.seed)
    g_unl = torch.Generator().manual_seed(config.seed + 13)
    g_dev = torch.Generator(device=dev).manual_seed(config.seed + 7)
    beta = np.random.default_rng(config.seed + 11)
    perm, pos = torch.randperm(n, generator=g_host).to(dev), 0
    uperm, upos = torch.randperm(m, generator=g_unl).to(dev), 0
    ema = WeightEMA(classifier, mixmatch.ema)

    def forward(batch_x: Tensor) -> Tensor:
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=bf16):
            return classifier(batch_x.contiguous(memory_format=fmt)).float()

    try:
        for step in tqdm(range(config.steps), desc=desc, unit="step", disable=not config.progress, leave=False):
            if pos + batch > n:
                perm, pos = torch.randperm(n, generator=g_host).to(dev), 0
            idx = perm[pos : pos + batch]
            pos += batch
            if upos + batch > m:
                if m < batch:  # fewer unlabelled images than a batch: draw them with replacement
                    uperm, upos = torch.randint(0, m, (batch,), generator=g_unl).to(dev), 0
                else:
                    uperm, upos = torch.randperm(m, generator=g_unl).to(dev), 0
            uidx = uperm[upos : upos + batch]
            upos += batch
            xa = random_crop_flip(x[idx], config.crop_pad, config.flip, g_dev)
            views = torch.cat([random_crop_flip(u[uidx], config.crop_pad, config.flip, g_dev) for _ in range(k_views)])
            with torch.no_grad():
                guess = torch.softmax(forward(views), dim=1).view(k_views, batch, -1).mean(0)
                q = sharpen(guess, mixmatch.temperature)
            rows = torch.cat([xa, views])
            targets = torch.cat([F.one_hot(y[idx].long(), num_classes).float(), q.repeat(k_views, 1)])
            partner = torch.randperm(rows.shape[0], generator=g_host).to(dev)
            lam = torch.from_numpy(beta.beta(mixmatch.alpha, mixmatch.alpha, size=rows.shape[0])).float().to(dev)
            mixed, mixed_targets = mix_rows(rows, targets, partner, lam)
            logits = forward(mixed)  # one batch: BatchNorm sees the labelled and unlabelled rows together
            loss_x = soft_cross_entropy(logits[:batch], mixed_targets[:batch])
            loss_u = (torch.softmax(logits[batch:], dim=1) - mixed_targets[batch:]).pow(2).mean()
            ramp = 1.0 if rampup == 0 else min(1.0, step / rampup)
            loss = loss_x + weight * ramp * loss_u
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            ema.update(classifier)
    finally:
        classifier.to(memory_format=torch.contiguous_format).eval()
    return ema.model.to(memory_format=torch.contiguous_format).eval()
