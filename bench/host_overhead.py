"""Host (Python) cost of each kernel entry point at the training batch, with the launch itself
replaced by a no-op: validation, backend choice, output allocation, launch-parameter setup.

The wall time of a Triton op at B = 128 is this plus Triton's launcher plus the GPU's launch latency;
this part is ours and is the same on any machine with the same CPU, so it can be measured without a
GPU. Prints JSON: µs per call (minimum over blocks of calls, which is robust to a loaded machine).

    python bench/host_overhead.py            # sets TRITON_INTERPRET=1 itself when there is no GPU
"""
from __future__ import annotations

import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402  (importing torch does not import triton)

# Before triton is imported: compiled kernels on a GPU, the interpreter otherwise.
os.environ.setdefault("TRITON_INTERPRET", "0" if torch.cuda.is_available() else "1")

import kernels  # noqa: E402
from kernels import triton_project, triton_sample, triton_slerp  # noqa: E402


class _NoLaunch:
    def __getitem__(self, grid):
        return lambda *args, **kwargs: None


def _per_call_us(fn, calls: int = 100, blocks: int = 60) -> float:
    for _ in range(calls):
        fn()
    best = float("inf")
    for _ in range(blocks):
        t0 = time.perf_counter()
        for _ in range(calls):
            fn()
        best = min(best, (time.perf_counter() - t0) / calls)
    return round(best * 1e6, 2)


def main() -> int:
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    for module, name in ((triton_slerp, "_slerp_kernel"), (triton_project, "_project_rows_kernel"),
                         (triton_project, "_adam_rows_kernel"), (triton_sample, "_sample_kernel")):
        if hasattr(module, name):
            setattr(module, name, _NoLaunch())
    g = torch.Generator(device=dev).manual_seed(0)
    n, b, d = 10_000, 128, 128
    codes = torch.randn(n, d, generator=g, device=dev)
    a, bb = torch.randn(b, d, generator=g, device=dev), torch.randn(b, d, generator=g, device=dev)
    i, j = torch.randint(0, n, (b,), generator=g, device=dev), torch.randint(0, n, (b,), generator=g, device=dev)
    idx = torch.randperm(n, generator=g, device=dev)[:b]
    grad, m, v = torch.randn(b, d, generator=g, device=dev), torch.zeros_like(codes), torch.zeros_like(codes)
    index = kernels.class_index(torch.randint(0, 10, (n,), generator=g, device=dev))
    t_values = torch.tensor([0.1, 0.2, 0.3, 0.4], device=dev)
    cases = {
        "slerp": lambda: kernels.slerp(a, bb, 0.3, backend="triton"),
        "slerp_gather": lambda: kernels.slerp_gather(codes, i, j, 0.3, backend="triton", check_indices=False),
        "project_rows_": lambda: kernels.project_rows_(codes, idx, backend="triton", check_indices=False),
        "sample_codes": lambda: kernels.sample_codes(codes, idx, index, t_values, noise_dim=32, seed=0,
                                                     backend="triton", check_indices=False),
    }
    if hasattr(kernels, "adam_rows_"):
        cases["adam_rows_"] = lambda: kernels.adam_rows_(codes, m, v, idx, grad, step=3, lr=0.01, backend="triton",
                                                         check_indices=False)
    cases["torch.empty (for scale)"] = lambda: torch.empty((b, d), device=dev)
    print(json.dumps({"device": dev, "us_per_call": {k: _per_call_us(f) for k, f in cases.items()}}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
