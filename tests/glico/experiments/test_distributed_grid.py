"""Grids under torchrun on the CPU (gloo): the ranks share the cells, each cell's numbers are the single
process's, the shared GLICO fits are made once, and a killed launch resumes with another world size.

Every command runs as a subprocess with one thread per process (torchrun's default, OMP_NUM_THREADS=1):
float sums on the CPU depend on the thread count, so the single-process reference uses one thread too.
"""
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from glico.experiments.runlog import RUNS_FILE

ROOT = Path(__file__).resolve().parents[3]
EVAL = ["evaluate", "--data", "digits", "--spc", "2", "--seeds", "0,1", "--classifier", "weak", "--epochs", "4",
        "--fit-epochs", "2", "--loss", "laplacian+pixel", "--code-dim", "16", "--max-test", "60", "--quiet",
        "--methods", "baseline,glico,cutout,glico+autoaugment"]
ABLATE = ["ablate", "--table", "2", "--only", "GLICO,Baseline,Lerp", "--add-methods", "cutout", "--data", "digits",
          "--spc", "2", "--seeds", "0", "--classifier", "weak", "--epochs", "2", "--fit-epochs", "2", "--loss",
          "laplacian+pixel", "--code-dim", "16", "--max-test", "60", "--quiet"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _command(args: list[str], nproc: int | None) -> list[str]:
    if nproc is None:
        return [sys.executable, "-m", "glico", *args]
    return [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(nproc), "--master-addr",
            "127.0.0.1", "--master-port", str(_free_port()), "-m", "glico", *args]


def _env() -> dict[str, str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return env


def glico(args: list[str], nproc: int | None = None) -> subprocess.CompletedProcess:
    done = subprocess.run(_command(args, nproc), env=_env(), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done


def cells(out: Path, key: str = "method") -> dict[tuple, tuple]:
    runs = json.loads((out / "results.json").read_text())["runs"]
    return {(r["spc"], r["seed"], r[key]): (r["top1"], r["top5"]) for r in runs}


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("one") / "grid"
    glico(EVAL + ["--out", str(out)])
    return out


def test_two_ranks_give_the_single_process_grid_cell_by_cell(reference, tmp_path):
    out = tmp_path / "two"
    said = glico(EVAL + ["--out", str(out)], nproc=2).stdout
    assert cells(out) == cells(reference) and len(cells(out)) == 8
    a, b = (json.loads((p / "results.json").read_text()) for p in (reference, out))
    assert a["summary"] == b["summary"] and a["recipe"] == b["recipe"] and a["config"] == b["config"]
    # One fit per split, made by one rank and loaded by the others; rank 0 joined the ranks' runs files.
    assert said.count("fitted GLICO for spc 2") == 2 and len(list((out / "fits").glob("fit-*.pt"))) == 2
    assert "[rank 0]" in said and "[rank 1]" in said
    lines = (out / RUNS_FILE).read_text().splitlines()
    assert len(lines) == 1 + 8 and json.loads(lines[0])["command"] == "evaluate"
    assert not list(out.glob("runs.rank*.jsonl"))
    assert said.count("| baseline |") == 1  # the table is printed once, by rank 0


def test_ablate_under_torchrun_matches_one_process(tmp_path):
    glico(ABLATE + ["--out", str(tmp_path / "one")])
    said = glico(ABLATE + ["--out", str(tmp_path / "two")], nproc=2).stdout
    # GLICO and Lerp differ only in the sampling-only interpolator: one fit, shared across the ranks.
    assert said.count("fitted GLICO") == 1 and len(list((tmp_path / "two" / "fits").glob("fit-*.pt"))) == 1
    assert "(fit " not in said
    one, two = cells(tmp_path / "one", "variant"), cells(tmp_path / "two", "variant")
    assert one == two and [name for _, _, name in one] == ["GLICO", "Baseline", "Lerp", "cutout"]
    assert (tmp_path / "two" / "samples-lerp-spc2-seed0.png").is_file()


def _children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(p) for p in path.read_text().split()] if path.exists() else []


@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="finds torchrun's workers through /proc (Linux)")
def test_a_killed_rank_loses_only_its_running_cell_and_the_grid_resumes_with_another_world_size(reference, tmp_path):
    out = tmp_path / "killed"
    launch = subprocess.Popen(_command(EVAL + ["--out", str(out)], 2), env=_env(), stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and launch.poll() is None:
            if sum(len(f.read_text().splitlines()) - 1 for f in out.glob("runs.rank*.jsonl")) >= 1:
                break
            time.sleep(0.02)
        workers = _children(launch.pid)
        assert len(workers) == 2, workers
        os.kill(workers[-1], signal.SIGKILL)  # one rank dies; torchrun then stops the other and exits
        assert launch.wait(timeout=120) != 0
    finally:
        if launch.poll() is None:
            os.killpg(launch.pid, signal.SIGKILL)
            launch.wait()
    assert not (out / "results.json").exists(), "the grid finished before it was killed; the test needs slower cells"
    kept = sum(len(f.read_text().splitlines()) - 1 for f in out.glob("runs.rank*.jsonl"))
    assert 1 <= kept < 8
    # Without --resume the folder is refused; with it, one process runs only the missing cells.
    refused = subprocess.run(_command(EVAL + ["--out", str(out)], None), env=_env(), capture_output=True, text=True)
    assert refused.returncode == 2 and "--resume" in refused.stderr
    said = glico(EVAL + ["--out", str(out), "--resume"]).stdout
    assert f"resuming: {kept} of 8 runs already finished" in said, said
    assert said.count(" spc   2 seed ") == 8 - kept
    assert "(fit " not in said  # every GLICO fit was made before the kill and is loaded from OUT/fits
    assert cells(out) == cells(reference)
    assert len((out / RUNS_FILE).read_text().splitlines()) == 1 + 8 and not list(out.glob("runs.rank*.jsonl"))


def test_data_parallel_grid_trains_every_cell_on_both_ranks_together(tmp_path):
    # Every classifier and GLICO fit on the two ranks together, the global batch split between them: the same
    # training as one process's to float rounding (tests/glico/test_data_parallel.py compares the weights);
    # an accuracy can still differ by a test image whose prediction sits on a decision boundary.
    args = EVAL[:EVAL.index("--methods")] + ["--seeds", "0", "--methods", "baseline,glico", "--epochs", "2"]
    glico(args + ["--out", str(tmp_path / "one")])
    said = glico(args + ["--data-parallel", "--out", str(tmp_path / "dp")], nproc=2).stdout
    one, dp = cells(tmp_path / "one"), cells(tmp_path / "dp")
    assert one.keys() == dp.keys() == {(2, 0, "baseline"), (2, 0, "glico")}
    image = 100 / 60  # one of the 60 test images, in %
    assert all(abs(one[c][0] - dp[c][0]) <= 2 * image + 1e-9 for c in one), (one, dp)
    assert said.count(" spc   2 seed 0 ") == 2  # rank 0 reports; the other rank trains silently
    assert not (tmp_path / "dp" / "fits").exists() and not list((tmp_path / "dp").glob("runs.rank*.jsonl"))


def test_data_parallel_outside_torchrun_is_refused(tmp_path):
    done = subprocess.run(_command(EVAL + ["--data-parallel", "--out", str(tmp_path / "x")], None), env=_env(),
                          capture_output=True, text=True)
    assert done.returncode == 2 and "torchrun --nproc-per-node" in done.stderr


def test_a_single_process_grid_resumes_on_more_ranks(reference, tmp_path):
    # A one-process grid stopped after 3 runs (its runs file cut there), completed by 2 ranks.
    import shutil

    out = tmp_path / "grown"
    shutil.copytree(reference, out)
    (out / "results.json").unlink()
    lines = (out / RUNS_FILE).read_text().splitlines()
    (out / RUNS_FILE).write_text("\n".join(lines[:1 + 3]) + "\n")
    said = glico(EVAL + ["--out", str(out), "--resume"], nproc=2).stdout
    assert "resuming: 3 of 8 runs already finished" in said and "2 ranks share the 5 runs to do" in said
    assert cells(out) == cells(reference)
