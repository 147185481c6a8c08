"""glico evaluate: aggregation against closed forms, and the command end to end on tiny budgets."""
import json
import math

import pytest
import torch

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


# --- downstream classifier names -----------------------------------------------------------------

def test_any_wide_resnet_by_name_and_clear_errors():
    from glico.classifiers import WideResNet
    from glico.experiments.evaluate import downstream_classifier

    net = downstream_classifier("wrn-16-1")(3, 7, 32)
    assert isinstance(net, WideResNet) and (net.depth, net.widen_factor, net.num_classes) == (16, 1, 7)
    net = downstream_classifier("wrn-10-3")(1, 4, 8)
    assert (net.depth, net.widen_factor, net.in_channels) == (10, 3, 1)
    with pytest.raises(ValueError, match="DEPTH = 6n \\+ 4 >= 10"):
        downstream_classifier("wrn-15-2")
    with pytest.raises(ValueError, match="unknown classifier 'resnet18'; valid: wrn-28-10.*wrn-DEPTH-K"):
        downstream_classifier("resnet18")
    with pytest.raises(ValueError, match="unknown classifier"):
        EvaluateConfig(data="digits", classifier="wrn-16")


def test_cli_refuses_a_bad_classifier_before_any_work(capsys, tmp_path):
    with pytest.raises(SystemExit):
        main(["evaluate", "--data", "digits", "--spc", "2", "--classifier", "wrn-16-0", "--out", str(tmp_path / "x")])
    assert "K >= 1" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


# --- scoring on held-out training images ---------------------------------------------------------

def test_validation_scores_on_held_out_training_images_never_the_test_set(tmp_path, monkeypatch):
    import glico.experiments.evaluate as ev
    import glico.experiments.grid as grid
    from glico.data import load_data, small_sample_split, validation_split

    scored = []
    real = grid.evaluate

    def spy(clf, images, labels, **kw):
        scored.append(images.clone())
        return real(clf, images, labels, **kw)

    monkeypatch.setattr(grid, "evaluate", spy)
    cfg = EvaluateConfig(data="digits", spcs=(3,), seeds=(0, 1), methods=("baseline",), classifier="weak", epochs=1,
                         validation=6, schedule="cosine")
    results = ev.run_evaluation(cfg, tmp_path / "val", progress=False, echo=lambda s: None)
    data = load_data("digits")
    assert results["scored_on"] == "validation" and results["data"]["n_validation"] == 60
    assert len(scored) == 2  # one scoring per (seed, method)
    for seed, images in zip((0, 1), scored):
        held, idx = validation_split(data.train, 3, seed, 6)
        _, chosen = small_sample_split(data.train, 3, seed)
        assert torch.equal(images, held.images) and not set(idx.tolist()) & set(chosen.tolist())
    assert "validation images (6 per class held out of the training set; not the test set)" in \
        (tmp_path / "val" / "results.md").read_text()
    assert "cosine schedule" in results["recipe"]["optimizer"]


# --- the fit cache --------------------------------------------------------------------------------

def test_fit_cache_gives_the_same_model_without_fitting_again(tmp_path, monkeypatch):
    import glico.training
    from glico.data import load_data, small_sample_split
    from glico.experiments.evaluate import fit_glico

    train, _ = small_sample_split(load_data("digits").train, 3, 0)
    kw = dict(seed=0, epochs=3, batch_size=16, progress=False, cache_dir=tmp_path / "fits")
    model = {"loss": "pixel", "code_dim": 8}
    first, info = fit_glico(model, train, **kw)
    assert len(list((tmp_path / "fits").iterdir())) == 1 and "cached" not in info

    def no_fit(*a, **k):
        raise AssertionError("a cached fit must not be fitted again")

    monkeypatch.setattr(glico.training, "fit", no_fit)
    again, info2 = fit_glico(model, train, **kw)
    assert info2 == {**info, "cached": True}
    for (name, p), q in zip(first.state_dict().items(), again.state_dict().values()):
        assert torch.equal(p, q), name
    assert torch.equal(first.codes.weight, again.codes.weight) and torch.equal(first.labels, again.labels)
    # Anything the fit depends on changes the file: here the seed (and so a fit is attempted).
    with pytest.raises(AssertionError, match="must not be fitted again"):
        fit_glico(model, train, **{**kw, "seed": 1})


def test_validation_and_max_test_together_are_refused():
    with pytest.raises(ValueError, match="max_test .* would have no effect"):
        EvaluateConfig(data="digits", validation=5, max_test=100)


@pytest.mark.parametrize("bad", [0, -3, 1.5, True])
def test_glico_refresh_must_be_a_positive_number_of_steps(bad):
    with pytest.raises(ValueError, match="glico_refresh must be None or a number of steps >= 1"):
        EvaluateConfig(data="digits", glico_refresh=bad)


def test_a_cell_does_not_depend_on_the_cells_before_it_in_its_process(tmp_path):
    # glico+autoaugment shares glico's fit; its GLICO draws must still be those it makes alone (as on resume,
    # or on another rank): one augmenter per cell, not one per split.
    from glico.experiments.evaluate import run_evaluation

    common = dict(data="digits", spcs=(2,), seeds=(0,), classifier="weak", epochs=2, fit_epochs=2, max_test=60,
                  model={"loss": "laplacian+pixel", "code_dim": 16})
    both = run_evaluation(EvaluateConfig(**common, methods=("glico", "glico+autoaugment")), tmp_path / "both",
                          progress=False, echo=lambda s: None)
    alone = run_evaluation(EvaluateConfig(**common, methods=("glico+autoaugment",)), tmp_path / "alone",
                           progress=False, echo=lambda s: None)
    after, first = both["runs"][1], alone["runs"][0]
    assert after["method"] == first["method"] == "glico+autoaugment"
    assert (after["top1"], after["top5"]) == (first["top1"], first["top5"])


def test_a_device_that_is_not_there_is_refused_with_what_is(tmp_path, capsys):
    from glico.cli import main

    for command in (["evaluate", "--methods", "baseline"], ["ablate", "--table", "2", "--only", "Baseline"]):
        assert main(command + ["--data", "digits", "--spc", "2", "--device", "bogus", "--out", str(tmp_path / "x")]) == 2
        err = capsys.readouterr().err
        assert "unknown device 'bogus'" in err and "'cuda:N'" in err


def test_ablate_on_validation_images_says_so(tmp_path):
    from glico.experiments.ablations import TABLES, run_ablation

    rows = [v for v in TABLES["2"] if v.name == "Baseline"]
    results = run_ablation(rows, data="digits", spcs=(2,), seeds=(0,), classifier="weak", epochs=1, validation=3,
                           progress=False, echo=lambda s: None)
    assert results["scored_on"] == "validation" and results["data"]["n_validation"] == 30
    assert "validation: 3 held-out training images per class, not the test set" in results["markdown"]
    assert "test images" not in results["markdown"]
