"""glico evaluate: aggregation against closed forms, and the command end to end on tiny budgets."""
import json
import math

import pytest

from glico.cli import main
from glico.experiments.evaluate import EvaluateConfig, aggregate, markdown_table, mean_ste


def test_mean_ste_closed_form():
    m, s = mean_ste([1.0, 2.0, 6.0])
    assert m == pytest.approx(3.0)
    assert s == pytest.approx(math.sqrt(7.0) / math.sqrt(3.0))  # sample std sqrt(7), n = 3
    assert mean_ste([4.0]) == (4.0, 0.0)


def test_aggregate_groups_by_spc_and_method_over_seeds():
    runs = [
        {"spc": 5, "seed": s, "method": m, "top1": t1, "top5": t1 + 10}
        for s, (m, t1) in enumerate([("baseline", 50.0), ("glico", 60.0)] * 1)
    ] + [
        {"spc": 5, "seed": 1, "method": "baseline", "top1": 54.0, "top5": 64.0},
        {"spc": 5, "seed": 1, "method": "glico", "top1": 62.0, "top5": 72.0},
    ]
    summary = aggregate(runs)
    by = {r["method"]: r for r in summary}
    assert by["baseline"]["top1"] == pytest.approx(52.0) and by["baseline"]["top1_ste"] == pytest.approx(2.0)
    assert by["glico"]["top5"] == pytest.approx(71.0)
    table = markdown_table(summary, EvaluateConfig(data="digits", seeds=(0, 1)))
    assert "| baseline | 52.00 ± 2.00 |" in table


def test_unknown_method_lists_valid_ones():
    with pytest.raises(ValueError, match="valid: baseline"):
        EvaluateConfig(data="digits", methods=("baseline", "magic"))


def test_evaluate_end_to_end_on_digits(tmp_path, capsys):
    out = tmp_path / "ev"
    argv = ["evaluate", "--data", "digits", "--spc", "2,3", "--seeds", "0,1", "--methods", "baseline,cutout,glico",
            "--classifier", "weak", "--epochs", "1", "--fit-epochs", "2", "--loss", "pixel", "--code-dim", "8",
            "--max-test", "200", "--out", str(out), "--quiet"]
    assert main(argv) == 0
    results = json.loads((out / "results.json").read_text())
    assert len(results["runs"]) == 2 * 2 * 3
    assert {(r["spc"], r["method"]) for r in results["summary"]} == {(s, m) for s in (2, 3) for m in ("baseline", "cutout", "glico")}
    assert all(0 <= r["top1"] <= r["top5"] <= 100 for r in results["runs"])
    assert results["data"]["n_test"] == 200
    # the same split and budget for every method of a seed
    steps = {(r["spc"], r["seed"]): set() for r in results["runs"]}
    for r in results["runs"]:
        steps[(r["spc"], r["seed"])].add(r["steps"])
    assert all(len(v) == 1 for v in steps.values())
    rows = [l for l in (out / "results.md").read_text().splitlines() if l.startswith("| ") and not l.startswith("| method")]
    assert [r.split(" |")[0][2:] for r in rows] == ["baseline", "cutout", "glico"]
    assert (out / "results.png").stat().st_size > 0


def test_evaluate_bad_method_is_refused_by_the_parser(capsys):
    with pytest.raises(SystemExit):
        main(["evaluate", "--data", "digits", "--spc", "2", "--methods", "baseline,nope", "--out", "x"])
    assert "unknown method(s) nope" in capsys.readouterr().err
