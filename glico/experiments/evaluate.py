"""``glico evaluate``: does GLICO help on this data, and more than plain augmentation?

For each SPC and seed: one small-sample split; for each method, a classifier trained on that split
with the same budget and recipe (only the batch policy differs); top-1 / top-5 on the full test set.
GLICO is fitted once per (SPC, seed) and reused by every method that needs it. Results are
aggregated as mean ± standard error over seeds and written as ``results.json``, ``results.md`` and
``results.png``. The methods are the rows of a grid run by :func:`glico.experiments.grid.run_grid`, the
engine ``glico ablate`` shares.
"""
from __future__ import annotations

import json
import logging
import math
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from glico import __version__, distributed
from glico.experiments.downstream import OVERSAMPLE_TO
# The grid's parts, used and re-exported here (they lived in this module before the engine was shared).
from glico.experiments.grid import (  # noqa: F401
    CPU_RECIPE_FLAGS, CPU_SMALL_PARAMETERS, CPU_WARN_SECONDS, FID_EXTRACTORS, GENERATIVE_METHODS, GLICO_METHODS,
    OTHER_METHODS, PRETRAINABLE, SCHEDULES, UNLABELED_HELP, GridConfig, GridInterrupted, Variant, check_device,
    check_pretrained, check_rows, check_unlabeled, cpu_time_warning, downstream_classifier, downstream_config,
    estimate_step_seconds, fid_extractor, fid_reference, fid_samples, fit_cdcgan_for, fit_glico, generated_fid,
    grid_rows, method_names, optimizer_text, recorded, run_grid, train_and_score, unlabeled_images,
)
from glico.experiments.policies import ERASING_SCALE

log = logging.getLogger(__name__)


#: Named method lists: ``table1`` is the paper's Table I (labelled data only, so MixMatch's unlabelled images
#: are the split's own).
PRESETS: dict[str, dict[str, Any]] = {
    "table1": {"methods": ("baseline", "glico", "mixmatch", "cutout", "random-erasing", "cosine-loss"),
               "unlabeled": "split"},
}


@dataclass(frozen=True)
class EvaluateConfig(GridConfig):
    """Everything an evaluation needs (recorded in results.json so it can be rerun): the grid's recipe
    (:class:`glico.experiments.grid.GridConfig`, whose fields are documented there) and the methods.

    Args:
        methods: the methods to compare (:func:`method_names`): batch policies
            (:func:`glico.experiments.policies.policy_names`) and the comparison systems of
            :data:`OTHER_METHODS` (``mixmatch``, ``cosine-loss``, ``cdcgan``). Each is a row
            (:func:`method_variants`): the GLICO methods sample from a model of the base composition ``model``.
    """

    methods: tuple[str, ...] = ("baseline", "glico")

    def __post_init__(self) -> None:
        valid = method_names()
        bad = [m for m in self.methods if m not in valid]
        if bad:
            raise ValueError(f"unknown method(s) {', '.join(bad)}; valid: {', '.join(valid)}")
        super().__post_init__()
        object.__setattr__(self, "methods", tuple(self.methods))
        check_rows(method_variants(self.methods), self)


def method_variants(methods: tuple[str, ...]) -> list[Variant]:
    """The rows of an evaluation: each method a :class:`~glico.experiments.grid.Variant` of its own name,
    the GLICO methods with the base composition (one fit per split, shared by all of them)."""
    return [Variant(m, model={} if m in GLICO_METHODS else None, policy=m) for m in methods]


#: EvaluateConfig fields added after results were first written, with the value a grid written before each
#: existed ran with (resume and merge read a missing field as that value).
CONFIG_ADDED_LATER: dict[str, Any] = {
    "schedule": "step", "test_fraction": None, "oversample_to": OVERSAMPLE_TO, "fit_oversample_to": 0,
    "baseline_p": None, "cutout_size": None, "erasing_scale": list(ERASING_SCALE), "pretrained": None,
    "unlabeled": None, "fid": None, "fid_images": 1000,
}


def mean_ste(values: list[float]) -> tuple[float, float]:
    """Mean and standard error of the mean (sample std / sqrt(n); 0 for one value)."""
    m = statistics.fmean(values)
    return m, (statistics.stdev(values) / math.sqrt(len(values)) if len(values) > 1 else 0.0)


def run_evaluation(cfg: EvaluateConfig, out: Path, progress: bool = True, echo: Callable[[str], None] = print,
                   resume: bool = False, fit_cache: Path | None = None, overwrite: bool = False,
                   data_parallel: bool = False) -> dict:
    """Run the evaluation grid (:func:`glico.experiments.grid.run_grid`) and write results.json, results.md
    and results.png under ``out``.

    Every finished run is kept in ``out/runs.jsonl`` at once (:mod:`glico.experiments.runlog`), so an
    interruption loses only the run in progress; ``resume=True`` keeps those runs and runs only the
    missing ones (same settings required; the device may differ). Without it, a folder that already
    holds finished runs is refused. ``fit_cache``: a folder where GLICO fits are kept and found again
    (:func:`fit_glico`'s ``cache_dir``), so that evaluations that differ only downstream (another
    replacement probability, recipe or method list) fit GLICO once. Under torchrun the ranks share the
    grid (``data_parallel``: as :func:`~glico.experiments.grid.run_grid`'s); rank 0 writes the results,
    and every rank returns them.

    Returns:
        The results dictionary written to results.json.
    """
    out = Path(out)
    config = recorded(cfg)

    def heading(data) -> str:
        k = len(data.train.class_names)
        n_test = 0 if data.test is None else int(data.test.images.shape[0])
        scoring = (f"{n_test} test images" if cfg.validation is None else
                   f"scored on {cfg.validation} held-out training images per class (validation; the test set is not "
                   f"used)")
        return (f"glico evaluate: {data.name}, {k} classes, {scoring}; spc {list(cfg.spcs)}, seeds {list(cfg.seeds)}, "
                f"methods {', '.join(cfg.methods)}, classifier {cfg.classifier} on {cfg.device}")

    # The device may change on resume, the arithmetic it resolves to may not; nor may anything but the version.
    grid = run_grid(method_variants(cfg.methods), cfg, out, command="evaluate", key="method",
                    header={"command": "evaluate", "glico_version": __version__, "config": config,
                            "resolved_precision": check_device(cfg)},
                    free={"config.device", "glico_version"},
                    added_later={f"config.{k}": v for k, v in CONFIG_ADDED_LATER.items()},
                    samples_name=lambda v, spc, seed: f"samples-spc{spc}-seed{seed}.png", heading=heading,
                    progress=progress, echo=echo, resume=resume, overwrite=overwrite, fit_cache=fit_cache,
                    data_parallel=data_parallel)
    if not grid.main:
        distributed.barrier()  # rank 0 writes the results
        return json.loads((out / "results.json").read_text())
    data = grid.data
    c, h, w = data.train.images.shape[1:]
    summary = aggregate(grid.runs)
    results = {
        "glico_version": __version__,
        "config": config,
        "scored_on": "test" if cfg.validation is None else "validation",
        "recipe": grid.recipe,
        "data": {"name": data.name, "classes": len(data.train.class_names),
                 "n_test": 0 if data.test is None else int(data.test.images.shape[0]), "image_shape": [c, h, w],
                 **({} if cfg.validation is None else {"n_validation": cfg.validation * len(data.train.class_names)})},
        "runs": grid.runs,
        "summary": summary,
        "seconds": grid.seconds,
    }
    (out / "results.json").write_text(json.dumps(results, indent=2))
    (out / "results.md").write_text(markdown_table(summary, cfg))
    plot_results(summary, out / "results.png", title=f"{data.name}, {cfg.classifier}")
    echo((out / "results.md").read_text())
    distributed.barrier()
    return results


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


