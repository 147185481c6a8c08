"""``glico evaluate``: does GLICO help on this data, and more than plain augmentation?

For each SPC and seed: one small-sample split; for each method, a classifier trained on that split
with the same budget and recipe (only the batch policy differs); top-1 / top-5 on the full test set.
GLICO is fitted once per (SPC, seed) and reused by every method that needs it. Results are
aggregated as mean ± standard error over seeds and written as ``results.json``, ``results.md`` and
``results.png``.
"""
from __future__ import annotations

import argparse
import json
import logging
import math
import re
import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import torch
from torch import nn

from glico import __version__
from glico.experiments.downstream import (
    OVERSAMPLE_TO,
    PRECISIONS,
    TrainConfig,
    evaluate,
    resolve_oversample,
    resolve_precision,
    steps_for,
    train_classifier,
)
from glico.experiments.policies import ERASING_SCALE, build_policy, cutout_size_for, policy_names
from glico.experiments.runlog import RunLog
from glico.interpolation import check_t_values
from glico._argtypes import (int_list, nonnegative_float, positive_float, positive_int, positive_int_list, probability,
                             unit_float_list)

log = logging.getLogger(__name__)

#: The methods that sample from a fitted GLICO model: ``glico`` and ``glico+POLICY``.
GLICO_METHODS = tuple(m for m in policy_names() if "glico" in m.split("+"))

#: The comparison systems that are not batch policies, and what each is.
OTHER_METHODS: dict[str, str] = {
    "mixmatch": "MixMatch (Berthelot et al.) on the split and unlabelled images (--unlabeled)",
    "cosine-loss": "Barz & Denzler's cosine-loss classifier (+ 0.1 cross-entropy), the paper's [29]",
    "cdcgan": "a conditional DCGAN fitted on the split (the fit's budget), its samples replacing examples with "
              "the GLICO probability",
}

#: The methods whose images come from a generator fitted on the split: FID (``fid=``) is measured for these.
GENERATIVE_METHODS = ("glico", "cdcgan")

#: Named method lists: ``table1`` is the paper's Table I (labelled data only, so MixMatch's unlabelled images
#: are the split's own).
PRESETS: dict[str, dict[str, Any]] = {
    "table1": {"methods": ("baseline", "glico", "mixmatch", "cutout", "random-erasing", "cosine-loss"),
               "unlabeled": "split"},
}

_TEST_IN_VALIDATION = ("unlabeled='test' uses the test images, and validation runs never touch the test set; use "
                       "split, rest or rest:N there")

UNLABELED_HELP = ("split (the labelled split itself, labels unused: the paper's Table I 'labelled data only'), "
                  "rest (every other training image), rest:N (N more per class in the split's seeded order), "
                  "folder:PATH (image files under PATH), test (the test images: transductive, said so in the results)")


def method_names() -> tuple[str, ...]:
    """The methods ``glico evaluate`` compares: the batch policies, then :data:`OTHER_METHODS`."""
    return policy_names() + tuple(OTHER_METHODS)


def check_unlabeled(source: str | None) -> None:
    """Refuse an unlabelled-image source :func:`unlabeled_images` does not know (the message lists them)."""
    if source is None or source in ("split", "rest", "test"):
        return
    if isinstance(source, str) and source.startswith("folder:") and len(source) > 7:
        return
    if isinstance(source, str) and source.startswith("rest:"):
        n = source[5:]
        if n.isdigit() and int(n) >= 1:
            return
    raise ValueError(f"unknown unlabelled-image source {source!r}; give one of: {UNLABELED_HELP}")


def unlabeled_images(source: str, data, spc: int, seed: int, validation: int | None = None,
                     image_size: int | None = None) -> tuple[torch.Tensor, dict[str, Any]]:
    """The unlabelled images of the split ``(spc, seed)`` from ``source`` (:data:`UNLABELED_HELP`), never its
    validation images; ``test`` only when asked for (and refused with ``validation``).

    ``rest`` and ``rest:N`` are the training images after the split (and after its ``validation`` images) in
    each class's seeded order (:func:`glico.data.small_sample_split`), so they are disjoint from both.

    Returns:
        ``(images, info)``, info ``{"source": ..., "n": ...}``.

    Raises:
        ValueError: no images there (the message says where else to give them).

    Shape:
        images (M, C, H, W) in [0, 1]
    """
    from glico.data import small_sample_split

    check_unlabeled(source)
    held = spc + (validation or 0)
    if source == "split":
        images = small_sample_split(data.train, spc, seed)[0].images
    elif source == "test":
        if validation is not None:
            raise ValueError(_TEST_IN_VALIDATION)
        images = data.require_test("unlabelled test images").images
    elif source.startswith("folder:"):
        images = _folder_images(Path(source[7:]), image_size)
    else:
        inside = small_sample_split(data.train, held, seed)[1]
        if source == "rest":  # every other training image, whatever each class has left
            keep = torch.ones(data.train.images.shape[0], dtype=torch.bool)
            keep[inside] = False
            images = data.train.images[keep]
        else:
            per = min(int(source[5:]), int(data.train.class_counts().min()) - held)
            if 0 < per < int(source[5:]):
                log.warning("unlabeled=%r: the smallest class has %d training images left after the split; "
                            "using %d per class", source, per, per)
            wider = small_sample_split(data.train, held + per, seed)[1] if per > 0 else inside
            images = data.train.images[wider[~torch.isin(wider, inside)]]
        if images.shape[0] == 0:
            raise ValueError(f"unlabeled={source!r}: no training images are left after the split ({spc} per class)"
                             + (f" and its {validation} validation images" if validation else "")
                             + f"; give unlabelled images with folder:PATH, or use split. Valid sources: {UNLABELED_HELP}")
    c = data.train.images.shape[1:]
    if tuple(images.shape[1:]) != tuple(c):
        raise ValueError(f"unlabelled images from {source!r} have shape {tuple(images.shape[1:])}; the data's are "
                         f"{tuple(c)} (give --image-size, or images with the data's channels)")
    return images, {"source": source, "n": int(images.shape[0])}


def _folder_images(folder: Path, image_size: int | None) -> torch.Tensor:
    """Every image file under ``folder`` (any layout, labels unused), decoded to [0, 1]."""
    from glico.data.decode import decode_files, is_image_name, to_float

    if not folder.is_dir():
        raise ValueError(f"unlabelled images: {folder} is not a folder (give folder:PATH, a folder of image files)")
    paths = sorted(p for p in folder.rglob("*") if p.is_file() and is_image_name(p.name))
    if not paths:
        raise ValueError(f"unlabelled images: no image files under {folder}")
    return to_float(decode_files(paths, image_size, desc="decoding unlabelled images"))


def _downstream_classifiers(pretrained: Any = None) -> dict[str, Callable[[int, int, int], nn.Module]]:
    """Downstream classifier names (the CLI's ``--classifier``) -> factory(in_channels, num_classes, size).
    Any other WideResNet is named ``wrn-DEPTH-K`` (:func:`downstream_classifier`). ``pretrained``: the
    torchvision classifiers' ``weights`` (an enum, a file path or None)."""
    from glico.classifiers import VGG19, ResNet50, WeakCNN, WideResNet

    weights = {name: _pretrained_weights(name, pretrained) for name in PRETRAINABLE}
    return {
        "wrn-28-10": lambda c, k, s: WideResNet(depth=28, widen_factor=10, num_classes=k, in_channels=c),
        "wrn-28-2": lambda c, k, s: WideResNet(depth=28, widen_factor=2, num_classes=k, in_channels=c),
        "wrn-16-1": lambda c, k, s: WideResNet(depth=16, widen_factor=1, num_classes=k, in_channels=c),
        "resnet50": lambda c, k, s: ResNet50(num_classes=k, in_channels=c, weights=weights["resnet50"]),
        "vgg19": lambda c, k, s: VGG19(num_classes=k, in_channels=c, weights=weights["vgg19"]),
        "weak": lambda c, k, s: WeakCNN(in_channels=c, num_classes=k, image_size=s),
    }


#: The downstream classifiers that take pretrained weights (torchvision's), and what ``imagenet`` means for
#: each: the ImageNet weights torchvision had when the paper was written (IMAGENET1K_V1).
PRETRAINABLE = ("resnet50", "vgg19")


def _pretrained_weights(name: str, pretrained: Any) -> Any:
    """``pretrained`` (None, ``"imagenet"``, a file path, or already a weights enum) as ``weights=`` of
    the torchvision classifier ``name``."""
    if pretrained != "imagenet":
        return pretrained
    from torchvision.models import ResNet50_Weights, VGG19_Weights

    return {"resnet50": ResNet50_Weights.IMAGENET1K_V1, "vgg19": VGG19_Weights.IMAGENET1K_V1}[name]


def check_pretrained(classifier: str, pretrained: str | None) -> None:
    """Refuse, before any work, pretrained weights that cannot be used: for a classifier that takes none,
    a file that does not exist, or ImageNet weights that are neither in torch's hub cache nor downloadable
    (the message says where the file goes and what else to pass). Fetching them here also fills the cache.

    Raises:
        ValueError: ``classifier`` is not one of :data:`PRETRAINABLE`.
        FileNotFoundError: ``pretrained`` names a file that does not exist.
        RuntimeError: the ImageNet weights could not be had.
    """
    if pretrained is None:
        return
    if classifier not in PRETRAINABLE:
        raise ValueError(f"pretrained weights are for the torchvision classifiers ({', '.join(PRETRAINABLE)}); "
                         f"{classifier!r} is trained from random initialisation. Drop --pretrained or use "
                         f"--classifier resnet50")
    from glico.classifiers.torchvision_models import _fetch_state_dict

    _fetch_state_dict(_pretrained_weights(classifier, pretrained))


_WRN_NAME = re.compile(r"wrn-(\d+)-(\d+)")


def downstream_classifier(name: str, pretrained: Any = None) -> Callable[[int, int, int], nn.Module]:
    """The factory ``(in_channels, num_classes, image_size) -> classifier`` of a downstream classifier name:
    one of :func:`_downstream_classifiers`, or ``wrn-DEPTH-K`` for any WideResNet (DEPTH = 6n + 4 >= 10,
    K >= 1; e.g. ``wrn-16-1``, 0.18 M parameters, the CPU-sized recipe of docs/reproducing.md).
    ``pretrained`` (``"imagenet"``, a file path or None) is passed to the torchvision classifiers
    (:data:`PRETRAINABLE`; :func:`check_pretrained` refuses it for the others).

    Raises:
        ValueError: an unknown name or an impossible WideResNet (the message says what is accepted).
    """
    from glico.classifiers import WideResNet

    table = _downstream_classifiers(pretrained)
    if name in table:
        return table[name]
    m = _WRN_NAME.fullmatch(name) if isinstance(name, str) else None
    if m is None:
        raise ValueError(f"unknown classifier {name!r}; valid: {', '.join(table)}, or wrn-DEPTH-K for any WideResNet "
                         f"(e.g. wrn-16-2)")
    depth, k = int(m[1]), int(m[2])
    if depth < 10 or (depth - 4) % 6 or k < 1:
        raise ValueError(f"classifier {name!r}: a WideResNet needs DEPTH = 6n + 4 >= 10 (10, 16, 22, 28, ...) and "
                         f"K >= 1; got DEPTH {depth}, K {k}")
    return lambda c, n, s: WideResNet(depth=depth, widen_factor=k, num_classes=n, in_channels=c)


def classifier_name(text: str) -> str:
    """argparse type of ``--classifier``: a name :func:`downstream_classifier` accepts."""
    try:
        downstream_classifier(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return text


SCHEDULES = ("step", "cosine")


@dataclass(frozen=True)
class EvaluateConfig:
    """Everything an evaluation needs (recorded in results.json so it can be rerun).

    Args:
        data: data SPEC (``digits``, ``cifar10:DIR``, ``folder:PATH``, ...).
        spcs: samples per class; one split per (spc, seed).
        seeds: split / training seeds.
        methods: the methods to compare (:func:`method_names`): batch policies
            (:func:`glico.experiments.policies.policy_names`) and the comparison systems of
            :data:`OTHER_METHODS` (``mixmatch``, ``cosine-loss``, ``cdcgan``).
        classifier: downstream classifier name (``wrn-28-10``, ``resnet50``, ``vgg19``, ``weak``, any
            ``wrn-DEPTH-K``; :func:`downstream_classifier`).
        epochs: classifier budget in epochs of the training set oversampled to ``oversample_to`` images
            (:func:`steps_for`); the paper's 200 gives 8000 steps at batch 128 with the default 5000.
        oversample_to: the downstream oversampling: a number of images (default 5000, this library's
            rule), or ``"full"``: the size of the full training set the split is drawn from (the paper's
            rule, "in proportion to the size of the training set": 50 000 on CIFAR).
        batch_size, lr, weight_decay: the SGD recipe (paper: 128 / 0.1 for 32 px; 16 / 0.001 for CUB;
            weight decay 5e-4).
        schedule: ``step`` (x0.2 at 30 / 60 / 80 % of the budget, the WideResNet schedule) or ``cosine``.
        glico_p: replacement probability of the GLICO policy.
        glico_t: the set the GLICO policy draws t from (None: the paper's 0.1, 0.2, 0.3, 0.4).
        glico_refresh: None (default): fresh GLICO draws at every step; k: a bank of one new image per
            training example, drawn anew every k steps (:class:`glico.augment.GLICOAugmenter`'s
            ``refresh_every``).
        fit_epochs: GLICO fit budget, in epochs (paper: 200).
        fit_oversample_to: the fit's oversampling (:class:`glico.training.FitConfig`'s ``oversample_to``):
            0 (default): an epoch is one pass over the split; a number of images, or ``"full"`` (the full
            training set's size), as ``oversample_to``.
        baseline_p: None (default): each augmentation policy at its own paper's setting (on every example;
            Random Erasing with p = 0.5); a probability: each example replaced with it by its augmented
            version (the GLICO paper's protocol: 0.5; :class:`glico.experiments.policies.Replace`).
        cutout_size: Cutout's square side (None: per dataset, :func:`glico.experiments.policies.cutout_size_for`:
            16 px on 32 px images, 8 px on CIFAR-100).
        erasing_scale: Random Erasing's area range (default torchvision's (0.02, 0.33); the Random Erasing
            paper's is (0.02, 0.4)).
        pretrained: weights of a torchvision downstream classifier (``resnet50``, ``vgg19``): None (random
            initialisation, default), ``"imagenet"`` (torchvision's IMAGENET1K_V1, through torch's hub
            cache), or the path of a local state dict.
        unlabeled: where MixMatch's unlabelled images come from (required with ``mixmatch``, refused
            without it): ``split``, ``rest``, ``rest:N``, ``folder:PATH`` or ``test`` (:func:`unlabeled_images`).
        fid: measure FID of each generative method's samples (:data:`GENERATIVE_METHODS`) against the
            training set: None (default, not measured), ``"inception"`` (torchvision's Inception-v3
            ImageNet weights, through torch's hub cache), ``"random-inception"`` (seeded random weights:
            offline, comparable within one evaluation only), or the path of Inception-v3 weights.
        fid_images: images per FID set (generated, and real from the training set).
        model: the GLICO composition by names (see :class:`glico.names.ModelSpec` fields), without
            image_shape / num_classes.
        image_size: resize images (needed for folders of mixed sizes and for CUB).
        max_test: evaluate on a fixed stratified subsample of the test set (None: all of it).
        device: where to train.
        precision: the downstream classifier's arithmetic (:class:`glico.experiments.downstream.TrainConfig`):
            ``auto`` (bf16 autocast on GPUs with bf16 tensor cores, else fp32), ``fp32``, ``bf16``.
        test_fraction: for ``folder:PATH`` of class folders without a test split, the seeded share of each
            class held out as the test set (:func:`glico.data.holdout_split`).
        validation: score on this many held-out training images per class
            (:func:`glico.data.validation_split`: disjoint from each split, different for each split)
            instead of the test set, which is then not used at all. For choosing settings; ``None``
            (default) scores on the test set.
    """

    data: str
    spcs: tuple[int, ...] = (10,)
    seeds: tuple[int, ...] = (0, 1, 2)
    methods: tuple[str, ...] = ("baseline", "glico")
    classifier: str = "wrn-28-10"
    epochs: int = 200
    batch_size: int = 128
    lr: float = 0.1
    weight_decay: float = 5e-4
    glico_p: float = 0.5
    fit_epochs: int = 200
    fit_batch_size: int = 128
    model: dict[str, Any] = field(default_factory=dict)
    image_size: int | None = None
    max_test: int | None = None
    device: str = "cpu"
    precision: str = "auto"
    schedule: str = "step"
    validation: int | None = None
    glico_t: tuple[float, ...] | None = None
    glico_refresh: int | None = None
    test_fraction: float | None = None
    oversample_to: int | str = OVERSAMPLE_TO
    fit_oversample_to: int | str = 0
    baseline_p: float | None = None
    cutout_size: int | None = None
    erasing_scale: tuple[float, float] = ERASING_SCALE
    pretrained: str | None = None
    unlabeled: str | None = None
    fid: str | None = None
    fid_images: int = 1000

    def __post_init__(self) -> None:
        valid = method_names()
        bad = [m for m in self.methods if m not in valid]
        if bad:
            raise ValueError(f"unknown method(s) {', '.join(bad)}; valid: {', '.join(valid)}")
        check_unlabeled(self.unlabeled)
        if "mixmatch" in self.methods and self.unlabeled is None:
            raise ValueError(f"mixmatch trains on unlabelled images too: say where they come from with unlabeled= "
                             f"(--unlabeled): {UNLABELED_HELP}")
        if self.unlabeled is not None and "mixmatch" not in self.methods:
            raise ValueError(f"unlabeled={self.unlabeled!r} is used by mixmatch only, which is not among the methods "
                             f"({', '.join(self.methods)}); drop it or add mixmatch")
        if self.unlabeled == "test" and self.validation is not None:
            raise ValueError(_TEST_IN_VALIDATION)
        if self.fid is not None:
            fid_extractor(self.fid, check_only=True)
            if not any(m in GENERATIVE_METHODS for m in self.methods):
                raise ValueError(f"fid is measured for the generative methods ({', '.join(GENERATIVE_METHODS)}), and "
                                 f"none is among the methods ({', '.join(self.methods)}); add one or drop fid")
        if isinstance(self.fid_images, bool) or not isinstance(self.fid_images, int) or self.fid_images < 10:
            raise ValueError(f"fid_images must be an integer >= 10; got {self.fid_images!r}")
        downstream_classifier(self.classifier)
        resolve_oversample(self.oversample_to, 1)
        resolve_oversample(self.fit_oversample_to, 1)
        # The policy settings are checked where they are used; build one policy now so bad values fail here.
        build_policy("baseline", num_classes=1, policy_p=self.baseline_p, cutout_size=self.cutout_size,
                     erasing_scale=self.erasing_scale)
        if self.pretrained is not None and self.classifier not in PRETRAINABLE:
            check_pretrained(self.classifier, self.pretrained)
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {', '.join(SCHEDULES)}; got {self.schedule!r}")
        if self.validation is not None and (isinstance(self.validation, bool) or not isinstance(self.validation, int)
                                            or self.validation < 1):
            raise ValueError(f"validation must be None or a number of images per class >= 1; got {self.validation!r}")
        if self.glico_t is not None:
            check_t_values(self.glico_t)
        if self.glico_refresh is not None and (isinstance(self.glico_refresh, bool)
                                               or not isinstance(self.glico_refresh, int) or self.glico_refresh < 1):
            raise ValueError(f"glico_refresh must be None or a number of steps >= 1; got {self.glico_refresh!r}")
        if not 0.0 <= self.glico_p <= 1.0:
            raise ValueError(f"glico_p must be a probability in [0, 1]; got {self.glico_p}")
        if self.validation is not None and self.max_test is not None:
            raise ValueError("validation scores on held-out training images and never uses the test set, so max_test "
                             "(a subsample of the test set) would have no effect; give one of them")
        if not self.spcs or min(self.spcs) < 1:
            raise ValueError(f"spc values must be >= 1; got {self.spcs}")
        if not self.seeds:
            raise ValueError("give at least one seed")


#: EvaluateConfig fields added after results were first written, with the value a grid written before each
#: existed ran with (resume and merge read a missing field as that value).
CONFIG_ADDED_LATER: dict[str, Any] = {
    "schedule": "step", "test_fraction": None, "oversample_to": OVERSAMPLE_TO, "fit_oversample_to": 0,
    "baseline_p": None, "cutout_size": None, "erasing_scale": list(ERASING_SCALE), "pretrained": None,
    "unlabeled": None, "fid": None, "fid_images": 1000,
}

FID_EXTRACTORS = ("inception", "random-inception")


def fid_extractor(name: str, check_only: bool = False):
    """The FID feature extractor named ``name``: ``inception`` (ImageNet weights; fetched here, so that missing
    weights are refused before any work, with where the file goes), ``random-inception`` (random weights from
    seed 0), or a path of Inception-v3 weights. ``check_only``: refuse a bad name or a missing file without
    building the network.

    Raises:
        ValueError: an unknown name; FileNotFoundError: a path that does not exist.
    """
    from glico.experiments.fid import InceptionFeatures

    if name not in FID_EXTRACTORS and not Path(name).is_file():
        if Path(name).suffix or "/" in name:
            raise FileNotFoundError(f"fid: no Inception-v3 weights file at {name}")
        raise ValueError(f"fid must be one of {', '.join(FID_EXTRACTORS)} or the path of Inception-v3 weights; "
                         f"got {name!r}")
    if check_only:
        return None
    if name == "random-inception":
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            return InceptionFeatures(weights=None)
    return InceptionFeatures() if name == "inception" else InceptionFeatures(weights=name)


def mean_ste(values: list[float]) -> tuple[float, float]:
    """Mean and standard error of the mean (sample std / sqrt(n); 0 for one value)."""
    m = statistics.fmean(values)
    return m, (statistics.stdev(values) / math.sqrt(len(values)) if len(values) > 1 else 0.0)


def run_evaluation(cfg: EvaluateConfig, out: Path, progress: bool = True, echo: Callable[[str], None] = print,
                   resume: bool = False, fit_cache: Path | None = None, overwrite: bool = False) -> dict:
    """Run the evaluation grid and write results.json, results.md and results.png under ``out``.

    Every finished run is kept in ``out/runs.jsonl`` at once (:mod:`glico.experiments.runlog`), so an
    interruption loses only the run in progress; ``resume=True`` keeps those runs and runs only the
    missing ones (same settings required; the device may differ). Without it, a folder that already
    holds finished runs is refused. ``fit_cache``: a folder where GLICO fits are kept and found again
    (:func:`fit_glico`'s ``cache_dir``), so that evaluations that differ only downstream (another
    replacement probability, recipe or method list) fit GLICO once.

    Returns:
        The results dictionary written to results.json.
    """
    from glico.augment import GLICOAugmenter
    from glico.classifiers.cosine_embedding import XENT_WEIGHT
    from glico.data import load_data, small_sample_split, validation_split
    from glico.experiments.cdcgan import CDCGANConfig
    from glico.experiments.mixmatch import MixMatchConfig
    from glico.training import FitConfig, resolve_device

    resolve_device(cfg.device)
    precision = resolve_precision(cfg.precision, cfg.device)  # refuses bf16 off CUDA before any work
    check_pretrained(cfg.classifier, cfg.pretrained)  # before the data: a missing weights file is refused at once
    extractor = None if cfg.fid is None else fid_extractor(cfg.fid)  # likewise missing Inception weights
    total = len(cfg.spcs) * len(cfg.seeds) * len(cfg.methods)
    config = {**asdict(cfg), "spcs": list(cfg.spcs), "seeds": list(cfg.seeds), "methods": list(cfg.methods),
              "glico_t": None if cfg.glico_t is None else list(cfg.glico_t), "erasing_scale": list(cfg.erasing_scale)}
    # Before the data are loaded (minutes for CUB), so that a folder that will be refused is refused at once.
    # The device may change on resume, the arithmetic it resolves to may not; nor may anything but the version.
    kept = RunLog(out, {"command": "evaluate", "glico_version": __version__, "config": config,
                        "resolved_precision": precision},
                  ("spc", "seed", "method"), resume=resume, overwrite=overwrite, free={"config.device", "glico_version"},
                  added_later={f"config.{k}": v for k, v in CONFIG_ADDED_LATER.items()})
    data = load_data(cfg.data, image_size=cfg.image_size, max_test=cfg.max_test, test_fraction=cfg.test_fraction)
    if cfg.validation is None:
        data.require_test("glico evaluate")
    c, h, w = data.train.images.shape[1:]
    k = len(data.train.class_names)
    flip = data.name != "digits"  # digits are not mirror-symmetric
    factory = downstream_classifier(cfg.classifier, cfg.pretrained)
    n_full = int(data.train.images.shape[0])
    oversample = resolve_oversample(cfg.oversample_to, n_full)
    fit_oversample = resolve_oversample(cfg.fit_oversample_to, n_full)
    policy_settings = {"policy_p": cfg.baseline_p, "erasing_scale": tuple(cfg.erasing_scale),
                       "cutout_size": cfg.cutout_size if cfg.cutout_size is not None else cutout_size_for(data.name, h)}
    scored_on = "test" if cfg.validation is None else "validation"
    if cfg.validation is not None:  # refused now, not after the first fit, when the classes are too small
        validation_split(data.train, max(cfg.spcs), cfg.seeds[0], cfg.validation)
    shared_unlabeled = None  # a folder's or the test set's images: the same for every split, read once
    if cfg.unlabeled is not None:  # likewise a missing folder, images of another shape, or nothing left
        first = unlabeled_images(cfg.unlabeled, data, max(cfg.spcs), cfg.seeds[0], cfg.validation, cfg.image_size)
        if cfg.unlabeled == "test" or cfg.unlabeled.startswith("folder:"):
            shared_unlabeled = first
    if torch.device(cfg.device).type == "cpu":
        steps_total = (sum(steps_for(s * k, cfg.batch_size, cfg.epochs, oversample) for s in cfg.spcs)
                       * len(cfg.seeds) * len(cfg.methods))
        warning = cpu_time_warning(cfg.classifier, (c, h, w), k, min(cfg.batch_size, min(cfg.spcs) * k), steps_total,
                                   "glico evaluate")
        if warning:
            echo(warning)
    runs: list[dict] = []
    reference = None  # the training set's FID statistics, computed when first needed

    def fit_steps(n: int) -> int:
        return FitConfig(epochs=cfg.fit_epochs, batch_size=cfg.fit_batch_size, oversample_to=fit_oversample).steps(n)

    started = time.perf_counter()
    done = ran = 0
    n_test = 0 if data.test is None else int(data.test.images.shape[0])
    scoring = (f"{n_test} test images" if cfg.validation is None else
               f"scored on {cfg.validation} held-out training images per class (validation; the test set is not used)")
    echo(f"glico evaluate: {data.name}, {k} classes, {scoring}; spc {list(cfg.spcs)}, "
         f"seeds {list(cfg.seeds)}, methods {', '.join(cfg.methods)}, classifier {cfg.classifier} on {cfg.device}")
    if cfg.unlabeled == "test":
        echo("glico evaluate: MixMatch's unlabelled images are the test images (transductive: their labels are not "
             "used, but the scores are not those of an inductive method)")
    to_run = total - len(kept)
    line = kept.resume_line(total)
    if line:
        echo(line)
    try:
        for spc in cfg.spcs:
            for seed in cfg.seeds:
                todo = [m for m in cfg.methods if kept.done(spc=spc, seed=seed, method=m) is None]
                train, chosen = small_sample_split(data.train, spc, seed)
                held_out = (data.test if cfg.validation is None else
                            validation_split(data.train, spc, seed, cfg.validation)[0])
                tcfg = downstream_config(train.images.shape[0], h, epochs=cfg.epochs, batch_size=cfg.batch_size,
                                         lr=cfg.lr, weight_decay=cfg.weight_decay, flip=flip, seed=seed,
                                         device=cfg.device, progress=progress, precision=cfg.precision,
                                         cosine=cfg.schedule == "cosine", oversample_to=oversample)
                augmenter = model = cdcgan = unlabeled = None
                fit_info: dict[str, Any] = {}
                cdcgan_info: dict[str, Any] = {}
                unlabeled_info: dict[str, Any] = {}
                if any(m in GLICO_METHODS for m in todo):
                    model, fit_info = fit_glico(cfg.model, train, seed=seed, epochs=cfg.fit_epochs,
                                                batch_size=cfg.fit_batch_size, device=cfg.device, progress=progress,
                                                samples_png=out / f"samples-spc{spc}-seed{seed}.png",
                                                cache_dir=fit_cache, oversample_to=fit_oversample)
                    augmenter = GLICOAugmenter(model, p=cfg.glico_p, seed=seed, t_values=cfg.glico_t,
                                               refresh_every=cfg.glico_refresh)
                if "cdcgan" in todo:
                    cdcgan, cdcgan_info = fit_cdcgan_for(train, seed=seed, steps=fit_steps(spc * k), device=cfg.device,
                                                         batch_size=cfg.fit_batch_size, progress=progress,
                                                         samples_png=out / f"cdcgan-samples-spc{spc}-seed{seed}.png")
                if "mixmatch" in todo:
                    unlabeled, unlabeled_info = shared_unlabeled or unlabeled_images(
                        cfg.unlabeled, data, spc, seed, cfg.validation, cfg.image_size)
                for method in cfg.methods:
                    done += 1
                    previous = kept.done(spc=spc, seed=seed, method=method)
                    if previous is not None:
                        runs.append(previous)
                        continue
                    acc = train_and_score(method, factory, train, held_out, tcfg, augmenter=augmenter, seed=seed,
                                          desc=f"{method} spc{spc} s{seed}", cdcgan=cdcgan, glico_p=cfg.glico_p,
                                          unlabeled=unlabeled, **policy_settings)
                    info = (fit_info if method in GLICO_METHODS else cdcgan_info if method == "cdcgan"
                            else unlabeled_info if method == "mixmatch" else None)
                    run = {"spc": spc, "seed": seed, "method": method, **acc, "steps": tcfg.steps, "fit": info}
                    if extractor is not None and method in GENERATIVE_METHODS:
                        if reference is None:
                            reference = fid_reference(data.train, cfg.fid_images, extractor, cfg.device,
                                                      exclude=grid_rows(data.train, cfg))
                        samples = fid_samples(model if method == "glico" else cdcgan, train, cfg.fid_images, seed,
                                              cfg.glico_t, cfg.device)
                        run["fid"] = generated_fid(samples, extractor, reference, cfg.device)
                    kept.add(run)
                    runs.append(run)
                    ran += 1
                    eta = (time.perf_counter() - started) / ran * (to_run - ran)
                    echo(f"  spc {spc:>3} seed {seed} {method:>18}: top-1 {acc['top1']:6.2f} %  "
                         + (f"top-5 {acc['top5']:6.2f} %  " if acc["top5"] is not None else "")
                         + (f"FID {run['fid']:.1f}  " if "fid" in run else "")
                         + f"({acc['seconds']:.0f} s; {done}/{total} done, "
                         f"about {eta / 60:.1f} min left)")
    except KeyboardInterrupt:
        echo(f"glico evaluate: interrupted; {kept.interrupted_message()}")
        raise GridInterrupted from None
    summary = aggregate(runs)
    results = {
        "glico_version": __version__,
        "config": config,
        "scored_on": scored_on,
        "recipe": {"steps_per_run": {str(s): steps_for(s * k, cfg.batch_size, cfg.epochs, oversample) for s in cfg.spcs},
                   "oversample_to": oversample,
                   "fit_steps": {str(s): fit_steps(s * k) for s in cfg.spcs},
                   "baseline_p": cfg.baseline_p, "cutout_size": policy_settings["cutout_size"],
                   "erasing_scale": list(cfg.erasing_scale), "pretrained": cfg.pretrained,
                   **({"unlabeled": cfg.unlabeled, "transductive": cfg.unlabeled == "test",
                       "mixmatch": asdict(MixMatchConfig())} if "mixmatch" in cfg.methods else {}),
                   **({"cdcgan": {**{n: v for n, v in asdict(CDCGANConfig()).items()
                                     if n not in ("seed", "device", "progress")},
                                  "steps": {str(s): fit_steps(s * k) for s in cfg.spcs},
                                  "batch_size": cfg.fit_batch_size}} if "cdcgan" in cfg.methods else {}),
                   **({"cosine_loss_xent_weight": XENT_WEIGHT} if "cosine-loss" in cfg.methods else {}),
                   **({"fid": {"features": cfg.fid, "images": cfg.fid_images,
                               "reference": "training images, n // K per class"}} if cfg.fid is not None else {}),
                   "optimizer": optimizer_text(cfg.schedule, cfg.weight_decay),
                   "precision": precision,
                   "standard_augmentation": f"random crop (pad {max(1, h // 8)})" + (" + horizontal flip" if flip else "")},
        "data": {"name": data.name, "classes": k, "n_test": n_test, "image_shape": [c, h, w],
                 **({} if cfg.validation is None else {"n_validation": cfg.validation * k})},
        "runs": runs,
        "summary": summary,
        "seconds": round(time.perf_counter() - started, 1),
    }
    (out / "results.json").write_text(json.dumps(results, indent=2))
    (out / "results.md").write_text(markdown_table(summary, cfg))
    plot_results(summary, out / "results.png", title=f"{data.name}, {cfg.classifier}")
    echo((out / "results.md").read_text())
    return results


#: A CPU run estimated to take longer than this gets a warning before it starts.
CPU_WARN_SECONDS = 3600.0
#: Classifiers with fewer parameters (weak, wrn-10-1, wrn-16-1: the CPU-sized ones) are not timed.
CPU_SMALL_PARAMETERS = 1_000_000
CPU_RECIPE_FLAGS = "--classifier wrn-10-1 --epochs 16 --batch-size 64 --lr 0.1 --weight-decay 5e-3 --schedule cosine"


def estimate_step_seconds(classifier: str, image_shape: tuple[int, int, int], num_classes: int, batch: int) -> float:
    """Seconds of one SGD step of ``classifier`` at ``batch`` on this CPU: one step at batch 4 is timed
    (after a warm-up step at batch 2) and scaled linearly with the batch (convolutions on the CPU scale about
    so). Costs a few seconds for the large networks, well under one for the small."""
    c, h, _ = image_shape
    with torch.random.fork_rng(devices=[]):
        net = downstream_classifier(classifier)(c, num_classes, h).train()
        opt = torch.optim.SGD(net.parameters(), lr=0.0)
        for b in (2, 4):
            x, y = torch.rand(b, c, h, h), torch.randint(0, num_classes, (b,))
            t0 = time.perf_counter()
            loss = nn.functional.cross_entropy(net(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
    return (time.perf_counter() - t0) * batch / 4


def cpu_time_warning(classifier: str, image_shape: tuple[int, int, int], num_classes: int, batch: int,
                     steps: int, command: str, cpu_recipe: str = CPU_RECIPE_FLAGS) -> str | None:
    """A warning with the estimated time when ``steps`` downstream steps of ``classifier`` on the CPU would
    take longer than :data:`CPU_WARN_SECONDS`, naming the CPU-sized recipe; None otherwise. Networks under
    :data:`CPU_SMALL_PARAMETERS` parameters (the CPU-sized ones) are not timed."""
    c, h, _ = image_shape
    with torch.random.fork_rng(devices=[]):
        size = sum(p.numel() for p in downstream_classifier(classifier)(c, num_classes, h).parameters())
    if size < CPU_SMALL_PARAMETERS:
        return None
    per_step = estimate_step_seconds(classifier, image_shape, num_classes, batch)
    total = per_step * steps
    if total <= CPU_WARN_SECONDS:
        return None
    when = f"{total / 3600:.1f} hours" if total < 48 * 3600 else f"{total / 86400:.1f} days"
    return (f"{command}: warning: on this CPU one {classifier} step at batch {batch} takes about {per_step:.2f} s, so "
            f"the {steps} classifier steps ahead will take about {when} (estimated; GLICO fits come on top). "
            f"Use --device cuda, or the CPU recipe: {cpu_recipe} (docs/reproducing.md)")


# ------------------------------------------------------------------ one split (shared with glico ablate)
def downstream_config(n_train: int, image_size: int, *, epochs: int, batch_size: int, lr: float, weight_decay: float,
                      flip: bool, seed: int, device: str, progress: bool, precision: str = "auto",
                      cosine: bool = False, oversample_to: int = OVERSAMPLE_TO) -> TrainConfig:
    """The downstream recipe for one split: the same budget (:func:`steps_for` with ``oversample_to``) for
    every method compared, batch capped at the split's size, random-crop padding of 1/8 of the image side,
    the step schedule (or a cosine one)."""
    return TrainConfig(steps=steps_for(n_train, batch_size, epochs, oversample_to), batch_size=min(batch_size, n_train), lr=lr,
                       weight_decay=weight_decay, crop_pad=max(1, image_size // 8), flip=flip, seed=seed,
                       device=device, progress=progress, precision=precision, cosine=cosine)


def optimizer_text(schedule: str, weight_decay: float) -> str:
    """The downstream optimiser in words, for results files."""
    sched = "cosine schedule" if schedule == "cosine" else "step schedule x0.2 at 30/60/80 %"
    return f"SGD, Nesterov momentum 0.9, weight decay {weight_decay:g}, {sched}"


def fit_glico(model: Mapping[str, Any], train, *, seed: int, epochs: int, batch_size: int = 128, device: str = "cpu",
              unlabeled: torch.Tensor | None = None, progress: bool = True, samples_png: Path | None = None,
              cache_dir: Path | None = None, checkpoint: Path | None = None, resume: bool = False,
              checkpoint_extra: dict[str, Any] | None = None, oversample_to: int = 0):
    """Compose the GLICO model named by ``model`` (fields of :class:`glico.names.ModelSpec` without
    image_shape / num_classes) for ``train`` and fit it on that split.

    Args:
        model: the composition by names (``{"loss": "laplacian", "noise": "none"}``; missing fields
            take ModelSpec's defaults, the paper's choices).
        train: the labelled split (a :class:`glico.data.ImageSet`); its rows are the first rows of the
            fitted code table, in order, so a :class:`glico.augment.GLICOAugmenter` indexes them directly.
        seed: seeds the model's initial weights (``torch.manual_seed``) and the fit.
        epochs, batch_size, device: the fit budget and where it runs.
        oversample_to: 0 (default): an epoch is one pass over the images; N: ``ceil(N / n)`` passes
            (:class:`glico.training.FitConfig`).
        unlabeled: images reconstructed without the classification term (transductive or
            semi-supervised mode); they get the code table's last rows.
        samples_png: if given, a grid of 8 samples per class is written there.
        cache_dir: keep the fitted model in this folder (a glico checkpoint named by a hash of everything
            the fit depends on: the images and labels, the composition, seed, budget and glico version) and
            load it from there instead of fitting when it is already there. The fit is deterministic on
            CPU for a given torch build, so a cached model is the one the fit would make there; different
            settings (or glico / torch versions, or a replaced weights file) never share a file.
        checkpoint: write the fit's checkpoint (:class:`glico.training.FitConfig`'s) to this file, with
            ``checkpoint_extra``; ``resume=True`` continues the fit saved there (a finished one is loaded).

    Returns:
        ``(model, info)``: the fitted :class:`glico.model.GLICO` and plain data about the fit (seconds,
        last reconstruction loss, number of unlabelled images; ``cached: true`` when it was loaded).

    Shape:
        train.images (N, C, H, W) in [0, 1]; unlabeled (M, C, H, W) in [0, 1]
    """
    from glico.names import ModelSpec, build_model
    from glico.training import FitConfig, fit

    c, h, w = train.images.shape[1:]
    spec = ModelSpec(image_shape=(c, h, w), num_classes=len(train.class_names), **model)
    torch.manual_seed(seed)
    glico_model = build_model(spec)
    # A plain fit keeps the key it had before oversampling existed, so older caches still serve it.
    budget = {"seed": seed, "epochs": epochs, "batch_size": batch_size, "device": torch.device(device).type,
              **({"oversample_to": oversample_to} if oversample_to else {})}
    cached = None if cache_dir is None else Path(cache_dir) / f"fit-{_fit_key(spec, train, unlabeled, **budget)}.pt"
    if cached is not None and cached.is_file():
        from glico.checkpoint import check_composition, load_model_state, read_checkpoint

        payload = read_checkpoint(cached)
        check_composition(payload, glico_model, cached)
        load_model_state(glico_model, payload["model"])
        glico_model.to(device)
        info = {**payload["extra"]["fit_info"], "cached": True}
        log.info("loaded the GLICO fit from %s", cached)
    else:
        t0 = time.perf_counter()
        ckpt = {} if checkpoint is None else {"checkpoint": str(checkpoint), "resume": resume}
        hist = fit(glico_model, train.images, train.labels, unlabeled=unlabeled,
                   config=FitConfig(epochs=epochs, batch_size=batch_size, oversample_to=oversample_to, seed=seed,
                                    device=device, progress=progress, **ckpt), checkpoint_extra=checkpoint_extra)
        info = {"seconds": round(time.perf_counter() - t0, 1), "steps": hist.step[-1],
                "reconstruction_last": hist.reconstruction[-1]}
        if unlabeled is not None:
            info["n_unlabeled"] = int(unlabeled.shape[0])
        if cached is not None:
            from glico.checkpoint import save_checkpoint

            save_checkpoint(cached, glico_model, extra={"fit_info": info, "spec": spec.to_dict()})
    if samples_png is not None:
        from glico.viz import class_grid, save_grid

        save_grid(class_grid(glico_model, 8, seed), samples_png, nrow=8)
    return glico_model, info


def _fit_key(spec, train, unlabeled: torch.Tensor | None, **budget: Any) -> str:
    """A hash of everything a fit depends on, for :func:`fit_glico`'s cache: the images' bytes, the composition
    (and the size and modification time of any weights file it names), the budget, glico's and torch's versions."""
    import hashlib

    files = {}
    for name in ("vgg_weights", "feature_weights"):
        path = Path(getattr(spec, name))
        if path.is_file():
            st = path.stat()
            files[name] = [str(path.resolve()), st.st_size, st.st_mtime_ns]
    what = {"glico": __version__, "torch": torch.__version__, "spec": spec.to_dict(), "files": files, **budget}
    h = hashlib.sha256(json.dumps(what, sort_keys=True).encode())
    for t in (train.images, train.labels, unlabeled):
        if t is not None:
            t = t.detach().cpu().contiguous()
            h.update(str((t.dtype, tuple(t.shape))).encode())
            h.update(t.view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:24]


def train_and_score(method: str, factory: Callable[[int, int, int], nn.Module], train, test, config: TrainConfig, *,
                    augmenter=None, seed: int = 0, desc: str = "train", policy_p: float | None = None,
                    cutout_size: int | None = None, erasing_scale: tuple[float, float] = ERASING_SCALE,
                    cdcgan: nn.Module | None = None, glico_p: float = 0.5,
                    unlabeled: torch.Tensor | None = None) -> dict[str, float]:
    """Train a fresh downstream classifier on ``train`` with ``method`` and score it.

    Args:
        method: a method name (:func:`method_names`): a batch policy, ``mixmatch`` (trained by
            :func:`glico.experiments.mixmatch.train_mixmatch` on ``train`` and ``unlabeled``, its weights'
            moving average scored), ``cosine-loss`` (the classifier wrapped in
            :class:`glico.classifiers.CosineEmbeddingClassifier`, standard augmentation only) or ``cdcgan``
            (:class:`glico.experiments.cdcgan.CDCGANPolicy` of ``cdcgan`` with probability ``glico_p``).
        factory: (in_channels, num_classes, image_size) -> a new classifier (seeded with ``seed`` first).
        train, test: :class:`glico.data.ImageSet` s.
        config: the recipe (:func:`downstream_config`), the same for every method.
        augmenter: a :class:`glico.augment.GLICOAugmenter` of a model fitted on ``train`` (GLICO methods).
        policy_p, cutout_size, erasing_scale: the baselines' protocol
            (:func:`glico.experiments.policies.build_policy`).
        cdcgan, glico_p: the conditional generator fitted on ``train`` and its replacement probability (``cdcgan``).
        unlabeled: MixMatch's unlabelled images (``mixmatch``).

    Returns:
        ``{"top1": %, "top5": %, "seconds": s}`` on ``test``.
    """
    c, h, _ = train.images.shape[1:]
    k = len(train.class_names)
    if method in OTHER_METHODS:
        policy = None
        if method == "cdcgan":
            from glico.experiments.cdcgan import CDCGANPolicy

            if cdcgan is None:
                raise ValueError("method 'cdcgan' needs the conditional generator fitted on the split (cdcgan=)")
            policy = CDCGANPolicy(cdcgan, p=glico_p, seed=seed)
        elif method == "mixmatch" and unlabeled is None:
            raise ValueError("method 'mixmatch' needs unlabelled images (unlabeled=; --unlabeled on the command line: "
                             f"{UNLABELED_HELP})")
    else:
        policy = build_policy(method, num_classes=k, glico_augmenter=augmenter, seed=seed, image_size=h,
                              policy_p=policy_p, cutout_size=cutout_size, erasing_scale=erasing_scale)
    torch.manual_seed(seed)
    clf = factory(c, k, h)
    t0 = time.perf_counter()
    if method == "mixmatch":
        from glico.experiments.mixmatch import train_mixmatch

        clf = train_mixmatch(clf, train.images, train.labels, unlabeled, k, config, desc=desc)
    else:
        if method == "cosine-loss":
            from glico.classifiers import CosineEmbeddingClassifier

            clf = CosineEmbeddingClassifier(clf, k)
        train_classifier(clf, train.images, train.labels, config, policy=policy, desc=desc)
    acc = evaluate(clf, test.images, test.labels, device=config.device)
    return {**acc, "seconds": round(time.perf_counter() - t0, 1)}


def grid_rows(train, cfg: EvaluateConfig) -> torch.Tensor:
    """The training rows any split (or its validation images) of the grid ``cfg`` uses."""
    from glico.data import small_sample_split

    held = max(cfg.spcs) + (cfg.validation or 0)
    return torch.cat([small_sample_split(train, held, s)[1] for s in cfg.seeds]).unique()


def fit_cdcgan_for(train, *, seed: int, steps: int, batch_size: int, device: str, progress: bool,
                   samples_png: Path | None = None):
    """Fit the conditional DCGAN of :mod:`glico.experiments.cdcgan` on the split ``train`` with GLICO's fit
    budget (``steps``, ``batch_size``) and seed; ``samples_png``: a grid of 8 samples per class written there.

    Returns:
        ``(generator, info)`` (info: seconds, steps, last losses).
    """
    from glico.experiments.cdcgan import CDCGANConfig, fit_cdcgan, sample_cdcgan

    gen, info = fit_cdcgan(train.images, train.labels, CDCGANConfig(steps=steps, batch_size=batch_size, seed=seed,
                                                                  device=device, progress=progress),
                           num_classes=len(train.class_names))
    if samples_png is not None:
        from glico.viz import save_grid

        labels = torch.arange(len(train.class_names)).repeat_interleave(8)
        save_grid(sample_cdcgan(gen, labels, torch.Generator(device=device).manual_seed(seed)).cpu(), samples_png,
                  nrow=8)
    return gen, info


def fid_reference(train, n: int, extractor, device: str, exclude: torch.Tensor | None = None):
    """FID statistics of ``n // K`` training images of each class, none of them in ``exclude`` (the rows of
    every split and validation set of the evaluation, so that no seed's generator is scored against its own
    training images), drawn by a fixed seed: the same for every split and seed of an evaluation.

    Raises:
        ValueError: a class has no image left outside ``exclude``.
    """
    from glico.experiments.fid import feature_statistics

    free = torch.ones(train.images.shape[0], dtype=torch.bool)
    if exclude is not None:
        free[exclude] = False
    k = len(train.class_names)
    pools = [(free & (train.labels == c)).nonzero().flatten() for c in range(k)]
    per = min(n // k, min(int(p.numel()) for p in pools))
    if per < 1:
        raise ValueError("FID needs real images outside the splits, and a class has none left; lower --spc or "
                         "--validation, or drop --fid")
    g = torch.Generator().manual_seed(0)
    rows = torch.cat([p[torch.randperm(p.numel(), generator=g)[:per]] for p in pools])
    return feature_statistics(train.images[rows], extractor, device=device, progress=False)


def fid_samples(generator, train, n: int, seed: int, t_values=None, device: str = "cpu") -> torch.Tensor:
    """``n // K`` new images of each class from ``generator``: a GLICO model fitted on ``train`` (slerp from
    each of the class's training codes in turn to a random same-class partner, with the policy's
    ``t_values``: the images its augmentation makes) or a conditional DCGAN (fresh noise).

    Shape:
        returns (K * (n // K), C, H, W) in [0, 1]
    """
    k = len(train.class_names)
    per = max(1, n // k)
    if hasattr(generator, "codes"):
        from glico.augment import GLICOAugmenter

        augmenter = GLICOAugmenter(generator, p=1.0, seed=seed + 5, t_values=t_values)
        rows = torch.cat([(train.labels == c).nonzero().flatten().repeat(per)[:per] for c in range(k)])
        blank = torch.zeros(per * k, *train.images.shape[1:], device=device)
        return torch.cat([augmenter(b, r.to(device)) for b, r in zip(blank.split(256), rows.split(256))]).cpu()
    from glico.experiments.cdcgan import sample_cdcgan

    labels = torch.arange(k).repeat_interleave(per)
    g = torch.Generator(device=device).manual_seed(seed + 3)
    return torch.cat([sample_cdcgan(generator, chunk.to(device), g) for chunk in labels.split(256)]).cpu()


def generated_fid(images: torch.Tensor, extractor, reference, device: str) -> float:
    """FID between generated ``images`` (:func:`fid_samples`) and the ``reference`` statistics
    (:func:`fid_reference`), rounded to 2 decimals."""
    from glico.experiments.fid import feature_statistics, frechet_distance

    stats = feature_statistics(images, extractor, device=device, progress=False)
    return round(frechet_distance(stats.mu, stats.sigma, reference.mu, reference.sigma), 2)


def aggregate(runs: list[dict], key: str = "method") -> list[dict]:
    """Mean ± STE of top-1 / top-5 per (spc, ``runs[i][key]``) over seeds, in order of first appearance."""
    order = list(dict.fromkeys(r[key] for r in runs))
    keys = sorted({(r["spc"], r[key]) for r in runs}, key=lambda x: (x[0], order.index(x[1])))
    rows = []
    for spc, name in keys:
        sel = [r for r in runs if r["spc"] == spc and r[key] == name]
        t1, s1 = mean_ste([r["top1"] for r in sel])
        top5 = [r["top5"] for r in sel]
        t5, s5 = mean_ste(top5) if None not in top5 else (None, None)  # None: 5 classes or fewer
        row = {"spc": spc, key: name, "top1": t1, "top1_ste": s1, "top5": t5, "top5_ste": s5,
               "seeds": [r["seed"] for r in sel]}
        if all("fid" in r for r in sel):
            row["fid"], row["fid_ste"] = mean_ste([r["fid"] for r in sel])
        rows.append(row)
    return rows


def markdown_table(summary: list[dict], cfg: EvaluateConfig) -> str:
    """One row per method, one column pair (top-1, top-5) per SPC, and an FID column per SPC where FID was
    measured: mean ± STE over seeds."""
    spcs = sorted({r["spc"] for r in summary})
    methods = list(dict.fromkeys(r["method"] for r in summary))
    top5 = any(r["top5"] is not None for r in summary)  # None with 5 classes or fewer: the column is left out
    fid = any("fid" in r for r in summary)
    head = "| method | " + " | ".join(f"top-1 @ {s} spc" + (f" | top-5 @ {s} spc" if top5 else "")
                                     + (f" | FID @ {s} spc" if fid else "") for s in spcs) + " |"
    sep = "|---|" + ("---|" * (1 + top5 + fid)) * len(spcs)
    scored = ("the test set" if cfg.validation is None else
              f"validation images ({cfg.validation} per class held out of the training set; not the test set)")
    lines = [f"Accuracy (%) on {cfg.data}, {scored}, classifier {cfg.classifier}, mean ± STE over seeds "
             f"{list(cfg.seeds)}", "", head, sep]
    for m in methods:
        cells = []
        for s in spcs:
            r = next(x for x in summary if x["spc"] == s and x["method"] == m)
            cells.append(f"{r['top1']:.2f} ± {r['top1_ste']:.2f}")
            if top5:
                cells.append("–" if r["top5"] is None else f"{r['top5']:.2f} ± {r['top5_ste']:.2f}")
            if fid:
                cells.append(f"{r['fid']:.1f} ± {r['fid_ste']:.1f}" if "fid" in r else "–")
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    notes = []
    if fid:
        notes.append(f"FID: {cfg.fid_images} samples of each generative method against {cfg.fid_images} training "
                     f"images, features of {cfg.fid}" + (" (random weights: comparable within this table only)"
                                                         if cfg.fid == "random-inception" else ""))
    if cfg.unlabeled is not None:
        notes.append(f"MixMatch's unlabelled images: {cfg.unlabeled}" + (" (the test images: transductive)"
                                                                         if cfg.unlabeled == "test" else ""))
    return "\n".join(lines + ([""] + notes if notes else [])) + "\n"


def plot_results(summary: list[dict], path: Path, title: str, key: str = "method") -> Path:
    """Top-1 accuracy per method (``summary[i][key]``): vs SPC (lines with error bars) when several
    SPCs, else bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    spcs = sorted({r["spc"] for r in summary})
    methods = list(dict.fromkeys(r[key] for r in summary))
    fig, ax = plt.subplots(figsize=(7, 4))
    if len(spcs) > 1:
        for m in methods:
            rs = sorted((r for r in summary if r[key] == m), key=lambda r: r["spc"])
            ax.errorbar([r["spc"] for r in rs], [r["top1"] for r in rs], yerr=[r["top1_ste"] for r in rs],
                        marker="o", capsize=3, label=m)
        ax.set(xlabel="samples per class", xscale="log")
        ax.set_xticks(spcs, [str(n) for n in spcs])  # the SPCs themselves, not powers of ten
        ax.minorticks_off()
        ax.legend(fontsize=8)
    else:
        rs = [next(r for r in summary if r[key] == m) for m in methods]
        ax.bar(range(len(rs)), [r["top1"] for r in rs], yerr=[r["top1_ste"] for r in rs], capsize=3)
        ax.set_xticks(range(len(rs)), methods, rotation=30, ha="right", fontsize=8)
        ax.set(xlabel=f"{key} ({spcs[0]} per class)")
    # From 0, so that the bars' heights compare like the accuracies (a cut axis makes small gaps look large).
    ax.set_ylim(0.0, min(100.0, 1.08 * max(r["top1"] + r["top1_ste"] for r in summary)) or 1.0)
    ax.set(ylabel="top-1 accuracy (%)", title=title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# ------------------------------------------------------------------------------------------ CLI
def _methods(text: str) -> tuple[str, ...]:
    names = tuple(m.strip() for m in text.split(",") if m.strip())
    valid = method_names()
    bad = [m for m in names if m not in valid]
    if bad or not names:
        raise argparse.ArgumentTypeError(f"unknown method(s) {', '.join(bad) or '(none)'}; valid: {', '.join(valid)}")
    repeated = sorted({m for m in names if names.count(m) > 1})
    if repeated:
        raise argparse.ArgumentTypeError(f"{', '.join(repeated)} given more than once in {text!r}; each method runs once")
    return names


def add_evaluate_parser(sub, family_args: Callable[[argparse.ArgumentParser], None]) -> argparse.ArgumentParser:
    """Register ``glico evaluate`` on the CLI's subparsers."""
    e = sub.add_parser(
        "evaluate", help="downstream accuracy of GLICO vs augmentation baselines, mean ± STE over seeds",
        description="For each SPC and seed, train the same downstream classifier on the same split with the same "
                    "budget for each method (only the batch augmentation differs) and report top-1 (and top-5) on "
                    "the test set as mean ± standard error over seeds: results.json, results.md, results.png.",
        epilog="example: glico evaluate --data folder:my_images/ --image-size 32 --spc 10 --seeds 0,1,2 "
               "--methods baseline,autoaugment,glico,glico+autoaugment --classifier wrn-10-1 --epochs 16 "
               "--batch-size 64 --weight-decay 5e-3 --schedule cosine --loss laplacian+pixel --out runs/eval")
    e.add_argument("--data", required=True, help="digits | cifar10:DIR | cifar100:DIR | cub:DIR | folder:PATH")
    e.add_argument("--spc", required=True, type=positive_int_list, help="samples per class, e.g. 10 or 10,25,50")
    e.add_argument("--seeds", default=(0, 1, 2), type=int_list, help="comma-separated seeds (default 0,1,2)")
    e.add_argument("--methods", default=None, type=_methods,
                   help=f"comma-separated (default baseline,glico): {', '.join(method_names())}")
    e.add_argument("--preset", default=None, choices=sorted(PRESETS),
                   help="a named method list instead of --methods: table1 = the paper's Table I rows (" +
                        ",".join(PRESETS["table1"]["methods"]) + ", MixMatch on labelled data only: --unlabeled split)")
    e.add_argument("--unlabeled", default=None, metavar="SOURCE",
                   help=f"MixMatch's unlabelled images (needed with mixmatch): {UNLABELED_HELP}")
    e.add_argument("--fid", default=None, metavar="inception|random-inception|PATH",
                   help="also measure FID of the generative methods' samples (glico, cdcgan) against training "
                        "images: inception (ImageNet weights via torch's hub cache), random-inception (offline; "
                        "comparable within one evaluation only) or a weights file")
    e.add_argument("--fid-images", default=1000, type=positive_int, metavar="N",
                   help="images per FID set (default 1000; on a CPU about 0.2 s each)")
    e.add_argument("--out", required=True, help="folder for results.json, results.md, results.png")
    e.add_argument("--classifier", default="wrn-28-10", type=classifier_name,
                   help=f"downstream classifier: {', '.join(_downstream_classifiers())} or wrn-DEPTH-K for any "
                        f"WideResNet (wrn-16-1 and weak are the CPU-sized options)")
    e.add_argument("--epochs", default=200, type=positive_int,
                   help="classifier budget: epochs over the split oversampled to --oversample-to images (paper: 200 "
                        "-> 8000 steps at batch 128 with the default 5000)")
    e.add_argument("--fit-epochs", default=200, type=positive_int, help="GLICO fit budget in epochs (default: 200, the paper's)")
    add_oversample_flags(e)
    e.add_argument("--baseline-p", default=None, type=probability, metavar="P",
                   help="replace each example with probability P by its augmented version for the augmentation "
                        "baselines (the paper's protocol: 0.5); default: each method's own paper's setting (Cutout, "
                        "AutoAugment, RandAugment, TrivialAugment, MixUp, CutMix on every example; Random Erasing 0.5)")
    e.add_argument("--cutout-size", default=None, type=positive_int, metavar="PX",
                   help="Cutout's square side (default: DeVries & Taylor's per dataset: half the side, 16 px at 32 px; "
                        "a quarter on CIFAR-100, 8 px)")
    e.add_argument("--erasing-scale", default=ERASING_SCALE, type=erasing_scale_arg, metavar="LO,HI",
                   help="Random Erasing's area range as fractions of the image (default 0.02,0.33, torchvision's; "
                        "the Random Erasing paper's: 0.02,0.4)")
    e.add_argument("--pretrained", default=None, metavar="imagenet|PATH",
                   help="start the torchvision downstream classifier (resnet50, vgg19) from weights: imagenet "
                        "(torchvision's IMAGENET1K_V1, through torch's hub cache) or a local state-dict file; the "
                        "paper's CUB recipe fine-tunes an ImageNet ResNet-50 (default: random initialisation)")
    e.add_argument("--batch-size", default=None, type=positive_int, help="default 128 (CUB: 16)")
    e.add_argument("--lr", default=None, type=positive_float, help="default 0.1 (CUB: 0.001)")
    add_schedule_flags(e)
    e.add_argument("--validation", default=None, type=positive_int, metavar="N",
                   help="score on N held-out training images per class instead of the test set (for choosing "
                        "settings; the test set is then not used)")
    e.add_argument("--glico-p", default=0.5, type=probability, help="GLICO replacement probability (default: 0.5)")
    e.add_argument("--glico-t", default=None, type=unit_float_list,
                   help="comma-separated set the GLICO policy draws t from (default: the paper's 0.1,0.2,0.3,0.4)")
    e.add_argument("--glico-refresh", default=None, type=positive_int, metavar="K",
                   help="draw a bank of one GLICO image per training example every K steps and replace from it "
                        "(faster where the generator dominates a step; default: fresh draws every step)")
    e.add_argument("--image-size", default=None, type=positive_int, help="resize images to this side (default: as stored)")
    e.add_argument("--max-test", default=None, type=int, help="evaluate on a fixed stratified subsample of the test set")
    add_test_fraction_flag(e)
    e.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N (default: cpu)")
    add_precision_flag(e)
    e.add_argument("--fit-cache", default=None, metavar="DIR",
                   help="keep GLICO fits in DIR and reuse them when an evaluation needs the same fit (same split, "
                        "composition, seed and fit budget); not part of the results' settings")
    e.add_argument("--quiet", action="store_true")
    add_resume_flag(e)
    family_args(e)
    e.set_defaults(func=cmd_evaluate)
    return e


def add_oversample_flags(parser: argparse.ArgumentParser) -> None:
    """``--oversample-to`` and ``--fit-oversample-to`` (evaluate, ablate): the budget rules of the paper's protocol."""
    parser.add_argument("--oversample-to", default=OVERSAMPLE_TO, type=oversample_arg, metavar="N|full",
                        help=f"downstream oversampling: an epoch of a split has the steps of N images (default "
                             f"{OVERSAMPLE_TO}); full: of the full training set, the paper's rule (50000 on CIFAR)")
    parser.add_argument("--fit-oversample-to", default=0, type=oversample_arg, metavar="N|full",
                        help="GLICO fit oversampling: an epoch is ceil(N / split size) passes over the split; full: N "
                             "is the full training set's size, the paper's ~40 s epochs (default 0: one pass per epoch)")


def oversample_arg(text: str) -> int | str:
    """argparse type of ``--oversample-to`` / ``--fit-oversample-to``: ``full`` or a number of images >= 0."""
    if text == "full":
        return text
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 'full' (the full training set's size) or a number of images >= 0; "
                                         f"got {text!r}")
    return value


def erasing_scale_arg(text: str) -> tuple[float, float]:
    """argparse type of ``--erasing-scale``: ``LO,HI`` with 0 < LO <= HI <= 1."""
    try:
        lo, hi = (float(v) for v in text.split(","))
    except ValueError:
        lo = hi = float("nan")
    if not 0 < lo <= hi <= 1:
        raise argparse.ArgumentTypeError(f"must be LO,HI with 0 < LO <= HI <= 1 (fractions of the image area, e.g. "
                                         f"0.02,0.4); got {text!r}")
    return lo, hi


def model_fields_from_args(args) -> dict[str, Any]:
    """The GLICO composition flags of ``glico evaluate`` / ``glico ablate`` as ModelSpec fields (f is
    ``--glico-classifier`` there, since ``--classifier`` names the downstream classifier)."""
    fields = {"generator": args.generator, "loss": args.loss, "vgg_weights": args.vgg_weights, "init": args.init,
              "feature_weights": args.feature_weights, "noise": args.noise, "interpolator": args.interpolator,
              "classifier": args.classifier_f, "class_loss": args.class_loss, "code_dim": args.code_dim,
              "gamma": args.gamma}
    if getattr(args, "feature_net", None) is not None:
        fields["feature_net"] = args.feature_net
    return fields


def test_fraction(text: str) -> float:
    """argparse type of ``--test-fraction``: a number strictly between 0 and 1."""
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"must be a number strictly between 0 and 1 (e.g. 0.2); got {text!r}")
    return value


def add_test_fraction_flag(parser: argparse.ArgumentParser) -> None:
    """``--test-fraction`` (evaluate, train): a test set held out of a folder of class folders."""
    parser.add_argument("--test-fraction", default=None, type=test_fraction, metavar="F",
                        help="for folder:PATH of class folders without a test/ split: hold out a seeded share F of "
                             "each class as the test set (default: none; a train/ + test/ folder uses its test/)")


def add_schedule_flags(parser: argparse.ArgumentParser) -> None:
    """``--weight-decay`` and ``--schedule`` of the downstream SGD recipe (evaluate, ablate)."""
    parser.add_argument("--weight-decay", default=5e-4, type=nonnegative_float, help="SGD weight decay")
    parser.add_argument("--schedule", default="step", choices=SCHEDULES,
                        help="learning-rate schedule: step (x0.2 at 30/60/80 %% of the budget) or cosine")


class GridInterrupted(KeyboardInterrupt):
    """Ctrl-C during a grid, after the grid said what it kept (the command line prints nothing more)."""


def add_resume_flag(parser: argparse.ArgumentParser) -> None:
    """``--resume`` and ``--overwrite`` of a grid (evaluate, ablate)."""
    parser.add_argument("--overwrite", action="store_true",
                        help="start afresh in an --out that holds finished runs (its runs.jsonl and results.json "
                             "are kept as *.replaced)")
    parser.add_argument("--resume", action="store_true",
                        help="keep the finished runs in --out (runs.jsonl, written as each run ends) and run only the "
                             "missing ones; the settings must be the same. Without it, an --out holding finished runs "
                             "is refused")


def add_precision_flag(parser: argparse.ArgumentParser) -> None:
    """``--precision`` of the downstream classifier (evaluate, ablate)."""
    parser.add_argument("--precision", default="auto", choices=list(PRECISIONS),
                        help="downstream classifier arithmetic: auto = bf16 autocast + channels_last on GPUs with "
                             "bf16 tensor cores (Ampere and later), fp32 elsewhere (default); fp32; bf16 (CUDA only)")


def default_batch_size(args) -> int:
    """``--batch-size``, else the protocol's: 16 for CUB (the paper's fine-tuning), 128 otherwise."""
    return args.batch_size if args.batch_size is not None else (16 if args.data.startswith("cub:") else 128)


def default_lr(args) -> float:
    """``--lr``, else the protocol's: 0.001 for CUB, 0.1 otherwise."""
    return args.lr if args.lr is not None else (0.001 if args.data.startswith("cub:") else 0.1)


def resolve_preset(methods: tuple[str, ...] | None, preset: str | None,
                   unlabeled: str | None) -> tuple[tuple[str, ...], str | None]:
    """``--methods`` / ``--preset`` / ``--unlabeled`` as (methods, unlabeled): the preset's list and its
    unlabelled source unless ``--unlabeled`` is given; plain ``baseline,glico`` without either.

    Raises:
        ValueError: both ``--methods`` and ``--preset``.
    """
    if preset is None:
        return (methods or ("baseline", "glico")), unlabeled
    if methods is not None:
        raise ValueError(f"give --methods or --preset, not both (--preset {preset} is --methods "
                         f"{','.join(PRESETS[preset]['methods'])})")
    return tuple(PRESETS[preset]["methods"]), unlabeled if unlabeled is not None else PRESETS[preset]["unlabeled"]


def cmd_evaluate(args) -> int:
    model = model_fields_from_args(args)
    methods, unlabeled = resolve_preset(args.methods, args.preset, args.unlabeled)
    cfg = EvaluateConfig(
        data=args.data, spcs=args.spc, seeds=args.seeds, methods=methods, classifier=args.classifier,
        epochs=args.epochs, batch_size=default_batch_size(args), lr=default_lr(args),
        weight_decay=args.weight_decay, glico_p=args.glico_p, fit_epochs=args.fit_epochs, model=model,
        image_size=args.image_size, max_test=args.max_test, device=args.device, precision=args.precision,
        schedule=args.schedule, validation=args.validation, glico_t=args.glico_t, glico_refresh=args.glico_refresh,
        test_fraction=args.test_fraction, oversample_to=args.oversample_to, fit_oversample_to=args.fit_oversample_to,
        baseline_p=args.baseline_p, cutout_size=args.cutout_size, erasing_scale=args.erasing_scale,
        pretrained=args.pretrained, unlabeled=unlabeled, fid=args.fid, fid_images=args.fid_images,
    )
    run_evaluation(cfg, Path(args.out), progress=not args.quiet, resume=args.resume, overwrite=args.overwrite,
                   fit_cache=None if args.fit_cache is None else Path(args.fit_cache))
    return 0
