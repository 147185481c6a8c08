"""``glico ablate``: which part of GLICO matters on this data? The paper's ablations as data.

An ablation is a list of :class:`Variant` s. A variant is a GLICO composition by names (overrides of
:class:`glico.names.ModelSpec` fields on top of a shared base), the downstream batch policy that uses
it, and where its unlabelled images come from (none, the test set, or more training images). The
paper's Tables II–V and Fig. 7 are such lists, in :data:`TABLES`; its published numbers for them are in
:data:`PAPER`. :func:`run_ablation` runs any list through the grid engine ``glico evaluate`` uses
(:func:`glico.experiments.grid.run_grid`, with a :class:`~glico.experiments.grid.GridConfig` recipe):
for each SPC and seed one split, for each variant one GLICO fit (shared by the variants that need the
same fit) and one downstream classifier with the same budget; top-1 / top-5 on the test set; mean ±
standard error over seeds.

    from glico.experiments.ablations import TABLES, Variant, run_ablation

    mine = [Variant("GLICO"), Variant("Baseline", model=None, policy="baseline"),
            Variant("Laplacian loss", model={"loss": "laplacian"})]
    run_ablation(mine, data="digits", spcs=(5,), seeds=(0, 1, 2), classifier="weak", out="abl")
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass, fields
from pathlib import Path
from types import MappingProxyType
from typing import Any, Callable, Mapping, Sequence

from glico import __version__, distributed
from glico.experiments.downstream import OVERSAMPLE_TO
from glico.experiments.evaluate import aggregate, plot_results
# The rows and their fits, used and re-exported here (they lived in this module before the engine was shared).
from glico.experiments.grid import (  # noqa: F401
    SAMPLING_ONLY, GridConfig, Variant, _slug, build_variant, check_device, fit_variant, recorded, run_grid, variant_spec,
    variant_unlabeled,
)
from glico.experiments.policies import ERASING_SCALE

log = logging.getLogger(__name__)

__all__ = ["Variant", "PaperRow", "PaperTable", "TABLES", "PAPER", "run_ablation", "variant_spec", "build_variant",
           "variant_unlabeled", "fit_variant", "ablation_markdown", "ablation_config"]


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
        Variant("f = WRN-28-2", model={"classifier": "wrn-28-2"}),
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


# ------------------------------------------------------------------------------ the API
#: run_ablation settings added after results were first written, with the value older grids ran with.
SETTINGS_ADDED_LATER: dict[str, Any] = {
    "schedule": "step", "oversample_to": OVERSAMPLE_TO, "fit_oversample_to": 0,
    # Since the grid engine is shared with glico evaluate, ablate reads the whole recipe.
    "glico_t": None, "glico_refresh": None, "test_fraction": None, "validation": None, "baseline_p": None,
    "cutout_size": None, "erasing_scale": list(ERASING_SCALE), "pretrained": None, "unlabeled": None, "fid": None,
    "fid_images": 1000,
}

#: run_ablation's defaults where they differ from GridConfig's: the paper's ablations are at 25 per class.
_ABLATION_DEFAULTS = {"spcs": (25,)}


def ablation_config(**settings: Any) -> GridConfig:
    """The :class:`~glico.experiments.grid.GridConfig` of ``run_ablation``'s keyword settings (its fields;
    ``base_model`` is ``model``), with the ablations' defaults (25 images per class)."""
    if "base_model" in settings:
        if "model" in settings:
            raise ValueError("give base_model or model (the same setting), not both")
        settings["model"] = settings.pop("base_model")
    settings["model"] = dict(settings.get("model") or {})
    known = {f.name for f in fields(GridConfig)}
    bad = sorted(set(settings) - known)
    if bad:
        raise TypeError(f"run_ablation got unknown setting(s) {', '.join(bad)}; valid: base_model, "
                        f"{', '.join(sorted(known - {'model'}))}")
    return GridConfig(**{**_ABLATION_DEFAULTS, **settings})


def run_ablation(variants: Sequence[Variant], config: GridConfig | None = None, *, out: str | Path | None = None,
                 table: str | None = None, progress: bool = True, echo: Callable[[str], None] | None = None,
                 resume: bool = False, overwrite: bool = False, fit_cache: str | Path | None = None,
                 data_parallel: bool = False, **settings: Any) -> dict:
    """Run an ablation: every variant on the same splits with the same budgets; mean ± STE over seeds.

    For each SPC and seed: one small-sample split; for each variant, its GLICO model fitted on that
    split (one fit shared by the variants whose fit would be the same: same composition, apart from
    the sampling-only interpolator, and same unlabelled images; e.g. GLICO, Lerp and GLICO +
    AutoAugment), then a downstream classifier trained with the variant's method and scored on the
    test set (or validation images). Everything the variants do not change (split, downstream recipe and
    budget, fit budget, base composition) is the same for all of them: the grid engine of ``glico
    evaluate`` (:func:`glico.experiments.grid.run_grid`) runs it.

    Args:
        variants: the rows (:class:`Variant`; names unique), e.g. ``TABLES["2"]``.
        config: the recipe (:class:`~glico.experiments.grid.GridConfig`: data, spcs, seeds, classifier,
            budgets, base composition ``model``, protocol); or give its fields as keyword ``settings``
            instead (``base_model`` for ``model``; ``spcs`` defaults to 25 here), e.g.
            ``run_ablation(TABLES["2"], data="digits", spcs=(5,), classifier="weak", out="abl")``.
        out: folder for results.json, results.md, results.png and sample grids (None: write nothing).
        table: the key of :data:`PAPER` whose published numbers the markdown shows beside the results.
        progress: progress bars.
        echo: where progress lines go (default: the ``glico.experiments.ablations`` logger, INFO).
        resume: keep the finished runs in ``out/runs.jsonl`` (written as each run ends, so an
            interruption loses only the run in progress) and run only the missing ones; the settings
            must be the same (the device may differ). Without it, an ``out`` holding finished runs is
            refused (``overwrite=True`` replaces them).
        fit_cache, data_parallel: as :func:`glico.experiments.grid.run_grid`'s.

    Returns:
        The results (as written to results.json): ``runs`` (per spc, seed and variant: top1, top5 in %,
        seconds, steps, fit info), ``summary`` (per spc and variant: mean and STE over seeds),
        ``variants``, ``settings``, ``data``, ``paper`` (when ``table`` has published numbers), and
        ``markdown``.
    """
    if config is not None and settings:
        raise ValueError(f"give config or keyword settings ({', '.join(settings)}), not both")
    cfg = config if config is not None else ablation_config(**settings)
    variants = list(variants)
    say = echo or log.info
    out = Path(out) if out is not None else None
    names = [v.name for v in variants]
    plain = recorded(cfg)
    settings_ = {"base_model": plain.pop("model"), "table": table, **plain}

    def heading(ds) -> str:
        k = len(ds.train.class_names)
        scored = (f"{ds.test.images.shape[0]} test images" if cfg.validation is None else
                  f"scored on {cfg.validation} held-out training images per class")
        rows = f"{len(variants)} variant{'' if len(variants) == 1 else 's'}"
        return (f"glico ablate: {rows} ({', '.join(names)}) on {ds.name}, {k} classes, {scored}; spc "
                f"{list(cfg.spcs)}, seeds {list(cfg.seeds)}, downstream {cfg.classifier}, {cfg.epochs} epochs, GLICO "
                f"fit {cfg.fit_epochs} epochs, on {cfg.device}")

    # The device may change on resume, the arithmetic it resolves to may not; nor may anything but the version.
    grid = run_grid(variants, cfg, out, command="ablate", key="variant",
                    header={"command": "ablate", "glico_version": __version__, "settings": settings_,
                            "variants": [v.to_dict() for v in variants],
                            "resolved_precision": check_device(cfg)},
                    free={"settings.device", "glico_version"},
                    added_later={f"settings.{k}": v for k, v in SETTINGS_ADDED_LATER.items()},
                    samples_name=lambda v, spc, seed: f"samples-{_slug(v.name)}-spc{spc}-seed{seed}.png",
                    heading=heading, progress=progress, echo=say, resume=resume, overwrite=overwrite,
                    fit_cache=None if fit_cache is None else Path(fit_cache), data_parallel=data_parallel)
    if not grid.main:
        distributed.barrier()  # rank 0 writes the results
        return json.loads((out / "results.json").read_text()) if out is not None else {}
    ds = grid.data
    c, h, w = ds.train.images.shape[1:]
    base = settings_["base_model"]
    summary = aggregate(grid.runs, key="variant")
    results = {
        "glico_version": __version__,
        "table": table,
        "title": TITLES.get(table or "", "ablation"),
        "settings": settings_,
        "variants": [{**v.to_dict(), "composition": v.describe(),
                      "spec": None if v.model is None else {**base, **v.model}} for v in variants],
        "recipe": grid.recipe,
        "scored_on": "test" if cfg.validation is None else "validation",
        "data": {"name": ds.name, "classes": len(ds.train.class_names),
                 "n_test": 0 if ds.test is None else int(ds.test.images.shape[0]), "image_shape": [c, h, w],
                 **({} if cfg.validation is None else {"n_validation": cfg.validation * len(ds.train.class_names)})},
        "runs": grid.runs,
        "summary": summary,
        "paper": _paper_dict(table),
        "seconds": grid.seconds,
    }
    results["markdown"] = ablation_markdown(results)
    if out is not None:
        (out / "results.json").write_text(json.dumps(results, indent=2))
        (out / "results.md").write_text(results["markdown"])
        plot_results(summary, out / "results.png", title=f"{results['title']} ({ds.name}, {cfg.classifier})",
                     key="variant")
    distributed.barrier()
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
    fid = any("fid" in r for r in summary)  # measured for the generative rows only
    head = "| variant | composition | " + " | ".join(f"top-1 @ {n} spc | top-5 @ {n} spc"
                                                    + (f" | FID @ {n} spc" if fid else "") for n in spcs)
    sep = "|---|---|" + ("---|---|" + "---|" * fid) * len(spcs)
    if paper:
        head += " | paper top-1 | paper top-5"
        sep += "---|---|"
    defaults = ModelSpec(image_shape=(1, 8, 8), num_classes=1)
    changed = [f"{k}={v}" for k, v in s["base_model"].items() if getattr(defaults, k) != v]
    one_seed = len(s["seeds"]) == 1
    spread = f"one seed ({s['seeds'][0]}), so no standard error" if one_seed else f"mean ± STE over seeds {s['seeds']}"
    lines = [f"## {results['title']}", "",
             f"Accuracy (%) on {s['data']} ("
             + (f"{results['data']['n_test']} test images" if not s.get("validation") else
                f"validation: {s['validation']} held-out training images per class, not the test set")
             + f"), downstream {s['classifier']} "
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
                cells += ["–", "–"] + ["–"] * fid
            else:
                cells += [_pm(r["top1"], None if one_seed else r["top1_ste"]),
                          _pm(r["top5"], None if one_seed else r["top5_ste"])]
                if fid:
                    cells.append(f"{r['fid']:.1f}" + ("" if one_seed else f" ± {r['fid_ste']:.1f}") if "fid" in r
                                 else "–")
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
    if fid:
        notes.append(f"- FID: {s['fid_images']} samples of each generative row against {s['fid_images']} training "
                     f"images, features of {s['fid']}" + (" (random weights: comparable within this table only)"
                                                          if s["fid"] == "random-inception" else "") + ".")
    if s.get("unlabeled") is not None:
        notes.append(f"- MixMatch's unlabelled images: {s['unlabeled']}"
                     + (" (the test images: transductive)." if s["unlabeled"] == "test" else "."))
    if notes:
        lines += [""] + list(dict.fromkeys(notes))
    return "\n".join(lines) + "\n"

