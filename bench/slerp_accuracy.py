"""Accuracy of slerp as the pair approaches antipodal: float32 backends vs the exact great circle.

Near θ = π slerp is ill-conditioned (its weights divide by sin θ), so every float32 implementation
loses accuracy like ~1/(π − θ). This script shows how much of that is inherent (the exact slerp of the
float32-rounded inputs, computed in float64) and how much each backend adds.

    TRITON_INTERPRET=1 python bench/slerp_accuracy.py      # CPU (Triton interpreted)
    python bench/slerp_accuracy.py --device cuda           # GPU

Prints a markdown table of the max / median row error ‖out − exact‖ over random pairs at each gap.
"""
from __future__ import annotations

import argparse
import math
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _pairs(gap: float, batch: int, d: int, gen: torch.Generator):
    """Unit rows a, a unit direction p ⟂ a, and b at angle π − gap from a along p (float64)."""
    a = torch.randn(batch, d, dtype=torch.float64, generator=gen)
    a = a / a.norm(dim=1, keepdim=True)
    p = torch.randn(batch, d, dtype=torch.float64, generator=gen)
    p = p - (p * a).sum(1, keepdim=True) * a
    p = p / p.norm(dim=1, keepdim=True)
    theta = math.pi - gap
    return a, math.cos(theta) * a + math.sin(theta) * p, p, theta


def _slerp64(a: torch.Tensor, b: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    a = a / a.norm(dim=1, keepdim=True)
    b = b / b.norm(dim=1, keepdim=True)
    theta = 2 * torch.atan2((a - b).norm(dim=1), (a + b).norm(dim=1))
    return (torch.sin((1 - t) * theta)[:, None] * a + torch.sin(t * theta)[:, None] * b) / torch.sin(theta)[:, None]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batch", type=int, default=4096)
    ap.add_argument("--d", type=int, default=128)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    import kernels

    gen = torch.Generator().manual_seed(args.seed)
    print(f"slerp error near antipodal: d = {args.d}, {args.batch} random pairs per gap, t ~ U(0, 1), "
          f"device {args.device}\n")
    print("| π − θ | inherent (float64 slerp of float32 inputs) max / median | torch float32 max / median | "
          "triton float32 max / median |")
    print("|---|---|---|---|")
    for gap in (1.0, 0.3, 0.1, 0.03, 0.013, 0.003, 0.001):
        a, b, p, theta = _pairs(gap, args.batch, args.d, gen)
        t = torch.rand(args.batch, dtype=torch.float64, generator=gen)
        exact = torch.cos(t * theta)[:, None] * a + torch.sin(t * theta)[:, None] * p
        cells = []
        a32, b32, t32 = (x.float().to(args.device) for x in (a, b, t))
        outs = [_slerp64(a32.double().cpu(), b32.double().cpu(), t)]
        outs += [kernels.slerp(a32, b32, t32, backend=be).double().cpu() for be in ("torch", "triton")]
        for out in outs:
            err = (out - exact).norm(dim=1)
            cells.append(f"{err.max():.1e} / {err.median():.1e}")
        print(f"| {gap} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
