"""The paper's protocol as options (issue 16): baseline replacement probability, Cutout size per dataset,
Random Erasing area, downstream oversampling rule, pretrained torchvision classifiers, and their flags
in ``glico evaluate``. Checked against closed forms and against the policies run on their own."""
import json
import urllib.error

import pytest
import torch
from torch.nn import functional as F

from glico.cli import main
from glico.experiments.downstream import resolve_oversample, steps_for
from glico.experiments.evaluate import EvaluateConfig, check_pretrained, downstream_classifier, run_evaluation
from glico.experiments.policies import (
    ERASING_SCALE_PAPER,
    Compose,
    Cutout,
    GLICOPolicy,
    MixUp,
    RandomErasing,
    Replace,
    TrivialAugmentWide,
    build_policy,
    cutout_size_for,
)


def _batch(b=16, c=3, size=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, (b, c, size, size), generator=g).float() / 255
    return x, torch.randint(0, 5, (b,), generator=g), torch.arange(b)


def _coins(seed, b, p):
    """The examples Replace's call with this seed replaces (its documented draw: one uniform per example)."""
    return torch.rand(b, generator=torch.Generator().manual_seed(seed)) < p


POLICIES = [lambda: Cutout(size=6, seed=3), lambda: TrivialAugmentWide(seed=3), lambda: MixUp(num_classes=5, seed=3)]


# --- Replace ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("make", POLICIES)
def test_replace_with_p_1_is_the_policy_alone_and_p_0_the_identity(make):
    x, y, idx = _batch()
    alone = make()(x, y, idx)
    every = Replace(make(), 1.0, seed=9)(x, y, idx)
    assert torch.equal(every[0], alone[0]) and torch.equal(every[1], alone[1])
    out, t = Replace(make(), 0.0, seed=9)(x, y, idx)
    assert torch.equal(out, x) and torch.equal(t, y)


@pytest.mark.parametrize("make", POLICIES)
def test_replace_changes_exactly_the_chosen_rows_into_the_policy_of_those_rows(make):
    x, y, idx = _batch(b=32)
    out, t = Replace(make(), 0.5, seed=11)(x, y, idx)
    chosen = _coins(11, 32, 0.5)
    assert 0 < chosen.sum() < 32
    ref_x, ref_t = make()(x[chosen], y[chosen], idx[chosen])
    assert torch.equal(out[chosen], ref_x) and torch.equal(out[~chosen], x[~chosen])
    if ref_t.dim() == 2:  # MixUp: the others become one-hot rows, every row sums to 1
        assert torch.equal(t[chosen], ref_t)
        assert torch.equal(t[~chosen], F.one_hot(y[~chosen], 5).float())
        torch.testing.assert_close(t.sum(1), torch.ones(32))
    else:
        assert torch.equal(t, y)


def test_replace_rate_is_p_per_example():
    b, calls, p = 64, 50, 0.3
    policy = Replace(Cutout(size=16, fill=0.0, seed=1), p, seed=2)  # a 16 px hole always changes a 16 px image
    x = torch.full((b, 1, 16, 16), 0.5)
    changed = sum(int((policy(x, torch.zeros(b, dtype=torch.long), torch.arange(b))[0] != x).flatten(1).any(1).sum())
                  for _ in range(calls))
    n = b * calls
    sd = (n * p * (1 - p)) ** 0.5
    assert abs(changed - n * p) < 4 * sd  # 4 standard deviations of the binomial count


def test_replace_state_dict_continues_the_draws():
    x, y, idx = _batch()
    a = Replace(TrivialAugmentWide(seed=1), 0.5, seed=2)
    a(x, y, idx)
    state = a.state_dict()
    expected = a(x, y, idx)
    b = Replace(TrivialAugmentWide(seed=1), 0.5, seed=2)
    b.load_state_dict(state)
    got = b(x, y, idx)
    assert torch.equal(got[0], expected[0])
    with pytest.raises(ValueError, match="Replace state"):
        b.load_state_dict({"calls": 1})


@pytest.mark.parametrize("p", [-0.1, 1.5, True])
def test_replace_refuses_a_probability_outside_0_1(p):
    with pytest.raises(ValueError, match=r"p must be a probability in \[0, 1\]"):
        Replace(Cutout(), p)


# --- build_policy's protocol settings -----------------------------------------------------------------

def test_policy_p_wraps_every_augmentation_and_sets_random_erasings_own_p():
    for name in ("cutout", "autoaugment", "randaugment", "trivialaugment", "mixup", "cutmix"):
        p = build_policy(name, num_classes=5, policy_p=0.5)
        assert type(p) is Replace and p.p == 0.5, name
        assert type(build_policy(name, num_classes=5)) is not Replace  # default: the method's own setting
    erasing = build_policy("random-erasing", num_classes=5, policy_p=0.3)
    assert type(erasing) is RandomErasing and erasing.p == 0.3  # no second coin on top of its own
    assert build_policy("random-erasing", num_classes=5).p == 0.5  # Random Erasing's paper's p
    aug = lambda images, idx: images  # noqa: E731  (an augmenter stand-in)
    both = build_policy("glico+cutout", num_classes=5, policy_p=0.5, glico_augmenter=aug)
    assert type(both) is Compose and type(both.first) is GLICOPolicy and type(both.second) is Replace


def test_cutout_size_per_dataset():
    assert cutout_size_for("cifar10", 32) == 16 and cutout_size_for("cifar100", 32) == 8  # DeVries & Taylor
    assert cutout_size_for("my-folder", 64) == 32 and cutout_size_for("digits", 8) == 4
    assert build_policy("cutout", num_classes=5, image_size=32, cutout_size=8).size == 8


def test_erasing_scale_sets_the_erased_area():
    b = 200
    x = torch.full((b, 1, 32, 32), 0.5)
    policy = build_policy("random-erasing", num_classes=5, policy_p=1.0, erasing_scale=(0.25, 0.25), seed=4)
    erased = (policy(x, torch.zeros(b, dtype=torch.long), torch.arange(b))[0] == 0).flatten(1).float().mean(1)
    # every box has area 0.25 of the image up to rounding its sides to pixels (ratio in 0.3..3.3)
    assert erased.min() > 0.2 and erased.max() < 0.3
    assert build_policy("random-erasing", num_classes=5, erasing_scale=ERASING_SCALE_PAPER).scale == (0.02, 0.4)


@pytest.mark.parametrize("kw,match", [
    (dict(policy_p=1.5), "policy_p must be None"),
    (dict(cutout_size=0), "cutout_size must be None or a positive"),
    (dict(erasing_scale=(0.5, 0.2)), "erasing_scale must be"),
    (dict(erasing_scale=(0.1, 0.2, 0.3)), r"erasing_scale must be \(lo, hi\)"),
])
def test_build_policy_refuses_bad_protocol_settings(kw, match):
    with pytest.raises(ValueError, match=match):
        build_policy("cutout", num_classes=5, **kw)


# --- budgets ------------------------------------------------------------------------------------------

def test_downstream_oversampling_rules_closed_form():
    # This library's rule: 5000 images. CIFAR-10 at 10 per class, batch 128, 200 epochs: 8000 steps.
    assert steps_for(100, 128, 200) == 200 * 40
    # The paper's: the full training set. Its own example, CIFAR-100 at 50 per class (5000 images), is
    # trained "x10 iterations": 10 times the 5000 rule's steps.
    full = resolve_oversample("full", 50000)
    assert steps_for(5000, 128, 200, full) == 200 * 391 and steps_for(5000, 100, 200, full) == 10 * steps_for(5000, 100, 200)
    assert steps_for(100, 64, 3, resolve_oversample(0, 50000)) == 3 * 2  # 0: plain epochs of the split
    with pytest.raises(ValueError, match="'full'"):
        resolve_oversample("half", 10)


# --- pretrained downstream classifiers ----------------------------------------------------------------

def test_pretrained_is_refused_for_classifiers_that_take_no_weights():
    with pytest.raises(ValueError, match="torchvision classifiers .*resnet50"):
        EvaluateConfig(data="digits", classifier="wrn-16-1", pretrained="imagenet")


def test_pretrained_from_a_file_loads_its_weights_and_keeps_a_fresh_head(tmp_path):
    from torchvision.models import resnet50

    torch.manual_seed(1)
    imagenet_like = resnet50(weights=None)  # 1000 classes, as an ImageNet checkpoint
    path = tmp_path / "r50.pth"
    torch.save(imagenet_like.state_dict(), path)
    check_pretrained("resnet50", str(path))
    clf = downstream_classifier("resnet50", str(path))(3, 5, 32)
    assert torch.equal(clf.backbone.conv1.weight, imagenet_like.conv1.weight)
    assert torch.equal(clf.backbone.layer4[2].conv3.weight, imagenet_like.layer4[2].conv3.weight)
    assert clf.backbone.fc.out_features == 5
    # pretrained inputs are normalised with ImageNet's statistics
    torch.testing.assert_close(clf.input_mean.flatten(), torch.tensor([0.485, 0.456, 0.406]))


def test_missing_imagenet_weights_are_refused_before_the_data_with_the_fix(tmp_path, monkeypatch):
    # The hub folder, whatever an earlier test or the environment set it to (torch.hub.set_dir wins over TORCH_HOME).
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))

    def offline(*a, **k):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    monkeypatch.setattr("glico.data.load_data", lambda *a, **k: pytest.fail("the data were loaded first"))
    cfg = EvaluateConfig(data="digits", classifier="resnet50", pretrained="imagenet", methods=("baseline",))
    with pytest.raises(RuntimeError) as e:
        run_evaluation(cfg, tmp_path / "out", progress=False, echo=lambda s: None)
    msg = str(e.value)
    assert "resnet50-0676ba61.pth" in msg and str(tmp_path / "hub") in msg and "weights=None" in msg
    assert not (tmp_path / "out" / "runs.jsonl").exists()
    with pytest.raises(FileNotFoundError, match="does not exist"):
        check_pretrained("resnet50", str(tmp_path / "nothing.pth"))


# --- the command line ---------------------------------------------------------------------------------

def test_evaluate_protocol_flags_end_to_end(tmp_path):
    out = tmp_path / "ev"
    argv = ["evaluate", "--data", "digits", "--spc", "3", "--seeds", "0", "--methods", "cutout,mixup,glico",
            "--classifier", "weak", "--epochs", "1", "--batch-size", "32", "--fit-epochs", "2", "--loss", "pixel",
            "--code-dim", "8", "--max-test", "100", "--oversample-to", "full", "--fit-oversample-to", "100",
            "--baseline-p", "0.5", "--cutout-size", "3", "--erasing-scale", "0.02,0.4", "--out", str(out), "--quiet"]
    assert main(argv) == 0
    r = json.loads((out / "results.json").read_text())
    n_full = 896  # digits' training half (896 of its 1797 images)
    assert r["recipe"]["oversample_to"] == n_full
    # one epoch of the full set at the requested batch 32 (the split's 30 images cap the batch, not the budget)
    assert r["recipe"]["steps_per_run"]["3"] == -(-n_full // 32) == {x["steps"] for x in r["runs"]}.pop()
    # 30 images, batch capped at 30: ceil(100 / 30) = 4 passes of one step, 2 epochs
    assert r["recipe"]["fit_steps"]["3"] == 8 and r["runs"][2]["fit"]["steps"] == 8
    assert (r["recipe"]["baseline_p"], r["recipe"]["cutout_size"], r["recipe"]["erasing_scale"]) == (0.5, 3, [0.02, 0.4])
    assert r["config"]["baseline_p"] == 0.5 and r["config"]["fit_oversample_to"] == 100


@pytest.mark.parametrize("flag,value,accepted", [
    ("--oversample-to", "-3", "'full'"),
    ("--fit-oversample-to", "lots", "'full'"),
    ("--erasing-scale", "0.5,0.1", "LO,HI with 0 < LO <= HI <= 1"),
    ("--baseline-p", "2", ""),
])
def test_evaluate_refuses_bad_protocol_flags(flag, value, accepted, capsys, tmp_path):
    with pytest.raises(SystemExit) as e:
        main(["evaluate", "--data", "digits", "--spc", "3", flag, value, "--out", str(tmp_path / "x")])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert flag in err and accepted in err
    assert not (tmp_path / "x").exists()


def test_fit_oversample_to_on_the_command_line(tmp_path, capsys):
    from glico.checkpoint import read_checkpoint

    run = tmp_path / "run"
    # digits, 2 per class: 20 images, batch capped at 20; 60 / 20 = 3 passes per epoch, 2 epochs
    def argv(over):
        return ["fit", "--data", "digits", "--spc", "2", "--epochs", "2", "--oversample-to", over, "--batch-size", "32",
                "--code-dim", "8", "--loss", "pixel", "--quiet", "--out", str(run)]

    assert main(argv("60")) == 0
    assert json.loads((run / "run.json").read_text())["fit"]["oversample_to"] == 60
    assert read_checkpoint(run / "checkpoint.pt")["extra"]["trainer"]["step"] == 6
    # resuming with the same settings is accepted (a finished fit: nothing changes); another value is refused
    assert main([*argv("60"), "--resume"]) == 0
    capsys.readouterr()
    assert main([*argv("90"), "--resume"]) == 2
    assert "--oversample-to: run.json has 60, this command 90" in capsys.readouterr().err
    assert read_checkpoint(run / "checkpoint.pt")["extra"]["trainer"]["step"] == 6  # the refused resume wrote nothing


def test_a_grid_written_before_the_protocol_settings_existed_still_resumes(tmp_path, capsys):
    """Its header lacks the new config keys: they read as the defaults it ran with, so --resume keeps its runs."""
    out = tmp_path / "ev"
    argv = ["evaluate", "--data", "digits", "--spc", "2", "--seeds", "0", "--methods", "baseline,cutout",
            "--classifier", "weak", "--epochs", "1", "--max-test", "50", "--out", str(out), "--quiet"]
    assert main(argv) == 0
    first = json.loads((out / "results.json").read_text())["runs"]
    lines = (out / "runs.jsonl").read_text().splitlines()
    header = json.loads(lines[0])
    new = ("oversample_to", "fit_oversample_to", "baseline_p", "cutout_size", "erasing_scale", "pretrained")
    assert all(k in header["config"] for k in new)
    for k in new:
        del header["config"][k]
    kept = [l for l in lines[1:] if json.loads(l)["method"] == "baseline"]  # cutout "was interrupted"
    (out / "runs.jsonl").write_text("\n".join([json.dumps(header), *kept]) + "\n")
    assert main([*argv, "--resume"]) == 0
    def scores(runs):
        return [{k: v for k, v in r.items() if k != "seconds"} for r in runs]

    assert scores(json.loads((out / "results.json").read_text())["runs"]) == scores(first)  # cutout rerun, same result
    # a changed protocol setting is refused by name
    assert main([*argv, "--resume", "--baseline-p", "0.5"]) == 2
    assert "baseline_p" in capsys.readouterr().err


def test_ablate_takes_the_oversampling_rules(tmp_path):
    out = tmp_path / "t4"
    argv = ["ablate", "--table", "4", "--data", "digits", "--spc", "2", "--seeds", "0", "--classifier", "weak",
            "--epochs", "1", "--batch-size", "32", "--fit-epochs", "2", "--loss", "pixel", "--code-dim", "8",
            "--max-test", "50", "--quiet", "--oversample-to", "full", "--fit-oversample-to", "140", "--out", str(out)]
    assert main(argv) == 0
    r = json.loads((out / "results.json").read_text())
    assert r["recipe"]["oversample_to"] == 896 and r["recipe"]["fit_oversample_to"] == 140
    assert {x["steps"] for x in r["runs"]} == {-(-896 // 32)}  # one epoch of the full set at batch 32
    # table 4's GLICO is transductive: 20 labelled + 50 test images = 70, batch capped at 70;
    # 140 / 70 = 2 passes of one step per epoch, 2 epochs
    fits = [x["fit"] for x in r["runs"] if x["fit"]]
    assert fits and all(f["n_unlabeled"] == 50 and f["steps"] == 4 for f in fits)


def test_merge_joins_a_piece_written_before_the_protocol_settings_and_refuses_another_protocol(tmp_path, capsys):
    from glico.experiments.merge import merge_results

    common = ["evaluate", "--data", "digits", "--spc", "2", "--methods", "baseline,cutout", "--classifier", "weak",
              "--epochs", "1", "--max-test", "50", "--quiet"]
    assert main([*common, "--seeds", "0", "--out", str(tmp_path / "old")]) == 0
    assert main([*common, "--seeds", "1", "--out", str(tmp_path / "new")]) == 0
    assert main([*common, "--seeds", "2", "--baseline-p", "0.5", "--out", str(tmp_path / "p05")]) == 0
    old = tmp_path / "old" / "results.json"
    r = json.loads(old.read_text())
    for k in ("oversample_to", "fit_oversample_to", "baseline_p", "cutout_size", "erasing_scale", "pretrained"):
        del r["config"][k]
    for k in ("oversample_to", "fit_steps", "baseline_p", "cutout_size", "erasing_scale", "pretrained"):
        del r["recipe"][k]
    old.write_text(json.dumps(r))
    merged = merge_results([tmp_path / "old", tmp_path / "new"], tmp_path / "merged")
    assert sorted({x["seed"] for x in merged["runs"]}) == [0, 1]
    with pytest.raises(ValueError, match="baseline_p: None vs 0.5"):
        merge_results([tmp_path / "new", tmp_path / "p05"])
