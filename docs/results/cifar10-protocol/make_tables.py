"""The protocol tables of docs/reproducing.md ("The paper's protocol against the defaults, measured").

    python make_tables.py RUNS_DIR OUT_DIR

RUNS_DIR holds the `glico evaluate` folders of the issue 16 runs (their names say what they are:
val-p1-s100, val-p05-s101, test-p1-s0, test-p05-s2, repro-cutout-s0 (cutout at p = 1, seed 0),
test-fit400-s1, test-fit2000-s1, val-fit400, val-fit2000-s100, val-erase033, val-erase040,
test-baseline); every folder's runs.jsonl is read. Writes
OUT_DIR/protocol.json (every run's top-1 / top-5 / steps / seconds, grouped) and OUT_DIR/protocol.md
(the tables: mean ± STE over seeds and the paired per-seed difference).
"""
import json
import math
import statistics as st
import sys
from pathlib import Path

POLICIES = ["cutout", "autoaugment", "randaugment", "trivialaugment", "mixup", "cutmix"]


def mean_ste(v):
    return st.fmean(v), (st.stdev(v) / math.sqrt(len(v)) if len(v) > 1 else float("nan"))


def pm(v):
    m, e = mean_ste(v)
    return f"{m:.2f}" if e != e else f"{m:.2f} ± {e:.2f}"


def paired(a, b):
    """Mean ± STE of a[s] - b[s] over the seeds both have."""
    seeds = sorted(set(a) & set(b))
    if not seeds:
        return "", []
    d = [a[s] - b[s] for s in seeds]
    m, e = mean_ste(d)
    return (f"{m:+.2f} ± {e:.2f}" if len(d) > 1 else f"{m:+.2f} (1 seed)"), seeds


def read(runs_dir: Path):
    """{arm: {method: {seed: run}}}, an arm being the folder name without its seed suffix."""
    arms: dict = {}
    for f in sorted(runs_dir.glob("*/runs.jsonl")):
        name = f.parent.name
        arm = name.rsplit("-s", 1)[0] if name.rsplit("-s", 1)[-1].isdigit() else name
        if arm == "repro-cutout":
            arm = "test-p1"
        header, *lines = f.read_text().splitlines()
        for line in lines:
            r = json.loads(line)
            arms.setdefault(arm, {}).setdefault(r["method"], {})[r["seed"]] = {
                "top1": r["top1"], "top5": r["top5"], "steps": r["steps"], "seconds": r["seconds"],
                "fit_steps": (r.get("fit") or {}).get("steps"), "fit_seconds": (r.get("fit") or {}).get("seconds")}
    return arms


def top1(arms, arm, method):
    return {s: r["top1"] for s, r in arms.get(arm, {}).get(method, {}).items()}


def p_rows(arms, stage: str, digits: int) -> list[str]:
    """One table row per policy: p = 1 and p = 0.5 (mean ± STE), their paired difference, the per-seed values."""
    rows = []
    for m in POLICIES:
        a, b = top1(arms, f"{stage}-p1", m), top1(arms, f"{stage}-p05", m)
        if not a and not b:
            continue
        d, _ = paired(b, a)
        per = [" / ".join(f"{v[s]:.{digits}f}" for s in sorted(v)) for v in (a, b)]
        rows.append(f"| {m} | {pm(list(a.values())) if a else ''} | {pm(list(b.values())) if b else ''} | {d} | "
                    f"{per[0]} | {per[1]} |")
    return rows


def fit_rows(arms, stage: str, where: str, base: dict) -> list[str]:
    """The fit-budget table of one stage: the 400-step fit and the oversampled one, GLICO alone."""
    arm400, arm2000 = f"{stage}-fit400", f"{stage}-fit2000"
    f400, f2000 = top1(arms, arm400, "glico"), top1(arms, arm2000, "glico")
    if not f400 and not f2000:
        return []
    rows = [f"\n**GLICO's fit budget** ({where}; GLICO alone, the CPU recipe's p 0.75, t 0.1–0.5):\n",
            "| fit | fit steps | fit s (mean) | glico top-1 | per seed | vs the 400-step fit (paired) |",
            "|---|---|---|---|---|---|"]
    for arm, label, v in ((arm400, "400 epochs, one pass each (the CPU recipe)", f400),
                          (arm2000, "200 epochs oversampled to 1000 images (`--fit-oversample-to 1000`)", f2000)):
        if not v:
            continue
        runs = arms[arm]["glico"].values()
        steps = sorted({r["fit_steps"] for r in runs})
        secs = [r["fit_seconds"] for r in runs if r["fit_seconds"] is not None]
        d = paired(v, f400)[0] if arm == arm2000 else ""
        rows.append(f"| {label} | {', '.join(map(str, steps))} | {st.fmean(secs):.0f} | {pm(list(v.values()))} | "
                    f"{' / '.join(f'{v[k]:.2f}' for k in sorted(v))} | {d} |")
    for arm, v in ((arm400, f400), (arm2000, f2000)):
        d = paired(v, base)[0] if base else ""
        if d:
            rows.append(f"\nglico vs the baseline (paired), {arm}: {d}")
    return rows


def main(runs_dir: Path, out: Path) -> None:
    arms = read(runs_dir)
    md = []
    md.append("**Validation** (100 held-out training images per class, split seeds 100 and 101): each augmentation "
              "on every example (p = 1, the default) or each example replaced with p = 0.5 (`--baseline-p 0.5`).\n")
    md.append("| method | p = 1 | p = 0.5 | p = 0.5 − p = 1 (paired) | per seed, p = 1 (100 / 101) | per seed, p = 0.5 |")
    md.append("|---|---|---|---|---|---|")
    md += p_rows(arms, "val", 1)
    md.append("\n**Test set** (10 000 images, seeds 0, 1, 2):\n")
    md.append("| method | p = 1 (default) | p = 0.5 (the paper's protocol) | p = 0.5 − p = 1 (paired) | per seed, p = 1 | per seed, p = 0.5 |")
    md.append("|---|---|---|---|---|---|")
    base = top1(arms, "test-baseline", "baseline")
    if base:
        md.append(f"| baseline (no policy) | {pm(list(base.values()))} | | | {' / '.join(f'{base[s]:.2f}' for s in sorted(base))} | |")
    md += p_rows(arms, "test", 2)
    e33, e40 = top1(arms, "val-erase033", "random-erasing"), top1(arms, "val-erase040", "random-erasing")
    if e33 or e40:
        md.append("\n**Random Erasing's area** (validation, split seeds 100 and 101; p 0.5, its own):\n")
        md.append("| area | top-1 | per seed (100 / 101) | vs 2–33 % (paired) |")
        md.append("|---|---|---|---|")
        for label, v in (("2–33 % (torchvision's, the default)", e33), ("2–40 % (the Random Erasing paper's)", e40)):
            if v:
                d = paired(v, e33)[0] if v is e40 else ""
                md.append(f"| {label} | {pm(list(v.values()))} | {' / '.join(f'{v[k]:.1f}' for k in sorted(v))} | {d} |")
    for stage, where in (("val", "validation, split seeds 100 and 101"), ("test", "test set, seeds 0, 1, 2")):
        md += fit_rows(arms, stage, where, base if stage == "test" else {})
    out.mkdir(parents=True, exist_ok=True)
    (out / "protocol.json").write_text(json.dumps(arms, indent=1, sort_keys=True))
    (out / "protocol.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
