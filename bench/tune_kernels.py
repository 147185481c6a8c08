"""Sweep the launch configuration (BLOCK_B rows per program, num_warps) of the row kernels on the
current GPU, to choose the heuristic in ``kernels.triton_common.row_block``.

    PYTHONPATH=.:bench python bench/tune_kernels.py [--batch 1048576] [--cases 128:float32:slerp,...]

Prints GB/s and the fraction of copy bandwidth of every configuration, best first per case, and
marks the one the current heuristic picks. Not collected by pytest (no ``test_`` prefix).
"""
from __future__ import annotations

import argparse
import itertools

import torch
import triton

from bench_helpers import measure_copy_bandwidth, timing


def _launch(gather: bool, a, b, ia, ib, out, block_b: int, num_warps: int) -> None:
    from kernels.triton_slerp import _slerp_kernel

    n_rows, d = out.shape
    _slerp_kernel[(triton.cdiv(n_rows, block_b),)](
        a, b, ia if gather else a, ib if gather else a, a, out, 0.3, n_rows, d,
        a.stride(0), a.stride(1), b.stride(0), b.stride(1), 0, out.stride(0),
        GATHER=gather, HAS_T=False, BLOCK_B=block_b, BLOCK_D=triton.next_power_of_2(d), num_warps=num_warps,
    )


def main() -> None:
    from kernels.triton_common import row_block

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=1 << 20)
    parser.add_argument(
        "--cases", default="128:float32:slerp,128:bfloat16:slerp,128:float32:gather,512:float32:slerp",
        help="comma-separated d:dtype:op, op in {slerp, gather}",
    )
    args = parser.parse_args()
    copy = measure_copy_bandwidth()
    print(f"device {torch.cuda.get_device_name()}  copy bandwidth {copy:.0f} GB/s")
    batch = args.batch
    for case in args.cases.split(","):
        d_text, dtype_name, op = case.split(":")
        d, gather = int(d_text), op == "gather"
        dtype = getattr(torch, dtype_name)
        a = torch.randn(batch, d, device="cuda").to(dtype)
        b = torch.randn(batch, d, device="cuda").to(dtype)
        ia = torch.randint(0, batch, (batch,), device="cuda")
        ib = torch.randint(0, batch, (batch,), device="cuda")
        out = torch.empty_like(a)
        nbytes = 3 * a.numel() * a.element_size() + (2 * batch * 8 if gather else 0)
        block_d = triton.next_power_of_2(d)
        chosen = row_block(d, batch, a.element_size())[::2]
        results = []
        for block_b, num_warps in itertools.product((1, 2, 4, 8, 16, 32, 64), (4, 8, 16)):
            elements = block_b * block_d
            if not 512 <= elements <= 16384 or num_warps * 32 > elements:
                continue
            ms = timing(lambda: _launch(gather, a, b, ia, ib, out, block_b, num_warps))["ms_median"]
            gbps = nbytes / (ms * 1e-3) / 1e9
            results.append((gbps, block_b, num_warps))
        results.sort(reverse=True)
        print(f"\n{'gather' if gather else 'slerp'} B={batch} d={d} {dtype_name}  (heuristic: BLOCK_B, warps = {chosen})")
        for gbps, block_b, num_warps in results[:8]:
            mark = "  <- heuristic" if (block_b, num_warps) == chosen else ""
            print(f"  BLOCK_B={block_b:3d} warps={num_warps:2d}  {gbps:7.0f} GB/s  {gbps / copy:5.1%}{mark}")
        for gbps, block_b, num_warps in results[8:]:
            if (block_b, num_warps) == chosen:
                print(f"  BLOCK_B={block_b:3d} warps={num_warps:2d}  {gbps:7.0f} GB/s  {gbps / copy:5.1%}  <- heuristic")
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
