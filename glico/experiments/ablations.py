"""``glico ablate``: which part of GLICO matters on this data? The paper's ablations as data.

An ablation is a list of :class:`Variant` s. A variant is a GLICO composition by names (overrides of
:class:`glico.names.ModelSpec` fields on top of a shared base), the downstream batch policy that uses
it, and where its unlabelled images come from (none, the test set, or more training images). The
paper's Tables II–V and Fig. 7 are such lists, in :data:`TABLES`; its published numbers for them are in
:data:`PAPER`. :func:`run_ablation` runs any list through the same code path as ``glico evaluate``
(:func:`glico.experiments.evaluate.fit_glico` and :func:`~glico.experiments.evaluate.train_and_score`):
for each SPC and seed one split, for each variant one GLICO fit (shared by the variants that need the
same fit) and one downstream classifier with the same budget; top-1 / top-5 on the test set; mean ±
standard error over seeds.

    from glico.experiments.ablations import TABLES, Variant, run_ablation

    mine = [Variant("GLICO"), Variant("Baseline", model=None, policy="baseline"),
            Variant("Laplacian loss", model={"loss": "laplacian"})]
    run_ablation(mine, data="digits", spcs=(5,), seeds=(0, 1, 2), classifier="weak", out="abl")
"""
from __future__ import annotations

import argparse
import json
import logging
import time
from dataclasses import dataclass, field, fields
from pathlib import Path
from types import MappingProxyType
from typing import Any, Callable, Mapping, Sequence

import torch

from glico import __version__
from glico.experiments.evaluate import (
    GLICO_METHODS,
    classifier_name,
    downstream_classifier,
    SCHEDULES,
    add_oversample_flags,
    add_precision_flag,
    add_schedule_flags,
    optimizer_text,
    GridInterrupted,
    add_resume_flag,
    default_batch_size,
    default_lr,
    aggregate,
    downstream_config,
    fit_glico,
    model_fields_from_args,
    plot_results,
    steps_for,
    train_and_score,
)
from glico.experiments.downstream import OVERSAMPLE_TO, resolve_oversample, resolve_precision
from glico.experiments.policies import policy_names
from glico.experiments.runlog import RunLog
from glico._argtypes import int_list, positive_float, positive_int, positive_int_list, probability

log = logging.getLogger(__name__)

__all__ = ["Variant", "PaperRow", "PaperTable", "TABLES", "PAPER", "run_ablation", "variant_spec", "build_variant",
           "variant_unlabeled", "fit_variant", "ablation_markdown", "add_ablate_parser", "cmd_ablate"]


def _spec_fields() -> tuple[str, ...]:
    from glico.names import ModelSpec

    return tuple(f.name for f in fields(ModelSpec) if f.name not in ("image_shape", "num_classes"))


@dataclass(frozen=True)
class Variant:
    """One row of an ablation: a GLICO composition and how a downstream classifier uses it.

    Args:
        name: the row's name (unique within an ablation), e.g. ``"No Noise"``.
        model: overrides of :class:`glico.names.ModelSpec` fields (``{"noise": "none"}``) applied on top
            of the ablation's shared base composition; ``{}`` is the base itself. ``None``: no GLICO
            model at all (the paper's Baseline, AutoAugment alone); then ``policy`` must not use GLICO.
        policy: the downstream batch policy (:func:`glico.experiments.policies.policy_names`):
            ``glico``, ``glico+autoaugment``, ``baseline``, ``autoaugment``, ...
        transductive: also reconstruct the (unlabelled) test images while fitting GLICO (Table II's
            "Transductive"; the test labels are never used).
        extra_unlabeled_per_class: also reconstruct this many unlabelled training images per class that
            are not in the labelled split (Table V's semi-supervised setting; capped at what the
            training set has left).
    """

    name: str
    model: Mapping[str, Any] | None = field(default_factory=dict, hash=False)
    policy: str = "glico"
    transductive: bool = False
    extra_unlabeled_per_class: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.strip():
            raise ValueError(f"a variant needs a non-empty name; got {self.name!r}")
        if self.policy not in policy_names():
            raise ValueError(f"variant {self.name!r}: unknown policy {self.policy!r}; valid: {', '.join(policy_names())}")
        if self.extra_unlabeled_per_class < 0:
            raise ValueError(f"variant {self.name!r}: extra_unlabeled_per_class must be >= 0; got {self.extra_unlabeled_per_class}")
        if self.model is None:
            if self.uses_glico:
                raise ValueError(f"variant {self.name!r}: policy {self.policy!r} needs a GLICO model; give model={{}} "
                                 f"for the base composition (model=None means no GLICO)")
            if self.transductive or self.extra_unlabeled_per_class:
                raise ValueError(f"variant {self.name!r} fits no GLICO model (model=None), so transductive / "
                                 f"extra_unlabeled_per_class would have no effect; drop them")
            return
        if not self.uses_glico:
            raise ValueError(f"variant {self.name!r}: policy {self.policy!r} does not use GLICO, so its model would "
                             f"never be fitted; pass model=None, or a GLICO policy ({', '.join(GLICO_METHODS)})")
        valid = _spec_fields()
        bad = [k for k in self.model if k not in valid]
        if bad:
            raise ValueError(f"variant {self.name!r}: unknown model field(s) {', '.join(bad)}; valid: {', '.join(valid)}")
        object.__setattr__(self, "model", MappingProxyType(dict(self.model)))

    @property
    def uses_glico(self) -> bool:
        """Whether this variant fits a GLICO model (its policy samples from one)."""
        return self.policy in GLICO_METHODS

    def describe(self) -> str:
        """The composition in a few words: what differs from the base, and the policy."""
        if self.model is None:
            return f"no GLICO; policy {self.policy}"
        parts = [f"{k}={v}" for k, v in self.model.items()] or ["base"]
        if self.transductive:
            parts.append("+ test images unlabelled")
        if self.extra_unlabeled_per_class:
            parts.append(f"+ {self.extra_unlabeled_per_class}/class unlabelled")
        return ", ".join(parts) + (f"; policy {self.policy}" if self.policy != "glico" else "")

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "model": None if self.model is None else dict(self.model), "policy": self.policy,
                "transductive": self.transductive, "extra_unlabeled_per_class": self.extra_unlabeled_per_class}


# ------------------------------------------------------------------------------ the paper's tables
_GLICO = Variant("GLICO")
_BASELINE = Variant("Baseline", model=None, policy="baseline")

#: The paper's ablations as lists of variants (Tables II–V, Fig. 7). Table III and Fig. 7 carry no
#: row of the paper's GLICO: Table III gets it as its first row here, as the reference to compare with.
TABLES: dict[str, tuple[Variant, ...]] = {
    "2": (
        _GLICO,
        _BASELINE,
        Variant("No Classifier", model={"classifier": "none"}),
        Variant("No Noise", model={"noise": "none"}),
        Variant("Lerp", model={"interpolator": "lerp"}),
        Variant("Transductive", transductive=True),
    ),
    "3": (
        _GLICO,
        Variant("Latent Classifier", model={"classifier": "latent"}),
        Variant("Hypercube Init", model={"init": "hypercube"}),
        Variant("ResNet Init", model={"init": "features"}),
        Variant("Additive Noise", model={"noise": "additive"}),
        Variant("Cosine Loss", model={"class_loss": "cosine"}),
    ),
    # The paper measured Table IV with transductive GLICO ("similar results are obtained without").
    "4": (
        _BASELINE,
        Variant("GLICO", transductive=True),
        Variant("AutoAugment", model=None, policy="autoaugment"),
        Variant("GLICO + AutoAugment", policy="glico+autoaugment", transductive=True),
    ),
    # CIFAR-100's "1000 unlabeled" and "35k unlabeled" are 10 and 350 per class.
    "5": (
        _BASELINE,
        Variant("GLICO"),
        Variant("GLICO + 10/class unlabelled", extra_unlabeled_per_class=10),
        Variant("GLICO + 350/class unlabelled", extra_unlabeled_per_class=350),
    ),
    "fig7": (
        Variant("f = weak CNN", model={"classifier": "weak"}),
        Variant("f = WRN-28-2", model={"classifier": "wrn"}),
        Variant("f = ResNet-50", model={"classifier": "resnet50"}),
        Variant("f = VGG-19", model={"classifier": "vgg19"}),
    ),
}

TITLES = {
    "2": "Table II: ablation study",
    "3": "Table III: additional design choices",
    "4": "Table IV: GLICO and AutoAugment",
    "5": "Table V: semi-supervised (unlabelled training images added to the fit)",
    "fig7": "Fig. 7: weak vs strong classifier f",
}


@dataclass(frozen=True)
class PaperRow:
    """A published result: top-1 / top-5 accuracy in %, mean ± STE over 3 seeds (None: not published)."""

    top1: float
    top1_ste: float | None = None
    top5: float | None = None
    top5_ste: float | None = None


@dataclass(frozen=True)
class PaperTable:
    """A table's published numbers and the setting they were measured in."""

    setting: str
    rows: Mapping[str, PaperRow]


#: The paper's numbers (Azuri & Weinshall, Tables II–V), keyed by table and variant name.
PAPER: dict[str, PaperTable] = {
    "2": PaperTable("CIFAR-100, 25 labelled per class, WRN-28 downstream, 3 seeds", MappingProxyType({
        "GLICO": PaperRow(43.84, 0.25, 70.73, 0.07),
        "Baseline": PaperRow(38.39, 0.18, 67.77, 0.18),
        "No Classifier": PaperRow(41.57, 0.54, 69.55, 0.11),
        "No Noise": PaperRow(43.31, 0.02, 70.05, 0.02),
        "Lerp": PaperRow(43.01, 0.06, 70.51, 0.03),
        "Transductive": PaperRow(44.79, 0.12, 71.28, 0.09),
    })),
    "3": PaperTable("CIFAR-100, 25 labelled per class, WRN-28 downstream, 3 seeds (GLICO: Table II)", MappingProxyType({
        "GLICO": PaperRow(43.84, 0.25, 70.73, 0.07),
        "Latent Classifier": PaperRow(43.08, 0.06, 70.22, 0.05),
        "Hypercube Init": PaperRow(44.21, 0.61, 70.89, 0.46),
        "ResNet Init": PaperRow(42.95, 0.22, 70.10, 0.13),
        "Additive Noise": PaperRow(41.02, 0.43, 68.10, 0.11),
        "Cosine Loss": PaperRow(41.01, 0.27, 68.45, 0.31),
    })),
    "4": PaperTable("CIFAR-100, 50 labelled per class, transductive GLICO, WRN-28 downstream, 3 seeds", MappingProxyType({
        "Baseline": PaperRow(50.37, 0.05, 75.61, 0.01),
        "GLICO": PaperRow(53.35, 0.23, 77.60, 0.12),
        "AutoAugment": PaperRow(53.80, 0.10, 79.18, 0.13),
        "GLICO + AutoAugment": PaperRow(56.31, 0.02, 80.66, 0.04),
    })),
    "5": PaperTable("CIFAR-100, 25 labelled per class, + 1000 / 35k unlabelled, top-1 only", MappingProxyType({
        "Baseline": PaperRow(38.39, 0.18),
        "GLICO": PaperRow(43.84, 0.25),
        "GLICO + 10/class unlabelled": PaperRow(44.52, 0.12),
        "GLICO + 350/class unlabelled": PaperRow(44.73, 0.07),
    })),
}


# ------------------------------------------------------------------------------ one variant
def variant_spec(variant: Variant, image_shape: Sequence[int], num_classes: int,
                 base_model: Mapping[str, Any] | None = None):
    """The :class:`glico.names.ModelSpec` of ``variant``: ``base_model`` with the variant's overrides."""
    from glico.names import ModelSpec

    if variant.model is None:
        raise ValueError(f"variant {variant.name!r} has no GLICO model (model=None)")
    return ModelSpec(image_shape=tuple(image_shape), num_classes=num_classes, **{**(base_model or {}), **variant.model})


def build_variant(variant: Variant, image_shape: Sequence[int], num_classes: int,
                  base_model: Mapping[str, Any] | None = None):
    """The (unfitted) :class:`glico.model.GLICO` of ``variant``, composed by :func:`glico.names.build_model`."""
    from glico.names import build_model

    return build_model(variant_spec(variant, image_shape, num_classes, base_model))


def variant_unlabeled(variant: Variant, data, spc: int, seed: int):
    """The unlabelled images ``variant`` adds to its GLICO fit on the split ``(spc, seed)``, or None.

    Transductive: the test images (their labels are not used). ``extra_unlabeled_per_class = m``: the
    next ``m`` images of every class in the split's own seeded order (``small_sample_split`` at
    ``spc + m`` minus the split at ``spc``), so they are disjoint from the labelled split and nested
    across ``m``; capped at what the smallest class has left.

    Returns:
        ``(images or None, info)`` with info ``{"n_test": ..., "extra_per_class": ...}`` as used.

    Shape:
        images (M, C, H, W) in [0, 1]
    """
    from glico.data import small_sample_split

    parts, info = [], {}
    if variant.transductive:
        parts.append(data.test.images)
        info["n_test"] = int(data.test.images.shape[0])
    if variant.extra_unlabeled_per_class:
        room = int(data.train.class_counts().min()) - spc
        m = max(0, min(variant.extra_unlabeled_per_class, room))
        if m < variant.extra_unlabeled_per_class:
            log.warning("variant %r: %d unlabelled images per class asked for, the training set has %d left per class "
                        "after the split; using %d", variant.name, variant.extra_unlabeled_per_class, room, m)
        if m:
            _, labelled = small_sample_split(data.train, spc, seed)
            _, wider = small_sample_split(data.train, spc + m, seed)
            extra = wider[~torch.isin(wider, labelled)]
            parts.append(data.train.images[extra])
        info["extra_per_class"] = m
    return (torch.cat(parts) if parts else None), info


def fit_variant(variant: Variant, data, train, *, spc: int, seed: int, base_model: Mapping[str, Any] | None = None,
                fit_epochs: int = 200, fit_batch_size: int = 128, device: str = "cpu", progress: bool = True,
                samples_png: Path | None = None, fit_oversample_to: int = 0):
    """Fit ``variant``'s GLICO model on the split ``train`` (drawn at ``spc``, ``seed`` from ``data.train``),
    with the unlabelled images of :func:`variant_unlabeled`; ``fit_oversample_to`` as
    :class:`glico.training.FitConfig`'s ``oversample_to`` (images, 0: one pass per epoch).

    Returns:
        ``(model, info)`` as :func:`glico.experiments.evaluate.fit_glico`; code table rows: the split's
        images first, then the unlabelled ones.
    """
    if not variant.uses_glico:
        raise ValueError(f"variant {variant.name!r} fits no GLICO model")
    unlabeled, uinfo = variant_unlabeled(variant, data, spc, seed)
    fields_ = {**(base_model or {}), **variant.model}
    model, info = fit_glico(fields_, train, seed=seed, epochs=fit_epochs, batch_size=fit_batch_size, device=device,
                            unlabeled=unlabeled, progress=progress, samples_png=samples_png,
                            oversample_to=fit_oversample_to)
    return model, {**info, **uinfo}


# ModelSpec fields that act only when new images are sampled, never during the fit: variants that differ
# only in them share one fit (the Lerp row uses GLICO's fitted model with linear interpolation), so the
# comparison isolates what the field changes.
SAMPLING_ONLY = ("interpolator",)


def _fit_key(v: Variant, base: Mapping[str, Any]) -> tuple:
    merged = {k: val for k, val in {**base, **v.model}.items() if k not in SAMPLING_ONLY}
    return tuple(sorted(merged.items())), v.transductive, v.extra_unlabeled_per_class


def _slug(name: str) -> str:
    return "".join(ch if ch.isalnum() else "-" for ch in name.lower()).strip("-")


def _preflight(variants: Sequence[Variant], base: Mapping[str, Any], image_shape, num_classes: int) -> None:
    """Build what needs files (loss weights, the ResNet init's network) once per distinct setting before
    any training, so that a missing file stops the ablation at once instead of hours in."""
    from glico.names import build_loss, resolve

    seen = set()
    for v in variants:
        if not v.uses_glico:
            continue
        spec = variant_spec(v, image_shape, num_classes, base)
        key = (spec.loss, spec.vgg_weights, spec.init, spec.feature_net, spec.feature_weights)
        if key in seen:
            continue
        seen.add(key)
        try:
            build_loss(spec)
            if spec.init == "features":
                resolve("init", spec.init)(spec)
            for family in ("generator", "noise", "interpolator", "classifier", "class_loss"):
                resolve(family, getattr(spec, family))
        except (RuntimeError, ValueError, FileNotFoundError) as e:
            raise type(e)(f"variant {v.name!r}: {e}") from e


# ------------------------------------------------------------------------------ the API
#: run_ablation settings added after results were first written, with the value older grids ran with.
SETTINGS_ADDED_LATER: dict[str, Any] = {"schedule": "step", "oversample_to": OVERSAMPLE_TO, "fit_oversample_to": 0}


def run_ablation(
    variants: Sequence[Variant],
    *,
    data,
    spcs: Sequence[int] = (25,),
    seeds: Sequence[int] = (0, 1, 2),
    classifier: str = "wrn-28-10",
    epochs: int = 200,
    fit_epochs: int = 200,
    base_model: Mapping[str, Any] | None = None,
    device: str = "cpu",
    out: str | Path | None = None,
    progress: bool = True,
    table: str | None = None,
    batch_size: int = 128,
    lr: float = 0.1,
    weight_decay: float = 5e-4,
    schedule: str = "step",
    glico_p: float = 0.5,
    fit_batch_size: int = 128,
    image_size: int | None = None,
    max_test: int | None = None,
    echo: Callable[[str], None] | None = None,
    precision: str = "auto",
    resume: bool = False,
    overwrite: bool = False,
    oversample_to: int | str = OVERSAMPLE_TO,
    fit_oversample_to: int | str = 0,
) -> dict:
    """Run an ablation: every variant on the same splits with the same budgets; mean ± STE over seeds.

    For each SPC and seed: one small-sample split; for each variant, its GLICO model fitted on that
    split (one fit shared by the variants whose fit would be the same: same composition, apart from
    the sampling-only interpolator, and same unlabelled images; e.g. GLICO, Lerp and GLICO +
    AutoAugment), then a downstream classifier trained with the variant's policy and
    scored on the test set. Everything the variants do not change (split, downstream recipe and
    budget, fit budget, base composition) is the same for all of them.

    Args:
        variants: the rows (:class:`Variant`; names unique), e.g. ``TABLES["2"]``.
        data: a data SPEC (``digits``, ``cifar10:DIR``, ``folder:PATH``, ...) or a loaded
            :class:`glico.data.Dataset`.
        spcs: labelled images per class; one split per (spc, seed).
        seeds: split / training seeds.
        classifier: the downstream classifier (``wrn-28-10``, ``wrn-28-2``, ``resnet50``, ``vgg19``,
            ``weak`` = the fast CPU option).
        epochs: downstream budget (:func:`glico.experiments.downstream.steps_for`; paper 200).
        fit_epochs: GLICO fit budget in epochs.
        oversample_to, fit_oversample_to: the downstream and fit oversampling, in images or ``"full"`` (the
            full training set's size, the paper's rule): as :class:`glico.experiments.evaluate.EvaluateConfig`.
        base_model: ModelSpec fields shared by all variants (``{"loss": "laplacian"}``), under their
            overrides; the rest are ModelSpec's defaults (the paper's choices).
        device: where to fit and train.
        out: folder for results.json, results.md, results.png and sample grids (None: write nothing).
        progress: progress bars.
        table: the key of :data:`PAPER` whose published numbers the markdown shows beside the results.
        batch_size, lr, weight_decay: the downstream SGD recipe.
        schedule: the downstream learning-rate schedule, ``step`` or ``cosine``.
        glico_p: the GLICO policy's replacement probability.
        fit_batch_size: GLICO fit batch size.
        image_size: resize images (folders of mixed sizes, CUB).
        max_test: score on a fixed stratified subsample of the test set (also what Transductive adds).
        precision: the downstream classifier's arithmetic: ``auto`` (bf16 autocast + channels_last on
            GPUs with bf16 tensor cores, else fp32), ``fp32`` or ``bf16`` (CUDA only).
        echo: where progress lines go (default: the ``glico.experiments.ablations`` logger, INFO).
        resume: keep the finished runs in ``out/runs.jsonl`` (written as each run ends, so an
            interruption loses only the run in progress) and run only the missing ones; the settings
            must be the same (the device may differ). Without it, an ``out`` holding finished runs is
            refused.

    Returns:
        The results (as written to results.json): ``runs`` (per spc, seed and variant: top1, top5 in %,
        seconds, steps, fit info), ``summary`` (per spc and variant: mean and STE over seeds),
        ``variants``, ``settings``, ``data``, ``paper`` (when ``table`` has published numbers), and
        ``markdown``.
    """
    from glico.augment import GLICOAugmenter
    from glico.data import Dataset, load_data, small_sample_split
    from glico.names import resolve
    from glico.training import resolve_device
    from glico.viz import class_grid, save_grid

    say = echo or log.info
    variants = list(variants)
    if not variants:
        raise ValueError("give at least one variant")
    names = [v.name for v in variants]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ValueError(f"variant names must be unique; repeated: {', '.join(dupes)}")
    downstream_classifier(classifier)  # an unknown name raises with the valid ones
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule must be one of {', '.join(SCHEDULES)}; got {schedule!r}")
    spcs, seeds = tuple(int(s) for s in spcs), tuple(int(s) for s in seeds)
    if not spcs or min(spcs) < 1:
        raise ValueError(f"spc values must be >= 1; got {spcs}")
    if not seeds:
        raise ValueError("give at least one seed")
    base = dict(base_model or {})
    valid = _spec_fields()
    bad = [k for k in base if k not in valid]
    if bad:
        raise ValueError(f"base_model: unknown field(s) {', '.join(bad)}; valid: {', '.join(valid)}")
    resolve_device(device)
    resolved_precision = resolve_precision(precision, device)  # refuses bf16 off CUDA before any work
    out = Path(out) if out is not None else None
    data_spec = data.name if isinstance(data, Dataset) else data
    settings = {"data": data_spec, "spcs": list(spcs), "seeds": list(seeds), "classifier": classifier,
                "epochs": epochs, "fit_epochs": fit_epochs, "base_model": base, "device": device, "table": table,
                "batch_size": batch_size, "lr": lr, "weight_decay": weight_decay, "schedule": schedule, "glico_p": glico_p,
                "fit_batch_size": fit_batch_size, "image_size": image_size, "max_test": max_test,
                "precision": precision, "oversample_to": oversample_to, "fit_oversample_to": fit_oversample_to}
    resolve_oversample(oversample_to, 1)  # bad values fail before any work
    resolve_oversample(fit_oversample_to, 1)
    # Before the data are loaded, so that a folder that will be refused is refused at once. The device may
    # change on resume, the arithmetic it resolves to may not; nor may anything but the version.
    kept = RunLog(out, {"command": "ablate", "glico_version": __version__, "settings": settings,
                        "variants": [v.to_dict() for v in variants], "resolved_precision": resolved_precision},
                  ("spc", "seed", "variant"), resume=resume, overwrite=overwrite, free={"settings.device", "glico_version"},
                  added_later={f"settings.{k}": v for k, v in SETTINGS_ADDED_LATER.items()})

    ds = data if isinstance(data, Dataset) else load_data(data, image_size=image_size, max_test=max_test)
    ds.require_test("glico ablate")
    c, h, w = ds.train.images.shape[1:]
    k = len(ds.train.class_names)
    flip = ds.name != "digits"  # digits are not mirror-symmetric
    factory = downstream_classifier(classifier)
    n_full = int(ds.train.images.shape[0])
    oversample, fit_oversample = resolve_oversample(oversample_to, n_full), resolve_oversample(fit_oversample_to, n_full)
    _preflight(variants, base, (c, h, w), k)
    runs: list[dict] = []
    shown_fits: set[int] = set()  # a fit shared by several rows is reported with the first of them
    total = len(spcs) * len(seeds) * len(variants)
    started = time.perf_counter()
    done = ran = 0
    rows = f"{len(variants)} variant{'' if len(variants) == 1 else 's'}"
    say(f"glico ablate: {rows} ({', '.join(names)}) on {ds.name}, {k} classes, "
        f"{ds.test.images.shape[0]} test images; spc {list(spcs)}, seeds {list(seeds)}, downstream {classifier}, "
        f"{epochs} epochs, GLICO fit {fit_epochs} epochs, on {device}")
    to_run = total - len(kept)
    line = kept.resume_line(total)
    if line:
        say(line)
    try:
        for spc in spcs:
            for seed in seeds:
                train, _ = small_sample_split(ds.train, spc, seed)
                tcfg = downstream_config(train.images.shape[0], h, epochs=epochs, batch_size=batch_size, lr=lr,
                                         weight_decay=weight_decay, flip=flip, seed=seed, device=device,
                                         progress=progress, precision=precision, cosine=schedule == "cosine",
                                         oversample_to=oversample)
                todo = [v for v in variants if kept.done(spc=spc, seed=seed, variant=v.name) is None]
                fitted: dict[tuple, tuple[Any, dict]] = {}
                pictured: set[tuple] = set()  # (fit, interpolator) pairs whose sample grid is written
                for i, v in enumerate(variants):
                    done += 1
                    previous = kept.done(spc=spc, seed=seed, variant=v.name)
                    if previous is not None:
                        runs.append(previous)
                        continue
                    augmenter, fit_info = None, None
                    if v.uses_glico:
                        key = _fit_key(v, base)
                        if key not in fitted:
                            fitted[key] = fit_variant(v, ds, train, spc=spc, seed=seed, base_model=base,
                                                      fit_epochs=fit_epochs, fit_batch_size=fit_batch_size,
                                                      device=device, progress=progress,
                                                      fit_oversample_to=fit_oversample)
                        model, fit_info = fitted[key]
                        spec = variant_spec(v, (c, h, w), k, base)
                        model.interpolator = resolve("interpolator", spec.interpolator)(spec)
                        if out is not None and (key, spec.interpolator) not in pictured:
                            pictured.add((key, spec.interpolator))
                            save_grid(class_grid(model, 8, seed),
                                      out / f"samples-{_slug(v.name)}-spc{spc}-seed{seed}.png", nrow=8)
                        augmenter = GLICOAugmenter(model, p=glico_p, seed=seed)
                        # Free a fit no later variant of this split still to run shares.
                        if not any(u.uses_glico and _fit_key(u, base) == key for u in todo[todo.index(v) + 1:]):
                            del fitted[key]
                    acc = train_and_score(v.policy, factory, train, ds.test, tcfg, augmenter=augmenter, seed=seed,
                                          desc=f"{v.name} spc{spc} s{seed}")
                    del augmenter
                    run = {"spc": spc, "seed": seed, "variant": v.name, "policy": v.policy, **acc,
                           "steps": tcfg.steps, "fit": fit_info}
                    kept.add(run)
                    runs.append(run)
                    ran += 1
                    eta = (time.perf_counter() - started) / ran * (to_run - ran)
                    fit_s = f"fit {fit_info['seconds']:.0f} s + " if fit_info and id(fit_info) not in shown_fits else ""
                    if fit_info:
                        shown_fits.add(id(fit_info))
                    top5 = f"top-5 {acc['top5']:6.2f} %  " if acc["top5"] is not None else ""
                    say(f"  spc {spc:>3} seed {seed} {v.name:>28}: top-1 {acc['top1']:6.2f} %  "
                        f"{top5}({fit_s}train {acc['seconds']:.0f} s; {done}/{total} done, "
                        f"about {eta / 60:.1f} min left)")
    except KeyboardInterrupt:
        say(f"glico ablate: interrupted; {kept.interrupted_message()}")
        raise GridInterrupted from None
    summary = aggregate(runs, key="variant")
    results = {
        "glico_version": __version__,
        "table": table,
        "title": TITLES.get(table or "", "ablation"),
        "settings": settings,
        "variants": [{**v.to_dict(), "composition": v.describe(),
                      "spec": None if v.model is None else {**base, **v.model}} for v in variants],
        "recipe": {"steps_per_run": {str(s): steps_for(s * k, batch_size, epochs, oversample) for s in spcs},
                   "oversample_to": oversample, "fit_oversample_to": fit_oversample,
                   "optimizer": optimizer_text(schedule, weight_decay),
                   "precision": resolved_precision,
                   "standard_augmentation": f"random crop (pad {max(1, h // 8)})" + (" + horizontal flip" if flip else "")},
        "data": {"name": ds.name, "classes": k, "n_test": int(ds.test.images.shape[0]), "image_shape": [c, h, w]},
        "runs": runs,
        "summary": summary,
        "paper": _paper_dict(table),
        "seconds": round(time.perf_counter() - started, 1),
    }
    results["markdown"] = ablation_markdown(results)
    if out is not None:
        (out / "results.json").write_text(json.dumps(results, indent=2))
        (out / "results.md").write_text(results["markdown"])
        plot_results(summary, out / "results.png", title=f"{results['title']} ({ds.name}, {classifier})", key="variant")
    return results


def _paper_dict(table: str | None) -> dict | None:
    if table not in PAPER:
        return None
    p = PAPER[table]
    return {"setting": p.setting, "rows": {n: vars(r) for n, r in p.rows.items()}}


def _pm(mean: float | None, ste: float | None) -> str:
    if mean is None:
        return "–"
    return f"{mean:.2f}" if ste is None else f"{mean:.2f} ± {ste:.2f}"


def ablation_markdown(results: Mapping[str, Any]) -> str:
    """The results as the paper lays them out: one row per variant, top-1 and top-5 (mean ± STE over
    seeds) per SPC, and the paper's numbers in extra columns where :data:`PAPER` has them."""
    from glico.names import ModelSpec

    summary, s = results["summary"], results["settings"]
    spcs = sorted({r["spc"] for r in summary})
    paper = results.get("paper")
    head = "| variant | composition | " + " | ".join(f"top-1 @ {n} spc | top-5 @ {n} spc" for n in spcs)
    sep = "|---|---|" + "---|---|" * len(spcs)
    if paper:
        head += " | paper top-1 | paper top-5"
        sep += "---|---|"
    defaults = ModelSpec(image_shape=(1, 8, 8), num_classes=1)
    changed = [f"{k}={v}" for k, v in s["base_model"].items() if getattr(defaults, k) != v]
    one_seed = len(s["seeds"]) == 1
    spread = f"one seed ({s['seeds'][0]}), so no standard error" if one_seed else f"mean ± STE over seeds {s['seeds']}"
    lines = [f"## {results['title']}", "",
             f"Accuracy (%) on {s['data']} ({results['data']['n_test']} test images), downstream {s['classifier']} "
             f"({s['epochs']} epochs), GLICO fit {s['fit_epochs']} epochs; {spread}.",
             "Base composition: the paper's defaults" + (f" except {', '.join(changed)}." if changed else ".")]
    if paper:
        lines.append(f"Paper columns: the published numbers, measured on {paper['setting']}; unless this run "
                     f"matches that setting, compare the ordering of the rows, not the values.")
    lines += ["", head + " |", sep]
    by_name = {v["name"]: v for v in results["variants"]}
    for name in dict.fromkeys(r["variant"] for r in summary):
        cells = []
        for n in spcs:
            r = next((x for x in summary if x["spc"] == n and x["variant"] == name), None)
            if r is None:
                cells += ["–", "–"]
            else:
                cells += [_pm(r["top1"], None if one_seed else r["top1_ste"]),
                          _pm(r["top5"], None if one_seed else r["top5_ste"])]
        if paper:
            pr = paper["rows"].get(name)
            cells += [_pm(pr["top1"], pr["top1_ste"]), _pm(pr["top5"], pr["top5_ste"])] if pr else ["–", "–"]
        lines.append(f"| {name} | {by_name[name]['composition']} | " + " | ".join(cells) + " |")
    notes = []
    for r in results["runs"]:
        fit = r.get("fit") or {}
        v = by_name[r["variant"]]
        if v["extra_unlabeled_per_class"] and fit.get("extra_per_class") != v["extra_unlabeled_per_class"]:
            notes.append(f"- {r['variant']}: the training set had only {fit.get('extra_per_class')} unlabelled images per "
                         f"class left at {r['spc']} spc (asked for {v['extra_unlabeled_per_class']}).")
    if notes:
        lines += [""] + list(dict.fromkeys(notes))
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------ CLI
def add_ablate_parser(sub, family_args: Callable[[argparse.ArgumentParser], None]) -> argparse.ArgumentParser:
    """Register ``glico ablate`` on the CLI's subparsers."""
    a = sub.add_parser(
        "ablate", help="the paper's ablations (Tables II-V, Fig. 7), each a list of GLICO compositions",
        description="Run one of the paper's ablation tables: each row a GLICO composition, fitted per SPC and seed, "
                    "used to augment the same downstream classifier; writes results.json, results.md, results.png.",
        epilog="example: glico ablate --table 2 --data digits --spc 5 --seeds 0,1,2 --classifier weak --epochs 5 "
               "--loss laplacian+pixel --out runs/table2")
    a.add_argument("--table", required=True, choices=list(TABLES),
                   help="2: GLICO, Baseline, No Classifier, No Noise, Lerp, Transductive; 3: Latent Classifier, "
                        "Hypercube/ResNet Init, Additive Noise, Cosine Loss; 4: with/without AutoAugment; "
                        "5: unlabelled images added; fig7: weak vs strong f across --spc")
    a.add_argument("--data", required=True, help="digits | cifar10:DIR | cifar100:DIR | cub:DIR | folder:PATH")
    a.add_argument("--spc", required=True, type=positive_int_list, help="samples per class, e.g. 25 (fig7: 10,25,50,100,250)")
    a.add_argument("--seeds", default=(0, 1, 2), type=int_list, help="comma-separated seeds (default 0,1,2)")
    a.add_argument("--out", required=True, help="folder for results.json, results.md, results.png")
    a.add_argument("--only", default=None,
                   help="comma-separated variant names to run (case-insensitive), e.g. 'GLICO,No Noise'")
    a.add_argument("--classifier", default="wrn-28-10", type=classifier_name,
                   help="downstream classifier: wrn-28-10, wrn-28-2, resnet50, vgg19, weak, or wrn-DEPTH-K for any "
                        "WideResNet (wrn-16-1 and weak are the CPU-sized options)")
    a.add_argument("--epochs", default=200, type=positive_int,
                   help="downstream budget: epochs over the split oversampled to --oversample-to images (paper: 200)")
    a.add_argument("--fit-epochs", default=200, type=positive_int, help="GLICO fit budget in epochs (default: 200)")
    add_oversample_flags(a)
    a.add_argument("--batch-size", default=None, type=positive_int, help="default 128 (CUB: 16)")
    a.add_argument("--lr", default=None, type=positive_float, help="default 0.1 (CUB: 0.001)")
    a.add_argument("--glico-p", default=0.5, type=probability, help="GLICO replacement probability (default: 0.5)")
    a.add_argument("--image-size", default=None, type=positive_int, help="resize images to this side (default: as stored)")
    a.add_argument("--max-test", default=None, type=int,
                   help="score on a fixed stratified subsample of the test set (Transductive then adds only these)")
    a.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N (default: cpu)")
    add_schedule_flags(a)
    add_precision_flag(a)
    a.add_argument("--quiet", action="store_true")
    add_resume_flag(a)
    family_args(a)
    a.set_defaults(func=cmd_ablate)
    return a


def _select(table: str, only: str | None) -> list[Variant]:
    variants = list(TABLES[table])
    if not only:
        return variants
    wanted = [n.strip() for n in only.split(",") if n.strip()]
    by = {v.name.lower(): v for v in variants}
    bad = [n for n in wanted if n.lower() not in by]
    if bad or not wanted:
        raise ValueError(f"--only: table {table} has no variant(s) {', '.join(bad) or '(none given)'}; "
                         f"its variants: {', '.join(v.name for v in variants)}")
    keep = {n.lower() for n in wanted}
    return [v for v in variants if v.name.lower() in keep]


def cmd_ablate(args) -> int:
    run_ablation(
        _select(args.table, args.only), data=args.data, spcs=args.spc, seeds=args.seeds, classifier=args.classifier,
        epochs=args.epochs, fit_epochs=args.fit_epochs, base_model=model_fields_from_args(args), device=args.device,
        out=Path(args.out), progress=not args.quiet, table=args.table, batch_size=default_batch_size(args),
        lr=default_lr(args), weight_decay=args.weight_decay, schedule=args.schedule, glico_p=args.glico_p,
        image_size=args.image_size,
        max_test=args.max_test, echo=print, precision=args.precision, resume=args.resume, overwrite=args.overwrite,
        oversample_to=args.oversample_to, fit_oversample_to=args.fit_oversample_to,
    )
    print((Path(args.out) / "results.md").read_text())
    return 0
