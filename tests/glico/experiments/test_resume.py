"""glico evaluate / ablate keep every finished run as it ends: an interruption loses only the run in
progress, --resume runs only the missing ones and gives the table an uninterrupted command writes,
and a folder holding finished runs is never silently overwritten."""
import json

import pytest

from glico.cli import main
from glico.experiments import grid
from glico.experiments.runlog import RUNS_FILE

EVAL = ["evaluate", "--data", "digits", "--spc", "2", "--seeds", "0,1", "--methods", "baseline,glico",
        "--epochs", "1", "--fit-epochs", "2", "--classifier", "weak", "--loss", "pixel", "--code-dim", "8",
        "--max-test", "60", "--quiet"]
ABLATE = ["ablate", "--table", "2", "--only", "GLICO,Lerp", "--data", "digits", "--spc", "2", "--seeds", "0",
          "--epochs", "1", "--fit-epochs", "2", "--classifier", "weak", "--loss", "pixel", "--code-dim", "8",
          "--max-test", "60", "--quiet"]


def _scores(results, key):
    return {(r["spc"], r["seed"], r[key]): (r["top1"], r["top5"]) for r in results["runs"]}


def _interrupt_after(module, monkeypatch, n):
    """Make ``module.train_and_score`` raise KeyboardInterrupt on its (n+1)-th call; returns the call log.
    Earlier patches are undone first."""
    monkeypatch.undo()
    real, calls = module.train_and_score, []

    def fake(method, *args, **kwargs):
        calls.append(method)
        if len(calls) > n:
            raise KeyboardInterrupt
        return real(method, *args, **kwargs)

    monkeypatch.setattr(module, "train_and_score", fake)
    return calls


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    out = tmp_path_factory.mktemp("whole") / "ev"
    assert main(EVAL + ["--out", str(out)]) == 0
    return json.loads((out / "results.json").read_text())


def test_an_interrupted_evaluate_keeps_finished_runs_and_resumes_to_the_same_table(uninterrupted, tmp_path,
                                                                                   monkeypatch, capsys):
    out = tmp_path / "ev"
    _interrupt_after(grid, monkeypatch, 3)
    assert main(EVAL + ["--out", str(out)]) == 130
    assert "3 finished run(s) kept" in capsys.readouterr().out and not (out / "results.json").exists()
    lines = (out / RUNS_FILE).read_text().splitlines()
    assert len(lines) == 1 + 3 and json.loads(lines[0])["command"] == "evaluate"

    # Without --resume the folder is refused, not overwritten.
    assert main(EVAL + ["--out", str(out)]) == 2
    assert "already holds 3 finished run(s)" in capsys.readouterr().err
    assert len((out / RUNS_FILE).read_text().splitlines()) == 4

    calls = _interrupt_after(grid, monkeypatch, 99)
    assert main(EVAL + ["--out", str(out), "--resume"]) == 0
    assert calls == ["glico"]  # only the missing run (seed 1, glico) trained
    assert "resuming: 3 of 4 runs already finished" in capsys.readouterr().out
    resumed = json.loads((out / "results.json").read_text())
    assert _scores(resumed, "method") == _scores(uninterrupted, "method")
    assert resumed["summary"] == uninterrupted["summary"]


def test_resume_with_other_settings_names_them(tmp_path, monkeypatch, capsys):
    out = tmp_path / "ev"
    _interrupt_after(grid, monkeypatch, 1)
    assert main(EVAL + ["--out", str(out)]) == 130
    assert main(EVAL[:-1] + ["--fit-epochs", "3", "--quiet", "--out", str(out), "--resume"]) == 2
    err = capsys.readouterr().err
    assert "other settings" in err and "config.fit_epochs: 2 then, 3 now" in err


def test_a_grid_from_before_the_schedule_setting_still_resumes(tmp_path, monkeypatch, capsys):
    # Grids written before --schedule existed have no config.schedule: they ran the step schedule, so they
    # resume as such; one that would now need another schedule is refused by name.
    out = tmp_path / "ev"
    _interrupt_after(grid, monkeypatch, 1)
    assert main(EVAL + ["--out", str(out)]) == 130
    lines = (out / RUNS_FILE).read_text().splitlines()
    header = json.loads(lines[0])
    del header["config"]["schedule"]
    (out / RUNS_FILE).write_text("\n".join([json.dumps(header), *lines[1:]]) + "\n")
    assert main(EVAL + ["--out", str(out), "--resume", "--schedule", "cosine"]) == 2
    assert "config.schedule: 'step' then, 'cosine' now" in capsys.readouterr().err
    calls = _interrupt_after(grid, monkeypatch, 99)
    assert main(EVAL + ["--out", str(out), "--resume"]) == 0
    assert len(calls) == 3


def test_a_run_cut_short_by_a_kill_is_dropped_and_rerun(tmp_path, monkeypatch):
    out = tmp_path / "ev"
    _interrupt_after(grid, monkeypatch, 2)
    assert main(EVAL + ["--out", str(out)]) == 130
    with open(out / RUNS_FILE, "a") as f:
        f.write('{"spc": 2, "seed": 1, "meth')  # a line a kill cut short
    calls = _interrupt_after(grid, monkeypatch, 99)
    assert main(EVAL + ["--out", str(out), "--resume"]) == 0
    assert calls == ["baseline", "glico"]
    assert len(json.loads((out / "results.json").read_text())["runs"]) == 4


def test_an_interrupted_ablation_resumes_and_refits_only_what_the_missing_rows_need(tmp_path, monkeypatch, capsys):
    whole = tmp_path / "whole"
    assert main(ABLATE + ["--out", str(whole)]) == 0
    out = tmp_path / "abl"
    _interrupt_after(grid, monkeypatch, 1)
    assert main(ABLATE + ["--out", str(out)]) == 130
    calls = _interrupt_after(grid, monkeypatch, 99)
    fits = []
    real_fit = grid.fit_glico
    monkeypatch.setattr(grid, "fit_glico", lambda *a, **k: (fits.append(1), real_fit(*a, **k))[1])
    assert main(ABLATE + ["--out", str(out), "--resume"]) == 0
    assert calls == ["glico"] and len(fits) == 1  # the Lerp row, on a fit of its own split
    a = json.loads((whole / "results.json").read_text())
    b = json.loads((out / "results.json").read_text())
    assert _scores(a, "variant") == _scores(b, "variant")


@pytest.mark.parametrize("flags, message", [
    (["--seeds", "0,0"], "0 given more than once"),
    (["--methods", "baseline,baseline"], "baseline given more than once"),
    (["--spc", "2,2"], "2 given more than once"),
    (["--spc", "0"], ">= 1"),
    (["--seeds", "-1"], ">= 0"),
    (["--lr", "0"], "a number > 0"),
    (["--batch-size", "0"], ">= 1"),
    (["--epochs", "0"], ">= 1"),
    (["--gamma", "nan"], "a finite number"),
    (["--glico-p", "-0.5"], "a probability in [0, 1]"),
])
def test_bad_grid_values_are_refused_before_any_work(flags, message, tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        main(EVAL + ["--out", str(tmp_path / "x")] + flags)
    assert info.value.code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_results_of_an_older_grid_without_a_runs_file_are_not_overwritten(tmp_path, capsys):
    out = tmp_path / "ev"
    out.mkdir()
    (out / "results.json").write_text('{"runs": []}')
    for extra in ([], ["--resume"]):
        assert main(EVAL + ["--out", str(out)] + extra) == 2
        assert "already holds results.json of an earlier grid" in capsys.readouterr().err
    assert (out / "results.json").read_text() == '{"runs": []}' and not (out / RUNS_FILE).exists()


def _edit_header(out, **changes):
    lines = (out / RUNS_FILE).read_text().splitlines()
    header = json.loads(lines[0])
    header.update(changes)
    (out / RUNS_FILE).write_text("\n".join([json.dumps(header)] + lines[1:]) + "\n")


def test_resume_accepts_another_glico_version_but_not_another_arithmetic(tmp_path, monkeypatch, capsys):
    out = tmp_path / "ev"
    _interrupt_after(grid, monkeypatch, 3)
    assert main(EVAL + ["--out", str(out)]) == 130
    # Runs made in bf16 on a GPU must not be joined by fp32 runs on a CPU, although the device may change.
    _edit_header(out, resolved_precision="bf16")
    assert main(EVAL + ["--out", str(out), "--resume"]) == 2
    assert "resolved_precision: 'bf16' then, 'fp32' now" in capsys.readouterr().err
    _edit_header(out, resolved_precision="fp32", glico_version="0.2.9")  # a patch upgrade mid-grid
    calls = _interrupt_after(grid, monkeypatch, 99)
    assert main(EVAL + ["--out", str(out), "--resume"]) == 0 and calls == ["glico"]
    assert "about 0.0 min left" in capsys.readouterr().out  # the one run left was the last: no ETA for kept runs


def test_a_grid_that_failed_before_any_run_can_start_again(tmp_path, capsys):
    out = tmp_path / "ev"
    assert main(EVAL[:2] + ["folder:" + str(tmp_path / "missing")] + EVAL[3:] + ["--out", str(out)]) == 2
    capsys.readouterr()
    assert (out / RUNS_FILE).is_file()  # the header, written before the data were read
    assert main(EVAL + ["--out", str(out), "--seeds", "0", "--methods", "baseline"]) == 0


def test_a_grid_saved_with_an_old_part_name_resumes(tmp_path):
    # f's 'wrn' is 'wrn-28-2' now: a runs file written with the old name is the same grid.
    from glico.experiments.runlog import RunLog

    def header(name):
        return {"command": "evaluate", "config": {"model": {"classifier": name}, "classifier": "weak"}}

    first = RunLog(tmp_path, header("wrn"), ("spc", "seed", "method"))
    first.add({"spc": 2, "seed": 0, "method": "glico", "top1": 50.0})
    again = RunLog(tmp_path, header("wrn-28-2"), ("spc", "seed", "method"), resume=True)
    assert again.done(spc=2, seed=0, method="glico")["top1"] == 50.0
    with pytest.raises(ValueError, match="config.model.classifier"):  # a different part is still refused
        RunLog(tmp_path, header("latent"), ("spc", "seed", "method"), resume=True)
