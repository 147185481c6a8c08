"""Command-line option types and flag groups shared by the ``glico`` commands (argparse only: the
library code they fill in lives in :mod:`glico.experiments` and :mod:`glico.names`)."""
from __future__ import annotations

import argparse
from typing import Any

from glico.experiments.downstream import OVERSAMPLE_TO, PRECISIONS
from glico._argtypes import nonnegative_float
from glico.experiments.grid import SCHEDULES
from glico.names import downstream_classifier


def classifier_name(text: str) -> str:
    """argparse type of ``--classifier``: a name :func:`downstream_classifier` accepts."""
    try:
        downstream_classifier(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return text


def add_oversample_flags(parser: argparse.ArgumentParser) -> None:
    """``--oversample-to`` and ``--fit-oversample-to`` (evaluate, ablate): the budget rules of the paper's protocol."""
    parser.add_argument("--oversample-to", default=OVERSAMPLE_TO, type=oversample_arg, metavar="N|full",
                        help=f"downstream oversampling: an epoch of a split has the steps of N images (default "
                             f"{OVERSAMPLE_TO}); full: of the full training set, the paper's rule (50000 on CIFAR)")
    parser.add_argument("--fit-oversample-to", default=0, type=oversample_arg, metavar="N|full",
                        help="GLICO fit oversampling: an epoch is ceil(N / split size) passes over the split; full: N "
                             "is the full training set's size, the paper's ~40 s epochs (default 0: one pass per epoch)")


def oversample_arg(text: str) -> int | str:
    """argparse type of ``--oversample-to`` / ``--fit-oversample-to``: ``full`` or a number of images >= 0."""
    if text == "full":
        return text
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 'full' (the full training set's size) or a number of images >= 0; "
                                         f"got {text!r}")
    return value


def erasing_scale_arg(text: str) -> tuple[float, float]:
    """argparse type of ``--erasing-scale``: ``LO,HI`` with 0 < LO <= HI <= 1."""
    try:
        lo, hi = (float(v) for v in text.split(","))
    except ValueError:
        lo = hi = float("nan")
    if not 0 < lo <= hi <= 1:
        raise argparse.ArgumentTypeError(f"must be LO,HI with 0 < LO <= HI <= 1 (fractions of the image area, e.g. "
                                         f"0.02,0.4); got {text!r}")
    return lo, hi


def model_fields_from_args(args) -> dict[str, Any]:
    """The GLICO composition flags of ``glico evaluate`` / ``glico ablate`` as ModelSpec fields (f is
    ``--glico-classifier`` there, since ``--classifier`` names the downstream classifier)."""
    fields = {"generator": args.generator, "loss": args.loss, "vgg_weights": args.vgg_weights, "init": args.init,
              "feature_weights": args.feature_weights, "noise": args.noise, "interpolator": args.interpolator,
              "classifier": args.classifier_f, "class_loss": args.class_loss, "code_dim": args.code_dim,
              "gamma": args.gamma}
    if getattr(args, "feature_net", None) is not None:
        fields["feature_net"] = args.feature_net
    return fields


def test_fraction(text: str) -> float:
    """argparse type of ``--test-fraction``: a number strictly between 0 and 1."""
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"must be a number strictly between 0 and 1 (e.g. 0.2); got {text!r}")
    return value


def add_test_fraction_flag(parser: argparse.ArgumentParser) -> None:
    """``--test-fraction`` (evaluate, train): a test set held out of a folder of class folders."""
    parser.add_argument("--test-fraction", default=None, type=test_fraction, metavar="F",
                        help="for folder:PATH of class folders without a test/ split: hold out a seeded share F of "
                             "each class as the test set (default: none; a train/ + test/ folder uses its test/)")


def add_schedule_flags(parser: argparse.ArgumentParser) -> None:
    """``--weight-decay`` and ``--schedule`` of the downstream SGD recipe (evaluate, ablate)."""
    parser.add_argument("--weight-decay", default=5e-4, type=nonnegative_float, help="SGD weight decay")
    parser.add_argument("--schedule", default="step", choices=SCHEDULES,
                        help="learning-rate schedule: step (x0.2 at 30/60/80 %% of the budget) or cosine")


def add_resume_flag(parser: argparse.ArgumentParser) -> None:
    """``--resume`` and ``--overwrite`` of a grid (evaluate, ablate)."""
    parser.add_argument("--overwrite", action="store_true",
                        help="start afresh in an --out that holds finished runs (its runs.jsonl and results.json "
                             "are kept as *.replaced)")
    parser.add_argument("--resume", action="store_true",
                        help="keep the finished runs in --out (runs.jsonl, written as each run ends) and run only the "
                             "missing ones; the settings must be the same. Without it, an --out holding finished runs "
                             "is refused")


def add_precision_flag(parser: argparse.ArgumentParser) -> None:
    """``--precision`` of the downstream classifier (evaluate, ablate)."""
    parser.add_argument("--precision", default="auto", choices=list(PRECISIONS),
                        help="downstream classifier arithmetic: auto = bf16 autocast + channels_last on GPUs with "
                             "bf16 tensor cores (Ampere and later), fp32 elsewhere (default); fp32; bf16 (CUDA only)")


def default_batch_size(args) -> int:
    """``--batch-size``, else the protocol's: 16 for CUB (the paper's fine-tuning), 128 otherwise."""
    return args.batch_size if args.batch_size is not None else (16 if args.data.startswith("cub:") else 128)


def default_lr(args) -> float:
    """``--lr``, else the protocol's: 0.001 for CUB, 0.1 otherwise."""
    return args.lr if args.lr is not None else (0.001 if args.data.startswith("cub:") else 0.1)
