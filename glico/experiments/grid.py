"""One grid engine for ``glico evaluate`` and ``glico ablate``: a list of cells plus one recipe.

A grid is every :class:`Variant` (a row: a downstream method, and the GLICO composition it samples
from, if any) for every SPC and seed, all trained with one recipe (:class:`GridConfig`: the data, the
downstream classifier and its budget, the fit budget, the baselines' protocol). :func:`run_grid` runs
it: for each (spc, seed) one small-sample split; for each row one downstream classifier with the same
budget; a GLICO fit shared by the rows whose fit would be the same. Every cell seeds itself, so its
numbers do not depend on which other cells ran before it in its process: an interrupted grid resumes
(:mod:`glico.experiments.runlog`), pieces merge (:mod:`glico.experiments.merge`), and under ``torchrun``
the ranks share the cells (:func:`run_grid`'s ``data_parallel=False``, the default) with the same numbers
per cell as one process.

    from glico.experiments.grid import GridConfig, Variant, run_grid
"""
from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from types import MappingProxyType
from typing import Any, Callable, Mapping, Sequence

import torch
from torch import nn

from glico import __version__, distributed
from glico.experiments.downstream import (
    OVERSAMPLE_TO,
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
from glico.names import OTHER_METHODS, PRETRAINABLE, check_pretrained, downstream_classifier, method_names, resolve

log = logging.getLogger(__name__)


#: The methods that sample from a fitted GLICO model: ``glico`` and ``glico+POLICY``.
GLICO_METHODS = tuple(m for m in policy_names() if "glico" in m.split("+"))



#: The methods whose images come from a generator fitted on the split: FID (``fid=``) is measured for these.
GENERATIVE_METHODS = ("glico", "cdcgan")


_TEST_IN_VALIDATION = ("unlabeled='test' uses the test images, and validation runs never touch the test set; use "
                       "split, rest or rest:N there")


UNLABELED_HELP = ("split (the labelled split itself, labels unused: the paper's Table I 'labelled data only'), "
                  "rest (every other training image), rest:N (N more per class in the split's seeded order), "
                  "folder:PATH (image files under PATH), test (the test images: transductive, said so in the results)")


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


SCHEDULES = ("step", "cosine")


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
                      cosine: bool = False, oversample_to: int = OVERSAMPLE_TO, data_parallel: bool = False) -> TrainConfig:
    """The downstream recipe for one split: the same budget (:func:`steps_for` with ``oversample_to``) for
    every method compared, batch capped at the split's size, random-crop padding of 1/8 of the image side,
    the step schedule (or a cosine one)."""
    return TrainConfig(steps=steps_for(n_train, batch_size, epochs, oversample_to), batch_size=min(batch_size, n_train), lr=lr,
                       weight_decay=weight_decay, crop_pad=max(1, image_size // 8), flip=flip, seed=seed,
                       device=device, progress=progress, precision=precision, cosine=cosine,
                       **({"data_parallel": True} if data_parallel else {}))


def optimizer_text(schedule: str, weight_decay: float) -> str:
    """The downstream optimiser in words, for results files."""
    sched = "cosine schedule" if schedule == "cosine" else "step schedule x0.2 at 30/60/80 %"
    return f"SGD, Nesterov momentum 0.9, weight decay {weight_decay:g}, {sched}"


def fit_glico(model: Mapping[str, Any], train, *, seed: int, epochs: int, batch_size: int = 128, device: str = "cpu",
              unlabeled: torch.Tensor | None = None, progress: bool = True, samples_png: Path | None = None,
              cache_dir: Path | None = None, checkpoint: Path | None = None, resume: bool = False,
              checkpoint_extra: dict[str, Any] | None = None, oversample_to: int = 0, data_parallel: bool = False):
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
        data_parallel: under torchrun, fit on all ranks together (:class:`glico.training.FitConfig`'s
            ``data_parallel``); the fit is the same as one process's, so it shares the cache's key.

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
    hit = cached is not None and cached.is_file()
    if data_parallel:  # all ranks load, or all fit together: rank 0 decides (a shared file system may lag)
        hit = distributed.broadcast_object(hit)
    if hit:
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
        if data_parallel:
            ckpt["data_parallel"] = True
        hist = fit(glico_model, train.images, train.labels, unlabeled=unlabeled,
                   config=FitConfig(epochs=epochs, batch_size=batch_size, oversample_to=oversample_to, seed=seed,
                                    device=device, progress=progress, **ckpt), checkpoint_extra=checkpoint_extra)
        info = {"seconds": round(time.perf_counter() - t0, 1), "steps": hist.step[-1],
                "reconstruction_last": hist.reconstruction[-1]}
        if unlabeled is not None:
            info["n_unlabeled"] = int(unlabeled.shape[0])
        if cached is not None and (distributed.current().main or not data_parallel):  # one writer per fit
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


def grid_rows(train, cfg: GridConfig) -> torch.Tensor:
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


class GridInterrupted(KeyboardInterrupt):
    """Ctrl-C during a grid, after the grid said what it kept (the command line prints nothing more)."""


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
        policy: the downstream method (:func:`glico.names.method_names`): a batch policy (``glico``,
            ``glico+autoaugment``, ``baseline``, ``autoaugment``, ...) or a comparison system
            (``mixmatch``, ``cosine-loss``, ``cdcgan``; with ``model=None``).
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
        if self.policy not in method_names():
            raise ValueError(f"variant {self.name!r}: unknown policy {self.policy!r}; valid: {', '.join(method_names())}")
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


# ModelSpec fields that act only when new images are sampled, never during the fit: variants that differ
# only in them share one fit (the Lerp row uses GLICO's fitted model with linear interpolation), so the
# comparison isolates what the field changes.
SAMPLING_ONLY = ("interpolator",)


def _shared_fit_key(v: Variant, base: Mapping[str, Any]) -> tuple:
    """What a row's fit depends on: rows with the same key share one fit on a split."""
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


@dataclass(frozen=True)
class GridConfig:
    """The recipe of a grid: everything its cells share (recorded in results.json so it can be rerun).

    Args:
        data: data SPEC (``digits``, ``cifar10:DIR``, ``folder:PATH``, ...) or a loaded
            :class:`glico.data.Dataset`.
        spcs: samples per class; one split per (spc, seed).
        seeds: split / training seeds.
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
        model: the base GLICO composition by names (:class:`glico.names.ModelSpec` fields without
            image_shape / num_classes), under each variant's overrides; missing fields are the paper's.
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

    data: Any  # a SPEC string or a loaded glico.data.Dataset
    spcs: tuple[int, ...] = (10,)
    seeds: tuple[int, ...] = (0, 1, 2)
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
        check_unlabeled(self.unlabeled)
        if self.unlabeled == "test" and self.validation is not None:
            raise ValueError(_TEST_IN_VALIDATION)
        if self.fid is not None:
            fid_extractor(self.fid, check_only=True)
        if not isinstance(self.model, Mapping):
            raise ValueError(f"model must be a mapping of ModelSpec fields; got {type(self.model).__name__}")
        bad = [k for k in self.model if k not in _spec_fields()]
        if bad:
            raise ValueError(f"model: unknown field(s) {', '.join(bad)}; valid: {', '.join(_spec_fields())}")
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
        object.__setattr__(self, "spcs", tuple(int(s) for s in self.spcs))
        object.__setattr__(self, "seeds", tuple(int(s) for s in self.seeds))
        if not self.spcs or min(self.spcs) < 1:
            raise ValueError(f"spc values must be >= 1; got {self.spcs}")
        if not self.seeds:
            raise ValueError("give at least one seed")


def recorded(cfg: GridConfig) -> dict[str, Any]:
    """``cfg``'s fields as plain JSON data, as results.json and runs.jsonl record them: lists for tuples, a
    loaded data set by its name (not copied)."""
    from glico.data import Dataset

    out = {f.name: getattr(cfg, f.name) for f in fields(cfg)}
    out["data"] = cfg.data.name if isinstance(cfg.data, Dataset) else cfg.data
    return json.loads(json.dumps(out))


def check_device(cfg: GridConfig) -> str:
    """Refuse a device that is not there (the message says what is), then the arithmetic ``cfg.precision``
    resolves to on it (bf16 off CUDA refused): what a grid's header records."""
    from glico.training import resolve_device

    resolve_device(cfg.device)
    return resolve_precision(cfg.precision, cfg.device)


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


def fit_variant(variant: Variant, data, train, *, spc: int, seed: int, base_model: Mapping[str, Any] | None = None,
                fit_epochs: int = 200, fit_batch_size: int = 128, device: str = "cpu", progress: bool = True,
                samples_png: Path | None = None, fit_oversample_to: int = 0, cache_dir: Path | None = None,
                data_parallel: bool = False):
    """Fit ``variant``'s GLICO model on the split ``train`` (drawn at ``spc``, ``seed`` from ``data.train``),
    with the unlabelled images of :func:`variant_unlabeled`; ``fit_oversample_to`` as
    :class:`glico.training.FitConfig`'s ``oversample_to`` (images, 0: one pass per epoch); ``cache_dir`` and
    ``data_parallel`` as :func:`fit_glico`'s.

    Returns:
        ``(model, info)`` as :func:`fit_glico`; code table rows: the split's
        images first, then the unlabelled ones.
    """
    if not variant.uses_glico:
        raise ValueError(f"variant {variant.name!r} fits no GLICO model")
    unlabeled, uinfo = variant_unlabeled(variant, data, spc, seed)
    # Fitted with the base's sampling-only fields (they never act in a fit), so that rows differing only in
    # them share one fit, also through the fit cache; the model then samples with the variant's own.
    fields_ = {**(base_model or {}), **{k: v for k, v in variant.model.items() if k not in SAMPLING_ONLY}}
    model, info = fit_glico(fields_, train, seed=seed, epochs=fit_epochs, batch_size=fit_batch_size, device=device,
                            unlabeled=unlabeled, progress=progress, oversample_to=fit_oversample_to,
                            cache_dir=cache_dir, data_parallel=data_parallel)
    spec = variant_spec(variant, train.images.shape[1:], len(train.class_names), base_model)
    model.interpolator = resolve("interpolator", spec.interpolator)(spec)
    if samples_png is not None:
        from glico.viz import class_grid, save_grid

        save_grid(class_grid(model, 8, seed), samples_png, nrow=8)
    return model, {**info, **uinfo}


def check_rows(variants: Sequence[Variant], cfg: GridConfig) -> None:
    """Refuse rows that cannot run with ``cfg``, before any work: repeated names, MixMatch without an
    unlabelled-image source (or a source no row reads), FID without a generative row, a transductive
    fit in a validation grid (which never touches the test set).

    Raises:
        ValueError: the message says what is wrong and what is accepted.
    """
    if not variants:
        raise ValueError("give at least one variant (method)")
    names = [v.name for v in variants]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ValueError(f"variant names must be unique; repeated: {', '.join(dupes)}")
    policies = {v.policy for v in variants}
    if "mixmatch" in policies and cfg.unlabeled is None:
        raise ValueError(f"mixmatch trains on unlabelled images too: say where they come from with unlabeled= "
                         f"(--unlabeled): {UNLABELED_HELP}")
    if cfg.unlabeled is not None and "mixmatch" not in policies:
        raise ValueError(f"unlabeled={cfg.unlabeled!r} is used by mixmatch only, which is not among the methods "
                         f"({', '.join(names)}); drop it or add mixmatch (evaluate --methods, ablate --add-methods)")
    if cfg.fid is not None and not policies & set(GENERATIVE_METHODS):
        raise ValueError(f"fid is measured for the generative methods ({', '.join(GENERATIVE_METHODS)}), and "
                         f"none is among the methods ({', '.join(names)}); add one or drop fid")
    if cfg.validation is not None:
        bad = [v.name for v in variants if v.transductive]
        if bad:
            raise ValueError(f"{', '.join(bad)}: a transductive fit reconstructs the test images, and a validation "
                             f"grid never touches the test set; drop validation or those rows")


@dataclass(frozen=True)
class Cell:
    """One run of a grid: ``variant`` trained on the split ``(spc, seed)``; ``index`` is its place in
    the grid's order (spc, then seed, then row), which is how ranks share the cells."""

    index: int
    spc: int
    seed: int
    variant: Variant


def grid_cells(variants: Sequence[Variant], cfg: GridConfig) -> list[Cell]:
    """Every cell of the grid, in its order: spc, then seed, then the rows as given."""
    cells = [(spc, seed, v) for spc in cfg.spcs for seed in cfg.seeds for v in variants]
    return [Cell(i, spc, seed, v) for i, (spc, seed, v) in enumerate(cells)]


def share(items: Sequence[Any], ranks: distributed.Ranks) -> list[Any]:
    """This rank's share of ``items``: every ``world``-th one from its rank on (deterministic, by position)."""
    return list(items[ranks.rank::ranks.world])


#: Relative cost of a cell's training by its method, for spreading cells over ranks (estimates: MixMatch's
#: 3.6 was measured on the CIFAR CPU recipe; a GLICO policy also runs the generator on every batch).
CELL_COST = {"mixmatch": 3.6}
GLICO_CELL_COST = 1.5


def share_cells(cells: Sequence[Cell], ranks: distributed.Ranks, steps: Callable[[Cell], int]) -> list[Cell]:
    """This rank's cells, in grid order: the longest first, each to the rank with the least work so far
    (ties to the lowest rank), work being ``steps(cell)`` times the method's :data:`CELL_COST`. The same
    cells give the same shares on every rank; it spreads a grid whose rows differ in cost (a GLICO row per
    two baselines would otherwise land on one rank)."""
    def cost(cell: Cell) -> float:
        factor = GLICO_CELL_COST if cell.variant.uses_glico else CELL_COST.get(cell.variant.policy, 1.0)
        return steps(cell) * factor

    load = [0.0] * ranks.world
    mine = []
    for cell in sorted(cells, key=lambda c: (-cost(c), c.index)):
        r = min(range(ranks.world), key=lambda i: (load[i], i))
        load[r] += cost(cell)
        if r == ranks.rank:
            mine.append(cell)
    return sorted(mine, key=lambda c: c.index)


@dataclass
class GridRun:
    """What :func:`run_grid` hands the command that writes the results.

    Attributes:
        runs: every cell's run in grid order (on the main rank; empty on the others).
        data: the loaded data set.
        recipe: the resolved recipe (steps, oversampling, protocol, precision, ...), as results.json records it.
        seconds: the grid's wall-clock time.
        main: whether this process writes the results (rank 0, or the only process).
    """

    runs: list[dict]
    data: Any
    recipe: dict[str, Any]
    seconds: float
    main: bool = True


def _fit_for(v: Variant, data, train, spc: int, seed: int, cfg: GridConfig, fit_oversample: int, *,
             cache: Path | None, progress: bool, data_parallel: bool = False):
    """``v``'s GLICO model fitted on the split (or loaded from ``cache`` where another rank fitted it)."""
    return fit_variant(v, data, train, spc=spc, seed=seed, base_model=cfg.model, fit_epochs=cfg.fit_epochs,
                       fit_batch_size=cfg.fit_batch_size, device=cfg.device, progress=progress,
                       fit_oversample_to=fit_oversample, cache_dir=cache, data_parallel=data_parallel)


def run_grid(variants: Sequence[Variant], cfg: GridConfig, out: Path | None, *, command: str, key: str,
             header: dict[str, Any], free: set[str], added_later: Mapping[str, Any],
             samples_name: Callable[[Variant, int, int], str], heading: Callable[[Any], str],
             progress: bool = True, echo: Callable[[str], None] = print, resume: bool = False,
             overwrite: bool = False, fit_cache: Path | None = None, data_parallel: bool = False) -> GridRun:
    """Run every cell of ``variants`` × ``cfg.spcs`` × ``cfg.seeds``; keep each run in ``out/runs.jsonl`` as it
    ends (:class:`glico.experiments.runlog.RunLog` with ``header``, ``free``, ``added_later``; ``key`` names a
    run's row: ``method`` or ``variant``).

    What can be refused is refused before anything is trained: the rows (:func:`check_rows`), the device and
    precision, pretrained and FID weights and the results folder before the data are loaded; the
    unlabelled-image source, the validation split and the files a composition needs right after.

    Under ``torchrun`` (:func:`glico.distributed.init_from_env` joined by the caller) the ranks share the
    work. With ``data_parallel=False`` (default) every rank takes its share of the cells still to run
    (:func:`share_cells`: the longest first, each to the least loaded rank) and appends its runs to its
    own runs file; the GLICO fits the cells need are made first, every
    ``world``-th by each rank, into a fit cache (``fit_cache``, else ``out/fits``) that the others load,
    so each is made once; rank 0 then joins the runs files. With ``data_parallel=True`` every rank runs
    every cell together: each classifier and fit is trained data-parallel
    (:class:`glico.experiments.downstream.TrainConfig`'s ``data_parallel``), and rank 0 keeps the runs.

    Args:
        samples_name: the file name of the sample grid of a row's fit on a split.
        heading: the line the grid starts with, from the loaded data.
        fit_cache: keep GLICO fits there and reuse them (:func:`fit_glico`'s ``cache_dir``).

    Returns:
        The runs (on the main rank) and the resolved recipe.
    """
    from glico.augment import GLICOAugmenter
    from glico.classifiers.cosine_embedding import XENT_WEIGHT
    from glico.data import Dataset, load_data, small_sample_split, validation_split
    from glico.experiments.cdcgan import CDCGANConfig
    from glico.experiments.mixmatch import MixMatchConfig
    from glico.training import FitConfig
    from glico.viz import class_grid, save_grid

    variants = list(variants)
    check_rows(variants, cfg)
    ranks = distributed.current()
    split_cells = ranks.world > 1 and not data_parallel
    if ranks.world > 1 and out is None:
        raise ValueError("a grid under torchrun needs a results folder (out=) where the ranks keep their runs")
    precision = check_device(cfg)  # refuses a missing device, and bf16 off CUDA, before any work
    check_pretrained(cfg.classifier, cfg.pretrained)  # before the data: a missing weights file is refused at once
    extractor = None if cfg.fid is None else fid_extractor(cfg.fid)  # likewise missing Inception weights
    say = echo if ranks.main else (lambda line: None)
    progress = progress and ranks.main
    cells = grid_cells(variants, cfg)
    # Before the data are loaded (minutes for CUB), so that a folder that will be refused is refused at once.
    kept = RunLog(out, header, ("spc", "seed", key), resume=resume, overwrite=overwrite, free=free,
                  added_later=added_later, ranks=ranks, writer=split_cells or ranks.main)
    data = cfg.data if isinstance(cfg.data, Dataset) else load_data(cfg.data, image_size=cfg.image_size,
                                                                    max_test=cfg.max_test,
                                                                    test_fraction=cfg.test_fraction)
    if cfg.validation is None:
        data.require_test(f"glico {command}")
    c, h, w = data.train.images.shape[1:]
    k = len(data.train.class_names)
    flip = data.name != "digits"  # digits are not mirror-symmetric
    factory = downstream_classifier(cfg.classifier, cfg.pretrained)
    n_full = int(data.train.images.shape[0])
    oversample = resolve_oversample(cfg.oversample_to, n_full)
    fit_oversample = resolve_oversample(cfg.fit_oversample_to, n_full)
    _preflight(variants, cfg.model, (c, h, w), k)
    policy_settings = {"policy_p": cfg.baseline_p, "erasing_scale": tuple(cfg.erasing_scale),
                       "cutout_size": cfg.cutout_size if cfg.cutout_size is not None else cutout_size_for(data.name, h)}
    if cfg.validation is not None:  # refused now, not after the first fit, when the classes are too small
        validation_split(data.train, max(cfg.spcs), cfg.seeds[0], cfg.validation)
    shared_unlabeled = None  # a folder's or the test set's images: the same for every split, read once
    if cfg.unlabeled is not None:  # likewise a missing folder, images of another shape, or nothing left
        first = unlabeled_images(cfg.unlabeled, data, max(cfg.spcs), cfg.seeds[0], cfg.validation, cfg.image_size)
        if cfg.unlabeled == "test" or cfg.unlabeled.startswith("folder:"):
            shared_unlabeled = first
    policies = {v.policy for v in variants}

    def fit_steps(n: int) -> int:
        return FitConfig(epochs=cfg.fit_epochs, batch_size=cfg.fit_batch_size, oversample_to=fit_oversample).steps(n)

    recipe = {
        "steps_per_run": {str(s): steps_for(s * k, cfg.batch_size, cfg.epochs, oversample) for s in cfg.spcs},
        "oversample_to": oversample, "fit_oversample_to": fit_oversample,
        "fit_steps": {str(s): fit_steps(s * k) for s in cfg.spcs},
        "baseline_p": cfg.baseline_p, "cutout_size": policy_settings["cutout_size"],
        "erasing_scale": list(cfg.erasing_scale), "pretrained": cfg.pretrained,
        **({"unlabeled": cfg.unlabeled, "transductive": cfg.unlabeled == "test",
            "mixmatch": asdict(MixMatchConfig())} if "mixmatch" in policies else {}),
        **({"cdcgan": {**{n: v for n, v in asdict(CDCGANConfig()).items() if n not in ("seed", "device", "progress")},
                       "steps": {str(s): fit_steps(s * k) for s in cfg.spcs},
                       "batch_size": cfg.fit_batch_size}} if "cdcgan" in policies else {}),
        **({"cosine_loss_xent_weight": XENT_WEIGHT} if "cosine-loss" in policies else {}),
        **({"fid": {"features": cfg.fid, "images": cfg.fid_images,
                    "reference": "training images, n // K per class"}} if cfg.fid is not None else {}),
        "optimizer": optimizer_text(cfg.schedule, cfg.weight_decay),
        "precision": precision,
        "standard_augmentation": f"random crop (pad {max(1, h // 8)})" + (" + horizontal flip" if flip else ""),
    }
    todo = [cell for cell in cells if kept.done(spc=cell.spc, seed=cell.seed, **{key: cell.variant.name}) is None]
    mine = (share_cells(todo, ranks, lambda cell: steps_for(cell.spc * k, cfg.batch_size, cfg.epochs, oversample))
            if split_cells else todo)
    if torch.device(cfg.device).type == "cpu" and ranks.main:
        steps_total = sum(steps_for(cell.spc * k, cfg.batch_size, cfg.epochs, oversample) for cell in mine)
        warning = cpu_time_warning(cfg.classifier, (c, h, w), k, min(cfg.batch_size, min(cfg.spcs) * k), steps_total,
                                   f"glico {command}")
        if warning:
            say(warning)
    say(heading(data))
    if cfg.unlabeled == "test":
        say(f"glico {command}: MixMatch's unlabelled images are the test images (transductive: their labels are not "
            "used, but the scores are not those of an inductive method)")
    line = kept.resume_line(len(cells))
    if line:
        say(line)
    if split_cells:
        say(f"glico {command}: {ranks.world} ranks share the {len(todo)} runs to do; each keeps its own runs file "
            f"in {out}, rank 0 joins them at the end")
    # Under torchrun the ranks share fits through OUT/fits; a later resume (any world size) reuses what is there.
    shared = None if out is None else Path(out) / "fits"
    cache = fit_cache if fit_cache is not None else shared if split_cells or (shared and shared.is_dir()) else None
    if data_parallel:  # the ranks fit together: they must agree on whether there is a cache to look in
        cache = distributed.broadcast_object(cache)
    writes = split_cells or ranks.main  # who writes a cell's pictures: its rank, or rank 0 when all run every cell
    firsts: dict[tuple, Cell] = {}  # (split, fit) -> the first cell to run that needs the fit
    pictures: dict[tuple, int] = {}  # (split, fit, interpolator) -> the first cell to run that samples from it
    for cell in todo:
        if cell.variant.uses_glico:
            fit = (cell.spc, cell.seed, _shared_fit_key(cell.variant, cfg.model))
            firsts.setdefault(fit, cell)
            pictures.setdefault((*fit, variant_spec(cell.variant, (c, h, w), k, cfg.model).interpolator), cell.index)
    started = time.perf_counter()
    ran = 0
    width = max(len(v.name) for v in variants)
    tag = f"[rank {ranks.rank}] " if ranks.world > 1 and split_cells else ""
    reference = None  # the training set's FID statistics, computed when first needed
    try:
        if split_cells:  # every fit the cells need, once: every world-th by each rank, into the shared cache
            for spc, seed, fkey in share(list(firsts), ranks):
                cell = firsts[(spc, seed, fkey)]
                _, info = _fit_for(cell.variant, data, small_sample_split(data.train, spc, seed)[0], spc, seed, cfg,
                                   fit_oversample, cache=cache, progress=progress)
                echo(f"  {tag}{'loaded' if info.get('cached') else 'fitted'} GLICO for spc {spc} seed {seed} "
                     f"({cell.variant.describe()}) {'from' if info.get('cached') else 'into'} {cache}")
            distributed.barrier()
        for (spc, seed), group in _groups(mine):
            train, _ = small_sample_split(data.train, spc, seed)
            held_out = (data.test if cfg.validation is None else
                        validation_split(data.train, spc, seed, cfg.validation)[0])
            tcfg = downstream_config(train.images.shape[0], h, epochs=cfg.epochs, batch_size=cfg.batch_size,
                                     lr=cfg.lr, weight_decay=cfg.weight_decay, flip=flip, seed=seed,
                                     device=cfg.device, progress=progress, precision=cfg.precision,
                                     cosine=cfg.schedule == "cosine", oversample_to=oversample,
                                     data_parallel=data_parallel)
            fitted: dict[tuple, tuple[Any, dict]] = {}
            for i, cell in enumerate(group):
                v = cell.variant
                augmenter = model = cdcgan = unlabeled = None
                info: dict[str, Any] | None = None
                fit_s = ""
                if v.uses_glico:
                    fkey = _shared_fit_key(v, cfg.model)
                    if fkey not in fitted:
                        fitted[fkey] = _fit_for(v, data, train, spc, seed, cfg, fit_oversample, cache=cache,
                                                progress=progress, data_parallel=data_parallel)
                        if not fitted[fkey][1].get("cached"):
                            fit_s = f"fit {fitted[fkey][1]['seconds']:.0f} s + "
                    model, info = fitted[fkey]
                    spec = variant_spec(v, (c, h, w), k, cfg.model)
                    model.interpolator = resolve("interpolator", spec.interpolator)(spec)
                    if out is not None and writes and pictures[(spc, seed, fkey, spec.interpolator)] == cell.index:
                        save_grid(class_grid(model, 8, seed), Path(out) / samples_name(v, spc, seed), nrow=8)
                    # A fresh augmenter per cell: its draws do not depend on which cells ran before.
                    augmenter = GLICOAugmenter(model, p=cfg.glico_p, seed=seed, t_values=cfg.glico_t,
                                               refresh_every=cfg.glico_refresh)
                    if not any(u.variant.uses_glico and _shared_fit_key(u.variant, cfg.model) == fkey
                               for u in group[i + 1:]):
                        del fitted[fkey]  # no later cell of this split shares the fit
                elif v.policy == "cdcgan":
                    cdcgan, info = fit_cdcgan_for(train, seed=seed, steps=fit_steps(spc * k), device=cfg.device,
                                                  batch_size=cfg.fit_batch_size, progress=progress,
                                                  samples_png=None if out is None or not writes else
                                                  Path(out) / f"cdcgan-samples-spc{spc}-seed{seed}.png")
                    fit_s = f"fit {info['seconds']:.0f} s + "
                    if data_parallel:  # one generator for the batches every rank builds (GPU fits may differ)
                        distributed.broadcast_module_(cdcgan)
                elif v.policy == "mixmatch":
                    unlabeled, info = shared_unlabeled or unlabeled_images(cfg.unlabeled, data, spc, seed,
                                                                           cfg.validation, cfg.image_size)
                acc = train_and_score(v.policy, factory, train, held_out, tcfg, augmenter=augmenter, seed=seed,
                                      desc=f"{v.name} spc{spc} s{seed}", cdcgan=cdcgan, glico_p=cfg.glico_p,
                                      unlabeled=unlabeled, **policy_settings)
                run = {"spc": spc, "seed": seed, key: v.name, **({"policy": v.policy} if key == "variant" else {}),
                       **acc, "steps": tcfg.steps, "fit": info}
                if extractor is not None and v.policy in GENERATIVE_METHODS:
                    if reference is None:
                        reference = fid_reference(data.train, cfg.fid_images, extractor, cfg.device,
                                                  exclude=grid_rows(data.train, cfg))
                    samples = fid_samples(model if v.policy == "glico" else cdcgan, train, cfg.fid_images, seed,
                                          cfg.glico_t, cfg.device)
                    run["fid"] = generated_fid(samples, extractor, reference, cfg.device)
                del augmenter
                kept.add(run)
                ran += 1
                eta = (time.perf_counter() - started) / ran * (len(mine) - ran)
                (echo if split_cells else say)(f"  {tag}spc {spc:>3} seed {seed} {v.name:>{width}}: top-1 {acc['top1']:6.2f} %  "
                     + (f"top-5 {acc['top5']:6.2f} %  " if acc["top5"] is not None else "")
                     + (f"FID {run['fid']:.1f}  " if "fid" in run else "")
                     + f"({fit_s}train {acc['seconds']:.0f} s; "
                     + (f"{ran}/{len(mine)} of this rank's runs done" if split_cells else
                        f"{len(kept)}/{len(cells)} done") + f", about {eta / 60:.1f} min left)")
    except KeyboardInterrupt:
        echo(f"glico {command}: {tag}interrupted; {kept.interrupted_message()}")
        raise GridInterrupted from None
    finished = kept.finish()  # every rank's runs, joined by rank 0 (after all ranks are done)
    runs = []
    if ranks.main:
        for cell in cells:
            run = finished.get((cell.spc, cell.seed, cell.variant.name))
            if run is None:
                raise RuntimeError(f"glico {command}: spc {cell.spc}, seed {cell.seed}, {cell.variant.name!r} has no "
                                   f"run after the grid; rerun with --resume")
            runs.append(run)
    return GridRun(runs=runs, data=data, recipe=recipe, seconds=round(time.perf_counter() - started, 1),
                   main=ranks.main)


def _groups(cells: Sequence[Cell]) -> list[tuple[tuple[int, int], list[Cell]]]:
    """``cells`` grouped by split (spc, seed), in order."""
    groups: dict[tuple[int, int], list[Cell]] = {}
    for cell in cells:
        groups.setdefault((cell.spc, cell.seed), []).append(cell)
    return list(groups.items())

