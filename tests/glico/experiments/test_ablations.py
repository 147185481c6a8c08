"""glico ablate: the paper's tables are built from the right parts, their unlabelled images go where
they should, and every table runs end to end on digits with tiny budgets."""
import json
import re
import urllib.error
from pathlib import Path

import pytest
import torch

from glico.classifiers import VGG19, CosineLoss, CrossEntropy, LatentMLP, ResNet50, WeakCNN, WideResNet
from glico.cli import main
from glico.data import load_data, small_sample_split
from glico.experiments import ablations, grid
from glico.experiments.ablations import PAPER, TABLES, Variant, build_variant, fit_variant, run_ablation, variant_unlabeled
from glico.interpolation import Lerp, Slerp
from glico.latents import FeatureInit, HypercubeInit, RandomSphere
from glico.names import ModelSpec, build_model
from glico.noise import AdditiveNoise, ConcatNoise, NoNoise

DOCS = Path(__file__).resolve().parents[3] / "docs"
# The tiny, weight-free composition every test uses (the perceptual loss would need ImageNet VGG weights).
BASE = {"loss": "pixel", "code_dim": 8, "feature_weights": "random"}
TINY = ["--epochs", "1", "--fit-epochs", "2", "--classifier", "weak", "--loss", "pixel", "--code-dim", "8",
        "--max-test", "100", "--feature-weights", "random", "--quiet"]


@pytest.fixture(scope="module")
def digits():
    return load_data("digits", max_test=30)


def parts(model) -> dict[str, type | None]:
    return {"noise": type(model.noise), "interpolator": type(model.interpolator), "init": type(model.init),
            "classifier": None if model.classifier is None else type(model.classifier),
            "class_loss": type(model.class_loss)}


REFERENCE = {"noise": ConcatNoise, "interpolator": Slerp, "init": RandomSphere, "classifier": WeakCNN,
             "class_loss": CrossEntropy}
# What each GLICO variant changes relative to the paper's GLICO, and nothing else.
CHANGES = {
    ("2", "GLICO"): {},
    ("2", "No Classifier"): {"classifier": None},
    ("2", "No Noise"): {"noise": NoNoise},
    ("2", "Lerp"): {"interpolator": Lerp},
    ("2", "Transductive"): {},
    ("3", "GLICO"): {},
    ("3", "Latent Classifier"): {"classifier": LatentMLP},
    ("3", "Hypercube Init"): {"init": HypercubeInit},
    ("3", "ResNet Init"): {"init": FeatureInit},
    ("3", "Additive Noise"): {"noise": AdditiveNoise},
    ("3", "Cosine Loss"): {"class_loss": CosineLoss},
    ("4", "GLICO"): {},
    ("4", "GLICO + AutoAugment"): {},
    ("5", "GLICO"): {},
    ("5", "GLICO + 10/class unlabelled"): {},
    ("5", "GLICO + 350/class unlabelled"): {},
    ("fig7", "f = weak CNN"): {},
    ("fig7", "f = WRN-28-2"): {"classifier": WideResNet},
    ("fig7", "f = ResNet-50"): {"classifier": ResNet50},
    ("fig7", "f = VGG-19"): {"classifier": VGG19},
}
NO_GLICO = {("2", "Baseline"): "baseline", ("4", "Baseline"): "baseline", ("4", "AutoAugment"): "autoaugment",
            ("5", "Baseline"): "baseline"}


def test_every_row_of_every_table_is_accounted_for():
    rows = {(t, v.name) for t, vs in TABLES.items() for v in vs}
    assert rows == set(CHANGES) | set(NO_GLICO)
    assert [v.name for v in TABLES["2"]] == ["GLICO", "Baseline", "No Classifier", "No Noise", "Lerp", "Transductive"]
    assert [v.name for v in TABLES["3"]][1:] == ["Latent Classifier", "Hypercube Init", "ResNet Init",
                                                 "Additive Noise", "Cosine Loss"]


@pytest.mark.parametrize("table,name", sorted(CHANGES))
def test_glico_variants_are_built_from_the_right_parts(table, name):
    variant = next(v for v in TABLES[table] if v.name == name)
    model = build_variant(variant, (1, 8, 8), 10, BASE)
    assert parts(model) == {**REFERENCE, **CHANGES[(table, name)]}
    if name == "ResNet Init":
        # the paper's "ResNet init": a ResNet-50 (bottleneck blocks, 6 in layer3), not a ResNet-18
        net = model.init.network.network
        assert type(net.layer3[0]).__name__ == "Bottleneck" and len(net.layer3) == 6


@pytest.mark.parametrize("table,name", sorted(NO_GLICO))
def test_rows_without_glico_fit_nothing(table, name):
    variant = next(v for v in TABLES[table] if v.name == name)
    assert variant.model is None and not variant.uses_glico and variant.policy == NO_GLICO[(table, name)]
    with pytest.raises(ValueError, match="no GLICO model"):
        build_variant(variant, (1, 8, 8), 10, BASE)


def test_unlabelled_sources_and_policies_of_the_tables():
    by = {(t, v.name): v for t, vs in TABLES.items() for v in vs}
    assert by["2", "Transductive"].transductive and not by["2", "GLICO"].transductive
    assert by["4", "GLICO + AutoAugment"].policy == "glico+autoaugment" and by["4", "GLICO"].policy == "glico"
    assert by["4", "GLICO"].transductive and by["4", "GLICO + AutoAugment"].transductive  # as the paper measured it
    assert [v.extra_unlabeled_per_class for v in TABLES["5"]] == [0, 0, 10, 350]
    assert not any(v.transductive for v in TABLES["5"])


def test_paper_numbers_name_rows_of_their_tables():
    for table, paper in PAPER.items():
        assert set(paper.rows) <= {v.name for v in TABLES[table]}, table
    assert PAPER["2"].rows["GLICO"].top1 == 43.84 and PAPER["2"].rows["GLICO"].top5_ste == 0.07
    assert PAPER["2"].rows["Transductive"].top1 == 44.79
    assert PAPER["3"].rows["Hypercube Init"].top5 == 70.89 and PAPER["3"].rows["Cosine Loss"].top1_ste == 0.27
    assert set(PAPER["2"].rows) == {v.name for v in TABLES["2"]}


def test_variant_validation():
    with pytest.raises(ValueError, match="unknown model field.*valid: generator"):
        Variant("x", model={"nosie": "none"})
    with pytest.raises(ValueError, match="needs a GLICO model"):
        Variant("x", model=None, policy="glico")
    with pytest.raises(ValueError, match="does not use GLICO"):
        Variant("x", model={"noise": "none"}, policy="cutout")
    with pytest.raises(ValueError, match="no effect"):
        Variant("x", model=None, policy="baseline", transductive=True)
    with pytest.raises(ValueError, match="unknown policy"):
        Variant("x", policy="magic")
    v = Variant("x", model={"noise": "none"})
    with pytest.raises(TypeError):
        v.model["noise"] = "concat"  # read-only: a table defined once cannot be changed by a caller
    with pytest.raises(ValueError, match="unique"):
        run_ablation([v, Variant("x")], data="digits", spcs=(2,), seeds=(0,), out=None)


def test_transductive_fit_reconstructs_the_test_images(digits):
    train, _ = small_sample_split(digits.train, 2, 0)
    trans = next(v for v in TABLES["2"] if v.name == "Transductive")
    unlabeled, info = variant_unlabeled(trans, digits, 2, 0)
    assert torch.equal(unlabeled, digits.test.images) and info == {"n_test": 30}
    model, info = fit_variant(trans, digits, train, spc=2, seed=0, base_model=BASE, fit_epochs=1, progress=False)
    assert model.codes.num_codes == 20 + 30 and info["n_unlabeled"] == 30
    assert (model.labels[:20] >= 0).all() and (model.labels[20:] == -1).all()
    plain, _ = fit_variant(TABLES["2"][0], digits, train, spc=2, seed=0, base_model=BASE, fit_epochs=1, progress=False)
    assert plain.codes.num_codes == 20


def test_semi_supervised_rows_add_unlabelled_training_images_outside_the_split(digits):
    spc, seed = 2, 0
    train, chosen = small_sample_split(digits.train, spc, seed)
    row = {v.name: v for v in TABLES["5"]}
    extra, info = variant_unlabeled(Variant("m", extra_unlabeled_per_class=3), digits, spc, seed)
    more, _ = variant_unlabeled(Variant("m", extra_unlabeled_per_class=5), digits, spc, seed)
    assert extra.shape == (30, 1, 8, 8) and info == {"extra_per_class": 3}
    flat = digits.train.images.flatten(1)
    where = [int((flat == x.flatten()).all(1).nonzero()[0]) for x in extra]
    assert not set(where) & set(chosen.tolist())  # disjoint from the labelled split
    assert {tuple(x.flatten().tolist()) for x in extra} <= {tuple(x.flatten().tolist()) for x in more}  # nested
    assert torch.bincount(digits.train.labels[where], minlength=10).tolist() == [3] * 10  # per class
    # 350 per class is more than digits has: capped at what every class has left after the split
    capped, info = variant_unlabeled(row["GLICO + 350/class unlabelled"], digits, spc, seed)
    left = int(digits.train.class_counts().min()) - spc
    assert info["extra_per_class"] == left and capped.shape[0] == 10 * left
    model, info = fit_variant(row["GLICO + 10/class unlabelled"], digits, train, spc=spc, seed=seed, base_model=BASE,
                              fit_epochs=1, progress=False)
    assert model.codes.num_codes == 20 + 100 and (model.labels[20:] == -1).all() and info["n_unlabeled"] == 100


def _table_rows(md: str) -> list[list[str]]:
    rows = [l for l in md.splitlines() if l.startswith("| ") and not l.startswith("| variant")]
    return [[c.strip() for c in r.strip("|").split("|")] for r in rows]


@pytest.mark.parametrize("table", ["2", "3", "5"])
def test_table_runs_end_to_end_on_digits(table, tmp_path):
    out = tmp_path / f"t{table}"
    assert main(["ablate", "--table", table, "--data", "digits", "--spc", "2", "--seeds", "0", "--out", str(out)] + TINY) == 0
    results = json.loads((out / "results.json").read_text())
    names = [v.name for v in TABLES[table]]
    assert [r["variant"] for r in results["runs"]] == names
    assert all(0 <= r["top1"] <= r["top5"] <= 100 for r in results["runs"])
    assert len({r["steps"] for r in results["runs"]}) == 1  # one budget for every row
    assert results["settings"]["base_model"]["loss"] == "pixel" and results["data"]["n_test"] == 100
    rows = _table_rows((out / "results.md").read_text())
    assert [r[0] for r in rows] == names
    for row in rows:  # the paper's numbers beside ours where the paper has them
        paper = PAPER[table].rows.get(row[0])
        assert row[-2] == (f"{paper.top1:.2f} ± {paper.top1_ste:.2f}" if paper else "–")
    assert (out / "results.png").stat().st_size > 0
    if table == "2":
        fits = {r["variant"]: r["fit"] for r in results["runs"]}
        assert fits["Baseline"] is None and fits["Transductive"]["n_unlabeled"] == 100 and "n_unlabeled" not in fits["GLICO"]
    if table == "5":
        fits = {r["variant"]: r["fit"] for r in results["runs"]}
        assert fits["GLICO + 10/class unlabelled"]["extra_per_class"] == 10
        assert "only" in (out / "results.md").read_text()  # the capped 350/class is reported


def test_table4_shares_one_fit_between_glico_and_glico_autoaugment(tmp_path, monkeypatch):
    calls = []
    real = grid.fit_glico

    def counting(*args, **kwargs):
        calls.append(kwargs["unlabeled"].shape[0])
        return real(*args, **kwargs)

    monkeypatch.setattr(grid, "fit_glico", counting)
    out = tmp_path / "t4"
    assert main(["ablate", "--table", "4", "--data", "digits", "--spc", "2", "--seeds", "0,1", "--out", str(out)] + TINY) == 0
    assert calls == [100, 100]  # one transductive fit per seed, used by both GLICO rows
    results = json.loads((out / "results.json").read_text())
    assert len(results["runs"]) == 2 * 4
    s = {r["variant"]: r for r in results["summary"]}
    assert list(s) == ["Baseline", "GLICO", "AutoAugment", "GLICO + AutoAugment"] and s["GLICO"]["seeds"] == [0, 1]
    md = (out / "results.md").read_text()
    assert "mean ± STE over seeds [0, 1]" in md and "| 56.31 ± 0.02 | 80.66 ± 0.04 |" in md


def test_lerp_row_uses_glicos_fit_with_linear_interpolation(digits, tmp_path, monkeypatch):
    # The interpolator acts only when sampling, so GLICO and Lerp share one fit per split; each row must
    # still sample with its own interpolator, and the shared fit must give what a fit of its own gives.
    fits, used = [], []
    real_fit, real_train = grid.fit_glico, grid.train_and_score

    def counting(*args, **kwargs):
        fits.append(args[0])
        return real_fit(*args, **kwargs)

    def recording(policy, factory, train, test, cfg, *, augmenter=None, **kw):
        used.append(None if augmenter is None else type(augmenter.model.interpolator))
        return real_train(policy, factory, train, test, cfg, augmenter=augmenter, **kw)

    monkeypatch.setattr(grid, "fit_glico", counting)
    monkeypatch.setattr(grid, "train_and_score", recording)
    rows = [v for v in TABLES["2"] if v.name in ("GLICO", "Lerp")]
    kw = dict(data=digits, spcs=(2,), seeds=(0,), classifier="weak", epochs=1, fit_epochs=2, base_model=BASE,
              progress=False, echo=lambda s: None)
    both = run_ablation(rows, out=tmp_path / "both", **kw)
    assert len(fits) == 1 and "interpolator" not in fits[0]
    assert used == [Slerp, Lerp]
    assert sorted(p.name for p in (tmp_path / "both").glob("samples-*.png")) == [
        "samples-glico-spc2-seed0.png", "samples-lerp-spc2-seed0.png"]
    alone = run_ablation(rows[1:], **kw)
    assert len(fits) == 2 and used[-1] is Lerp
    shared_run = next(r for r in both["runs"] if r["variant"] == "Lerp")
    assert (shared_run["top1"], shared_run["top5"]) == (alone["runs"][0]["top1"], alone["runs"][0]["top5"])


def test_fig7_plots_accuracy_against_spc_per_classifier(tmp_path):
    # ResNet-50 and VGG-19 as f (25 M and 140 M parameters) cost seconds a step on one CPU thread: their
    # compositions are checked above; here two rows run across two SPCs (names are case-insensitive).
    out = tmp_path / "fig7"
    only = "f = weak CNN,f = wrn-28-2"
    assert main(["ablate", "--table", "fig7", "--data", "digits", "--spc", "2,3", "--seeds", "0", "--only", only,
                 "--out", str(out)] + TINY) == 0
    results = json.loads((out / "results.json").read_text())
    assert {(r["spc"], r["variant"]) for r in results["summary"]} == {
        (s, v) for s in (2, 3) for v in ("f = weak CNN", "f = WRN-28-2")}
    assert [v["spec"]["classifier"] for v in results["variants"]] == ["weak", "wrn-28-2"]
    head = (out / "results.md").read_text()
    assert "top-1 @ 2 spc | top-5 @ 2 spc | top-1 @ 3 spc" in head and "paper top-1" not in head
    assert (out / "results.png").stat().st_size > 0


def test_only_with_an_unknown_name_lists_the_table(tmp_path, capsys):
    assert main(["ablate", "--table", "2", "--data", "digits", "--spc", "2", "--only", "GLICO,Nope",
                 "--out", str(tmp_path)] + TINY) == 2
    assert "its variants: GLICO, Baseline, No Classifier" in capsys.readouterr().err


@pytest.fixture
def offline(monkeypatch, tmp_path):
    """No network and an empty torch hub cache."""
    def refuse(*args, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    monkeypatch.setattr(torch.hub, "urlopen", refuse)


def test_resnet_init_without_weights_fails_at_once_with_an_actionable_message(offline, tmp_path, capsys, monkeypatch):
    trained = []
    monkeypatch.setattr(grid, "train_and_score", lambda *a, **k: trained.append(1))
    argv = ["ablate", "--table", "3", "--data", "digits", "--spc", "2", "--seeds", "0", "--out", str(tmp_path / "t3"),
            "--epochs", "1", "--fit-epochs", "2", "--classifier", "weak", "--loss", "pixel", "--code-dim", "8", "--quiet"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "variant 'ResNet Init'" in err and "resnet50" in err
    assert "--feature-weights PATH" in err and "--feature-weights random" in err
    assert "resnet50-" in err  # the file torchvision looks for, so it can be put there
    assert not trained  # refused before any training


def test_feature_net_takes_a_torchvision_name_and_a_local_file(tmp_path):
    from torchvision.models import resnet18

    torch.manual_seed(0)
    state = resnet18().state_dict()
    torch.save(state, tmp_path / "r18.pth")
    spec = ModelSpec(image_shape=(1, 8, 8), num_classes=10, loss="pixel", code_dim=8, init="features",
                     feature_net="resnet18", feature_weights=str(tmp_path / "r18.pth"))
    net = build_model(spec).init.network.network
    assert len(net.layer3) == 2
    torch.testing.assert_close(net.conv1.weight, state["conv1.weight"], rtol=0, atol=0)
    with pytest.raises(ValueError, match="unknown feature-net 'resnet9'; valid: resnet18, resnet50"):
        build_model(ModelSpec(image_shape=(1, 8, 8), num_classes=10, loss="pixel", init="features", feature_net="resnet9"))
    # specs stored before feature_net existed still load, with the paper's ResNet-50
    old = {k: v for k, v in spec.to_dict().items() if k != "feature_net"}
    assert ModelSpec.from_dict(old).feature_net == "resnet50"


def test_the_docs_example_runs(tmp_path, monkeypatch):
    blocks = re.findall(r"```python\n(.*?)```", (DOCS / "ablations.md").read_text(), flags=re.S)
    assert blocks, "no python example in docs/ablations.md"
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    for block in blocks:
        exec(compile(block, str(DOCS / "ablations.md"), "exec"), namespace)
    results = namespace["results"]
    assert [r["variant"] for r in results["summary"]] == [v.name for v in namespace["mine"]]
    assert (tmp_path / "my-ablation" / "results.md").is_file()


def test_ablate_runs_the_comparison_systems_as_rows_with_their_fid(tmp_path):
    out = tmp_path / "systems"
    assert main(["ablate", "--table", "2", "--only", "GLICO", "--add-methods", "cdcgan,mixmatch", "--unlabeled",
                 "split", "--fid", "random-inception", "--fid-images", "10", "--data", "digits", "--spc", "2",
                 "--seeds", "0", "--out", str(out)] + TINY) == 0
    results = json.loads((out / "results.json").read_text())
    rows = {r["variant"]: r for r in results["runs"]}
    assert list(rows) == ["GLICO", "cdcgan", "mixmatch"] and rows["mixmatch"]["policy"] == "mixmatch"
    assert "fid" in rows["GLICO"] and "fid" in rows["cdcgan"] and "fid" not in rows["mixmatch"]
    md = (out / "results.md").read_text()
    assert "FID @ 2 spc" in md and "MixMatch's unlabelled images: split." in md and "random weights" in md
    assert results["recipe"]["mixmatch"]["augmentations"] == 2 and (out / "cdcgan-samples-spc2-seed0.png").is_file()
