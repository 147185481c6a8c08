"""Training and evaluating a downstream classifier on a small sample, with an optional per-batch
augmentation (e.g. :class:`glico.augment.GLICOAugmenter`)."""
from __future__ import annotations

import collections
import contextlib
import hashlib
import logging
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterator

import torch
from torch import nn
from glico._progress import progress as tqdm

from glico import data_parallel
from glico._checks import check_images, check_labels
from glico.experiments.augment_ops import random_crop_flip
from glico.experiments.policies import BatchPolicy, load_policy_state, policy_state, soft_cross_entropy

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainConfig:
    """Settings of a downstream classifier run (defaults: the paper's SGD recipe for 32 px).

    Args:
        steps: optimiser steps (the budget; the same for every method compared).
        batch_size: examples per step (capped at the training-set size).
        lr: initial SGD learning rate.
        momentum: SGD momentum (Nesterov).
        weight_decay: L2 weight decay.
        milestones: fractions of the budget at which the learning rate is multiplied by ``lr_decay``
            (the WideResNet step schedule); ignored when ``cosine``.
        lr_decay: the factor applied at each milestone.
        cosine: anneal the learning rate along a cosine instead of steps.
        crop_pad: maximal translation of the standard random crop, in pixels (0 = none).
        flip: standard random horizontal flip.
        seed: seeds batch order and augmentation.
        device: where to train.
        progress: show a progress bar.
        precision: ``"auto"`` (default): bf16 autocast on CUDA GPUs with bf16 tensor cores (compute
            capability 8.0 and up), float32 elsewhere; ``"fp32"``: float32 always; ``"bf16"``: bf16
            autocast (CUDA only). Autocast covers the classifier's forward pass; the loss, the
            optimiser and the weights stay float32, and batch policies (GLICO's generator) run
            outside it.
        channels_last: channels-last memory format for the classifier and its batches; ``None``
            (default): on with bf16 (where convolutions gain from it) and on the CPU (measured on a 2-core
            machine: a WRN-16-1 step at batch 64 took 187 ms instead of 218 ms, the weak CNN's 29 ms
            instead of 43 ms), off for float32 on CUDA.
        data_parallel: share each step's global batch over the ranks of the joined process group
            (``torchrun``, :func:`glico.distributed.init_from_env`): every rank builds the whole batch as
            one process would (order, policy, crop/flip), runs its contiguous share of the rows, and the
            summed gradients and global BatchNorm statistics make the update the single process's (to
            float rounding; see ``docs/data-parallel.md``). Without a group, or in a world of one, it
            changes nothing. Refused with more ranks: a checkpoint, a global batch smaller than the world
            size, dropout in the classifier.
    """

    steps: int = 2000
    batch_size: int = 128
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    milestones: tuple[float, ...] = (0.3, 0.6, 0.8)
    lr_decay: float = 0.2
    cosine: bool = False
    crop_pad: int = 4
    flip: bool = True
    seed: int = 0
    device: str = "cpu"
    progress: bool = True
    precision: str = "auto"
    channels_last: bool | None = None
    data_parallel: bool = False

    def __post_init__(self) -> None:
        if self.steps < 1 or self.batch_size < 1 or self.lr <= 0:
            raise ValueError(f"steps, batch_size and lr must be positive; got {self.steps}, {self.batch_size}, {self.lr}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}; got {self.precision!r}")
        if not isinstance(self.data_parallel, bool):
            raise ValueError(f"data_parallel must be True or False; got {self.data_parallel!r}")


PRECISIONS = ("auto", "fp32", "bf16")


def _bf16_fast(device: torch.device) -> bool:
    """CUDA with bf16 tensor cores (Ampere, compute capability 8.0, and later)."""
    if device.type != "cuda" or not torch.cuda.is_available():
        return False
    return torch.cuda.get_device_capability(device)[0] >= 8


def resolve_precision(precision: str, device: str | torch.device) -> str:
    """``"bf16"`` or ``"fp32"``: what ``precision`` (``auto`` / ``fp32`` / ``bf16``) means on ``device``.

    Raises:
        ValueError: an unknown name, or ``bf16`` on a device other than CUDA.
    """
    dev = torch.device(device)
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}; got {precision!r}")
    if precision == "auto":
        return "bf16" if _bf16_fast(dev) else "fp32"
    if precision == "bf16" and dev.type != "cuda":
        raise ValueError(f"precision 'bf16' (autocast) is supported on CUDA devices only; this run is on {dev}. "
                         f"Use 'fp32' or 'auto' there")
    return precision


def train_classifier(
    classifier: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    config: TrainConfig = TrainConfig(),
    policy: BatchPolicy | None = None,
    desc: str = "train",
    checkpoint: str | Path | None = None,
    checkpoint_minutes: float = 10.0,
    resume: bool = False,
) -> nn.Module:
    """Train ``classifier`` with cross-entropy (or the classifier's own ``training_loss(logits, targets)``
    where it defines one, as :class:`glico.classifiers.CosineEmbeddingClassifier` does), SGD + Nesterov, a
    step (or cosine) schedule, standard crop/flip, and, if given, ``policy`` applied to each batch ``(images, labels, idx) -> (images, targets)``
    before the standard augmentation (targets may be soft, as MixUp and CutMix make them). The
    classifier is trained in place and returned in eval mode and the default (contiguous) memory
    format, whatever ``config.channels_last`` was — also when training is interrupted.

    With ``checkpoint`` (a file path) the training state (weights, optimiser, schedule, batch order, the
    random streams and the policy's :func:`~glico.experiments.policies.policy_state`) is written there
    every ``checkpoint_minutes`` (0: never by time) and when SIGINT or SIGTERM arrives, after which
    :class:`TrainInterrupted` is raised; ``resume=True`` continues from that file, and the resumed
    training ends with the same weights as an uninterrupted one (on the same machine and device). The
    file is left in place at the end; the caller removes it.

    With ``config.data_parallel`` in a process group of several ranks (``torchrun``), each rank builds the
    whole global batch as above, runs its share of the rows (:func:`glico.data_parallel.share`) through the
    classifier, with its BatchNorm layers synchronised over the ranks for the training
    (:class:`glico.data_parallel.DistributedBatchNorm`), and takes the step with the gradients summed over
    the ranks; the loss (a batch mean, as ``soft_cross_entropy`` and ``training_loss`` are) is weighted by
    the share's fraction of the batch. Every rank ends with the same classifier, the one a single process
    trains (to float rounding). See ``docs/data-parallel.md``.

    Raises:
        TrainInterrupted: a signal stopped a checkpointed training (its state is in ``checkpoint``).
        ValueError: ``resume`` with a checkpoint of another training (other data, recipe or classifier);
            with ``data_parallel`` on several ranks: a checkpoint, a batch smaller than the world size, or
            dropout in the classifier.

    Shape:
        images (N, C, H, W) in [0, 1], labels (N,)
    """
    check_images(images)
    labels = check_labels(labels, images.shape[0])
    dev = torch.device(config.device)
    bf16, fmt = arithmetic(config)
    n = images.shape[0]
    batch = min(config.batch_size, n)
    ranks = data_parallel.active(config.data_parallel)
    rows = None  # this rank's rows of each global batch (None: all of them)
    if ranks is not None:
        if checkpoint is not None or resume:
            raise ValueError(f"data-parallel training ({ranks.world} ranks) writes no checkpoint: call "
                             f"train_classifier with checkpoint=None and resume=False, or with data_parallel=False")
        rows = data_parallel.share(batch, ranks)
    classifier.to(dev, memory_format=fmt).train()
    x, y = images.to(dev), labels.to(dev)
    opt, sched = sgd_schedule(classifier, config)
    # A classifier may bring its own loss (e.g. glico.classifiers.CosineEmbeddingClassifier's cosine loss).
    loss_fn = getattr(classifier, "training_loss", None) or soft_cross_entropy
    g_host = torch.Generator().manual_seed(config.seed)
    g_dev = torch.Generator(device=dev).manual_seed(config.seed + 7)
    perm, pos = torch.randperm(n, generator=g_host).to(dev), 0
    start = 0
    saver = None
    if checkpoint is not None:
        saver = _TrainCheckpoint(Path(checkpoint), config, classifier, images, labels, checkpoint_minutes)
        if resume:
            start, perm, pos = saver.restore(opt, sched, g_host, g_dev, policy, dev)
            log.info("resuming the classifier's training at step %d of %d from %s", start, config.steps, checkpoint)
    elif resume:
        raise ValueError("resume=True needs the checkpoint file to resume from")
    from glico.training import _StopOnSignals

    try:
        with _StopOnSignals(saver is not None) as stop, _replicas(classifier, ranks, dev) as net:
            for step in tqdm(range(start, config.steps), desc=desc, unit="step",
                             disable=not config.progress or (ranks is not None and not ranks.main),
                             leave=False, initial=start, total=config.steps):
                if pos + batch > n:
                    perm, pos = torch.randperm(n, generator=g_host).to(dev), 0
                idx = perm[pos : pos + batch]
                pos += batch
                xb, tb = x[idx], y[idx]
                if policy is not None:
                    xb, tb = policy(xb, tb, idx)
                xb = random_crop_flip(xb, config.crop_pad, config.flip, g_dev).contiguous(memory_format=fmt)
                if rows is not None:
                    xb, tb = xb[rows], tb[rows]
                with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=bf16):
                    logits = net(xb)
                loss = loss_fn(logits.float(), tb)
                if rows is not None:
                    # The share's mean weighted by its fraction of the batch: summed over the ranks, the batch's mean.
                    loss = loss * (xb.shape[0] / batch)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                if saver is not None and (saver.due(stop.signal_name is not None) or step + 1 == config.steps):
                    saver.write(step + 1, opt, sched, g_host, g_dev, perm, pos, policy)
                    if stop.signal_name is not None and step + 1 < config.steps:
                        raise TrainInterrupted(step + 1, config.steps, stop.signal_name, str(checkpoint))
    finally:
        # Handed back (also after an interruption) in the default layout, in eval mode.
        classifier.to(memory_format=torch.contiguous_format).eval()
    return classifier


@contextlib.contextmanager
def _replicas(classifier: nn.Module, ranks, dev: torch.device) -> Iterator[nn.Module]:
    """The module a training step calls: ``classifier`` itself, or, data-parallel (``ranks`` not None), the
    classifier with BatchNorm synchronised over the ranks, wrapped to sum its gradients over them; the
    plain classifier is restored afterwards."""
    if ranks is None:
        yield classifier
        return
    data_parallel.refuse_rank_dependent_layers(classifier, "classifier")
    with data_parallel.synchronised_batchnorm(classifier), data_parallel.summed_gradients(classifier, dev) as net:
        yield net


def arithmetic(config: TrainConfig) -> tuple[bool, torch.memory_format]:
    """``(bf16 autocast?, memory format)`` of a training with ``config`` (its ``precision`` and
    ``channels_last`` resolved on its device)."""
    dev = torch.device(config.device)
    bf16 = resolve_precision(config.precision, dev) == "bf16"
    channels_last = (bf16 or dev.type == "cpu") if config.channels_last is None else config.channels_last
    return bf16, torch.channels_last if channels_last else torch.contiguous_format


def sgd_schedule(classifier: nn.Module, config: TrainConfig):
    """The downstream optimiser of ``config`` (SGD, Nesterov momentum, weight decay) and its learning-rate
    schedule (cosine, or the step schedule at ``milestones``), stepped once per training step."""
    opt = torch.optim.SGD(classifier.parameters(), lr=config.lr, momentum=config.momentum,
                          nesterov=True, weight_decay=config.weight_decay)
    if config.cosine:
        return opt, torch.optim.lr_scheduler.CosineAnnealingLR(opt, config.steps)
    marks = sorted({max(1, int(f * config.steps)) for f in config.milestones})
    return opt, torch.optim.lr_scheduler.MultiStepLR(opt, marks, gamma=config.lr_decay)


class TrainInterrupted(KeyboardInterrupt):
    """A checkpointed :func:`train_classifier` stopped by SIGINT/SIGTERM after a whole step, its state saved.

    A subclass of :class:`KeyboardInterrupt`, so code that already handles Ctrl-C keeps working.

    Attributes:
        step: the steps done (and saved); total_steps: the budget; signal_name: "SIGINT" or "SIGTERM";
        checkpoint: the file holding the state.
    """

    def __init__(self, step: int, total_steps: int, signal_name: str, checkpoint: str) -> None:
        self.step, self.total_steps, self.signal_name, self.checkpoint = step, total_steps, signal_name, checkpoint
        super().__init__(f"training interrupted by {signal_name} after step {step} of {total_steps}; its state is "
                         f"in {checkpoint}")


TRAIN_CHECKPOINT_FORMAT = "glico-train-state-v1"


class _TrainCheckpoint:
    """Writes and restores the state of one :func:`train_classifier` run (tensors and plain data only)."""

    def __init__(self, path: Path, config: TrainConfig, classifier: nn.Module, images: torch.Tensor,
                 labels: torch.Tensor, minutes: float) -> None:
        self.path, self.minutes, self.classifier, self.config = path, float(minutes), classifier, config
        h = hashlib.sha256()
        for t in (images, labels):
            t = t.detach().cpu().contiguous()
            h.update(str((t.dtype, tuple(t.shape))).encode())
            h.update(t.view(-1).view(torch.uint8).numpy().tobytes())
        shapes = {k: list(v.shape) for k, v in classifier.state_dict().items()}
        # data_parallel does not change the trajectory (and is refused with a checkpoint on more than one rank).
        recipe = {k: v for k, v in asdict(config).items() if k not in ("device", "progress", "data_parallel")}
        self.identity = {"data": h.hexdigest()[:24], "recipe": recipe, "classifier": type(classifier).__name__,
                         "shapes": shapes}
        self.last = time.monotonic()

    def due(self, signalled: bool) -> bool:
        return signalled or (self.minutes > 0 and time.monotonic() - self.last >= 60.0 * self.minutes)

    def write(self, step: int, opt, sched, g_host, g_dev, perm, pos, policy) -> None:
        from glico import __version__
        from glico.checkpoint import atomic_torch_save

        sched_state = {k: (dict(v) if isinstance(v, collections.Counter) else v) for k, v in sched.state_dict().items()}
        payload = {
            "format": TRAIN_CHECKPOINT_FORMAT, "glico_version": __version__, "identity": self.identity,
            "step": step, "total_steps": self.config.steps,
            "classifier": {k: v.detach().cpu() for k, v in self.classifier.state_dict().items()},
            "optimizer": opt.state_dict(), "scheduler": sched_state,
            "g_host": g_host.get_state(), "g_dev": g_dev.get_state().cpu(), "torch_rng": torch.get_rng_state(),
            "perm": perm.cpu(), "pos": pos, "policy": policy_state(policy) if policy is not None else None,
            "device_type": g_dev.device.type, "threads": torch.get_num_threads(),
        }
        atomic_torch_save(payload, self.path)
        self.last = time.monotonic()
        log.info("classifier training state at step %d written to %s", step, self.path)

    def restore(self, opt, sched, g_host, g_dev, policy, dev: torch.device):
        import pickle

        if not self.path.is_file():
            raise FileNotFoundError(f"no training state to resume from at {self.path}")
        try:
            state = torch.load(self.path, map_location="cpu", weights_only=True)
        except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError) as e:
            raise ValueError(f"{self.path} is not a readable classifier training state ({type(e).__name__}: "
                             f"{str(e)[:200]})") from e
        if not isinstance(state, dict) or state.get("format") != TRAIN_CHECKPOINT_FORMAT:
            raise ValueError(f"{self.path} is not a classifier training state written by glico (format "
                             f"{TRAIN_CHECKPOINT_FORMAT!r})")
        saved = state["identity"]
        differ = [k for k in self.identity if saved.get(k) != self.identity[k]]
        if differ:
            what = {"data": "the training images or labels", "recipe": "the recipe (TrainConfig)",
                    "classifier": "the classifier's class", "shapes": "the classifier's shape"}
            raise ValueError(f"cannot resume from {self.path}: {', '.join(what[k] for k in differ)} differ from the "
                             f"training that wrote it; start a new training instead")
        if state.get("device_type", "cpu") != dev.type:
            raise ValueError(f"cannot resume from {self.path} on {dev.type}: the training started on "
                             f"{state.get('device_type')!r}, and its random streams continue only on that kind of "
                             f"device; resume it there (or start a new training)")
        if dev.type == "cpu" and state.get("threads") not in (None, torch.get_num_threads()):
            log.warning("the training was checkpointed with %s CPU threads and resumes with %d: CPU results depend on "
                        "the thread count, so the weights will not be bit-identical to an uninterrupted run (set "
                        "--threads %s)", state["threads"], torch.get_num_threads(), state["threads"])
        self.classifier.load_state_dict(state["classifier"])
        opt.load_state_dict(state["optimizer"])
        sched_state = dict(state["scheduler"])
        if isinstance(sched_state.get("milestones"), dict):
            sched_state["milestones"] = collections.Counter(sched_state["milestones"])
        sched.load_state_dict(sched_state)
        g_host.set_state(state["g_host"])
        g_dev.set_state(state["g_dev"])
        torch.set_rng_state(state["torch_rng"])
        if policy is not None and not load_policy_state(policy, state["policy"]):
            log.warning("the batch policy %r has no state_dict/load_state_dict: its draws restart at the resumed "
                        "step, so the resumed training is not the uninterrupted one", policy)
        return int(state["step"]), state["perm"].to(dev), int(state["pos"])


@torch.no_grad()
def evaluate(classifier: nn.Module, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 512,
             device: str = "cpu") -> dict[str, float]:
    """Top-1 and top-5 accuracy (in %) of ``classifier`` on a labelled set; ``top5`` is None with 5 classes
    or fewer, where it would be 100 % by construction.

    Shape:
        images (N, C, H, W) in [0, 1], labels (N,)
    """
    check_images(images)
    dev = torch.device(device)
    classifier.to(dev).eval()
    top1 = top5 = 0
    for i in range(0, images.shape[0], batch_size):
        logits = classifier(images[i : i + batch_size].to(dev))
        y = labels[i : i + batch_size].to(dev)
        k = min(5, logits.shape[1])
        top = logits.topk(k, dim=1).indices
        top1 += int((top[:, 0] == y).sum())
        top5 += int((top == y[:, None]).any(1).sum())
    n = images.shape[0]
    if n == 0:
        raise ValueError("evaluate needs at least one labelled image")
    k = logits.shape[1]
    return {"top1": 100.0 * top1 / n, "top5": 100.0 * top5 / n if k > 5 else None}


OVERSAMPLE_TO = 5000


def steps_for(n_train: int, batch_size: int, epochs: int, oversample_to: int = OVERSAMPLE_TO) -> int:
    """Iteration budget of ``epochs`` passes over the training set oversampled to at least
    ``oversample_to`` images. CIFAR-10 at 10 per class, batch 128, 200 epochs: 200 × ceil(5000 / 128) =
    8000 steps with this library's default of 5000; with the paper's rule ("we oversampled the training
    set in proportion to the size of the training set ... with 50 samples per class in CIFAR-100, we
    trained the model ×10 iterations", i.e. an epoch of a split has the steps of an epoch of the full
    training set: ``oversample_to`` = its size, :func:`resolve_oversample`), 200 × ceil(50000 / 128) =
    78 200 steps."""
    return max(1, epochs * math.ceil(max(n_train, oversample_to) / batch_size))


def resolve_oversample(value: int | str, n_full: int) -> int:
    """An oversampling setting as a number of images: ``"full"`` is ``n_full`` (the size of the full
    training set a split is drawn from: the paper's rule), a number is itself, 0 is none.

    Raises:
        ValueError: anything else (the message says what is accepted).
    """
    if value == "full":
        return int(n_full)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"oversampling must be 'full' (the size of the full training set) or a number of images "
                         f">= 0; got {value!r}")
    return value
