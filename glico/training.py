"""The fit loop: optimisers, schedule, checkpoints, interruptions, progress. The model itself is in
:mod:`glico.model`.

Codes are updated sparsely (lazy Adam on the rows of the batch, :class:`glico.latents.SphereRowAdam`)
and only those rows are projected back to the unit sphere, in the same fused call. Losses are read on the host every ``log_every`` steps, so
the step itself has no host synchronisation.

Fast path (see ``docs/performance.md``): the reconstruction targets never change during a fit, so their
prepared form (VGG-16 features, a Laplacian pyramid) is computed once for the whole training set and a
batch's rows are picked out of that cache each step (``cache_targets``); ``channels_last``,
``autocast_dtype`` (CUDA only) and ``compile`` are opt-in.

Reliability (see ``docs/reliability.md``):

- Checkpoints are written atomically (:func:`glico.checkpoint.save_checkpoint`) every
  ``checkpoint_every`` steps, every ``checkpoint_minutes`` minutes, on SIGINT/SIGTERM and at the end.
  Each holds the trainer state too (optimisers, schedulers, step, the epoch's permutation, every RNG
  state, the loss history), so ``resume=True`` continues an interrupted fit and ends bit-identical to an
  uninterrupted one on CPU.
- SIGINT/SIGTERM (main thread only) let the current step finish, write a checkpoint, and raise
  :class:`FitInterrupted`; a second signal stops at once (the last checkpoint is kept).
- A non-finite loss raises :class:`NonFiniteLossError`. It is detected at the next log point or
  checkpoint (no per-step host sync), and a checkpoint is only written once the losses since the last
  check and the weights are finite, so the last good checkpoint is never overwritten with NaN weights.

Data-parallel (``FitConfig.data_parallel`` under ``torchrun``, see ``docs/data-parallel.md``): every rank
draws the same batches and noise, computes the losses of the rows whose codes it owns (image i: rank
``i % world``), and the generator's and classifier's gradients and BatchNorm statistics are combined over
the ranks (:mod:`glico.data_parallel`), so the fit is the single process's.
"""
from __future__ import annotations

import contextlib
import hashlib
import logging
import math
import os
import signal
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Iterator

import torch
from glico._progress import progress as tqdm

from glico import data_parallel
from glico.distributed import Ranks
from glico.latents.optim import SphereRowAdam
from glico.losses import concat_prepared, select_prepared
from glico.model import GLICO, UNLABELED, StepLosses

log = logging.getLogger(__name__)

# Settings that decide the fit's trajectory: a resumed fit must use the checkpoint's values.
TRAJECTORY_SETTINGS = ("epochs", "batch_size", "oversample_to", "lr", "lr_codes", "betas", "cosine", "seed")
#: Trajectory settings added after checkpoints were first written: what an older checkpoint's fit used.
_SETTINGS_ADDED_LATER = {"oversample_to": 0}
TRAINER_STATE_VERSION = 1


@dataclass(frozen=True)
class FitConfig:
    """Settings of a GLICO fit.

    Args:
        epochs: epochs of the fit (default 200, the paper's "we train GLICO for 200 epochs"). An epoch is
            one pass over the (labelled + unlabelled) images, or several with ``oversample_to``.
        batch_size: images per step (capped at the number of images: a step's images are distinct).
        oversample_to: 0 (default): an epoch is one pass over the images. N: an epoch is
            ``ceil(N / n_images)`` passes (each with its own shuffle), so a small split gets the steps of a
            set of N images, as the paper oversamples small training sets "in proportion to the size of the
            training set" (its ~40 s per CIFAR-100 epoch fits epochs of the full 50 000-image size, not of
            the split). A set of N images or more is passed once per epoch. See :meth:`steps`.
        lr: Adam learning rate of the generator and classifier.
        lr_codes: learning rate of the codes (lazy Adam on the batch's rows, as SparseAdam).
        betas: Adam betas for all three. The paper gives no optimiser settings for the fit: these
            (1e-3, 1e-2, (0.5, 0.999), cosine annealing) are this library's choices.
        cosine: anneal the learning rates to 0 along a cosine.
        seed: seeds code initialisation, shuffling and noise.
        device: where to fit ("cpu", "cuda", "cuda:1", ...).
        log_every: steps between logged losses (each log is one host sync; a non-finite loss is
            detected at the next log point or checkpoint).
        checkpoint: file to write the model and trainer state to (None: no checkpoints).
        checkpoint_every: steps between checkpoints (0: none by step count).
        checkpoint_minutes: minutes between checkpoints (0: none by time). Checkpoints are also
            written on SIGINT/SIGTERM and at the end.
        resume: continue the fit saved in ``checkpoint`` (written by an earlier, interrupted fit with
            the same data, composition and trajectory settings) instead of starting afresh.
        handle_signals: catch SIGINT/SIGTERM during the fit (main thread only) to stop cleanly after
            the current step with a checkpoint; the previous handlers are restored afterwards.
        deterministic: ask PyTorch for deterministic algorithms during the fit (see
            ``docs/reliability.md``); only matters on GPUs, the CPU path is deterministic anyway.
        progress: show a progress bar.
        cache_targets: prepare the reconstruction targets (``loss.prepare_target``: VGG features, a
            Laplacian pyramid, ...) once for the whole training set, on ``device``, and pick each batch's
            rows out of that cache, instead of preparing them again at every step. Valid because the
            targets of a GLICO fit are fixed images (they are never augmented). ``None`` (default): cache
            when the cache's size, estimated by preparing one batch, fits ``target_cache_mb``; ``True``:
            always; ``False``: never (the plain path). Both paths compute the same losses (checked to the
            float32 tolerance in ``tests/glico/test_fast_path.py``).
        target_cache_mb: the memory budget, in MiB, of the automatic target cache.
        channels_last: keep the generator, classifier, loss backbone and images in channels-last memory
            format during the fit (restored to contiguous after it). Default off: unmeasured at the
            paper's sizes (see ``docs/performance.md``).
        autocast_dtype: ``torch.bfloat16`` or ``torch.float16``: run the step's forward under CUDA
            autocast in that dtype (the target cache is prepared under the same autocast, so it is stored in
            that dtype too). CUDA only: a fit on another device with it set raises a ValueError (CPU
            autocast is slower than fp32 for these convolutions and is not supported here). ``None``
            (default): fp32.
        compile: wrap the forward of the generator, the classifier and the loss's ``forward_prepared``
            in ``torch.compile`` for the fit (undone afterwards; checkpoints are unaffected). Costs a
            compilation (seconds to minutes) at the first steps and at the last, smaller batch of an
            epoch. ``True`` or a ``torch.compile`` mode name: ``"default"``, ``"reduce-overhead"``
            (CUDA graphs of the compiled pieces on CUDA: for the launch-bound small-batch step),
            ``"max-autotune"``, ``"max-autotune-no-cudagraphs"``. Default off.
        data_parallel: share each step's batch over the ranks of the joined process group (``torchrun``,
            :func:`glico.distributed.init_from_env`): every rank draws the same batches and noise, image
            i's code is updated by rank ``i % world`` only (the rank that computes that row's losses), the
            generator's and classifier's gradients are summed over the ranks and their BatchNorm uses the
            global batch's statistics, so the fit is the single process's (to float rounding), and every
            rank ends with all the fitted codes. Without a group, or in a world of one, it changes
            nothing. Refused with more ranks: ``checkpoint``/``resume``, ``compile``, a batch smaller than
            the world size, dropout in the generator or classifier; ``handle_signals`` is not used there
            (see ``docs/data-parallel.md``).
    """

    epochs: int = 200
    batch_size: int = 128
    oversample_to: int = 0
    lr: float = 1e-3
    lr_codes: float = 1e-2
    betas: tuple[float, float] = (0.5, 0.999)
    cosine: bool = True
    seed: int = 0
    device: str = "cpu"
    log_every: int = 50
    checkpoint: str | None = None
    checkpoint_every: int = 0
    checkpoint_minutes: float = 10.0
    resume: bool = False
    handle_signals: bool = True
    deterministic: bool = False
    progress: bool = True
    cache_targets: bool | None = None
    target_cache_mb: float = 1024.0
    channels_last: bool = False
    autocast_dtype: torch.dtype | None = None
    compile: bool | str = False
    data_parallel: bool = False

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1:
            raise ValueError(f"epochs and batch_size must be >= 1; got epochs={self.epochs}, batch_size={self.batch_size}")
        if isinstance(self.oversample_to, bool) or not isinstance(self.oversample_to, int) or self.oversample_to < 0:
            raise ValueError(f"oversample_to must be 0 (one pass per epoch) or a number of images >= 1; "
                             f"got {self.oversample_to!r}")
        if not (self.lr > 0 and self.lr_codes > 0 and math.isfinite(self.lr) and math.isfinite(self.lr_codes)):
            raise ValueError(f"learning rates must be finite and > 0; got lr={self.lr}, lr_codes={self.lr_codes}")
        if self.log_every < 1:
            raise ValueError(f"log_every must be >= 1; got {self.log_every}")
        if self.checkpoint_every < 0:
            raise ValueError(f"checkpoint_every must be >= 0 (0: no checkpoints by step count); got {self.checkpoint_every}")
        if not (self.checkpoint_minutes >= 0 and math.isfinite(self.checkpoint_minutes)):
            raise ValueError(f"checkpoint_minutes must be >= 0 (0: no checkpoints by time); got {self.checkpoint_minutes}")
        if self.resume and not self.checkpoint:
            raise ValueError("resume=True needs checkpoint: the file the interrupted fit wrote")
        if not (self.target_cache_mb >= 0 and math.isfinite(self.target_cache_mb)):
            raise ValueError(f"target_cache_mb must be finite and >= 0; got {self.target_cache_mb}")
        if self.autocast_dtype not in (None, torch.bfloat16, torch.float16):
            raise ValueError(f"autocast_dtype must be None, torch.bfloat16 or torch.float16; got {self.autocast_dtype!r}")
        if not isinstance(self.compile, bool) and self.compile not in COMPILE_MODES:
            raise ValueError(f"compile must be True/False or a torch.compile mode ({', '.join(COMPILE_MODES)}); "
                             f"got {self.compile!r}")
        if not isinstance(self.data_parallel, bool):
            raise ValueError(f"data_parallel must be True or False; got {self.data_parallel!r}")

    def passes_per_epoch(self, n_images: int) -> int:
        """Passes over ``n_images`` images that make one epoch: ``max(1, ceil(oversample_to / n_images))``."""
        if n_images < 1:
            raise ValueError(f"n_images must be >= 1; got {n_images}")
        return max(1, math.ceil(self.oversample_to / n_images))

    def steps(self, n_images: int) -> int:
        """Steps of a fit on ``n_images`` images (labelled + unlabelled): ``epochs`` × passes per epoch ×
        ``ceil(n / min(batch_size, n))``. CIFAR-10 at 10 per class (100 images), batch 128: 200 steps;
        with ``oversample_to=5000``, 200 × 50 = 10 000 steps."""
        batch = min(self.batch_size, n_images)
        return self.epochs * self.passes_per_epoch(n_images) * math.ceil(n_images / batch)


@dataclass
class FitHistory:
    """Logged losses: one entry per ``log_every`` steps (kept across a resume).

    ``seconds`` is the fitting time of all sessions together; ``resumed_from`` is the step the last
    session started at (None: it started at step 0).
    """

    step: list[int] = field(default_factory=list)
    total: list[float] = field(default_factory=list)
    reconstruction: list[float] = field(default_factory=list)
    classification: list[float] = field(default_factory=list)
    seconds: float = 0.0
    resumed_from: int | None = None


class FitInterrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM stopped a fit after it finished a step and wrote a checkpoint.

    A subclass of :class:`KeyboardInterrupt`, so code that already handles Ctrl-C keeps working.

    Attributes:
        step: steps completed (the checkpoint holds the state after this step).
        total_steps: steps of the whole fit.
        signal_name: "SIGINT" or "SIGTERM".
        checkpoint: the checkpoint file, or None when the fit was configured without one.
    """

    def __init__(self, step: int, total_steps: int, signal_name: str, checkpoint: str | None) -> None:
        self.step, self.total_steps, self.signal_name, self.checkpoint = step, total_steps, signal_name, checkpoint
        if checkpoint:
            where = f"the state after step {step} is saved in {checkpoint}; continue with resume=True"
        else:
            where = "no checkpoint file was configured (FitConfig.checkpoint=None), so nothing was saved"
        super().__init__(f"fit interrupted by {signal_name} after step {step} of {total_steps}: {where}")


class NonFiniteLossError(FloatingPointError):
    """The fit produced a non-finite loss (or weights); the last good checkpoint is kept.

    Attributes:
        step: the first step whose loss was non-finite (None when only the weights were).
        detected_at: the step at which it was noticed (a log point or checkpoint).
        checkpoint: the checkpoint file, or None.
        checkpoint_step: the step of the last good checkpoint this fit wrote or resumed from
            (None: none yet).
    """

    def __init__(self, message: str, step: int | None, detected_at: int, checkpoint: str | None,
                 checkpoint_step: int | None) -> None:
        super().__init__(message)
        self.step, self.detected_at = step, detected_at
        self.checkpoint, self.checkpoint_step = checkpoint, checkpoint_step


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
    checkpoint_extra: dict[str, Any] | None = None,
) -> FitHistory:
    """Fit ``model``'s codes, generator and classifier: minimise L = L_rec + γ·L_cls.

    Labelled images contribute both terms; ``unlabeled`` images (transductive mode) get codes too and
    contribute only the reconstruction term.

    Args:
        model: the composed GLICO model. With ``config.resume`` its learned state is replaced by the
            checkpoint's (it must be composed of the same parts).
        images: labelled images in [0, 1].
        labels: their classes, 0..C-1, every class present.
        unlabeled: optional unlabelled images in [0, 1].
        config: settings.
        on_log: called with (step, losses) at each log point.
        checkpoint_extra: plain data (str, numbers, lists, dicts) stored in every checkpoint's
            ``extra`` beside the trainer state (the CLI stores the run's spec there).

    Returns:
        The logged loss history (of the whole fit, including the sessions before a resume).

    With ``config.data_parallel`` in a process group of several ranks, each rank computes the losses of the
    batch rows it owns (image i: rank ``i % world``) and the step is the single process's; see
    :class:`FitConfig` and ``docs/data-parallel.md``. The returned history is the global one on every rank.

    Raises:
        FitInterrupted: SIGINT/SIGTERM arrived; the checkpoint holds the state after the last step.
        NonFiniteLossError: the loss became NaN/inf; the last good checkpoint is kept.
        FileNotFoundError: ``resume`` without a checkpoint file.
        ValueError: bad inputs, or ``resume`` with a checkpoint of another fit (the message names
            what differs), or, data-parallel on several ranks, a setting it refuses (the message says
            what is accepted).

    Shape:
        images (N, C, H, W), labels (N,), unlabeled (M, C, H, W)
    """
    images, labels, unlabeled = model.check_training_data(images, labels, unlabeled)
    device = resolve_device(config.device)
    if config.autocast_dtype is not None and device.type != "cuda":
        raise ValueError(f"autocast_dtype={config.autocast_dtype} is supported on CUDA devices only; this fit runs on "
                         f"{device}. Leave autocast_dtype=None (fp32) there")
    all_images, all_labels = images, labels
    if unlabeled is not None:
        all_images = torch.cat([images, unlabeled])
        all_labels = torch.cat([labels, torch.full((unlabeled.shape[0],), UNLABELED, dtype=torch.long)])
    n = all_images.shape[0]
    batch = min(config.batch_size, n)
    passes = config.passes_per_epoch(n)
    steps_per_pass = math.ceil(n / batch)
    steps_per_epoch = passes * steps_per_pass
    total_steps = config.steps(n)
    ranks = data_parallel.active(config.data_parallel)
    if ranks is not None:
        _refuse_for_data_parallel(config, ranks, batch)
    fingerprint = data_fingerprint(all_images, all_labels)

    g = torch.Generator().manual_seed(config.seed)
    model.to(device)
    trainer = None
    if config.resume:
        trainer = _load_for_resume(model, config, fingerprint, device, total_steps)
    else:
        model.init_codes(all_images, all_labels, g)
    model.to(device)
    data = all_images.to(device)
    if config.channels_last:
        _set_memory_format(model, torch.channels_last)
        data = data.contiguous(memory_format=torch.channels_last)
    noise_gen = torch.Generator(device=device).manual_seed(config.seed + 1)

    params = list(model.generator.parameters())
    if model.classifier is not None:
        params += list(model.classifier.parameters())
    opt = torch.optim.Adam(params, lr=config.lr, betas=config.betas)
    # Lazy Adam on the batch's rows fused with their projection (one launch on CUDA, no host sync).
    # A batch is a slice of a permutation, looked up once: its rows are distinct, so no coalesce (no sync).
    opt_codes = SphereRowAdam([model.codes.weight], lr=config.lr_codes, betas=config.betas, distinct_rows=True)
    scheds = []
    if config.cosine:
        scheds = [torch.optim.lr_scheduler.CosineAnnealingLR(o, total_steps) for o in (opt, opt_codes)]

    history = FitHistory()
    step = 0
    perm: torch.Tensor | None = None
    running = torch.zeros(3, device=device)
    if trainer is not None:
        opt.load_state_dict(trainer["optimizer"])
        opt_codes.load_state_dict(trainer["optimizer_codes"])
        for s, state in zip(scheds, trainer["schedulers"], strict=True):
            s.load_state_dict(state)
        if trainer.get("restart_schedule"):
            # Extending a finished cosine fit: a new cycle from the base learning rates over the added steps.
            for o in (opt, opt_codes):
                for group in o.param_groups:
                    group["lr"] = group["initial_lr"]
            scheds = [torch.optim.lr_scheduler.CosineAnnealingLR(o, total_steps - int(trainer["step"]))
                      for o in (opt, opt_codes)]
            log.info("extending the finished fit from step %d to %d: a new cosine cycle over the added steps",
                     int(trainer["step"]), total_steps)
        g.set_state(trainer["shuffle_rng"])
        noise_gen.set_state(trainer["noise_rng"])
        torch.set_rng_state(trainer["torch_rng"])
        if device.type == "cuda" and trainer.get("cuda_rng") is not None:
            torch.cuda.set_rng_state(trainer["cuda_rng"], device)
        step = int(trainer["step"])
        perm = trainer["perm"]
        running = trainer["running"].to(device)
        history = FitHistory(**trainer["history"])
        history.resumed_from = step
        log.info("resuming the fit from step %d of %d (%s)", step, total_steps, config.checkpoint)

    ckpt = _Checkpointer(config, model, fingerprint, n, device, total_steps, steps_per_epoch, checkpoint_extra,
                         resumed_step=step if trainer is not None else None)
    # Step of the first non-finite loss since the last check (-1: none); updated on the device.
    bad_at = torch.full((), -1, dtype=torch.long, device=device)
    last_check = step  # losses up to this step are known to be finite

    def check_finite(at: int) -> None:
        nonlocal last_check
        if at != last_check and bool(bad_at >= 0):
            raise ckpt.nonfinite(int(bad_at), at)
        last_check = at

    model.train()
    autocast = _autocast(config.autocast_dtype, device)
    start = time.perf_counter()
    seconds_before = history.seconds
    bar = tqdm(total=total_steps, initial=step, desc="fit GLICO", unit="step", leave=False,
               disable=not config.progress or (ranks is not None and not ranks.main))
    try:
        # Prepared after model.train(), so the cache is made in the mode the plain path prepares targets
        # in; inside the try, so a failure here still restores the model (eval mode, memory format).
        target_cache = _target_cache(model.loss, data, batch, config, autocast)
        # Data-parallel: no signal handling (a rank stopping on its own would leave the others waiting).
        with _StopOnSignals(config.handle_signals and ranks is None) as stop, \
                _deterministic(config.deterministic, device), _compiled(model, config.compile), \
                _shards(model, ranks, device) as shards:
            for epoch in range(step // steps_per_epoch, config.epochs):
                first = step - epoch * steps_per_epoch
                if first == 0 or perm is None:
                    # A fresh epoch draws its permutations (one per pass); a resumed one continues the saved ones.
                    perm = torch.cat([torch.randperm(n, generator=g) for _ in range(passes)])
                perm_dev = perm.to(device)
                if shards is not None:
                    own_all, own_at = shards.owned(perm, n, batch, steps_per_pass)
                for k in range(first, steps_per_epoch):
                    # Batches never straddle two passes, so a batch's rows are distinct (the code optimiser's rule).
                    p, j = divmod(k, steps_per_pass)
                    lo = p * n + j * batch
                    idx = perm_dev[lo : min(lo + batch, (p + 1) * n)]
                    if shards is not None:
                        with autocast():
                            losses = shards.losses(data, idx, own_all[own_at[k] : own_at[k + 1]], noise_gen,
                                                   target_cache)
                    else:
                        target = None if target_cache is None else select_prepared(target_cache, idx)
                        with autocast():
                            losses = model.step_losses(data[idx], idx, noise_generator=noise_gen,
                                                       prepared_target=target)
                    opt.zero_grad(set_to_none=True)
                    opt_codes.zero_grad(set_to_none=True)
                    losses.total.backward()
                    opt.step()
                    opt_codes.step()  # also re-projects the updated rows onto the sphere
                    for s in scheds:
                        s.step()
                    total = losses.total.detach()
                    running += torch.stack([total, losses.reconstruction.detach(), losses.classification.detach()])
                    step += 1
                    bad_at = torch.where((bad_at < 0) & ~torch.isfinite(total), step, bad_at)
                    bar.update(1)
                    # Step 1 too, so that the history starts with the first loss (a fit shorter than one
                    # log interval would otherwise show one point, its loss seemingly unchanged).
                    if step % config.log_every == 0 or step == total_steps or (step == 1 and history.resumed_from is None):
                        count = step - (history.step[-1] if history.step else 0)
                        if shards is not None:
                            running = data_parallel.all_reduce_sum(running)  # the ranks' shares of the losses
                        tot, rec, cls = (running / count).tolist()
                        running.zero_()
                        if not math.isfinite(tot):
                            if shards is not None:
                                bad_at = shards.first_bad(bad_at)
                            raise ckpt.nonfinite(int(bad_at), step)
                        last_check = step
                        history.step.append(step)
                        history.total.append(tot)
                        history.reconstruction.append(rec)
                        history.classification.append(cls)
                        bar.set_postfix(rec=f"{rec:.4f}", cls=f"{cls:.3f}")
                        log.info("step %d: loss %.5f (rec %.5f, cls %.4f)", step, tot, rec, cls)
                        if on_log is not None:
                            on_log(step, {"total": tot, "reconstruction": rec, "classification": cls})
                    if ckpt.due(step, stop.signal_name is not None):
                        check_finite(step)
                        history.seconds = seconds_before + time.perf_counter() - start
                        ckpt.write(step, perm, running, history, opt, opt_codes, scheds, g, noise_gen)
                    if stop.signal_name is not None and step < total_steps:
                        raise FitInterrupted(step, total_steps, stop.signal_name, config.checkpoint)
            if shards is not None:
                # Each rank updated only the codes it owns: give every rank all of them.
                data_parallel.gather_owned_rows_(model.codes.weight.data, ranks)
    finally:
        bar.close()
        model.eval()
        if config.channels_last:
            _set_memory_format(model, torch.contiguous_format)
    history.seconds = seconds_before + time.perf_counter() - start
    return history


class _Checkpointer:
    """Decides when to write, and writes, checkpoints with the trainer state."""

    def __init__(self, config: FitConfig, model: GLICO, fingerprint: str, n: int, device: torch.device,
                 total_steps: int, steps_per_epoch: int, extra: dict[str, Any] | None, resumed_step: int | None):
        self.config, self.model, self.fingerprint, self.n, self.device = config, model, fingerprint, n, device
        self.total_steps, self.steps_per_epoch = total_steps, steps_per_epoch
        self.extra = dict(extra or {})
        for key in ("fit_config", "trainer"):
            if key in self.extra:
                raise ValueError(f"checkpoint_extra may not use the key {key!r}: the fit loop writes it")
        self.last_step = resumed_step  # step of the last good checkpoint of this fit
        self.last_time = time.monotonic()

    def due(self, step: int, signalled: bool) -> bool:
        c = self.config
        if not c.checkpoint:
            return False
        if step == self.total_steps or signalled:
            return True
        if c.checkpoint_every and step % c.checkpoint_every == 0:
            return True
        return bool(c.checkpoint_minutes) and time.monotonic() - self.last_time >= 60.0 * c.checkpoint_minutes

    def nonfinite(self, bad_step: int, detected_at: int, what: str = "loss") -> NonFiniteLossError:
        c = self.config
        if c.checkpoint and self.last_step is not None:
            kept = f"The last good checkpoint, from step {self.last_step}, is kept unchanged at {c.checkpoint}."
        elif c.checkpoint:
            kept = f"No checkpoint had been written by this fit yet; {c.checkpoint} was not touched."
        else:
            kept = "No checkpoint file was configured."
        at = f" at step {bad_step}" if bad_step >= 0 else ""
        msg = (f"the fit {what} became non-finite (NaN or inf){at} (detected at step {detected_at}; losses are read "
               f"every log_every={c.log_every} steps and before each checkpoint). {kept} Start a new fit with lower "
               f"learning rates (now lr={c.lr}, lr_codes={c.lr_codes}); resuming with the same settings would "
               f"diverge again.")
        return NonFiniteLossError(msg, bad_step if bad_step >= 0 else None, detected_at, c.checkpoint, self.last_step)

    def write(self, step: int, perm: torch.Tensor, running: torch.Tensor, history: FitHistory, opt, opt_codes,
              scheds, g: torch.Generator, noise_gen: torch.Generator) -> None:
        from glico.checkpoint import model_state, nonfinite_entries, save_checkpoint

        state = model_state(self.model)
        bad = nonfinite_entries(state)
        if bad:
            raise self.nonfinite(-1, step, what=f"weights ({', '.join(bad[:5])})")
        trainer = {
            "version": TRAINER_STATE_VERSION,
            "step": step,
            "total_steps": self.total_steps,
            "steps_per_epoch": self.steps_per_epoch,
            "perm": perm.cpu(),
            "running": running.detach().cpu(),
            "history": asdict(history),
            "optimizer": opt.state_dict(),
            "optimizer_codes": opt_codes.state_dict(),
            "schedulers": [s.state_dict() for s in scheds],
            "shuffle_rng": g.get_state(),
            "noise_rng": noise_gen.get_state().cpu(),
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state(self.device) if self.device.type == "cuda" else None,
            "data": self.fingerprint,
            "n_images": self.n,
            "device_type": self.device.type,
            "objective": _objective(self.model),
        }
        extra = {**self.extra, "fit_config": _plain(self.config), "trainer": trainer}
        save_checkpoint(self.config.checkpoint, self.model, extra, state=state)
        self.last_step = step
        self.last_time = time.monotonic()
        log.info("checkpoint at step %d written to %s", step, self.config.checkpoint)


def _load_for_resume(model: GLICO, config: FitConfig, fingerprint: str, device: torch.device,
                     total_steps: int) -> dict[str, Any]:
    """Read ``config.checkpoint``, check that it continues this fit, load its model state; returns the
    trainer state."""
    from glico.checkpoint import check_composition, load_model_state, read_checkpoint

    path = config.checkpoint
    if not os.path.isfile(path):
        raise FileNotFoundError(f"cannot resume: there is no checkpoint at {path}. Start the fit without resume "
                                f"(an interrupted fit writes its checkpoint there)")
    payload = read_checkpoint(path)
    trainer = payload["extra"].get("trainer")
    if not isinstance(trainer, dict) or "step" not in trainer:
        raise ValueError(f"cannot resume from {path}: it holds a model but no trainer state (it was written by "
                         f"GLICO.save, not by fit), so the optimiser and RNG states needed to continue are missing")
    if trainer.get("version") != TRAINER_STATE_VERSION:
        raise ValueError(f"cannot resume from {path}: its trainer state has version {trainer.get('version')}, "
                         f"this glico reads version {TRAINER_STATE_VERSION}")
    check_composition(payload, model, path)
    saved = {**_SETTINGS_ADDED_LATER, **payload["extra"].get("fit_config", {})}
    mine = _plain(config)
    # A changed budget: without a schedule the trajectory does not depend on it, so the fit may be extended
    # (or resumed with a budget it has not passed yet) and becomes the fit that had the new budget from the
    # start. With the cosine schedule only a finished fit may be extended: a new cosine cycle from the base
    # learning rates over the added steps (a warm restart), which is not the longer fit from scratch.
    step_done, saved_total = int(trainer["step"]), trainer.get("total_steps")
    budget_changed = saved.get("epochs") != mine["epochs"]
    plain_extension = budget_changed and not mine["cosine"] and step_done <= total_steps
    cosine_extension = (budget_changed and mine["cosine"] and step_done == saved_total
                        and total_steps > step_done)
    diff = [f"{k}: checkpoint has {saved.get(k)!r}, now {mine[k]!r}" for k in TRAJECTORY_SETTINGS
            if saved.get(k) != mine[k] and not (k == "epochs" and (plain_extension or cosine_extension))]
    if budget_changed and not (plain_extension or cosine_extension):
        diff.append(f"a budget of {total_steps} steps cannot continue this fit at step {step_done} of {saved_total}: "
                    f"a fit can be extended beyond the steps it has done, and with the cosine schedule only once "
                    f"it has finished")
    trainer = {**trainer, "restart_schedule": cosine_extension}
    if "objective" in trainer and trainer["objective"] != _objective(model):  # absent before glico 0.3
        diff.append(f"objective: checkpoint fitted with {trainer['objective']}, now {_objective(model)}")
    if trainer.get("device_type") != device.type:
        diff.append(f"device type: checkpoint fitted on {trainer.get('device_type')!r}, now {device.type!r}")
    if trainer.get("n_images") != _fingerprint_n(fingerprint) or trainer.get("data") != fingerprint:
        diff.append(f"training data: the checkpoint was fitted on other images or labels "
                    f"({trainer.get('n_images')} images then, {_fingerprint_n(fingerprint)} now)")
    if not diff and not budget_changed and saved_total != total_steps:
        diff.append(f"total steps: checkpoint {saved_total}, now {total_steps}")
    if diff:
        raise ValueError(f"cannot resume from {path}: this fit differs from the checkpointed one ({'; '.join(diff)}). "
                         f"Resume with the original settings, or start a new fit without resume")
    load_model_state(model, payload["model"])
    return trainer


def _objective(model: GLICO) -> str:
    """The losses with their settings (``PixelLoss(p=1)``): the composition records only their classes,
    but resuming with another setting of the same class would silently change the fit."""
    def one(m) -> str:
        extra = m.extra_repr() if isinstance(m, torch.nn.Module) else ""
        return f"{type(m).__name__}({extra})"

    return f"loss {one(model.loss)}, class loss {one(model.class_loss)}"


def data_fingerprint(images: torch.Tensor, labels: torch.Tensor) -> str:
    """A hash of the training images and labels (their bytes, shapes and dtypes): a resumed fit must see
    the same data. Returns ``"<N>:<sha256>"``."""
    h = hashlib.sha256()
    for t in (images, labels):
        t = t.detach().cpu().contiguous()
        h.update(f"{tuple(t.shape)}|{t.dtype}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy())
    return f"{images.shape[0]}:{h.hexdigest()}"


def _fingerprint_n(fingerprint: str) -> int:
    """The number of images a fingerprint was taken of."""
    return int(fingerprint.split(":", 1)[0])


class _StopOnSignals:
    """While active, SIGINT/SIGTERM set ``signal_name`` (the fit stops after the current step); a second
    signal raises KeyboardInterrupt at once. Only installed in the main thread (Python allows signal
    handlers nowhere else); the previous handlers are restored on exit."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.signal_name: str | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> "_StopOnSignals":
        if self.enabled and threading.current_thread() is threading.main_thread():
            for sig in self.SIGNALS:
                try:
                    self._previous[sig] = signal.signal(sig, self._handle)
                except (ValueError, OSError):  # e.g. an embedded interpreter that forbids it
                    pass
        return self

    def _handle(self, signum: int, frame: object) -> None:
        name = signal.Signals(signum).name
        if self.signal_name is not None:
            raise KeyboardInterrupt(f"second signal ({name}): stopping at once; the last checkpoint is kept")
        self.signal_name = name
        log.warning("%s received: finishing the current step, writing a checkpoint, then stopping "
                    "(send it again to stop at once)", name)

    def __exit__(self, *exc: object) -> None:
        for sig, prev in self._previous.items():
            # None means the previous handler was not installed from Python: the default is the best guess.
            signal.signal(sig, prev if prev is not None else signal.SIG_DFL)
        self._previous.clear()


@contextlib.contextmanager
def _deterministic(enabled: bool, device: torch.device) -> Iterator[None]:
    """Deterministic algorithms for the duration of the fit; the previous settings are restored after.

    Ops without a deterministic implementation warn rather than stop the fit; a stricter setting the
    caller already made (``torch.use_deterministic_algorithms(True)``) is kept.
    """
    if not enabled:
        yield
        return
    prev = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),
            torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic)
    if device.type == "cuda" and "CUBLAS_WORKSPACE_CONFIG" not in os.environ:
        # Read by cuBLAS when it creates its handle: effective only if no cuBLAS call ran yet in this process.
        os.environ["CUBLAS_WORKSPACE_CONFIG"] = ":4096:8"
    if not prev[0]:
        torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = True
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(prev[0], warn_only=prev[1])
        torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = prev[2], prev[3]


def _plain(config: FitConfig) -> dict:
    d = asdict(config)
    d["betas"] = list(d["betas"])
    # Checkpoints hold plain data only: a dtype is stored by name ("torch.bfloat16").
    d["autocast_dtype"] = None if config.autocast_dtype is None else str(config.autocast_dtype)
    return d


# ---------------------------------------------------------------------------------------------- fast path
def _nbytes(prepared: Any) -> int:
    """Bytes held by the tensors of a prepared target (a tensor or nested tuples of them)."""
    if isinstance(prepared, torch.Tensor):
        return prepared.numel() * prepared.element_size()
    if isinstance(prepared, tuple):
        return sum(_nbytes(p) for p in prepared)
    return 0


def _target_cache(loss: torch.nn.Module, data: torch.Tensor, chunk: int, config: FitConfig,
                  autocast: Callable[[], contextlib.AbstractContextManager]) -> Any | None:
    """``loss.prepare_target`` of every training image, prepared in chunks of ``chunk`` images, or None
    when the fit should prepare each batch's targets itself (``config.cache_targets``).

    The size is estimated from the first chunk; with ``cache_targets=None`` a cache larger than
    ``config.target_cache_mb`` is not built. Prepared under no_grad (targets need no graph) and under the
    step's autocast, so a cached target equals the one the plain path would prepare.
    """
    if config.cache_targets is False:
        return None
    n = data.shape[0]
    with torch.no_grad(), autocast():
        first = loss.prepare_target(data[:chunk])
        mib = _nbytes(first) / min(chunk, n) * n / 2**20
        if config.cache_targets is None and mib > config.target_cache_mb:
            log.info("target cache not built: it would take ~%.0f MiB, over target_cache_mb=%g; targets are "
                     "prepared at every step instead", mib, config.target_cache_mb)
            return None
        parts = [first] + [loss.prepare_target(data[i : i + chunk]) for i in range(chunk, n, chunk)]
    log.info("prepared the reconstruction targets of %d images once (~%.1f MiB on %s)", n, mib, data.device)
    return parts[0] if len(parts) == 1 else concat_prepared(parts)


def _autocast(dtype: torch.dtype | None, device: torch.device) -> Callable[[], contextlib.AbstractContextManager]:
    """A factory of the step's autocast context: CUDA autocast in ``dtype``, or nothing for None."""
    if dtype is None:
        return contextlib.nullcontext
    return lambda: torch.autocast(device_type=device.type, dtype=dtype)


def _set_memory_format(model: GLICO, memory_format: torch.memory_format) -> None:
    """Convert the 4-D weights of the generator, classifier and loss to ``memory_format`` in place (the
    parameters stay the same objects, so optimisers created before or after keep working)."""
    for part in (model.generator, model.classifier, model.loss):
        if part is not None:
            part.to(memory_format=memory_format)


COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


@contextlib.contextmanager
def _compiled(model: GLICO, enabled: bool | str) -> Iterator[None]:
    """For the duration of the fit, route the generator's and classifier's ``forward`` and the loss's
    ``forward_prepared`` through ``torch.compile``.

    The compiled functions are set as instance attributes that shadow the methods and are deleted
    afterwards: parameter names (and so checkpoints) are unchanged, and the model is plain eager again
    after the fit (sampling at other batch sizes does not recompile).
    """
    if not enabled:
        yield
        return
    mode = "default" if enabled is True else enabled
    targets = [(model.generator, "forward"), (model.loss, "forward_prepared")]
    if model.classifier is not None:
        targets.append((model.classifier, "forward"))
    patched = []
    try:
        for module, name in targets:
            if name in vars(module):
                continue  # already shadowed by the caller: leave it alone
            object.__setattr__(module, name, torch.compile(getattr(module, name), mode=mode))
            patched.append((module, name))
        yield
    finally:
        for module, name in patched:
            object.__delattr__(module, name)


# ---------------------------------------------------------------------------------------------- data-parallel
def _refuse_for_data_parallel(config: FitConfig, ranks: Ranks, batch: int) -> None:
    """Refuse, before anything changes, the settings a data-parallel fit on ``ranks.world`` ranks cannot honour."""
    if config.checkpoint or config.resume:
        raise ValueError(f"a data-parallel fit ({ranks.world} ranks) writes no checkpoint and cannot resume: use "
                         f"checkpoint=None and resume=False with data_parallel=True, or data_parallel=False")
    if config.compile:
        raise ValueError(f"compile={config.compile!r} is not supported in a data-parallel fit ({ranks.world} ranks): "
                         f"use compile=False with data_parallel=True, or data_parallel=False")
    if batch < ranks.world:
        raise ValueError(f"a data-parallel fit on {ranks.world} ranks needs a batch of at least {ranks.world} images; "
                         f"this one has {batch} (batch_size={config.batch_size}, capped at the number of images)")


@contextlib.contextmanager
def _shards(model: GLICO, ranks: Ranks | None, device: torch.device) -> Iterator["_Shards | None"]:
    """None for a single-process fit; for a data-parallel one, the fit's :class:`_Shards`, with BatchNorm of
    the generator and classifier synchronised over the ranks and their gradients summed over them for the
    duration of the block (the plain modules are back afterwards)."""
    if ranks is None:
        yield None
        return
    uses_classifier = model.classifier is not None and model.gamma != 0.0
    data_parallel.refuse_rank_dependent_layers(model.generator, "generator")
    if uses_classifier:
        data_parallel.refuse_rank_dependent_layers(model.classifier, "classifier")
    data_parallel.refuse_rank_dependent_layers(model.loss, "reconstruction loss", allow_batchnorm=False)
    with contextlib.ExitStack() as stack:
        stack.enter_context(data_parallel.synchronised_batchnorm(model.generator, model.classifier))
        generator = stack.enter_context(data_parallel.summed_gradients(model.generator, device))
        classifier = stack.enter_context(data_parallel.summed_gradients(model.classifier, device)) \
            if uses_classifier else None
        yield _Shards(model, ranks, generator, classifier, device)


class _Shards:
    """One rank's part of a data-parallel fit: which rows of each batch it owns (image i belongs to rank
    ``i % world``), and the step's losses on those rows, scaled so that their sum over the ranks is the
    single process's :meth:`GLICO.step_losses` of the whole batch."""

    def __init__(self, model: GLICO, ranks: Ranks, generator: torch.nn.Module,
                 classifier: torch.nn.Module | None, device: torch.device) -> None:
        self.model, self.ranks, self.device = model, ranks, device
        self.generator, self.classifier = generator, classifier

    def owned(self, perm: torch.Tensor, n: int, batch: int, steps_per_pass: int) -> tuple[torch.Tensor, list[int]]:
        """The positions, within its batch, of the rows this rank owns, for every step of an epoch whose
        batches are cut from ``perm`` (host) as the fit loop cuts them: ``(positions, at)``, step k's being
        ``positions[at[k] : at[k + 1]]``. Worked out on the host once per epoch and moved to the device in
        one copy, so the steps need no host synchronisation."""
        t = torch.arange(perm.numel())
        q = t % n  # place in its pass
        step = (t // n) * steps_per_pass + q // batch
        mine = perm % self.ranks.world == self.ranks.rank
        counts = torch.bincount(step[mine], minlength=(perm.numel() // n) * steps_per_pass)
        at = [0] + torch.cumsum(counts, 0).tolist()
        return (q % batch)[mine].to(self.device), at

    def losses(self, data: torch.Tensor, idx: torch.Tensor, own: torch.Tensor, noise_generator: torch.Generator,
               target_cache: Any | None) -> StepLosses:
        """This rank's share of :meth:`GLICO.step_losses` on the global batch ``idx``: the terms of its rows
        ``idx[own]`` divided by the global counts (the batch size; its labelled rows), so that the ranks'
        losses (and their gradients) sum to the single process's. Every rank runs the generator and the
        classifier, with no rows when it owns none in this batch: their BatchNorm and gradient sums are
        collectives that every rank joins.

        Shape:
            data (N, C, H, W), idx (B,), own (B_rank,)
        """
        m = self.model
        mine = idx[own]
        z = m.codes(mine)
        # The noise of the whole batch, drawn as one process draws it, and this rank's rows of it. The other
        # rows carry this rank's stale copies of codes it does not own: a noise policy works row by row, so
        # they do not reach this rank's rows.
        full = m.codes.weight.detach()[idx].index_put((own,), z)
        fake = self.generator(m.noise(full, generator=noise_generator)[own])
        if mine.numel():
            target = m.loss.prepare_target(data[mine]) if target_cache is None else select_prepared(target_cache, mine)
            per_image = m.loss.forward_prepared(fake, target)
            if per_image.shape != mine.shape:
                raise ValueError(f"{type(m.loss).__name__} returned shape {tuple(per_image.shape)}; a reconstruction "
                                 f"loss returns one value per image ({tuple(mine.shape)})")
            rec = per_image.sum() / idx.shape[0]
        else:
            rec = fake.sum() * 0.0  # no rows here: nothing to add, but the generator's backward must still run
        cls = torch.zeros((), device=rec.device)
        if self.classifier is not None:
            y = m.labels[mine]
            logits = self.classifier(z if m.classifier.consumes_codes else fake)
            if logits.dim() != 2 or logits.shape[1] != m.num_classes:
                raise ValueError(f"classifier returned logits of shape {tuple(logits.shape)}; "
                                 f"expected (B, {m.num_classes})")
            per = m.class_loss(logits, y.clamp_min(0))
            # The batch's labelled rows, counted over the whole batch (every rank knows all its labels).
            cls = (per * (y >= 0)).sum() / (m.labels[idx] >= 0).sum().clamp_min(1)
        return StepLosses(rec + m.gamma * cls, rec, cls)

    def first_bad(self, bad_at: torch.Tensor) -> torch.Tensor:
        """The first step with a non-finite loss on any rank (-1: none), from each rank's own."""
        import torch.distributed as dist

        never = torch.iinfo(torch.long).max
        first = torch.where(bad_at < 0, torch.full_like(bad_at, never), bad_at)
        dist.all_reduce(first, op=dist.ReduceOp.MIN)
        return torch.where(first == never, torch.full_like(first, -1), first)
