"""The command line end to end on tiny settings (in-process: main(argv))."""
import json

import pytest

from glico.cli import main
from glico.experiments.demo import restart_seed

TINY = ["--data", "digits", "--spc", "2", "--epochs", "2", "--quiet", "--code-dim", "8", "--batch-size", "8"]
OFFLINE = ["--vgg-weights", "random", "--feature-weights", "random"]

FAMILY_CHOICES = [
    ("--generator", "dcgan"),
    ("--loss", "perceptual"),
    ("--loss", "laplacian"),
    ("--loss", "pixel"),
    ("--loss", "pixel-l2"),
    ("--loss", "lpips"),
    ("--loss", "perceptual+pixel"),
    ("--init", "random"),
    ("--init", "hypercube"),
    ("--init", "pca"),
    ("--init", "features"),
    ("--noise", "concat"),
    ("--noise", "additive"),
    ("--noise", "none"),
    ("--interpolator", "slerp"),
    ("--interpolator", "lerp"),
    ("--interpolator", "slerp3"),
    ("--classifier", "weak"),
    ("--classifier", "latent"),
    ("--classifier", "wrn-28-2"),
    ("--classifier", "resnet50"),
    ("--classifier", "vgg19"),
    ("--classifier", "none"),
    ("--class-loss", "ce"),
    ("--class-loss", "cosine"),
]


@pytest.mark.parametrize("flag,value", FAMILY_CHOICES)
def test_fit_with_every_choice_then_sample(flag, value, tmp_path):
    run = tmp_path / "run"
    extra = [] if flag == "--loss" else ["--loss", "pixel"]
    assert main(["fit", *TINY, *OFFLINE, *extra, flag, value, "--out", str(run)]) == 0
    for f in ("checkpoint.pt", "samples.png", "reconstructions.png", "log.txt", "run.json"):
        assert (run / f).is_file(), f
    spec = json.loads((run / "run.json").read_text())["model"]
    assert spec[flag[2:].replace("-", "_")] == value
    assert main(["sample", "--run", str(run), "--n", "3", "--out", str(tmp_path / "grid.png")]) == 0
    assert (tmp_path / "grid.png").stat().st_size > 0


def test_transductive_fit_and_sample_folder(tmp_path):
    run = tmp_path / "run"
    assert main(["fit", *TINY, "--loss", "pixel", "--transductive", "--out", str(run)]) == 0
    assert main(["sample", "--run", str(run), "--n", "2", "--out", str(tmp_path / "samples")]) == 0
    classes = sorted(p.name for p in (tmp_path / "samples").iterdir() if p.is_dir())
    assert len(classes) == 10
    assert all(len(list((tmp_path / "samples" / c).glob("*.png"))) == 2 for c in classes)
    # Again with fewer: no image of the earlier draw is left beside the new ones.
    assert main(["sample", "--run", str(run), "--n", "1", "--out", str(tmp_path / "samples")]) == 0
    assert all([p.name for p in (tmp_path / "samples" / c).glob("*.png")] == ["00000.png"] for c in classes)
    # Stale images are removed only from a folder 'glico sample' wrote (its marker), never from a user's own.
    own = tmp_path / "mine" / classes[0]
    own.mkdir(parents=True)
    (own / "00007.png").write_bytes(b"a user's file")
    assert main(["sample", "--run", str(run), "--n", "1", "--out", str(tmp_path / "mine")]) == 0
    assert (own / "00007.png").read_bytes() == b"a user's file"
    # A .jpg --out is a grid file, not a folder named like one.
    assert main(["sample", "--run", str(run), "--n", "2", "--out", str(tmp_path / "grid.jpg")]) == 0
    assert (tmp_path / "grid.jpg").is_file()


def test_sampling_an_unfinished_fit_says_so(tmp_path, capsys, monkeypatch):
    import dataclasses
    import os
    import signal

    from glico import training

    run = tmp_path / "run"

    def ctrl_c_at_second_step(step, losses):
        if step == 2:
            os.kill(os.getpid(), signal.SIGINT)  # the fit finishes the step, checkpoints, stops

    real_fit = training.fit
    monkeypatch.setattr(training, "fit", lambda *a, config, **k: real_fit(
        *a, config=dataclasses.replace(config, log_every=1), on_log=ctrl_c_at_second_step, **k))
    assert main(["fit", *TINY, "--loss", "pixel", "--out", str(run)]) == 130
    capsys.readouterr()
    assert main(["sample", "--run", str(run), "--n", "1", "--out", str(tmp_path / "g.png")]) == 0
    assert "stopped at step" in capsys.readouterr().err


def test_demo_tiny_one_seed(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--seed", "3", "--fit-epochs", "5", "--steps", "5", "--quiet",
                 "--code-dim", "8"]) == 0
    report = json.loads((out / "report.json").read_text())
    assert set(report["accuracy"]) == {"baseline", "glico"} and report["settings"]["seeds"] == [3]
    assert all(0 <= a <= 100 for a in report["accuracy"].values())
    (r,) = report["per_seed"]
    assert r["seed"] == 3 and r["n_scored"] == 901 and report["scored_on"] == "test"
    assert r["gain"] == pytest.approx(r["accuracy"]["glico"] - r["accuracy"]["baseline"])
    for f in ("samples.png", "interpolation.png", "reconstructions.png", "losses.png", "accuracy.png"):
        assert (out / f).stat().st_size > 0
    printed = capsys.readouterr().out
    assert "baseline" in printed and "GLICO augmentation" in printed


def test_demo_on_validation_images_with_another_classifier(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--seed", "1", "--fit-epochs", "3", "--steps", "3", "--quiet",
                 "--code-dim", "8", "--validation", "5", "--classifier", "wrn-10-1", "--schedule", "cosine",
                 "--batch-size", "16", "--weight-decay", "0.005", "--glico-t", "0.2,0.5"]) == 0
    report = json.loads((out / "report.json").read_text())
    (r,) = report["per_seed"]
    assert report["scored_on"] == "validation" and r["n_scored"] == 5 * 10  # 5 per class, 10 classes
    assert report["classifier"]["name"] == "wrn-10-1" and report["classifier"]["batch_size"] == 16
    assert "cosine" in report["classifier"]["optimizer"] and "0.005" in report["classifier"]["optimizer"]
    assert report["settings"]["glico_t"] == [0.2, 0.5]
    assert "held-out training images" in capsys.readouterr().out


@pytest.mark.parametrize("flags, message", [
    (["--classifier", "wrn-11-1"], "DEPTH = 6n + 4"),
    (["--schedule", "linear"], "invalid choice"),
    (["--glico-t", "0.2,1.5"], "[0, 1]"),
    (["--restarts", "0"], "whole number >= 1"),
])
def test_demo_refuses_bad_settings_before_writing(flags, message, tmp_path, capsys):
    out = tmp_path / "demo"
    with pytest.raises(SystemExit) as info:
        main(["demo", "--out", str(out), *flags])
    assert info.value.code == 2 and message in capsys.readouterr().err
    assert not out.exists()


def test_demo_seeds_in_parallel_match_the_same_seeds_run_one_by_one(tmp_path, capsys):
    # Each seed is seeded by itself, so the parallel processes give the numbers of a sequential run; the
    # summary is the mean and standard error of the per-seed numbers.
    argv = ["--fit-epochs", "4", "--steps", "4", "--quiet", "--code-dim", "8", "--seeds", "0,1"]
    assert main(["demo", "--out", str(tmp_path / "par"), *argv, "--jobs", "2"]) == 0
    assert main(["demo", "--out", str(tmp_path / "seq"), *argv, "--jobs", "1"]) == 0
    par, seq = (json.loads((tmp_path / d / "report.json").read_text()) for d in ("par", "seq"))
    assert [r["accuracy"] for r in par["per_seed"]] == [r["accuracy"] for r in seq["per_seed"]]
    gains = [r["gain"] for r in par["per_seed"]]
    mean = sum(gains) / 2
    assert par["summary"]["gain"]["mean"] == pytest.approx(mean)
    assert par["summary"]["gain"]["ste"] == pytest.approx(abs(gains[0] - gains[1]) / 2)  # sd/sqrt(2) for n = 2
    assert "mean over 2 seeds" in capsys.readouterr().out


def test_demo_restarts_are_distinct_trainings_and_a_seed_scores_their_mean(tmp_path):
    # Two restarts per method: restart 0 is the one-restart demo itself, restart 1 a training with another
    # seed; the seed's accuracy and gain are the restarts' means, and the summary is over those.
    argv = ["--fit-epochs", "4", "--steps", "6", "--quiet", "--code-dim", "8", "--seeds", "2", "--jobs", "1",
            "--validation", "20"]
    assert main(["demo", "--out", str(tmp_path / "one"), *argv, "--restarts", "1"]) == 0
    assert main(["demo", "--out", str(tmp_path / "two"), *argv, "--restarts", "2"]) == 0
    one, two = (json.loads((tmp_path / d / "report.json").read_text()) for d in ("one", "two"))
    (r1,), (r2,) = one["per_seed"], two["per_seed"]
    assert two["settings"]["restarts"] == 2
    for m in ("baseline", "glico"):
        assert len(r2["restarts"][m]) == 2 and r2["restarts"][m][0] == r1["accuracy"][m]
        assert r2["accuracy"][m] == pytest.approx(sum(r2["restarts"][m]) / 2)
        assert two["summary"][m]["mean"] == pytest.approx(r2["accuracy"][m])
    assert r2["gain"] == pytest.approx(r2["accuracy"]["glico"] - r2["accuracy"]["baseline"])
    assert restart_seed(2, 0) == 2 and len({restart_seed(2, r) for r in range(4)}) == 4


@pytest.mark.parametrize(
    "argv,match",
    [
        (["fit", *TINY, "--loss", "nope", "--out", "x"], "unknown loss 'nope'; valid:"),
        (["fit", *TINY, "--noise", "pink", "--out", "x"], "invalid choice"),
        (["fit", "--data", "digits", "--spc", "0", "--out", "x"], "whole number >= 1"),
    ],
)
def test_bad_flags_are_refused_by_the_parser(argv, match, capsys):
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    assert match in capsys.readouterr().err


@pytest.mark.parametrize(
    "extra,match",
    [
        (["--device", "cuda:7"], "cuda"),
        (["--vgg-weights", "/no/such/file.pth", "--loss", "perceptual"], "no/such/file.pth"),
        (["--spc", "500"], "500"),
    ],
)
def test_bad_values_give_one_line_errors(extra, match, tmp_path, capsys):
    argv = ["fit", *TINY, "--loss", "pixel", "--out", str(tmp_path / "r")] + extra
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "error:" in err and match in err


def test_sample_from_missing_run_is_a_clear_error(tmp_path, capsys):
    assert main(["sample", "--run", str(tmp_path / "nothing"), "--out", str(tmp_path / "g.png")]) == 2
    assert "glico fit" in capsys.readouterr().err


def test_progress_bars_update_rarely_when_stderr_is_a_log_file(monkeypatch):
    import io

    from glico import _progress

    monkeypatch.setattr(_progress, "_stderr_is_terminal", lambda: False)
    with _progress.progress(total=3, file=io.StringIO()) as bar:
        assert bar.mininterval == _progress.LOG_INTERVAL_S
    monkeypatch.setattr(_progress, "_stderr_is_terminal", lambda: True)
    with _progress.progress(total=3, file=io.StringIO(), mininterval=0.5) as bar:
        assert bar.mininterval == 0.5


def test_one_image_per_class_fits_and_says_why_there_is_no_interpolation_picture(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["fit", *TINY[:2], "--spc", "1", *TINY[4:], "--loss", "pixel", "--out", str(run)]) == 0
    assert (run / "samples.png").is_file() and not (run / "interpolation.png").exists()
    assert "no class has two training images" in capsys.readouterr().err
