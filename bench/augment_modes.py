"""Does running the generator on the replaced examples only (``GLICOAugmenter(only_replaced=True)``, the
CPU default) cost accuracy? The same downstream runs with both modes, scored on validation images.

Both modes take the same draws and the generator runs in eval mode, so each replaced image is the same
up to float rounding (``tests/glico/test_model.py``); over a run the rounding differences change the
classifier's trajectory a little, so the two accuracies differ by run-to-run noise only. This measures
that, and the wall time of each run, on the CPU recipe of docs/reproducing.md:

    python bench/augment_modes.py --data folder:cifar10-jpeg.tar.xz --spc 10 --seeds 100,101 \\
        --fit-cache runs/fits --out runs/augment-modes [--glico-p 0.75 --glico-t 0.1,0.2,0.3,0.4,0.5]

Prints one JSON line per (seed, mode) and writes them to ``OUT/modes.json``.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    from glico._argtypes import int_list, positive_int, probability, unit_float_list
    from glico.augment import GLICOAugmenter
    from glico.data import load_data, small_sample_split, validation_split
    from glico.experiments.grid import downstream_config, fit_glico, train_and_score
    from glico.names import downstream_classifier

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", required=True)
    p.add_argument("--spc", type=positive_int, default=10)
    p.add_argument("--seeds", type=int_list, default=(100, 101))
    p.add_argument("--validation", type=positive_int, default=100, help="held-out training images per class")
    p.add_argument("--fit-epochs", type=positive_int, default=400)
    p.add_argument("--fit-cache", default=None)
    p.add_argument("--glico-p", type=probability, default=0.75, help="replacement probability (the comparison's 0.75)")
    p.add_argument("--glico-t", type=unit_float_list, default=(0.1, 0.2, 0.3, 0.4, 0.5),
                   help="slerp t values, comma-separated (the comparison's 0.1,...,0.5)")
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    data = load_data(args.data)
    rows = []
    for seed in args.seeds:
        train, _ = small_sample_split(data.train, args.spc, seed)
        held, _ = validation_split(data.train, args.spc, seed, args.validation)
        model, _ = fit_glico({"loss": "laplacian+pixel"}, train, seed=seed, epochs=args.fit_epochs, progress=False,
                             cache_dir=None if args.fit_cache is None else Path(args.fit_cache))
        cfg = downstream_config(len(train), train.images.shape[-1], epochs=16, batch_size=64, lr=0.1,
                                weight_decay=5e-3, flip=True, seed=seed, device="cpu", progress=False, cosine=True)
        for only in (True, False):
            aug = GLICOAugmenter(model, p=args.glico_p, seed=seed, t_values=args.glico_t,
                                 only_replaced=only)
            t0 = time.perf_counter()
            acc = train_and_score("glico", downstream_classifier("wrn-10-1"), train, held, cfg, augmenter=aug, seed=seed)
            rows.append({"seed": seed, "only_replaced": only, "p": args.glico_p, "t": list(args.glico_t), "top1": acc["top1"], "top5": acc["top5"],
                         "seconds": round(time.perf_counter() - t0, 1), "steps": cfg.steps})
            print(json.dumps(rows[-1]), flush=True)
    (out / "modes.json").write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
