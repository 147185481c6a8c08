"""Wall time of one `glico evaluate` grid as one process and as N torchrun ranks, side by side on this machine.

    python bench/distributed_grid.py [--ranks 2] [--out bench/results]

Both runs use one thread per process (torchrun's default), so the cells are the same work and their numbers
must agree exactly (checked, and recorded). The grid is digits-sized so that it runs on a CPU in a minute;
on GPUs pass `--device cuda` and a real grid through `--args`. Writes distributed-grid-<device>-<time>.json.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
GRID = ("--data digits --spc 5 --seeds 0,1,2 --classifier weak --epochs 8 --fit-epochs 20 --loss laplacian+pixel "
        "--code-dim 16 --quiet --methods baseline,glico,cutout,glico+autoaugment")


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _timed(cmd: list[str]) -> float:
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)}
    t0 = time.perf_counter()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(done.stdout[-2000:] + done.stderr[-2000:])
    return time.perf_counter() - t0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ranks", type=int, default=2)
    p.add_argument("--device", default="cpu")
    p.add_argument("--args", default=GRID, help="the grid's flags (default: a digits grid of 12 cells)")
    p.add_argument("--out", default=str(ROOT / "bench" / "results"))
    a = p.parse_args()
    grid = a.args.split() + ["--device", a.device]
    with tempfile.TemporaryDirectory() as tmp:
        one = _timed([sys.executable, "-m", "glico", "evaluate", *grid, "--out", f"{tmp}/one"])
        many = _timed([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(a.ranks),
                       "--master-addr", "127.0.0.1", "--master-port", str(_port()), "-m", "glico", "evaluate", *grid,
                       "--out", f"{tmp}/many"])
        r1, rn = (json.loads(Path(f"{tmp}/{x}/results.json").read_text()) for x in ("one", "many"))
    same = [(r["top1"], r["top5"]) for r in r1["runs"]] == [(r["top1"], r["top5"]) for r in rn["runs"]]
    report = {
        "what": "glico evaluate grid: 1 process vs torchrun ranks, 1 thread per process",
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "torch": torch.__version__,
                    "device": a.device},
        "grid": " ".join(grid), "cells": len(r1["runs"]), "ranks": a.ranks,
        "wall_seconds": {"one_process": round(one, 1), "ranks": round(many, 1)},
        "grid_seconds": {"one_process": r1["seconds"], "ranks": rn["seconds"]},
        "speedup_wall": round(one / many, 2), "speedup_grid": round(r1["seconds"] / rn["seconds"], 2),
        "cells_identical": same,
    }
    out = Path(a.out) / f"distributed-grid-{a.device.split(':')[0]}-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
