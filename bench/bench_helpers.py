"""Benchmark helpers shared by every ``bench/test_*.py``: timing, the device's copy bandwidth, and
the JSON results (written by ``bench/conftest.py`` at the end of the session).

Imported by the benchmark modules as ``bench_helpers`` (``bench/`` is on ``sys.path`` under pytest).
"""
from __future__ import annotations

import datetime as _dt
import json
import logging
import os
import platform
import shutil
import subprocess
import time
from collections import defaultdict
from pathlib import Path
from typing import Callable

import torch

log = logging.getLogger(__name__)

RESULTS_DIR = Path(__file__).parent / "results"
ROWS: dict[str, list[dict]] = defaultdict(list)
"""Result rows per group (a module name without ``test_``)."""
META: dict = {}
"""Session-wide measurements stored with every results file (e.g. ``copy_gbps``)."""

CUDA_REASON = "benchmarks need a CUDA device"


def timing(fn: Callable[[], object], *, warmup: int = 10, rep: int = 40) -> dict:
    """GPU time of ``fn`` with ``triton.testing.do_bench``: median and the p20–p80 range, in ms."""
    from triton.testing import do_bench

    median, p20, p80 = do_bench(fn, warmup=warmup, rep=rep, quantiles=[0.5, 0.2, 0.8])
    return {"ms_median": median, "ms_p20": p20, "ms_p80": p80}


def wall_time_per_call(fn: Callable[[], object], *, calls: int = 300, warmup: int = 20) -> float:
    """Microseconds per call measured from Python: ``calls`` back-to-back calls, one
    synchronisation at the end (launch and Python overheads included, as a training loop sees them)."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    torch.cuda.synchronize()
    return (time.perf_counter() - start) / calls * 1e6


def _sync(device: torch.device | str) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def wall_ms(fn: Callable[[], object], device: torch.device | str) -> float:
    """Wall-clock milliseconds of one call of ``fn``, synchronised before and after (CUDA or CPU): for
    calls that run many steps, so that launch and Python overheads count as a training loop sees them."""
    _sync(device)
    start = time.perf_counter()
    fn()
    _sync(device)
    return (time.perf_counter() - start) * 1e3


def summary_ms(samples: list[float]) -> dict:
    """Median and range of repeated measurements, in ms (few repeats: min/max rather than percentiles)."""
    ordered = sorted(samples)
    mid = len(ordered) // 2
    median = ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2
    return {"ms_median": median, "ms_min": ordered[0], "ms_max": ordered[-1], "repeats": len(ordered)}


def file_prefix() -> str:
    """``gpu`` when the session has CUDA, else ``cpu``: CPU rows are smoke tests, never mixed up with
    measurements (and ``.gitignore`` keeps only ``gpu-*.json``)."""
    return "gpu" if torch.cuda.is_available() else "cpu"


def measure_copy_bandwidth(nbytes: int = 1 << 30) -> float:
    """The device's copy bandwidth in GB/s: ``dst.copy_(src)`` of ``nbytes``, counting the bytes
    read and written."""
    src = torch.empty(nbytes // 4, dtype=torch.float32, device="cuda").uniform_()
    dst = torch.empty_like(src)
    ms = timing(lambda: dst.copy_(src), rep=100)["ms_median"]
    return 2 * nbytes / (ms * 1e-3) / 1e9


def recorded(group: str) -> list[dict]:
    """The rows recorded so far for ``group`` (a module name without ``test_``)."""
    return ROWS[group]


def _git(*args: str) -> str:
    try:
        out = subprocess.run(["git", *args], cwd=Path(__file__).parent, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return ""
    return out.stdout.strip() if out.returncode == 0 else ""


def run_metadata() -> dict:
    """Commit, device and versions, stored with every results file."""
    import sys

    try:
        import triton

        triton_version = triton.__version__
    except ImportError:
        triton_version = None
    meta = {
        # GLICO_COMMIT: for copies of the tree without .git (e.g. a remote GPU machine).
        "commit": _git("rev-parse", "HEAD") or os.environ.get("GLICO_COMMIT") or "unknown",
        "dirty": bool(_git("status", "--porcelain")),
        "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
        "torch": torch.__version__,
        "triton": triton_version,
        "cuda": torch.version.cuda,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
    }
    meta.update(META)
    return meta


def write_results(out_dir: str | None = None) -> list[Path]:
    """Write one JSON file per group into ``bench/results`` (and copy it into ``out_dir``)."""
    if not ROWS:
        return []
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    meta = run_metadata()
    paths = []
    for group, rows in ROWS.items():
        path = RESULTS_DIR / f"{file_prefix()}-{group}-{stamp}.json"
        path.write_text(json.dumps({"meta": meta, "results": rows}, indent=1))
        log.info("wrote %s", path)
        paths.append(path)
        if out_dir:
            shutil.copy(path, Path(out_dir) / path.name)
    return paths
