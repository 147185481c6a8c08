"""The comparison table and plot of docs/reproducing.md from `glico evaluate` piece folders.

    python make_table.py OUTDIR SPC:GLOB [SPC:GLOB ...]
    e.g. python make_table.py . "10:runs/final/spc10-s*-*" "25:runs/final/spc25-s*-*"

Reads every piece's runs.jsonl; writes OUTDIR/spc{N}.md and .json (per method: mean ± STE over seeds,
per-seed top-1, the paired difference from the baseline and from the best policy with all three seeds)
and OUTDIR/comparison.png (one panel per SPC: bars mean ± STE, dots per seed).
"""
import glob
import json
import math
import statistics as st
import sys
from pathlib import Path

ORDER = ["baseline", "cutout", "random-erasing", "autoaugment", "randaugment", "trivialaugment", "mixup", "cutmix",
         "glico", "glico+autoaugment", "glico+trivialaugment", "glico+cutmix"]
POLICIES = ORDER[1:8]


def mean_ste(v):
    return st.fmean(v), (st.stdev(v) / math.sqrt(len(v)) if len(v) > 1 else float("nan"))


def pm(x, e):
    return f"{x:.2f}" if e != e else f"{x:.2f} ± {e:.2f}"


def table(spc, pattern, out):
    runs = {}
    for f in sorted(glob.glob(pattern + "/runs.jsonl")):
        for line in Path(f).read_text().splitlines()[1:]:
            r = json.loads(line)
            runs.setdefault(r["method"], {})[r["seed"]] = r
    full = [m for m in POLICIES if len(runs.get(m, {})) == 3]
    best = max(full, key=lambda m: st.fmean(r["top1"] for r in runs[m].values())) if full else None

    def paired(m, ref):
        if ref is None or ref not in runs or ref == m:
            return ""
        g = [runs[m][s]["top1"] - runs[ref][s]["top1"] for s in sorted(runs[m]) if s in runs[ref]]
        if not g:
            return ""
        gm, gs = mean_ste(g)
        return f"{gm:+.2f} ± {gs:.2f}" if len(g) > 1 else f"{gm:+.2f} (1 seed)"

    lines = [f"| method | top-1 (%) | top-5 (%) | top-1 per seed (0 / 1 / 2) | vs baseline (paired) | "
             f"vs {best or 'the best policy (none with 3 seeds yet)'} (paired) |", "|---|---|---|---|---|---|"]
    res = {"spc": spc, "best_policy": best, "methods": {}}
    for m in [m for m in ORDER if m in runs]:
        seeds = sorted(runs[m])
        t1, t5 = [runs[m][s]["top1"] for s in seeds], [runs[m][s]["top5"] for s in seeds]
        (a, b), (c, d) = mean_ste(t1), mean_ste(t5)
        per = " / ".join(f"{runs[m][s]['top1']:.2f}" if s in runs[m] else "–" for s in (0, 1, 2))
        n = f" (n={len(seeds)})" if len(seeds) < 3 else ""
        lines.append(f"| {m}{n} | {pm(a, b)} | {pm(c, d)} | {per} | {paired(m, 'baseline')} | {paired(m, best)} |")
        res["methods"][m] = {"seeds": seeds, "top1": t1, "top5": t5, "top1_mean": a, "top1_ste": b,
                             "top5_mean": c, "top5_ste": d, "seconds": [runs[m][s]["seconds"] for s in seeds]}
    (out / f"spc{spc}.json").write_text(json.dumps(res, indent=1))
    (out / f"spc{spc}.md").write_text("\n".join(lines) + "\n")
    return res


def plot(results, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(results), figsize=(6.5 * len(results), 4.6), squeeze=False)
    for ax, d in zip(axes[0], results):
        ms = list(d["methods"])
        colors = ["#888888" if m == "baseline" else "#1f77b4" if m.startswith("glico") else "#ff7f0e" for m in ms]
        ste = [0 if d["methods"][m]["top1_ste"] != d["methods"][m]["top1_ste"] else d["methods"][m]["top1_ste"] for m in ms]
        ax.bar(range(len(ms)), [d["methods"][m]["top1_mean"] for m in ms], yerr=ste, color=colors, capsize=3)
        for i, m in enumerate(ms):
            ax.plot([i] * len(d["methods"][m]["top1"]), d["methods"][m]["top1"], "k.", ms=4)
        ax.set_xticks(range(len(ms)))
        ax.set_xticklabels([m + ("" if len(d["methods"][m]["seeds"]) == 3 else f" (n={len(d['methods'][m]['seeds'])})")
                            for m in ms], rotation=60, ha="right", fontsize=8)
        ax.set_ylabel("top-1 accuracy (%), 10 000 test images")
        ax.set_ylim(0, None)
        ax.set_title(f"CIFAR-10, {d['spc']} per class, WRN-10-1 CPU recipe (mean ± STE, dots: seeds)", fontsize=9)
        if "baseline" in d["methods"]:
            ax.axhline(d["methods"]["baseline"]["top1_mean"], color="#888888", lw=0.8, ls="--")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    out = Path(sys.argv[1])
    results = [table(int(a.split(":", 1)[0]), a.split(":", 1)[1], out) for a in sys.argv[2:]]
    plot(results, out / "comparison.png")
