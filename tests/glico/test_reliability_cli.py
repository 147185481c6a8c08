"""`glico fit` interrupted and resumed, same seed twice, non-finite loss, refused resumes (in-process)."""
import json
import os
import random
import shlex
import signal

import pytest
import torch

from glico.cli import main
from glico.model import GLICO, StepLosses

# digits, 2 per class: 20 images, batch 8 -> 3 steps per epoch, 9 steps.
ARGS = ["--data", "digits", "--spc", "2", "--epochs", "3", "--batch-size", "8", "--code-dim", "8", "--loss", "pixel",
        "--seed", "4", "--quiet"]
TOTAL = 9


def _fit(out, *extra) -> int:
    return main(["fit", *ARGS, "--out", str(out), *extra])


def _tensors(run) -> dict[str, torch.Tensor]:
    payload = torch.load(run / "checkpoint.pt", weights_only=True)
    trainer = payload["extra"]["trainer"]
    out = {f"model.{k}": v for k, v in payload["model"].items()}
    out.update({k: trainer[k] for k in ("shuffle_rng", "noise_rng", "torch_rng", "perm")})
    for i, st in trainer["optimizer"]["state"].items():
        out.update({f"adam.{i}.{k}": v for k, v in st.items()})
    return out


def _assert_same_tensors(a, b):
    ta, tb = _tensors(a), _tensors(b)
    assert ta.keys() == tb.keys()
    for k in ta:
        assert torch.equal(ta[k], tb[k]), k


def _history(run):
    h = json.loads((run / "history.json").read_text())
    return {k: h[k] for k in ("step", "total", "reconstruction", "classification")}


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    run = tmp_path_factory.mktemp("ref") / "run"
    assert _fit(run) == 0
    return run


def test_same_seed_gives_identical_checkpoints_and_samples(reference, tmp_path):
    run = tmp_path / "again"
    assert _fit(run) == 0
    _assert_same_tensors(reference, run)
    assert (run / "samples.png").read_bytes() == (reference / "samples.png").read_bytes()
    other = tmp_path / "other-seed"
    assert main(["fit", *ARGS, "--seed", "5", "--out", str(other)]) == 0
    assert not torch.equal(_tensors(other)["model.codes"], _tensors(reference)["model.codes"])


STOP = random.Random(7).randrange(1, TOTAL)  # a random step (fixed seed: reproducible)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_interrupted_fit_resumes_bit_identical(signum, reference, tmp_path, monkeypatch, capsys):
    original, calls = GLICO.step_losses, {"n": 0}

    def step_losses(self, *a, **k):
        calls["n"] += 1
        if calls["n"] == STOP:
            os.kill(os.getpid(), signum)
        return original(self, *a, **k)

    monkeypatch.setattr(GLICO, "step_losses", step_losses)
    run = tmp_path / "run"
    assert _fit(run, "--checkpoint-every", "2") == 130
    err = capsys.readouterr().err
    name = signal.Signals(signum).name
    assert f"interrupted by {name} after step {STOP} of {TOTAL}" in err and str(run / "checkpoint.pt") in err
    command = err.split("To continue the fit, run: ")[1].strip()
    assert command.startswith("glico fit ") and command.endswith(" --resume") and "--checkpoint-every 2" in command
    monkeypatch.undo()

    assert main(shlex.split(command)[1:]) == 0
    assert f"resumed at step {STOP}" in capsys.readouterr().out
    _assert_same_tensors(reference, run)
    assert _history(run) == _history(reference)


def test_resume_without_a_checkpoint(tmp_path, capsys):
    assert _fit(tmp_path / "empty", "--resume") == 2
    err = capsys.readouterr().err
    assert "--resume: there is no checkpoint to resume from in" in err and "without --resume" in err


def test_resume_with_other_settings_names_them(reference, tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    for f in ("checkpoint.pt", "run.json"):
        (run / f).write_bytes((reference / f).read_bytes())
    argv = ["fit", *ARGS, "--out", str(run), "--resume", "--lr", "0.002", "--noise", "additive"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "--lr: run.json has 0.001, this command 0.002" in err and "--noise: run.json has 'concat', this command 'additive'" in err
    assert main(["fit", *ARGS[:3], "3", *ARGS[4:], "--out", str(run), "--resume"]) == 2  # --spc 3: other images
    assert "--spc: run.json has 2, this command 3" in capsys.readouterr().err


def test_fresh_fit_over_an_earlier_fit_is_refused_unless_told_to_overwrite(reference, tmp_path, capsys):
    # Starting afresh would replace run.json before the first checkpoint: neither fit could resume.
    run = tmp_path / "run"
    run.mkdir()
    for name in ("checkpoint.pt", "run.json", "samples.png"):
        (run / name).write_bytes((reference / name).read_bytes())
    before = {p.name: p.read_bytes() for p in run.iterdir()}
    assert _fit(run, "--epochs", "1") == 2
    err = capsys.readouterr().err
    assert "already holds a fit (checkpoint.pt, run.json, samples.png)" in err and "--overwrite" in err
    assert {p.name: p.read_bytes() for p in run.iterdir()} == before  # nothing touched
    # A replacement that fails (here: data that are not there) loses nothing of the earlier fit.
    assert main(["fit", "--data", "folder:" + str(tmp_path / "missing"), *ARGS[2:], "--out", str(run), "--overwrite"]) == 2
    capsys.readouterr()
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.name != "log.txt"} == before
    assert _fit(run, "--epochs", "1", "--overwrite") == 0
    assert json.loads((run / "run.json").read_text())["fit"]["epochs"] == 1
    assert (run / "checkpoint.pt").read_bytes() != before["checkpoint.pt"]


def test_nonfinite_loss_is_a_clear_cli_error(tmp_path, monkeypatch, capsys):
    original, calls = GLICO.step_losses, {"n": 0}

    def step_losses(self, *a, **k):
        calls["n"] += 1
        losses = original(self, *a, **k)
        if calls["n"] >= 5:
            return StepLosses(losses.total * float("inf"), losses.reconstruction, losses.classification)
        return losses

    monkeypatch.setattr(GLICO, "step_losses", step_losses)
    run = tmp_path / "run"
    assert _fit(run, "--checkpoint-every", "4") == 2
    err = capsys.readouterr().err
    assert "non-finite (NaN or inf) at step 5" in err and "from step 4, is kept" in err
    payload = torch.load(run / "checkpoint.pt", weights_only=True)
    assert payload["extra"]["trainer"]["step"] == 4


def test_the_printed_resume_command_keeps_global_flags():
    from glico.cli import _resume_command, build_parser

    args = build_parser().parse_args(["--threads", "1", "fit", *ARGS, "--out", "r", "--lr", "0.002"])
    command = shlex.split(_resume_command(args))
    assert command[:4] == ["glico", "--threads", "1", "fit"] and command[-1] == "--resume"
    assert build_parser().parse_args(command[1:]).lr == 0.002


def test_checkpoints_get_the_usual_file_permissions(tmp_path):
    # mkstemp (used for the atomic write) makes 0600 files; a team's shared run folder needs the umask's.
    from glico.checkpoint import save_checkpoint
    from tests.glico.test_model import small_model
    from tests.glico.toy_data import toy_data

    m = small_model()
    m.fit(*toy_data(), epochs=1, progress=False)
    old = os.umask(0o022)
    try:
        path = save_checkpoint(tmp_path / "c.pt", m)
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o644
