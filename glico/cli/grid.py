"""``glico evaluate``, ``glico ablate`` and ``glico merge`` on the command line: flags to a
:class:`glico.experiments.grid.GridConfig` and a list of rows, run by the one grid engine
(:func:`glico.experiments.grid.run_grid`). Under ``torchrun`` the ranks join one process group here
(:func:`glico.distributed.init_from_env`) and share the grid."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, Callable

from glico import distributed
from glico._argtypes import (int_list, positive_float, positive_int, positive_int_list, probability,
                             unit_float_list)
from glico.cli.options import (add_oversample_flags, add_precision_flag, add_resume_flag, add_schedule_flags,
                               add_test_fraction_flag, classifier_name, default_batch_size, default_lr,
                               erasing_scale_arg, model_fields_from_args)
from glico.experiments.grid import ERASING_SCALE, UNLABELED_HELP, Variant, method_names
from glico.names import data_help, downstream_choices


def add_grid_flags(p: argparse.ArgumentParser, family_args: Callable[[argparse.ArgumentParser], None],
                   spc_help: str) -> None:
    """The flags of a grid's recipe (:class:`~glico.experiments.grid.GridConfig`), the same for evaluate and ablate."""
    p.add_argument("--data", required=True, help=data_help())
    p.add_argument("--spc", required=True, type=positive_int_list, help=spc_help)
    p.add_argument("--seeds", default=(0, 1, 2), type=int_list, help="comma-separated seeds (default 0,1,2)")
    p.add_argument("--out", required=True, help="folder for results.json, results.md, results.png")
    p.add_argument("--classifier", default="wrn-28-10", type=classifier_name,
                   help=f"downstream classifier: {', '.join(downstream_choices())} or wrn-DEPTH-K for any "
                        f"WideResNet (wrn-16-1 and weak are the CPU-sized options)")
    p.add_argument("--epochs", default=200, type=positive_int,
                   help="classifier budget: epochs over the split oversampled to --oversample-to images (default "
                        "200, the paper's: 8000 steps at batch 128 with the default 5000)")
    p.add_argument("--fit-epochs", default=200, type=positive_int, help="GLICO fit budget in epochs (default: 200, the paper's)")
    add_oversample_flags(p)
    p.add_argument("--baseline-p", default=None, type=probability, metavar="P",
                   help="replace each example with probability P by its augmented version for the augmentation "
                        "baselines (the paper's protocol: 0.5); default: each method's own paper's setting (Cutout, "
                        "AutoAugment, RandAugment, TrivialAugment, MixUp, CutMix on every example; Random Erasing 0.5)")
    p.add_argument("--cutout-size", default=None, type=positive_int, metavar="PX",
                   help="Cutout's square side (default: DeVries & Taylor's per dataset: half the side, 16 px at 32 px; "
                        "a quarter on CIFAR-100, 8 px)")
    p.add_argument("--erasing-scale", default=ERASING_SCALE, type=erasing_scale_arg, metavar="LO,HI",
                   help="Random Erasing's area range as fractions of the image (default 0.02,0.33, torchvision's; "
                        "the Random Erasing paper's: 0.02,0.4)")
    p.add_argument("--pretrained", default=None, metavar="imagenet|PATH",
                   help="start the torchvision downstream classifier (resnet50, vgg19) from weights: imagenet "
                        "(torchvision's IMAGENET1K_V1, through torch's hub cache) or a local state-dict file; the "
                        "paper's CUB recipe fine-tunes an ImageNet ResNet-50 (default: random initialisation)")
    p.add_argument("--batch-size", default=None, type=positive_int, help="default 128 (CUB: 16)")
    p.add_argument("--lr", default=None, type=positive_float, help="default 0.1 (CUB: 0.001)")
    add_schedule_flags(p)
    p.add_argument("--validation", default=None, type=positive_int, metavar="N",
                   help="score on N held-out training images per class instead of the test set (for choosing "
                        "settings; the test set is then not used)")
    p.add_argument("--glico-p", default=0.5, type=probability, help="GLICO replacement probability (default: 0.5)")
    p.add_argument("--glico-t", default=None, type=unit_float_list,
                   help="comma-separated set the GLICO policy draws t from (default: the paper's 0.1,0.2,0.3,0.4)")
    p.add_argument("--glico-refresh", default=None, type=positive_int, metavar="K",
                   help="draw a bank of one GLICO image per training example every K steps and replace from it "
                        "(faster where the generator dominates a step; default: fresh draws every step)")
    p.add_argument("--unlabeled", default=None, metavar="SOURCE",
                   help=f"MixMatch's unlabelled images (needed with mixmatch): {UNLABELED_HELP}")
    p.add_argument("--fid", default=None, metavar="inception|random-inception|PATH",
                   help="also measure FID of the generative methods' samples (glico, cdcgan) against training "
                        "images: inception (ImageNet weights via torch's hub cache), random-inception (offline; "
                        "comparable within one table only) or a weights file")
    p.add_argument("--fid-images", default=1000, type=positive_int, metavar="N",
                   help="images per FID set (default 1000; on a CPU about 0.2 s each)")
    p.add_argument("--image-size", default=None, type=positive_int, help="resize images to this side (default: as stored)")
    p.add_argument("--max-test", default=None, type=int,
                   help="score on a fixed stratified subsample of the test set (ablate's Transductive row then adds only "
                        "these)")
    add_test_fraction_flag(p)
    p.add_argument("--device", default="cpu",
                   help="cpu | cuda | cuda:N (default: cpu); under torchrun, cuda is each rank's own GPU (LOCAL_RANK)")
    add_precision_flag(p)
    p.add_argument("--fit-cache", default=None, metavar="DIR",
                   help="keep GLICO fits in DIR and reuse them when a grid needs the same fit (same split, "
                        "composition, seed and fit budget); not part of the results' settings. Under torchrun the "
                        "ranks share their fits through it (default there: OUT/fits)")
    p.add_argument("--data-parallel", action="store_true",
                   help="under torchrun: train every classifier and GLICO fit on all ranks together (the same global "
                        "batch split across them) instead of sharing the runs among the ranks (docs/distributed.md)")
    p.add_argument("--quiet", action="store_true")
    add_resume_flag(p)
    family_args(p)


def grid_fields(args, device: str) -> dict[str, Any]:
    """The :class:`~glico.experiments.grid.GridConfig` fields the flags of :func:`add_grid_flags` give."""
    return dict(
        data=args.data, spcs=args.spc, seeds=args.seeds, classifier=args.classifier, epochs=args.epochs,
        batch_size=default_batch_size(args), lr=default_lr(args), weight_decay=args.weight_decay,
        glico_p=args.glico_p, fit_epochs=args.fit_epochs, model=model_fields_from_args(args),
        image_size=args.image_size, max_test=args.max_test, device=device, precision=args.precision,
        schedule=args.schedule, validation=args.validation, glico_t=args.glico_t, glico_refresh=args.glico_refresh,
        test_fraction=args.test_fraction, oversample_to=args.oversample_to, fit_oversample_to=args.fit_oversample_to,
        baseline_p=args.baseline_p, cutout_size=args.cutout_size, erasing_scale=args.erasing_scale,
        pretrained=args.pretrained, unlabeled=args.unlabeled, fid=args.fid, fid_images=args.fid_images,
    )


def _grid_run(args) -> dict[str, Any]:
    """The keyword arguments of a grid's run that are not its settings."""
    return dict(progress=not args.quiet, resume=args.resume, overwrite=args.overwrite,
                fit_cache=None if args.fit_cache is None else Path(args.fit_cache), data_parallel=args.data_parallel)


def _joined(args) -> str:
    """Join torchrun's process group (a world of one without torchrun); the device this rank uses."""
    ranks, device = distributed.init_from_env(args.device)
    if args.data_parallel and ranks.world == 1:
        raise ValueError("--data-parallel trains on all ranks of a torchrun launch together; this is one process. "
                         "Start it with torchrun --nproc-per-node N (docs/distributed.md), or drop --data-parallel")
    return device


# ------------------------------------------------------------------------------------------ evaluate
def method_list(text: str) -> tuple[str, ...]:
    """argparse type of a comma-separated method list (each once, each one of :func:`method_names`)."""
    names = tuple(m.strip() for m in text.split(",") if m.strip())
    valid = method_names()
    bad = [m for m in names if m not in valid]
    if bad or not names:
        raise argparse.ArgumentTypeError(f"unknown method(s) {', '.join(bad) or '(none)'}; valid: {', '.join(valid)}")
    repeated = sorted({m for m in names if names.count(m) > 1})
    if repeated:
        raise argparse.ArgumentTypeError(f"{', '.join(repeated)} given more than once in {text!r}; each method runs once")
    return names


def add_evaluate_parser(sub, family_args: Callable[[argparse.ArgumentParser], None]) -> argparse.ArgumentParser:
    """Register ``glico evaluate`` on the CLI's subparsers."""
    from glico.experiments.evaluate import PRESETS

    e = sub.add_parser(
        "evaluate", help="downstream accuracy of GLICO vs augmentation baselines, mean ± STE over seeds",
        description="For each SPC and seed, train the same downstream classifier on the same split with the same "
                    "budget for each method (only the batch augmentation differs) and report top-1 (and top-5) on "
                    "the test set as mean ± standard error over seeds: results.json, results.md, results.png.",
        epilog="example: glico evaluate --data folder:my_images/ --image-size 32 --spc 10 --seeds 0,1,2 "
               "--methods baseline,autoaugment,glico,glico+autoaugment --classifier wrn-10-1 --epochs 16 "
               "--batch-size 64 --weight-decay 5e-3 --schedule cosine --loss laplacian+pixel --out runs/eval")
    e.add_argument("--methods", default=None, type=method_list,
                   help=f"comma-separated (default baseline,glico): {', '.join(method_names())}")
    e.add_argument("--preset", default=None, choices=sorted(PRESETS),
                   help="a named method list instead of --methods: table1 = the paper's Table I rows (" +
                        ",".join(PRESETS["table1"]["methods"]) + ", MixMatch on labelled data only: --unlabeled split)")
    add_grid_flags(e, family_args, "samples per class, e.g. 10 or 10,25,50")
    e.set_defaults(func=cmd_evaluate)
    return e


def cmd_evaluate(args) -> int:
    from glico.experiments.evaluate import EvaluateConfig, resolve_preset, run_evaluation

    methods, unlabeled = resolve_preset(args.methods, args.preset, args.unlabeled)
    device = _joined(args)
    cfg = EvaluateConfig(**{**grid_fields(args, device), "unlabeled": unlabeled}, methods=methods)
    run_evaluation(cfg, Path(args.out), **_grid_run(args))
    distributed.shutdown()
    return 0


# ------------------------------------------------------------------------------------------ ablate
def add_ablate_parser(sub, family_args: Callable[[argparse.ArgumentParser], None]) -> argparse.ArgumentParser:
    """Register ``glico ablate`` on the CLI's subparsers."""
    from glico.experiments.ablations import TABLES

    a = sub.add_parser(
        "ablate", help="the paper's ablations (Tables II-V, Fig. 7), each a list of GLICO compositions",
        description="Run one of the paper's ablation tables: each row a GLICO composition, fitted per SPC and seed, "
                    "used to augment the same downstream classifier; writes results.json, results.md, results.png.",
        epilog="example: glico ablate --table 2 --data digits --spc 5 --seeds 0,1,2 --classifier weak --epochs 5 "
               "--loss laplacian+pixel --out runs/table2")
    a.add_argument("--table", required=True, choices=list(TABLES),
                   help="2: GLICO, Baseline, No Classifier, No Noise, Lerp, Transductive; 3: Latent Classifier, "
                        "Hypercube/ResNet Init, Additive Noise, Cosine Loss; 4: with/without AutoAugment; "
                        "5: unlabelled images added; fig7: weak vs strong f across --spc")
    a.add_argument("--only", default=None,
                   help="comma-separated variant names to run (case-insensitive), e.g. 'GLICO,No Noise'")
    a.add_argument("--add-methods", default=None, type=method_list, metavar="M,...",
                   help="also run these methods as rows of their own (with the base composition), e.g. mixmatch "
                        "(with --unlabeled), cdcgan, cosine-loss, trivialaugment: " + ", ".join(method_names()))
    add_grid_flags(a, family_args, "samples per class, e.g. 25 (fig7: 10,25,50,100,250)")
    a.set_defaults(func=cmd_ablate)
    return a


def select_variants(table: str, only: str | None, add_methods: tuple[str, ...] | None = None) -> list[Variant]:
    """The rows of ``table`` named in ``only`` (comma-separated, case-insensitive; all when None), then one row
    per method of ``add_methods``.

    Raises:
        ValueError: a name the table does not have, or an added method whose name a row already has.
    """
    from glico.experiments.ablations import TABLES
    from glico.experiments.evaluate import method_variants

    variants = list(TABLES[table])
    if only:
        wanted = [n.strip() for n in only.split(",") if n.strip()]
        by = {v.name.lower(): v for v in variants}
        bad = [n for n in wanted if n.lower() not in by]
        if bad or not wanted:
            raise ValueError(f"--only: table {table} has no variant(s) {', '.join(bad) or '(none given)'}; "
                             f"its variants: {', '.join(v.name for v in variants)}")
        keep = {n.lower() for n in wanted}
        variants = [v for v in variants if v.name.lower() in keep]
    extra = method_variants(add_methods or ())
    clash = [v.name for v in extra if v.name.lower() in {u.name.lower() for u in variants}]
    if clash:
        raise ValueError(f"--add-methods: {', '.join(clash)} is already a row of table {table}; drop it there")
    return variants + extra


def cmd_ablate(args) -> int:
    from glico.experiments.ablations import ablation_config, run_ablation

    variants = select_variants(args.table, args.only, args.add_methods)
    device = _joined(args)
    run_ablation(variants, ablation_config(**grid_fields(args, device)), out=Path(args.out), table=args.table,
                 echo=print, **_grid_run(args))
    if distributed.current().main:
        print((Path(args.out) / "results.md").read_text())
    distributed.shutdown()
    return 0


# ------------------------------------------------------------------------------------------ merge
def add_merge_parser(sub):
    """Register ``glico merge`` on the CLI's subparsers."""
    m = sub.add_parser("merge", help="one table from several 'glico evaluate' / 'glico ablate' runs of one setting "
                                     "(e.g. one process per seed)",
                       description="Join the results of several 'glico evaluate' (or 'glico ablate') runs of one "
                                   "setting, each a share of the grid (seeds, methods, rows), into the table one "
                                   "command would have written. Settings that differ are refused.",
                       epilog="example: glico merge runs/seed0 runs/seed1 runs/seed2 --out runs/all")
    m.add_argument("inputs", nargs="+", help="result folders (or their results.json)")
    m.add_argument("--out", required=True, help="folder for the merged results.json, results.md, results.png")
    m.set_defaults(func=cmd_merge)
    return m


def cmd_merge(args) -> int:
    from glico.experiments.merge import merge_results

    merge_results(args.inputs, out=args.out)
    print((Path(args.out) / "results.md").read_text())
    return 0
