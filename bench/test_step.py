"""End-to-end step throughput: the GLICO fit step and the downstream classifier step, each against a
straightforward eager implementation of the same model written here, in the same run.

Run ``pytest bench/test_step.py`` (or ``pytest bench/``). With CUDA the full grid runs: batch
(128, 512) x image size (32, 64). Without CUDA one tiny case runs (batch 8, 32 px, DCGAN at 32,
2 timed steps), so CI proves the benchmarks work; its rows go to ``bench/results/cpu-step-*.json``
and are a smoke test, not a measurement. ``GLICO_BENCH_CPU=1`` measures on the CPU instead: batch 64,
32 px (the CPU recipe of docs/reproducing.md), the weak CNN and WRN-16-1, 20 timed steps, 3 repeats.

Fit step, providers (images/s = batch / time per step):
    ``eager``          the straightforward step written below (:class:`EagerGLICO`): a dense code table
                       with Adam over the whole table, the targets' VGG features recomputed every step,
                       the whole table renormalised every step, ``loss.item()`` every step. Same
                       architectures as the library's (DCGAN generator, VGG-16 up to conv5_2, weak CNN,
                       d = 128, 32 noise columns); its VGG is frozen too, so the comparison does not
                       credit the library for the reference code's VGG weight gradients.
    ``glico``          :func:`glico.training.fit` with its defaults (sparse code updates with projection
                       of the touched rows, no per-step host sync) and the target cache forced on
                       (``cache_targets=True``: at batch 512, 64 px the benchmark's training set is over
                       the default 1 GiB budget).
    ``glico-nocache``  the same with ``cache_targets=False`` (CUDA only).
    ``glico-bf16-cl``  with ``autocast_dtype=torch.bfloat16, channels_last=True`` (CUDA only).
    ``glico-compile``  with ``compile=True`` (CUDA only; a warm-up fit compiles first).
    ``glico-compile-ro`` with ``compile="reduce-overhead"`` (CUDA graphs of the compiled pieces; CUDA only).
The library's step time is taken inside one ``fit``: the time between two log points (each reads the
losses on the host, a sync) divided by the steps between them; the steps before the first log point
(warm-up, compilation) and the set-up (code init, target cache, data hash) are not timed. The eager
step is timed in chunks of steps after a warm-up (it syncs every step anyway).

Classifier step, providers (weak 4-conv CNN; WideResNet-28-10 too at 32 px on CUDA):
    ``plain``        :func:`glico.experiments.downstream.train_classifier`, standard crop + flip only;
    ``glico``        the same with :class:`glico.experiments.policies.GLICOPolicy` (the library's
                     augmenter: on-device coin flips, partner draw and slerp, no host round trip);
    ``glico-all``    the library's augmenter with ``only_replaced=False``: the generator runs on the whole
                     batch (the GPU default; on CPU the default runs it on the replaced rows only);
    ``glico-bank``   the library's augmenter with ``refresh_every=10``: a bank of one image per training
                     example, drawn every 10 steps, replaced rows taken from it;
    ``eager-glico``  the same with :class:`EagerAugment` below: partners and t drawn on the host per
                     example, slerp written out, a host round trip per batch.
Each at ``precision="fp32"`` and at the default ``"auto"`` (bf16 autocast + channels_last on GPUs with
bf16 tensor cores; on CPU only ``auto``, which is fp32 there).
Timed as the difference between a long and a short ``train_classifier`` run (same set-up in both),
divided by the difference in steps; a warm-up run first.

Every row records the median and range of the repeats, in ms per step, and images/s.
"""
from __future__ import annotations

import math
import os
import random
import time

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.vgg import cfgs as vgg_cfgs
from torchvision.models.vgg import make_layers as vgg_make_layers

from bench_helpers import recorded, summary_ms, wall_ms
from glico import GLICO
from glico.augment import GLICOAugmenter
from glico.classifiers import WeakCNN
from glico.experiments.downstream import TrainConfig, resolve_precision, train_classifier
from glico.names import downstream_classifier
from glico.experiments.policies import GLICOPolicy
from glico.generators import DCGANGenerator
from glico.losses import PerceptualLoss, PixelLoss
from glico.training import FitConfig, fit

CUDA = torch.cuda.is_available()
DEVICE = "cuda" if CUDA else "cpu"
NUM_CLASSES = 10
CODE_DIM, NOISE_DIM, NOISE_SIGMA, GAMMA = 128, 32, 0.1, 0.1
T_VALUES = (0.1, 0.2, 0.3, 0.4)
HEADLINE = (128, 32)  # batch, image size of the targets

if CUDA:
    CASES = [pytest.param(b, s, id=f"B{b}-{s}px") for b in (128, 512) for s in (32, 64)]
    FIT_PROVIDERS = ("eager", "glico", "glico-nocache", "glico-bf16-cl", "glico-compile", "glico-compile-ro")
    CLASSIFIERS = ("weak", "wrn-28-10")
    IMAGES_PER_BATCH = 4  # training-set size = 4 batches
    FIT_EPOCHS, FIT_LOG_EVERY = 20, 10  # 80 steps; 7 timed intervals of 10 steps after the first log
    EAGER_STEPS = (10, 10, 6)  # warm-up steps, steps per timed chunk, chunks
    CLS_STEPS = (10, 60)  # short, long classifier run: 50 timed steps
    REPEATS = 3
elif os.environ.get("GLICO_BENCH_CPU") == "1":
    # CPU measurement (opt-in, ~5 min on 2 cores): the CPU recipe's batch (64, 32 px) and classifiers.
    CASES = [pytest.param(64, 32, id="cpu-B64-32px")]
    FIT_PROVIDERS = ("eager", "glico")
    CLASSIFIERS = ("weak", "wrn-16-1")
    IMAGES_PER_BATCH = 2
    FIT_EPOCHS, FIT_LOG_EVERY = 4, 2  # 8 steps: 3 timed intervals of 2 steps after the first log
    EAGER_STEPS = (2, 2, 3)
    CLS_STEPS = (5, 25)  # 20 timed steps
    REPEATS = 3
    HEADLINE = (64, 32)
else:
    # CPU: one tiny case (DCGAN at 32 px, batch 8), 2 timed steps: proves the benchmark runs.
    CASES = [pytest.param(8, 32, id="cpu-tiny-B8-32px")]
    FIT_PROVIDERS = ("eager", "glico")
    CLASSIFIERS = ("weak",)
    IMAGES_PER_BATCH = 3  # 24 images, 3 steps per epoch
    FIT_EPOCHS, FIT_LOG_EVERY = 1, 1  # 3 steps: 2 timed after the first
    EAGER_STEPS = (1, 1, 2)
    CLS_STEPS = (1, 3)
    REPEATS = 1

BANK_REFRESH = 10  # glico-bank: steps between bank draws
CLS_PROVIDERS = ("plain", "glico", "glico-all", "glico-bank", "eager-glico")


def _data(batch: int, size: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """A training set of ``IMAGES_PER_BATCH`` batches (random images in [0, 1]; every class present)."""
    n = max(IMAGES_PER_BATCH * batch, NUM_CLASSES)
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, size, size, generator=g), torch.arange(n) % NUM_CLASSES


# ----------------------------------------------------------------------------------------------
# The straightforward fit step (the baseline)
# ----------------------------------------------------------------------------------------------
class EagerGLICO:
    """GLICO's fit step written the straightforward way, as the public reference code does it."""

    RELU = (3, 8, 13, 20, 27)  # conv1_2 .. conv5_2 of VGG-16
    MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)

    def __init__(self, n: int, size: int, device: str) -> None:
        self.device = device
        self.codes = nn.Parameter(F.normalize(torch.randn(n, CODE_DIM, device=device), dim=1))
        self.generator = DCGANGenerator(CODE_DIM + NOISE_DIM, image_size=size, channels=3).to(device)
        self.classifier = WeakCNN(in_channels=3, num_classes=NUM_CLASSES, image_size=size).to(device)
        self.vgg = vgg_make_layers(vgg_cfgs["D"])[: self.RELU[-1] + 1].to(device).eval().requires_grad_(False)
        self.mean = torch.tensor(self.MEAN, device=device).view(1, 3, 1, 1)
        self.std = torch.tensor(self.STD, device=device).view(1, 3, 1, 1)
        params = list(self.generator.parameters()) + list(self.classifier.parameters())
        self.opt = torch.optim.Adam(params, lr=1e-3, betas=(0.5, 0.999))
        self.opt_codes = torch.optim.Adam([self.codes], lr=1e-2, betas=(0.5, 0.999))

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        if x.shape[-1] < 32:
            x = F.interpolate(x, size=(32, 32), mode="bilinear", align_corners=False)
        x = (x - self.mean) / self.std
        out = []
        for i, layer in enumerate(self.vgg):
            x = layer(x)
            if i in self.RELU:
                out.append(x)
        return out

    def step(self, images: torch.Tensor, labels: torch.Tensor, idx: torch.Tensor) -> float:
        z = self.codes[idx]
        eps = torch.randn(idx.shape[0], NOISE_DIM, device=self.device) * NOISE_SIGMA
        fake = self.generator(torch.cat([z, eps], dim=1))
        target_features = self.features(images)  # recomputed every step, although the images never change
        rec = sum(0.2 * (a - b).abs().mean() for a, b in zip(self.features(fake), target_features))
        loss = rec + GAMMA * F.cross_entropy(self.classifier(fake), labels)
        self.opt.zero_grad()
        self.opt_codes.zero_grad()
        loss.backward()  # a dense (N, d) gradient for the code table
        self.opt.step()
        self.opt_codes.step()  # Adam over every row
        with torch.no_grad():
            self.codes.copy_(F.normalize(self.codes, dim=1))  # the whole table, every step
        return loss.item()  # a host sync every step


def _eager_fit_ms(batch: int, size: int) -> list[float]:
    images, labels = _data(batch, size)
    model = EagerGLICO(images.shape[0], size, DEVICE)
    x, y = images.to(DEVICE), labels.to(DEVICE)
    n = x.shape[0]
    g = torch.Generator().manual_seed(0)

    def run(steps: int) -> None:
        for k in range(steps):
            if k % (n // batch) == 0:
                perm = torch.randperm(n, generator=g).to(DEVICE)
            idx = perm[(k % (n // batch)) * batch : (k % (n // batch) + 1) * batch]
            model.step(x[idx], y[idx], idx)

    warmup, chunk, chunks = EAGER_STEPS
    run(warmup)
    return [wall_ms(lambda: run(chunk), DEVICE) / chunk for _ in range(chunks)]


# ----------------------------------------------------------------------------------------------
# The library's fit step
# ----------------------------------------------------------------------------------------------
def _fit_config(provider: str, batch: int, epochs: int, log_every: int) -> FitConfig:
    extra = {
        # The cache is forced on: at batch 512, 64 px the benchmark's 2 048 images need ~3.8 GiB, over the
        # default budget; the budget is about memory safety, and a GPU has the room.
        "glico": {"cache_targets": True},
        "glico-nocache": {"cache_targets": False},
        "glico-bf16-cl": {"cache_targets": True, "autocast_dtype": torch.bfloat16, "channels_last": True},
        "glico-compile": {"cache_targets": True, "compile": True},
        "glico-compile-ro": {"cache_targets": True, "compile": "reduce-overhead"},
    }[provider]
    return FitConfig(epochs=epochs, batch_size=batch, device=DEVICE, progress=False, handle_signals=False,
                     checkpoint=None, log_every=log_every, **extra)


def _library_fit_ms(provider: str, batch: int, size: int) -> list[float]:
    images, labels = _data(batch, size)
    torch.manual_seed(0)
    model = GLICO(image_shape=(3, size, size), num_classes=NUM_CLASSES, code_dim=CODE_DIM,
                  loss=PerceptualLoss(weights=None))  # random VGG weights: the same cost, no download
    # Timed inside the fit: each log point reads the losses on the host (a sync), so the time between two
    # log points is that of log_every whole steps. The steps before the first log point (warm-up, and
    # compilation with compile=True) are not timed, nor is the set-up (code init, target cache).
    stamps: list[tuple[int, float]] = []
    fit(model, images, labels, config=_fit_config(provider, batch, FIT_EPOCHS, FIT_LOG_EVERY),
        on_log=lambda step, losses: stamps.append((step, time.perf_counter())))
    return [(t1 - t0) * 1e3 / (s1 - s0) for (s0, t0), (s1, t1) in zip(stamps, stamps[1:])]


@pytest.mark.parametrize("provider", FIT_PROVIDERS)
@pytest.mark.parametrize("batch,size", CASES)
def test_fit_step(record, provider, batch, size):
    samples = _eager_fit_ms(batch, size) if provider == "eager" else _library_fit_ms(provider, batch, size)
    stats = summary_ms(samples)
    row = record(kind="fit_step", provider=provider, B=batch, size=size, device=DEVICE, **stats,
                 images_per_s=batch / (stats["ms_median"] * 1e-3))
    assert row["ms_median"] > 0 and math.isfinite(row["ms_median"])


# ----------------------------------------------------------------------------------------------
# The classifier step, with and without GLICO augmentation
# ----------------------------------------------------------------------------------------------
class EagerAugment:
    """GLICO augmentation written the straightforward way: partners and t drawn on the host, per example."""

    def __init__(self, model: GLICO, labels: torch.Tensor, p: float = 0.5, seed: int = 0) -> None:
        self.codes = model.codes.weight.detach()
        self.generator, self.p = model.generator, p
        self.labels = labels.tolist()
        self.by_class: dict[int, list[int]] = {}
        for i, c in enumerate(self.labels):
            self.by_class.setdefault(c, []).append(i)
        self.rng = random.Random(seed)

    @torch.no_grad()
    def __call__(self, images: torch.Tensor, labels: torch.Tensor, idx: torch.Tensor):
        dev = images.device
        rows = idx.tolist()  # host round trip
        partners = torch.tensor([self.rng.choice(self.by_class[self.labels[i]]) for i in rows], device=dev)
        t = torch.tensor([self.rng.choice(T_VALUES) for _ in rows], device=dev)[:, None]
        a, b = self.codes[idx], self.codes[partners]
        omega = torch.acos((a * b).sum(1, keepdim=True).clamp(-1, 1))
        so = torch.sin(omega)
        slerp = (torch.sin((1 - t) * omega) * a + torch.sin(t * omega) * b) / so.clamp_min(1e-6)
        z = torch.where(so > 1e-6, slerp, (1 - t) * a + t * b)
        eps = torch.randn(len(rows), NOISE_DIM, device=dev) * NOISE_SIGMA
        was = self.generator.training
        self.generator.eval()
        synth = self.generator(torch.cat([z, eps], dim=1))
        self.generator.train(was)
        replace = torch.rand(len(rows), device=dev) < self.p
        return torch.where(replace[:, None, None, None], synth, images), labels


def _classifier(name: str, size: int) -> nn.Module:
    return downstream_classifier(name)(3, NUM_CLASSES, size)


def _policy(provider: str, images: torch.Tensor, labels: torch.Tensor, size: int):
    if provider == "plain":
        return None
    torch.manual_seed(0)
    model = GLICO(image_shape=(3, size, size), num_classes=NUM_CLASSES, code_dim=CODE_DIM, loss=PixelLoss())
    model.init_codes(images, labels, torch.Generator().manual_seed(0))  # codes need no fit for timing
    model.to(DEVICE)
    if provider == "glico":
        return GLICOPolicy(GLICOAugmenter(model, p=0.5, seed=0))
    if provider == "glico-all":
        return GLICOPolicy(GLICOAugmenter(model, p=0.5, seed=0, only_replaced=False))
    if provider == "glico-bank":
        return GLICOPolicy(GLICOAugmenter(model, p=0.5, seed=0, refresh_every=BANK_REFRESH))
    return EagerAugment(model, labels)


CLS_CASES = [pytest.param(c, *p.values, id=f"{c}-{p.id}") for c in CLASSIFIERS for p in CASES
             if c == "weak" or p.values[1] == 32]  # WRN-28-10: the paper's CIFAR classifier, 32 px


CLS_PRECISIONS = ("fp32", "auto") if CUDA else ("auto",)


@pytest.mark.parametrize("precision", CLS_PRECISIONS)
@pytest.mark.parametrize("provider", CLS_PROVIDERS)
@pytest.mark.parametrize("classifier,batch,size", CLS_CASES)
def test_classifier_step(record, provider, classifier, batch, size, precision):
    images, labels = _data(batch, size)
    policy = _policy(provider, images, labels, size)
    torch.manual_seed(0)
    net = _classifier(classifier, size)
    short, long = CLS_STEPS

    def run(steps: int) -> None:
        cfg = TrainConfig(steps=steps, batch_size=batch, device=DEVICE, progress=False, seed=0, precision=precision)
        train_classifier(net, images, labels, cfg, policy=policy)

    run(short)  # warm-up
    samples = [(wall_ms(lambda: run(long), DEVICE) - wall_ms(lambda: run(short), DEVICE)) / (long - short)
               for _ in range(REPEATS)]
    stats = summary_ms(samples)
    row = record(kind="classifier_step", provider=provider, classifier=classifier, B=batch, size=size,
                 device=DEVICE, precision=precision, resolved_precision=resolve_precision(precision, DEVICE), **stats, images_per_s=batch / (stats["ms_median"] * 1e-3))
    assert math.isfinite(row["ms_median"])


# ----------------------------------------------------------------------------------------------
# The targets, from the rows above (recorded, not asserted: timings are measurements)
# ----------------------------------------------------------------------------------------------
def _find(**match) -> dict | None:
    for row in recorded("step"):
        if all(row.get(k) == v for k, v in match.items()):
            return row
    return None


def test_targets(record):
    batch, size = HEADLINE
    rows = []
    eager = _find(kind="fit_step", provider="eager", B=batch, size=size)
    for provider in FIT_PROVIDERS[1:]:
        lib = _find(kind="fit_step", provider=provider, B=batch, size=size)
        if eager and lib and lib["ms_median"] > 0:
            rows.append(dict(target=f"fit step B={batch} {size}px: {provider} speed / eager (>= 3)",
                             value=eager["ms_median"] / lib["ms_median"]))
    for classifier in CLASSIFIERS:
        for precision in CLS_PRECISIONS:
            plain = _find(kind="classifier_step", provider="plain", classifier=classifier, B=batch, size=size,
                          precision=precision)
            for provider in ("glico", "glico-all", "glico-bank", "eager-glico"):
                aug = _find(kind="classifier_step", provider=provider, classifier=classifier, B=batch, size=size,
                            precision=precision)
                if plain and aug and plain["ms_median"] > 0:
                    rows.append(dict(target=f"{classifier} step B={batch} {size}px {precision}: {provider} time / plain "
                                            f"(<= 1.10)", value=aug["ms_median"] / plain["ms_median"]))
        fp32 = _find(kind="classifier_step", provider="plain", classifier=classifier, B=batch, size=size, precision="fp32")
        auto = _find(kind="classifier_step", provider="plain", classifier=classifier, B=batch, size=size, precision="auto")
        if fp32 and auto and auto["ms_median"] > 0:
            rows.append(dict(target=f"{classifier} step B={batch} {size}px: auto ({auto['resolved_precision']}) speed / "
                                    f"fp32 (info)", value=fp32["ms_median"] / auto["ms_median"]))
    for row in rows:
        record(kind="target", **row)
    # Without CUDA the headline case does not run, so there is nothing to compare (by design).
    assert all(r["value"] > 0 for r in rows) and (bool(rows) or not CUDA)
