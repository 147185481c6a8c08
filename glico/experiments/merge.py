"""``glico merge``: one table from several ``glico evaluate`` / ``glico ablate`` runs of the same setting.

A long grid is easier to run as several processes — one per seed, or the slow variants apart from
the fast ones (``--only``), on separate cores or machines — than as one. Every (spc, seed, variant)
run is seeded by itself, so a run's numbers do not depend on which other runs shared its process;
merging the pieces gives the table the single command would have written.

    glico ablate --table 2 ... --seeds 0 --out abl/s0
    glico ablate --table 2 ... --seeds 1,2 --out abl/s12
    glico merge abl/s0 abl/s12 --out abl/all

The pieces must agree on everything but the seeds, the SPCs, the variants (methods), the device and
the spelling of the data path (the data as loaded must agree: name, classes, test images, image
shape); an evaluate piece that runs no GLICO method may also differ in the GLICO-only settings (fit
budget, composition, replacement probability, t set), which it never reads. Together they must cover
the whole grid (every variant for every spc and seed); a (spc, seed, variant) that two pieces both ran
is refused rather than silently picked.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

__all__ = ["merge_results"]

# Settings the pieces of one table may differ in (everything else must be equal). The data spec is one of
# them because pieces run on other machines spell the path differently; the data as loaded (name,
# classes, test images, image shape: results["data"]) must still agree.
_FREE_ABLATE = {"seeds", "spcs", "device", "data"}
_FREE_EVALUATE = {"seeds", "spcs", "methods", "device", "data"}
# evaluate settings that only GLICO methods read: a piece that runs none of them may differ in these.
_GLICO_ONLY = {"glico_p", "glico_t", "glico_refresh", "fit_epochs", "fit_batch_size", "fit_oversample_to", "model"}
# Entries of the resolved recipe that only GLICO methods depend on.
_GLICO_ONLY_RECIPE = {"fit_steps"}


def _method_settings() -> dict[str, set[str]]:
    """evaluate settings read by some methods only -> those methods: two pieces may differ in a setting when
    one of them runs none of its methods, and the merged settings take it from a piece that does."""
    from glico.experiments.evaluate import GENERATIVE_METHODS

    return {"unlabeled": {"mixmatch"}, "fid": set(GENERATIVE_METHODS), "fid_images": set(GENERATIVE_METHODS)}


def _methods_of(results: dict) -> set[str]:
    """The methods a piece runs: evaluate's methods, or the policies of ablate's rows."""
    if "variants" in results and "settings" in results:
        return {v["policy"] for v in results["variants"]}
    return set(results["config"]["methods"])


def _settings_of(results: dict) -> dict:
    return results["settings"] if "variants" in results and "settings" in results else results["config"]


def _reader_differences(loaded: list[tuple[Path, dict]], p: Path, r: dict, kind: str) -> list[str]:
    """What ``r`` differs in from the first piece that shares a method-specific setting or a recipe entry with
    it (the comparison with the reference piece waives those when the reference lacks them)."""
    problems = []
    for k, readers in _method_settings().items():
        if readers & _methods_of(r):
            first = next(_settings_of(x) for _, x in loaded if readers & _methods_of(x))
            if first.get(k) != _settings_of(r).get(k):
                problems.append(f"{k}: {first.get(k)!r} vs {_settings_of(r).get(k)!r}")
    for k, v in r.get("recipe", {}).items():
        if k in ("steps_per_run", "fit_steps"):
            continue
        first = next(x for _, x in loaded if k in x.get("recipe", {}))
        if first["recipe"][k] != v:
            problems.append(f"recipe.{k}: {first['recipe'][k]!r} vs {v!r}")
    return problems


def _unread(a: dict, b: dict) -> set[str]:
    """The method-specific settings (:func:`_method_settings`) that one of the pieces ``a``, ``b`` never reads."""
    return {k for k, readers in _method_settings().items()
            if not (readers & _methods_of(a)) or not (readers & _methods_of(b))}


def _with_defaults(settings: dict, added_later: dict) -> dict:
    """``settings`` with the fields a later glico added filled in with the value older runs had."""
    return {**added_later, **settings}


def _runs_glico(results: dict) -> bool:
    """Whether the piece runs a method that reads the fit settings: a GLICO method, or ``cdcgan`` (fitted with
    GLICO's budget, replacing with its probability)."""
    from glico.experiments.evaluate import GLICO_METHODS

    return any(m in GLICO_METHODS or m == "cdcgan" for m in results["config"]["methods"])


def _load(path: str | Path) -> tuple[Path, dict]:
    p = Path(path)
    if p.is_dir():
        p = p / "results.json"
    if not p.is_file():
        raise FileNotFoundError(f"{path}: no results.json there; give a folder written by 'glico evaluate' / "
                                f"'glico ablate' or its results.json")
    try:
        results = json.loads(p.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{p}: not a readable results.json ({e})") from None
    if not isinstance(results, dict) or not isinstance(results.get("runs"), list):
        raise ValueError(f"{p}: not a results.json of 'glico evaluate' or 'glico ablate' (it has no list of runs)")
    from glico.names import canonical_names

    return p, canonical_names(results)  # parts named as today (f's 'wrn' is 'wrn-28-2')


def _kind(p: Path, results: dict) -> str:
    if "variants" in results and "settings" in results:
        return "ablate"
    if "config" in results:
        return "evaluate"
    raise ValueError(f"{p}: not a results.json of 'glico evaluate' or 'glico ablate'")


def _differences(a: dict, b: dict, free: set[str]) -> list[str]:
    keys = sorted((set(a) | set(b)) - free)
    return [f"{k}: {a.get(k)!r} vs {b.get(k)!r}" for k in keys if a.get(k) != b.get(k)]


def merge_results(inputs: Sequence[str | Path], out: str | Path | None = None) -> dict:
    """Merge the results of several runs of one ``glico evaluate`` or ``glico ablate`` setting.

    Args:
        inputs: result folders (or their ``results.json``), at least two, all from the same command.
        out: folder for the merged results.json, results.md and results.png (None: write nothing).

    Returns:
        The merged results, laid out as the single command would have written them, plus
        ``merged_from`` (the input files); the device setting lists every device the pieces ran on
        (``"cuda,cpu"``).

    Raises:
        ValueError: fewer than two inputs, inputs of different commands, settings (or the resolved
            recipe, e.g. the precision) that differ in anything but seeds / SPCs / variants (methods)
            / device, a run present twice, or a grid with holes (some variant not run for some
            spc and seed).
    """
    if len(inputs) < 2:
        raise ValueError(f"give at least two results to merge; got {len(inputs)}")
    from glico.experiments.ablations import SETTINGS_ADDED_LATER
    from glico.experiments.evaluate import CONFIG_ADDED_LATER

    loaded = [_load(p) for p in inputs]
    if out is not None:
        clash = [str(p) for p, _ in loaded if p.parent.resolve() == Path(out).resolve()]
        if clash:
            raise ValueError(f"--out {out} is one of the inputs ({clash[0]}); merging there would overwrite it. "
                             f"Give a new folder")
    kinds = {_kind(p, r) for p, r in loaded}
    if len(kinds) > 1:
        raise ValueError("cannot merge 'glico evaluate' results with 'glico ablate' results: "
                         + ", ".join(f"{p} ({_kind(p, r)})" for p, r in loaded))
    kind = kinds.pop()
    # Compare with (and lay the result out like) the first piece, or for evaluate the first that runs GLICO.
    ref = next((i for i, (_, r) in enumerate(loaded) if kind == "evaluate" and _runs_glico(r)), 0)
    first_path, first = loaded[ref]
    for p, r in loaded[:ref] + loaded[ref + 1:]:
        problems = []
        if r.get("glico_version") != first.get("glico_version"):
            problems.append(f"glico_version: {first.get('glico_version')!r} vs {r.get('glico_version')!r}")
        if kind == "ablate":
            problems += _differences(_with_defaults(first["settings"], SETTINGS_ADDED_LATER),
                                     _with_defaults(r["settings"], SETTINGS_ADDED_LATER),
                                     _FREE_ABLATE | _unread(first, r))
        else:
            free = (_FREE_EVALUATE if _runs_glico(r) else _FREE_EVALUATE | _GLICO_ONLY) | _unread(first, r)
            problems += _differences(_with_defaults(first["config"], CONFIG_ADDED_LATER),
                                     _with_defaults(r["config"], CONFIG_ADDED_LATER), free)
        problems += [f"data.{d}" for d in _differences(first["data"], r["data"], set())]
        # The recipe as resolved on each machine (e.g. precision 'auto' is bf16 on some GPUs, fp32 elsewhere).
        # Entries one piece lacks were added to results later; they follow from the settings compared above.
        a, b = first.get("recipe", {}), r.get("recipe", {})
        free_recipe = {"steps_per_run"} | (set(a) ^ set(b))
        if kind == "evaluate" and not _runs_glico(r):
            free_recipe |= _GLICO_ONLY_RECIPE
        problems += [f"recipe.{d}" for d in _differences(a, b, free_recipe)]
        problems = list(dict.fromkeys(problems + _reader_differences(loaded, p, r, kind)))
        if problems:
            raise ValueError(f"{p} was run with other settings than {first_path}, so their numbers do not belong in "
                             f"one table; differing: " + "; ".join(problems))
    key = "variant" if kind == "ablate" else "method"
    order = _name_order(loaded, kind)
    runs, seen = [], {}
    for p, r in loaded:
        for run in r["runs"]:
            ident = (run["spc"], run["seed"], run[key])
            if ident in seen:
                raise ValueError(f"spc {ident[0]}, seed {ident[1]}, {key} {ident[2]!r} is in both {seen[ident]} and {p}; "
                                 f"merge pieces that ran different seeds / {key}s")
            seen[ident] = p
            runs.append(run)
    runs.sort(key=lambda x: (x["spc"], x["seed"], order.index(x[key])))
    spcs = sorted({x["spc"] for x in runs})
    seeds = sorted({x["seed"] for x in runs})
    missing = [(n, sd, name) for n in spcs for sd in seeds for name in order if (n, sd, name) not in seen]
    if missing:
        listed = "; ".join(f"spc {n}, seed {sd}, {name!r}" for n, sd, name in missing[:6])
        raise ValueError(f"the pieces leave {len(missing)} run(s) of the grid out ({listed}{' ...' if len(missing) > 6 else ''}); "
                         f"a table needs every {key} for every spc and seed — run those and merge again")
    merged = _assemble(loaded, kind, key, runs, order, spcs, seeds, ref)
    merged["merged_from"] = [str(p) for p, _ in loaded]
    merged["seconds"] = round(sum(float(r.get("seconds", 0.0)) for _, r in loaded), 1)
    if out is not None:
        _write(merged, kind, Path(out))
    return merged


def _name_order(loaded: list[tuple[Path, dict]], kind: str) -> list[str]:
    """Rows in the order of the paper's table (ablate) or of first appearance."""
    if kind == "evaluate":
        return list(dict.fromkeys(m for _, r in loaded for m in r["config"]["methods"]))
    from glico.experiments.ablations import TABLES

    defs: dict[str, dict] = {}
    for p, r in loaded:
        for v in r["variants"]:
            if v["name"] in defs and defs[v["name"]] != v:
                raise ValueError(f"variant {v['name']!r} is defined differently in {p} than in an earlier input; "
                                 f"a row must mean the same composition in every piece")
            defs.setdefault(v["name"], v)
    names = list(defs)
    table = loaded[0][1]["settings"].get("table")
    if table in TABLES:
        paper_order = [v.name for v in TABLES[table]]
        names.sort(key=lambda n: paper_order.index(n) if n in paper_order else len(paper_order))
    return names


def _assemble(loaded, kind: str, key: str, runs, order, spcs, seeds, ref: int = 0) -> dict:
    """The merged results, in the layout of piece ``ref``: its settings with the union of SPCs,
    seeds (and, for evaluate, methods) and devices, the runs, their summary and the per-SPC budgets."""
    from glico.experiments.evaluate import aggregate

    first = loaded[ref][1]
    where = "settings" if kind == "ablate" else "config"
    steps: dict[str, Any] = {}
    for _, r in loaded:
        steps.update(r["recipe"]["steps_per_run"])
    settings = dict(first[where])
    recipe: dict[str, Any] = {}
    for _, r in loaded:  # recipe entries only some pieces have (e.g. MixMatch's settings) come from those pieces
        recipe.update({k: v for k, v in r["recipe"].items() if k not in first["recipe"]})
    for k, readers in _method_settings().items():  # from a piece whose methods read it
        reader = next((r[where] for _, r in loaded if readers & _methods_of(r)), None)
        if reader is not None:
            settings[k] = reader.get(k)
    merged = {
        **first,
        where: {**settings, "spcs": spcs, "seeds": seeds,
                "device": ",".join(dict.fromkeys(str(r[where]["device"]) for _, r in loaded))},
        "recipe": {**recipe, **first["recipe"], "steps_per_run": {str(s): steps[str(s)] for s in spcs}},
        "runs": runs,
        "summary": aggregate(runs, key=key),
    }
    if kind == "ablate":
        from glico.experiments.ablations import ablation_markdown

        defs = {v["name"]: v for _, r in loaded for v in r["variants"]}
        merged["variants"] = [defs[n] for n in order]
        merged["markdown"] = ablation_markdown(merged)
    else:
        merged[where]["methods"] = order
    return merged


def _write(merged: dict, kind: str, out: Path) -> None:
    from glico.experiments.evaluate import EvaluateConfig, markdown_table, plot_results

    out.mkdir(parents=True, exist_ok=True)
    if kind == "ablate":
        md, key = merged["markdown"], "variant"
        title = f"{merged['title']} ({merged['data']['name']}, {merged['settings']['classifier']})"
    else:
        cfg = merged["config"]
        md = markdown_table(merged["summary"], EvaluateConfig(**{**cfg, "spcs": tuple(cfg["spcs"]),
                                                                 "seeds": tuple(cfg["seeds"]),
                                                                 "methods": tuple(cfg["methods"])}))
        key, title = "method", f"{merged['data']['name']}, {cfg['classifier']}"
    (out / "results.json").write_text(json.dumps(merged, indent=2))
    (out / "results.md").write_text(md)
    plot_results(merged["summary"], out / "results.png", title=title, key=key)

