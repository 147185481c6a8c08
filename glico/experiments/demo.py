"""``glico demo``: GLICO against the baseline on scikit-learn's digits, over several seeds.

For each seed: a small-sample split of the digits' training images, a GLICO fit on it, and the same
classifier (default a WRN-10-1, the CPU recipe of docs/reproducing.md) trained twice on it with the same
budget, without and with GLICO augmentation, each several times (``restarts``: own initialisation, batch
order and draws; a seed's accuracy is their mean); all are scored on the digits' test images. One
training's accuracy is mostly luck at 5 images per class (a few points either way with its seed alone),
and so is one split's, so the demo runs several restarts and several seeds (default 0, 1, 2), reports the
mean and standard error of each method and of the per-seed difference, and draws them. Fits and
trainings run as tasks in parallel processes, one intra-op thread each (8 x 8 images gain nothing from
more threads).

The settings (``DemoConfig``'s defaults) were chosen on validation images held out of the digits'
training set (split seeds 100-104; see docs/reproducing.md, "The demo"), never on the test images.
"""
from __future__ import annotations

import json
import logging
import multiprocessing
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from glico.experiments.downstream import TrainConfig
from glico.experiments.evaluate import mean_ste
from glico.experiments.grid import SCHEDULES, optimizer_text
from glico.names import downstream_classifier
from glico.interpolation import check_t_values

log = logging.getLogger(__name__)

METHODS = ("baseline", "glico")


@dataclass(frozen=True)
class DemoConfig:
    """What the demo runs (defaults: the settings chosen on validation images).

    Args:
        seeds: split and training seeds; one GLICO fit and two classifiers per seed.
        spc: labelled images per class.
        fit_epochs: GLICO fit budget (epochs over the split, batches of up to 128 images).
        classifier: the downstream classifier, any name ``glico evaluate --classifier`` takes (``weak``,
            ``wrn-10-1``, ...); the same network and budget for both methods.
        steps: classifier training steps (the same for both methods).
        batch_size: classifier batch size.
        lr: the classifier's initial SGD learning rate.
        weight_decay: the classifier's weight decay.
        schedule: ``"cosine"`` or ``"step"`` (x0.2 at 30/60/80 % of the steps).
        glico_p: probability that a training example is replaced by a GLICO sample.
        glico_t: the set the interpolation factor t is drawn from.
        code_dim: d, the length of each code.
        validation: score on this many held-out training images per class instead of the test set (for
            choosing the settings above; None: the test set).
        restarts: classifiers trained per method and seed, each with its own initialisation, batch order
            and augmentation draws (restart 0 uses the seed itself); a seed's accuracy is their mean. On
            5 images per class one training's accuracy moves by a few points with its seed alone, as much
            as GLICO's gain, so one restart per seed measures mostly that noise.
    """

    seeds: tuple[int, ...] = (0, 1, 2)
    spc: int = 5
    fit_epochs: int = 1500
    classifier: str = "wrn-10-1"
    steps: int = 632
    batch_size: int = 64
    lr: float = 0.1
    weight_decay: float = 5e-3
    schedule: str = "cosine"
    glico_p: float = 0.5
    glico_t: tuple[float, ...] = (0.1, 0.2, 0.3, 0.4)
    code_dim: int = 128
    validation: int | None = None
    restarts: int = 6

    def __post_init__(self) -> None:
        if not self.seeds or len(set(self.seeds)) != len(self.seeds) or min(self.seeds) < 0:
            raise ValueError(f"seeds must be distinct whole numbers >= 0; got {self.seeds}")
        if min(self.spc, self.fit_epochs, self.steps, self.batch_size, self.code_dim, self.restarts) < 1 or not self.lr > 0:
            raise ValueError("spc, fit_epochs, steps, batch_size, code_dim, restarts and lr must be positive")
        if not self.weight_decay >= 0:
            raise ValueError(f"weight_decay must be >= 0; got {self.weight_decay}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {', '.join(SCHEDULES)}; got {self.schedule!r}")
        downstream_classifier(self.classifier)  # an unknown name fails here, before any work
        if not 0.0 <= self.glico_p <= 1.0:
            raise ValueError(f"glico_p must be a probability in [0, 1]; got {self.glico_p}")
        check_t_values(self.glico_t)


def _split(cfg: DemoConfig, seed: int):
    from glico.data import load_data, small_sample_split, validation_split

    data = load_data("digits")
    train, _ = small_sample_split(data.train, cfg.spc, seed)
    held = data.test if cfg.validation is None else validation_split(data.train, cfg.spc, seed, cfg.validation)[0]
    return train, held, len(data.train.class_names)


def _spec(cfg: DemoConfig, train, k: int):
    from glico.names import ModelSpec

    # Weight-free reconstruction loss: the perceptual loss needs ImageNet weights (a download).
    return ModelSpec(image_shape=tuple(train.images.shape[1:]), num_classes=k, loss="laplacian+pixel",
                     code_dim=cfg.code_dim)


def restart_seed(seed: int, restart: int) -> int:
    """The classifier seed of restart ``restart`` for split seed ``seed`` (restart 0: the seed itself)."""
    from glico._rng import substream

    return seed if restart == 0 else substream(seed, restart) % 2**31


def _fit_seed(cfg: DemoConfig, seed: int, pictures: Path | None, progress: bool) -> dict[str, Any]:
    """The GLICO fit of one seed's split; its pictures go to ``pictures`` if given."""
    from glico.checkpoint import model_state
    from glico.names import build_model
    from glico.training import FitConfig, fit

    t0 = time.perf_counter()
    train, held, k = _split(cfg, seed)
    torch.manual_seed(seed)
    model = build_model(_spec(cfg, train, k))
    history = fit(model, train.images, train.labels,
                  config=FitConfig(epochs=cfg.fit_epochs, batch_size=128, seed=seed, progress=progress))
    files: dict[str, str] = {}
    if pictures is not None:
        from glico.viz import plot_losses, write_fit_pictures

        files = write_fit_pictures(model, pictures, train.labels, train_images=train.images)
        files["losses"] = str(plot_losses(history, pictures / "losses.png"))
    return {"seed": seed, "state": model_state(model), "n_train": int(train.images.shape[0]),
            "n_scored": int(held.images.shape[0]), "files": files,
            "fit": {"seconds": round(history.seconds, 1), "reconstruction_first": history.reconstruction[0],
                    "reconstruction_last": history.reconstruction[-1]},
            "seconds": round(time.perf_counter() - t0, 1)}


def _train_one(cfg: DemoConfig, seed: int, restart: int, method: str, state: dict | None,
               progress: bool) -> dict[str, Any]:
    """One classifier of one seed: ``method`` (baseline or glico, from the fitted ``state``), restart
    ``restart``; returns its scores."""
    from glico.augment import GLICOAugmenter
    from glico.checkpoint import load_model_state
    from glico.experiments.downstream import evaluate, train_classifier
    from glico.experiments.policies import build_policy
    from glico.names import build_model

    t0 = time.perf_counter()
    train, held, k = _split(cfg, seed)
    c, h, _ = train.images.shape[1:]
    rs = restart_seed(seed, restart)
    augmenter = None
    if method == "glico":
        model = build_model(_spec(cfg, train, k))
        load_model_state(model, state)
        augmenter = GLICOAugmenter(model, p=cfg.glico_p, seed=rs, t_values=cfg.glico_t)
    tcfg = TrainConfig(steps=cfg.steps, batch_size=min(cfg.batch_size, train.images.shape[0]), lr=cfg.lr,
                       weight_decay=cfg.weight_decay, cosine=cfg.schedule == "cosine", crop_pad=1, flip=False,
                       seed=rs, progress=progress)
    torch.manual_seed(rs)
    clf = downstream_classifier(cfg.classifier)(c, k, h)
    policy = build_policy(method, num_classes=k, glico_augmenter=augmenter, seed=rs, image_size=h)
    train_classifier(clf, train.images, train.labels, tcfg, policy=policy,
                     desc=f"{method} seed {seed}" + (f" restart {restart}" if cfg.restarts > 1 else ""))
    scores = evaluate(clf, held.images, held.labels)
    return {"seed": seed, "restart": restart, "method": method, "top1": scores["top1"], "top5": scores["top5"],
            "seconds": round(time.perf_counter() - t0, 1)}


def _seed_record(fit: dict[str, Any], runs: list[dict[str, Any]]) -> dict[str, Any]:
    """One seed's entry of the report: each method's mean over restarts, and the gain."""
    by = {m: sorted((r for r in runs if r["method"] == m), key=lambda r: r["restart"]) for m in METHODS}
    accuracy = {m: sum(r["top1"] for r in by[m]) / len(by[m]) for m in METHODS}
    top5 = {m: sum(r["top5"] for r in by[m]) / len(by[m]) for m in METHODS}
    return {"seed": fit["seed"], "accuracy": accuracy, "top5": top5, "gain": accuracy["glico"] - accuracy["baseline"],
            "restarts": {m: [r["top1"] for r in by[m]] for m in METHODS},
            "n_train": fit["n_train"], "n_scored": fit["n_scored"], "fit": fit["fit"],
            "seconds": round(fit["seconds"] + sum(r["seconds"] for r in runs), 1), "files": fit["files"]}


def _worker_init(threads: int) -> None:
    torch.set_num_threads(threads)


def _mean_ste(values: list[float]) -> dict[str, float]:
    m, ste = mean_ste(values)
    return {"mean": m, "ste": ste}


def run_demo(cfg: DemoConfig, out: str | Path, jobs: int = 2, progress: bool = True,
             echo: Callable[[str], None] = print, threads_per_job: int = 1) -> dict[str, Any]:
    """Run the demo for every seed of ``cfg`` and write ``report.json``, ``accuracy.png`` and the first
    seed's pictures (``samples.png``, ``interpolation.png``, ``reconstructions.png``, ``losses.png``) to
    ``out``.

    Args:
        cfg: the settings.
        out: the output folder (created).
        jobs: processes, each running one fit or one classifier training at a time with
            ``threads_per_job`` intra-op threads (1: everything in this process, with its thread setting,
            and progress bars).
        progress: progress bars (only when ``jobs`` is 1).
        echo: where the per-seed and summary lines go.

    Returns:
        The report written to ``report.json``: per seed, each method's top-1 / top-5 and the gain; over
        seeds, each method's mean and STE and the gain's.
    """
    from glico import __version__

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    first = cfg.seeds[0]
    n_tasks = len(cfg.seeds) * (1 + len(METHODS) * cfg.restarts)
    jobs = max(1, min(int(jobs), n_tasks))
    results: dict[int, dict] = {}

    def report_seed(fit: dict, runs: list[dict]) -> None:
        r = results[fit["seed"]] = _seed_record(fit, runs)
        a = r["accuracy"]
        over = f" (mean of {cfg.restarts} classifiers each)" if cfg.restarts > 1 else ""
        echo(f"  seed {r['seed']}: baseline {a['baseline']:.2f} %, GLICO {a['glico']:.2f} %{over}: "
             f"{r['gain']:+.2f} points (fit {r['fit']['seconds']:.0f} s, seed {r['seconds']:.0f} s of CPU)")

    trainings = [(r, m) for r in range(cfg.restarts) for m in METHODS]  # of each seed

    def state_for(fit: dict, method: str) -> dict | None:
        return fit["state"] if method == "glico" else None  # the baseline needs no GLICO model

    if jobs == 1:
        for seed in cfg.seeds:
            fit = _fit_seed(cfg, seed, out if seed == first else None, progress)
            report_seed(fit, [_train_one(cfg, seed, r, m, state_for(fit, m), progress) for r, m in trainings])
    else:
        # One task per fit and per classifier, so the cores stay busy however the seeds and restarts
        # divide among them; a seed's classifiers are queued as soon as its fit is done.
        ctx = multiprocessing.get_context("spawn")  # a fresh interpreter: no inherited thread pools
        with ProcessPoolExecutor(max_workers=jobs, mp_context=ctx, initializer=_worker_init,
                                 initargs=(threads_per_job,)) as pool:
            fits = {pool.submit(_fit_seed, cfg, s, out if s == first else None, False): s for s in cfg.seeds}
            pending: dict[Any, int] = {}
            done_fits: dict[int, dict] = {}
            runs: dict[int, list[dict]] = {s: [] for s in cfg.seeds}
            waiting = set(fits)
            while waiting:
                finished, waiting = wait(waiting, return_when=FIRST_COMPLETED)
                for fut in finished:
                    if fut in fits:
                        fit = done_fits[fits[fut]] = fut.result()
                        for r, m in trainings:
                            job = pool.submit(_train_one, cfg, fit["seed"], r, m, state_for(fit, m), False)
                            pending[job] = fit["seed"]
                            waiting.add(job)
                    else:
                        seed = pending.pop(fut)
                        runs[seed].append(fut.result())
                        if len(runs[seed]) == len(trainings):
                            report_seed(done_fits[seed], runs[seed])
    per_seed = [results[s] for s in cfg.seeds]
    summary = {m: _mean_ste([r["accuracy"][m] for r in per_seed]) for m in METHODS}
    summary["gain"] = _mean_ste([r["gain"] for r in per_seed])
    scored = "test" if cfg.validation is None else "validation"
    report = {
        "glico_version": __version__,
        "data": "digits",
        "scored_on": scored,
        "settings": {**asdict(cfg), "seeds": list(cfg.seeds), "glico_t": list(cfg.glico_t)},
        "model": {"loss": "laplacian+pixel", "code_dim": cfg.code_dim, "rest": "the paper's defaults"},
        "classifier": {"name": cfg.classifier, "steps": cfg.steps,
                       "batch_size": min(cfg.batch_size, per_seed[0]["n_train"]), "lr": cfg.lr,
                       "optimizer": optimizer_text(cfg.schedule, cfg.weight_decay),
                       "standard_augmentation": "random crop (pad 1), no flip (digits are not mirror-symmetric)"},
        "per_seed": per_seed,
        "summary": summary,
        "accuracy": {m: summary[m]["mean"] for m in METHODS},
        "files": {**per_seed[0]["files"], "accuracy": str(plot_demo(per_seed, summary, out / "accuracy.png", scored))},
        "seconds": round(time.perf_counter() - t0, 1),
    }
    (out / "report.json").write_text(json.dumps(report, indent=2))
    return report


def plot_demo(per_seed: list[dict], summary: dict, path: Path, scored: str = "test") -> Path:
    """Left: both methods' accuracy per seed and the means ± STE (the axis starts at 0, so bars are to
    scale). Right: GLICO minus the baseline per seed and its mean ± STE, against a zero line, with each
    restart's own difference as a dot where there are several (the spread a single training has)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [str(r["seed"]) for r in per_seed] + ["mean"]
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(9, 3.6), gridspec_kw={"width_ratios": [3, 2]})
    width = 0.38
    n = len(per_seed)
    for i, (m, colour) in enumerate(zip(METHODS, ("#8c8c8c", "#1f77b4"))):
        dx = (i - 0.5) * width
        ax.bar([j + dx for j in range(n)], [r["accuracy"][m] for r in per_seed], width, color=colour,
               label="GLICO" if m == "glico" else "baseline")
        ax.bar([n + dx], [summary[m]["mean"]], width, yerr=[summary[m]["ste"]], capsize=3, color=colour)
    ax.set_ylim(0, 112)
    ax.set_yticks(range(0, 101, 20))
    ax.set_xticks(range(len(labels)), labels)
    ax.set(xlabel="seed", ylabel=f"top-1 accuracy (%, {scored} images)")
    ax.legend(fontsize=8, loc="upper center", ncol=2, frameon=False)
    gains = [r["gain"] for r in per_seed]
    g = summary["gain"]
    bx.bar(range(len(gains)), gains, 0.6, color="#1f77b4")
    pairs = [(j, gl - b) for j, r in enumerate(per_seed) if len(r.get("restarts", {}).get("glico", [])) > 1
             for b, gl in zip(r["restarts"]["baseline"], r["restarts"]["glico"])]
    if pairs:
        bx.scatter([j for j, _ in pairs], [d for _, d in pairs], s=12, color="black", zorder=3,
                   label="one restart")
        bx.legend(fontsize=8, loc="best", frameon=False)
    bx.bar([len(gains)], [g["mean"]], 0.6, yerr=[g["ste"]], capsize=3, color="#0b3d66")
    bx.axhline(0.0, color="black", lw=0.8)
    bx.set_xticks(range(len(labels)), labels)
    bx.set(xlabel="seed", ylabel="GLICO - baseline (points)", title=f"{g['mean']:+.2f} ± {g['ste']:.2f} (mean ± STE)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
