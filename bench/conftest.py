"""pytest configuration of ``bench/``: session fixtures and the results writer.

Every benchmark module records rows through the ``record`` fixture; at the end of the session the
rows of ``bench/test_<name>.py`` go to ``bench/results/gpu-<name>-<timestamp>.json`` with the git
commit, the device and the versions, and are copied into ``$OUT`` when that variable is set.
Without CUDA the kernel benchmarks skip; the step benchmarks (``test_step.py``) run one tiny case each
so that CI proves they work, and their rows go to ``cpu-step-<timestamp>.json`` (smoke tests, not
measurements; not kept by git).
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Callable

import pytest
import torch

import bench_helpers

if not torch.cuda.is_available():
    # The CPU smoke cases are tiny and the CI machine is shared: intra-op threads only contend there
    # (tests/conftest.py does the same for the test-suite).
    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def copy_bandwidth() -> float:
    """Measured copy bandwidth of the current CUDA device, GB/s (once per session)."""
    if "copy_gbps" not in bench_helpers.META:
        bench_helpers.META["copy_gbps"] = bench_helpers.measure_copy_bandwidth()
    return bench_helpers.META["copy_gbps"]


@pytest.fixture
def record(request) -> Callable[..., dict]:
    """``record(**fields)`` appends a result row to this module's JSON file and returns it."""
    group = Path(str(request.node.fspath)).stem.removeprefix("test_")

    def _record(**fields) -> dict:
        row = dict(fields)
        bench_helpers.ROWS[group].append(row)
        out_dir = os.environ.get("OUT")
        if out_dir:  # rows also land one by one, in case the session is cut short
            with open(Path(out_dir) / f"{bench_helpers.file_prefix()}-{group}-rows.jsonl", "a") as f:
                f.write(json.dumps(row) + "\n")
        return row

    return _record


def pytest_sessionfinish(session, exitstatus):
    for path in bench_helpers.write_results(os.environ.get("OUT")):
        session.config.get_terminal_writer().line(f"benchmark results: {path}")


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    targets = [row for rows in bench_helpers.ROWS.values() for row in rows if row.get("kind") == "target"]
    if targets:
        terminalreporter.section("benchmark targets")
        for row in targets:
            terminalreporter.line(f"{row['value']:8.3f}  {row['target']}")
