"""The ``glico`` command line: demo, fit, sample. Names become components in :mod:`glico.names`."""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

import torch

from glico import __version__
from glico._argtypes import (int_list, nonnegative_float, nonnegative_int, positive_float, positive_int, probability,
                             unit_float_list)
from glico.names import ModelSpec, build_model, canonical, canonical_names, choices, data_help

log = logging.getLogger("glico")


# ---------------------------------------------------------------------------------------- helpers
def _setup_logging(log_file: Path | None = None, verbose: bool = False) -> None:
    root = logging.getLogger("glico")
    root.setLevel(logging.INFO)
    root.handlers.clear()
    console = logging.StreamHandler(sys.stderr)
    console.setLevel(logging.INFO if verbose else logging.WARNING)
    console.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    root.addHandler(console)
    if log_file is not None:
        fh = logging.FileHandler(log_file)
        fh.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        root.addHandler(fh)


_positive_int = positive_int


def _show_defaults(parser: argparse.ArgumentParser) -> None:
    """End every option's help with its default, unless the help already states it or there is none."""
    for action in parser._actions:
        text, default = action.help or "", action.default
        if (not action.option_strings or default is None or default is False or default == argparse.SUPPRESS
                or text == argparse.SUPPRESS
                or "default" in text.lower()):
            continue
        shown = ",".join(map(str, default)) if isinstance(default, (tuple, list)) else str(default)
        action.help = f"{text} (default: {shown.replace('%', '%%')})".strip()


def _loss_name(text: str) -> str:
    valid = choices("loss")
    for part in text.split("+"):
        if part not in valid:
            raise argparse.ArgumentTypeError(f"unknown loss {part!r}; valid: {', '.join(valid)} or sums like 'perceptual+pixel'")
    return text


def _family_args(p: argparse.ArgumentParser, classifier_flag: str = "--classifier", classifier_dest: str = "classifier",
                 title: str = "GLICO composition (defaults: the paper's choices)") -> None:
    """The GLICO composition flags (``classifier_flag`` names the conditional classifier f, which
    ``glico evaluate`` calls --glico-classifier since its --classifier is the downstream one)."""
    g = p.add_argument_group(title)
    g.add_argument("--generator", default="dcgan", choices=choices("generator"))
    g.add_argument("--loss", default="perceptual", type=_loss_name,
                   help=f"reconstruction loss: {', '.join(choices('loss'))}, or a sum 'a+b' (default: perceptual)")
    g.add_argument("--vgg-weights", default="imagenet",
                   help="VGG-16 weights of the perceptual/LPIPS loss: imagenet | random | PATH to a state_dict file")
    g.add_argument("--init", default="random", choices=choices("init"))
    g.add_argument("--feature-weights", default="imagenet",
                   help="weights of the ResNet (ResNet-50 unless --feature-net says otherwise) behind --init features: "
                        "imagenet | random | PATH to a state_dict file")
    g.add_argument("--feature-net", default="resnet50", choices=choices("feature_net"),
                   help="torchvision network whose penultimate features initialise the codes with --init features "
                        "(default: resnet50, the paper's ResNet init)")
    g.add_argument("--noise", default="concat", choices=choices("noise"))
    g.add_argument("--interpolator", default="slerp", choices=choices("interpolator"))
    g.add_argument(classifier_flag, dest=classifier_dest, default="weak", choices=choices("classifier"),
                   type=lambda name: canonical("classifier", name),
                   help="GLICO's conditional classifier f (default: weak)")
    g.add_argument("--class-loss", default="ce", choices=choices("class_loss"))
    g.add_argument("--code-dim", default=128, type=_positive_int)
    g.add_argument("--gamma", default=0.1, type=nonnegative_float, help="weight of the classification term")


def _spec_from_args(args, image_shape, num_classes) -> ModelSpec:
    return ModelSpec(
        image_shape=tuple(image_shape), num_classes=num_classes, generator=args.generator, loss=args.loss,
        vgg_weights=args.vgg_weights, init=args.init, feature_weights=args.feature_weights, noise=args.noise,
        interpolator=args.interpolator, classifier=args.classifier, class_loss=args.class_loss,
        code_dim=args.code_dim, gamma=args.gamma, feature_net=args.feature_net,
    )


def _write_pictures(model, out: Path, train) -> dict[str, str]:
    """The fit's pictures for the training images ``train`` (an ImageSet)."""
    from glico.viz import write_fit_pictures

    files = write_fit_pictures(model, out, train.labels, train_images=train.images)
    if "interpolation" not in files:
        print("glico: note: no class has two training images to interpolate between, so interpolation.png is not "
              "written (and GLICO's samples are reconstructions plus noise)", file=sys.stderr)
    return files


# ---------------------------------------------------------------------------------------- demo
def cmd_demo(args) -> int:
    from glico.experiments.demo import DemoConfig, run_demo

    seeds = (args.seed,) if args.seed is not None else args.seeds
    cfg = DemoConfig(seeds=seeds, spc=args.spc, fit_epochs=args.fit_epochs, classifier=args.classifier,
                     steps=args.steps, batch_size=args.batch_size, lr=args.lr, weight_decay=args.weight_decay,
                     schedule=args.schedule, glico_p=args.glico_p, glico_t=tuple(args.glico_t),
                     code_dim=args.code_dim, validation=args.validation,
                     restarts=args.restarts)  # checked before anything is written
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    _setup_logging(out / "log.txt")
    jobs = args.jobs if args.jobs is not None else os.cpu_count() or 1
    # 8x8 images: intra-op threads only add synchronisation (3x slower measured with 2 threads on a 2-core
    # machine with one other busy process), so one thread per process unless --threads says otherwise.
    threads = args.threads or 1
    torch.set_num_threads(threads)
    print(f"glico demo: scikit-learn digits, {cfg.spc} images per class, seeds {', '.join(map(str, seeds))} "
          f"({jobs} processes): a GLICO fit per seed, then the same {cfg.classifier} classifier trained without "
          f"and with GLICO augmentation (p = {cfg.glico_p}"
          + (f"; {cfg.restarts} of each per seed, averaged" if cfg.restarts > 1 else "") + "), scored on "
          + ("the digits' test images" if cfg.validation is None else
             f"{cfg.validation} held-out training images per class (validation; the test images are not used)"))
    report = run_demo(cfg, out, jobs=jobs, progress=not args.quiet, threads_per_job=threads)
    if "interpolation" not in report["files"]:
        print("glico demo: note: no class has two training images to interpolate between, so interpolation.png is "
              "not written (and GLICO's samples are reconstructions plus noise)", file=sys.stderr)
    s = report["summary"]
    gains = " / ".join(f"{r['gain']:+.2f}" for r in report["per_seed"])
    if len(seeds) > 1:
        print(f"mean over {len(seeds)} seeds: baseline {s['baseline']['mean']:.2f} ± {s['baseline']['ste']:.2f} %, "
              f"GLICO {s['glico']['mean']:.2f} ± {s['glico']['ste']:.2f} % (± standard error)")
    files = ", ".join(Path(report["files"][k]).name for k in ("accuracy", "samples", "interpolation")
                      if k in report["files"])
    print(f"GLICO augmentation: {s['gain']['mean']:+.2f} points over the baseline"
          + (f" on average (± {s['gain']['ste']:.2f}; per seed {gains})" if len(seeds) > 1 else "")
          + f". Wrote {out / 'report.json'} and {files} there ({report['seconds']:.0f} s)")
    return 0


# ---------------------------------------------------------------------------------------- fit
def cmd_fit(args) -> int:
    """``glico fit``: fit GLICO into a run folder; ``--resume`` continues the fit saved there.

    Exit codes: 0 done; 2 an error (bad input, a non-finite loss, a refused resume); 130 stopped by
    SIGINT/SIGTERM after writing a checkpoint (the message says how to resume).
    """
    from glico.data import load_data
    from glico.training import FitConfig, FitInterrupted, NonFiniteLossError, fit, resolve_device
    from glico.viz import plot_losses

    resolve_device(args.device)
    if args.image_size is not None and args.generator == "dcgan":  # before the data are decoded
        from glico.generators.dcgan import check_image_size

        check_image_size(args.image_size)
    out = Path(args.out)
    ckpt = out / "checkpoint.pt"
    if args.resume:
        if not ckpt.is_file():
            raise FileNotFoundError(f"--resume: there is no checkpoint to resume from in {out} (no {ckpt.name}); "
                                    f"run without --resume to start a fit there")
        if not (out / "run.json").is_file():
            raise FileNotFoundError(f"--resume: {out} has {ckpt.name} but no run.json; it was not written by 'glico fit'")
    else:
        earlier = [f for f in RUN_FILES if (out / f).exists()]
        if earlier and not args.overwrite:
            raise ValueError(f"{out} already holds a fit ({', '.join(earlier)}); add --resume to continue it, "
                             f"--overwrite to replace it, or give another --out")
    out.mkdir(parents=True, exist_ok=True)
    _setup_logging(out / "log.txt", verbose=args.verbose)
    torch.manual_seed(args.seed)  # the model's initial weights: the same seed gives the same run
    data = load_data(args.data, image_size=args.image_size, test_fraction=args.test_fraction)
    train, chosen = _training_images(data, args.spc, args.seed)
    spec = _spec_from_args(args, train.images.shape[1:], len(data.train.class_names))
    model = build_model(spec)
    unlabeled = data.require_test("glico fit --transductive").images if args.transductive else None
    cfg = FitConfig(epochs=args.epochs, batch_size=args.batch_size, oversample_to=args.oversample_to, lr=args.lr,
                    lr_codes=args.lr_codes, seed=args.seed, device=args.device, checkpoint=str(ckpt), checkpoint_every=args.checkpoint_every,
                    checkpoint_minutes=args.checkpoint_minutes, resume=args.resume, deterministic=args.deterministic,
                    progress=not args.quiet)
    run = {"glico_version": __version__, "data": args.data, "spc": args.spc, "seed": args.seed,
           "image_size": args.image_size, "test_fraction": args.test_fraction, "transductive": args.transductive, "class_names": list(data.train.class_names),
           "train_indices": chosen.tolist(), "model": spec.to_dict(), "fit": {"epochs": args.epochs, "batch_size": args.batch_size,
           "lr": args.lr, "lr_codes": args.lr_codes, "device": args.device}}
    if args.oversample_to:  # absent when 0, so that a run.json written before the flag existed still resumes
        run["fit"]["oversample_to"] = args.oversample_to
    run = json.loads(json.dumps(run))  # as it reads back from run.json
    if args.resume:
        differ = _run_differences(canonical_names(json.loads((out / "run.json").read_text())), run)
        if differ:
            raise ValueError(f"--resume: these settings differ from the fit in {out}: {'; '.join(differ)}. "
                             f"Rerun with the original settings, or start a new fit in another --out folder")
        log.info("resuming the fit in %s", out)
    else:
        # --overwrite: the earlier fit's files go only now that the data and the composition have loaded,
        # and none of them is left beside the new fit's.
        for f in RUN_FILES:
            (out / f).unlink(missing_ok=True)
        (out / "run.json").write_text(json.dumps(run, indent=2))
        log.info("fitting %s on %s, %s per class", spec, args.data, args.spc)
    try:
        history = fit(model, train.images, train.labels, unlabeled=unlabeled, config=cfg,
                      checkpoint_extra={"spec": spec.to_dict(), "run": run})
    except FitInterrupted as e:
        print(f"glico fit: interrupted by {e.signal_name} after step {e.step} of {e.total_steps}; that step's state "
              f"is saved in {e.checkpoint}.\nTo continue the fit, run: {_resume_command(args)}", file=sys.stderr)
        return 130
    except NonFiniteLossError as e:
        print(f"glico fit: error: {e}", file=sys.stderr)
        return 2
    if args.resume:  # the budget may have been extended; written once the fit accepted it
        (out / "run.json").write_text(json.dumps(run, indent=2))
    _write_pictures(model.cpu(), out, train)
    plot_losses(history, out / "losses.png")
    (out / "history.json").write_text(json.dumps(history.__dict__, indent=2))
    resumed = f" (resumed at step {history.resumed_from})" if history.resumed_from is not None else ""
    print(f"fitted in {history.seconds:.1f} s{resumed}; reconstruction loss {history.reconstruction[0]:.4f} -> "
          f"{history.reconstruction[-1]:.4f}. Run folder: {out} (checkpoint.pt, samples.png, reconstructions.png, log.txt)")
    return 0


# What 'glico fit' writes into its run folder (log.txt is appended to, never replaced).
RUN_FILES = ("checkpoint.pt", "run.json", "history.json", "samples.png", "reconstructions.png", "interpolation.png",
             "losses.png")


# Entries of run.json that may change between an interrupted fit and its resume.
_RESUME_FREE = {"glico_version", "fit.device", "fit.epochs"}  # fit.epochs: the fit loop judges an extension


def _run_differences(saved: dict, now: dict, prefix: str = "", file: str = "run.json",
                     flags: dict[str, str] | None = None) -> list[str]:
    """'--flag: FILE has A, this command B' for every setting of ``now`` that differs from ``saved``;
    ``flags`` names the flag of a dotted entry whose flag is not ``--<its last part>``."""
    flags = flags or {}
    out = []
    for key in sorted(set(saved) | set(now)):
        name = prefix + key
        a, b = saved.get(key), now.get(key)
        if name in _RESUME_FREE or a == b:
            continue
        if isinstance(a, dict) and isinstance(b, dict):
            out += _run_differences(a, b, name + ".", file, flags)
        elif key in ("class_names", "train_indices", "image_shape", "num_classes"):
            out.append(f"{name} (the data differ from the original fit's)")
        else:
            flag = flags.get(name, f"--{key.replace('_', '-')}")
            out.append(f"{flag}: {file} has {a!r}, this command {b!r}")
    return out


def _resume_command(args) -> str:
    """The ``glico fit`` (or ``train``) command line of ``args`` (flags that differ from their defaults) plus
    --resume."""
    import shlex

    parts = ["glico"] + (["--threads", str(args.threads)] if getattr(args, "threads", None) else []) + [args.command]
    for action in args.fit_parser._actions:
        if not action.option_strings or action.dest in ("help", "resume"):
            continue
        value = getattr(args, action.dest, None)
        if value == action.default and not action.required:
            continue
        if isinstance(action, argparse._StoreTrueAction):
            parts.append(action.option_strings[-1])
        elif isinstance(action, argparse.BooleanOptionalAction):
            parts.append(action.option_strings[0] if value else action.option_strings[1])
        elif action.nargs in ("+", "*"):
            parts += list(map(str, value))
        elif isinstance(value, (list, tuple)):  # comma-separated lists (--glico-t 0.1,0.2)
            parts += [action.option_strings[-1], ",".join(map(str, value))]
        else:
            parts += [action.option_strings[-1], str(value)]
    return shlex.join(parts + ["--resume"])


from glico.checkpoint import load_run  # noqa: E402  (re-exported: the CLI's run loader lives there)


# ---------------------------------------------------------------------------------------- sample
GRID_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".gif", ".bmp", ".tif", ".tiff")
SAMPLE_MARKER = ".glico-sample"  # marks a folder written by 'glico sample' (its stale images may be removed)


def cmd_sample(args) -> int:
    from glico.viz import save_grid

    model, payload = load_run(args.run)
    trainer = payload["extra"].get("trainer") or {}
    if trainer.get("step") is not None and trainer.get("total_steps") and trainer["step"] < trainer["total_steps"]:
        print(f"glico sample: note: the fit in {args.run} stopped at step {trainer['step']} of "
              f"{trainer['total_steps']}; these samples come from an unfinished model (continue it with "
              f"'glico fit ... --resume')", file=sys.stderr)
    n = args.n
    labels = torch.arange(model.num_classes).repeat_interleave(n)
    images = model.sample(labels, seed=args.seed)
    out = Path(args.out)
    if out.suffix and out.suffix.lower() not in GRID_SUFFIXES and not args.folder and not out.is_dir():
        raise ValueError(f"--out {out}: {out.suffix!r} is not an image suffix a grid can be saved as "
                         f"({', '.join(GRID_SUFFIXES)}); give one of them for a grid, or a folder (no suffix, or "
                         f"--folder) for PNGs per class")
    if args.folder or out.suffix.lower() not in GRID_SUFFIXES:
        from torchvision.utils import save_image

        names = payload["extra"].get("run", {}).get("class_names") or [str(c) for c in range(model.num_classes)]
        for c in range(model.num_classes):
            d = out / names[c]
            d.mkdir(parents=True, exist_ok=True)
            for k in range(n):
                save_image(images[c * n + k], d / f"{k:05d}.png")
            # Images of an earlier, larger --n would otherwise sit beside these as if drawn now; only a
            # folder this command wrote before (it leaves a marker) is cleaned, never a folder of the user's.
            if (out / SAMPLE_MARKER).is_file():
                for old in d.glob("[0-9][0-9][0-9][0-9][0-9].png"):
                    if int(old.stem) >= n:
                        old.unlink()
        (out / SAMPLE_MARKER).write_text(f"written by glico sample --run {args.run} --n {n} --seed {args.seed}\n")
        print(f"wrote {n} images per class for {model.num_classes} classes under {out}/<class>/")
    else:
        save_grid(images, out, nrow=n)
        print(f"wrote a grid of {n} samples per class (one row per class) to {out}")
    return 0


# ---------------------------------------------------------------------------------------- train
# What 'glico train' writes into its folder while training and when done.
TRAIN_FILES = ("model.json", "weights.pt", "train.json", "train-state.pt", "model.torchscript.pt", "model.onnx",
               "model.pt2")


def _spc_or_all(text: str) -> int | str:
    """``--spc``: a number of images per class, or ``all`` (every training image, classes of any size)."""
    if text == "all":
        return "all"
    return _positive_int(text)


def _training_images(data, spc: int | str, seed: int):
    """``(images, their indices in data.train)``: a seeded split of ``spc`` per class, or all of them."""
    from glico.data import small_sample_split

    if spc == "all":
        return data.train, torch.arange(len(data.train))
    return small_sample_split(data.train, spc, seed)


def cmd_train(args) -> int:
    """``glico train``: fit GLICO (or reuse ``--run``), train the final classifier on all the labelled
    images with the chosen augmentation, write a model folder. Exit codes as ``glico fit``.

    Everything that can be refused (settings, data, image shape, the loss's weights files) is checked before
    anything in ``--out`` is written or, with ``--overwrite``, removed."""
    from glico.classify import GLICO_RUN_DIR, MODEL_JSON, TRAIN_STATE, check_square, recipe_for, train_final_classifier
    from glico.data import load_data
    from glico.experiments.downstream import TrainInterrupted, resolve_precision
    from glico.cli.options import model_fields_from_args
    from glico.experiments.grid import GLICO_METHODS
    from glico.training import FitInterrupted, NonFiniteLossError, resolve_device

    resolve_device(args.device)
    if args.resume and args.overwrite:
        raise ValueError("--resume continues the training in --out and --overwrite replaces it; give one of them")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file; give a folder for the model")
    glico_method = args.method in GLICO_METHODS
    data_spec, image_size, test_fraction, fitted = args.data, args.image_size, args.test_fraction, None
    spc = "all" if args.spc is None else args.spc
    seed = 0 if args.seed is None else args.seed
    fields = model_fields_from_args(args)
    run_model = None
    if args.run is not None:
        if not glico_method:
            raise ValueError(f"--run gives a GLICO fit, but method {args.method!r} does not use one; drop --run or "
                             f"choose a glico method")
        given = [a.option_strings[-1] for a in args.fit_parser._actions
                 if a.dest in (*_COMPOSITION_DESTS, "fit_epochs") and getattr(args, a.dest) != a.default]
        if given:
            raise ValueError(f"--run reuses the fit in {args.run} with its own composition and budget, so "
                             f"{', '.join(given)} would have no effect; drop {'it' if len(given) == 1 else 'them'}")
        fitted, payload = load_run(args.run, device=args.device)
        run = payload["extra"].get("run") or {}
        for flag, mine, theirs in (("--data", args.data, run.get("data")), ("--spc", args.spc, run.get("spc")),
                                   ("--seed", args.seed, run.get("seed")),
                                   ("--image-size", args.image_size, run.get("image_size"))):
            if mine is not None and mine != theirs:
                raise ValueError(f"{flag} {mine} differs from the fit in {args.run} ({theirs!r}); --run trains on "
                                 f"the fit's own split: leave {flag} out")
        data_spec, spc, seed, image_size = run.get("data"), run.get("spc"), run.get("seed"), run.get("image_size")
        test_fraction = run.get("test_fraction") if args.test_fraction is None else args.test_fraction
        if run.get("transductive"):
            raise ValueError(f"{args.run} is a transductive fit (it also reconstructed the test images); glico train "
                             f"scores on the test set, so it needs a fit of the training images only")
        trainer = payload["extra"].get("trainer") or {}
        if trainer.get("step") is not None and trainer.get("total_steps") and trainer["step"] < trainer["total_steps"]:
            print(f"glico train: note: the fit in {args.run} stopped at step {trainer['step']} of "
                  f"{trainer['total_steps']}; the classifier is trained with an unfinished GLICO model (continue it "
                  f"with 'glico fit ... --resume' first)", file=sys.stderr)
        # The recipe records the fit that is used, not the flags' defaults.
        run_model = {k: v for k, v in run.get("model", {}).items() if k not in ("image_shape", "num_classes")}
    if data_spec is None:
        raise ValueError("give --data SPEC (or --run RUN, a 'glico fit' folder, to reuse its fit and its data)")
    overrides = {k: v for k, v in {
        "classifier": args.classifier, "epochs": args.epochs, "batch_size": args.batch_size, "lr": args.lr,
        "weight_decay": args.weight_decay, "schedule": args.schedule, "precision": args.precision,
        "glico_p": args.glico_p, "glico_t": None if args.glico_t is None else tuple(args.glico_t),
        "glico_refresh": args.glico_refresh, "fit_epochs": args.fit_epochs}.items() if v is not None}
    # digits are not mirror-symmetric; --flip / --no-flip decide for any data.
    overrides["flip"] = (data_spec.split(":")[0].strip() != "digits") if args.flip is None else args.flip
    recipe = recipe_for(args.recipe, args.device, **overrides)
    if run_model is not None:
        model_fields = run_model
        overrides["fit_epochs"] = int((run.get("fit") or {}).get("epochs", recipe.fit_epochs))
    else:
        if fields["loss"] is None:
            fields["loss"] = recipe.model.get("loss", "perceptual")
        model_fields = {**recipe.model, **fields}
    recipe = recipe_for(args.recipe, args.device, **overrides, model=model_fields)
    resolve_precision(recipe.precision, args.device)
    settings = {"glico_version": __version__, "data": data_spec, "spc": spc, "seed": seed, "image_size": image_size,
                "test_fraction": test_fraction,
                "method": args.method, "run": None if args.run is None else str(Path(args.run).resolve()),
                "recipe": recipe.to_dict(), "device": args.device}
    settings = json.loads(json.dumps(settings))
    ours = _train_files_in(out)
    if args.resume:
        if not (out / "train.json").is_file():
            raise FileNotFoundError(f"--resume: {out} holds no training to resume (no train.json); run without "
                                    f"--resume to start one there")
        if (out / MODEL_JSON).is_file() and not (out / TRAIN_STATE).is_file():
            raise ValueError(f"--resume: the training in {out} has finished (model.json is written); use --overwrite "
                             f"to train again, or another --out")
        differ = _run_differences(json.loads((out / "train.json").read_text()), settings, file="train.json",
                                  flags=_TRAIN_FLAGS)
        differ = [d for d in differ if not d.startswith("--device")]
        if differ:
            raise ValueError(f"--resume: these settings differ from the training in {out}: {'; '.join(differ)}. "
                             f"Rerun with the original settings, or start a new training in another --out folder")
    elif ours and not args.overwrite:
        raise ValueError(f"{out} already holds a training ({', '.join(ours)}); add --resume to continue it, "
                         f"--overwrite to replace it, or give another --out")
    if glico_method and args.run is None and (out / GLICO_RUN_DIR).exists() and GLICO_RUN_DIR not in ours:
        raise ValueError(f"{out / GLICO_RUN_DIR} exists and is not a GLICO fit written by glico train (no run.json or "
                         f"checkpoint.pt); the fit goes there, so give another --out")
    data = load_data(data_spec, image_size=image_size, test_fraction=test_fraction)
    train, chosen = _training_images(data, spc, seed)
    c, h, w = train.images.shape[1:]
    check_square(h, w)  # before anything in --out changes
    if fitted is not None and len(fitted.labels) < len(train):
        raise ValueError(f"the fit in {args.run} has {len(fitted.labels)} codes but its split has {len(train)} images")
    spec = None
    if glico_method and fitted is None:
        # Composed now (and thrown away) so that a composition that cannot be built (images the generator
        # cannot make, a missing weights file) is refused before anything in --out changes.
        spec = ModelSpec(image_shape=(c, h, w), num_classes=len(train.class_names), **recipe.model)
        build_model(spec)
    out.mkdir(parents=True, exist_ok=True)
    _setup_logging(out / "log.txt", verbose=args.verbose)
    if not args.resume:
        if args.overwrite:
            import shutil

            for f in ours:
                target = out / f
                shutil.rmtree(target) if target.is_dir() else target.unlink(missing_ok=True)
        (out / "train.json").write_text(json.dumps(settings, indent=2))
    if torch.device(args.device).type == "cpu":
        from glico.experiments.downstream import steps_for
        from glico.experiments.grid import cpu_time_warning

        warning = cpu_time_warning(recipe.classifier, (c, h, w), len(train.class_names),
                                   min(recipe.batch_size, len(train)),
                                   steps_for(len(train), recipe.batch_size, recipe.epochs), "glico train",
                                   cpu_recipe="--recipe cpu")
        if warning:
            print(warning, file=sys.stderr)
    counts = train.class_counts().tolist()
    per_class = f"{counts[0]} per class" if len(set(counts)) == 1 else f"{min(counts)}-{max(counts)} per class"
    print(f"glico train: {data.name}, {len(train)} training images ({per_class}, {len(counts)} classes, {w}x{h}); "
          f"method {args.method}; {recipe.classifier}, {recipe.epochs} epochs, batch {recipe.batch_size}, "
          f"{recipe.schedule} schedule" + (f"; GLICO fit {recipe.fit_epochs} epochs, loss {recipe.model['loss']}, "
                                           f"p {recipe.glico_p}" if spec is not None else "")
          + f"; on {args.device}", file=sys.stderr)
    fit_extra = None
    if spec is not None:
        run = {"glico_version": __version__, "data": data_spec, "spc": spc, "seed": seed, "image_size": image_size,
               "test_fraction": test_fraction, "transductive": False, "class_names": list(train.class_names),
               "train_indices": chosen.tolist(), "model": spec.to_dict(),
               "fit": {"epochs": recipe.fit_epochs, "batch_size": recipe.fit_batch_size, "lr": 1e-3, "lr_codes": 1e-2,
                       "device": args.device}}
        run = json.loads(json.dumps(run))
        fit_extra = {"spec": spec.to_dict(), "run": run}
        (out / GLICO_RUN_DIR).mkdir(exist_ok=True)
        (out / GLICO_RUN_DIR / "run.json").write_text(json.dumps(run, indent=2))
    if data.test is None:
        print("glico train: note: the data have no test split, so the classifier is not scored (give "
              "--test-fraction F to hold out a seeded share F of each class)", file=sys.stderr)
    try:
        model = train_final_classifier(train, args.method, recipe, seed=seed, device=args.device, test=data.test,
                                       glico_model=fitted, work_dir=out, resume=args.resume,
                                       progress=not args.quiet, fit_extra=fit_extra)
    except (FitInterrupted, TrainInterrupted) as e:
        what = "the GLICO fit" if isinstance(e, FitInterrupted) else "the classifier's training"
        print(f"glico train: {what} was interrupted by {e.signal_name} after step {e.step} of {e.total_steps}; its "
              f"state is saved in {e.checkpoint}.\nTo continue, run: {_resume_command(args)}", file=sys.stderr)
        return 130
    except NonFiniteLossError as e:
        print(f"glico train: error: {e} To start this training again with other settings, add --overwrite.",
              file=sys.stderr)
        return 2
    model.info.update({"data": data_spec, "spc": spc, "image_size": image_size, "test_fraction": test_fraction,
                       # inside the model folder: relative to it; a --run elsewhere: its absolute path
                       "glico_run": settings["run"] or (GLICO_RUN_DIR if fit_extra else None)})
    model.save(out)
    if fit_extra is not None:
        glico_model, _ = load_run(out / GLICO_RUN_DIR)
        _write_pictures(glico_model, out / GLICO_RUN_DIR, train)
    test = model.info.get("test")
    score = (f"test top-1 {test['top1']:.2f} %" + (f", top-5 {test['top5']:.2f} %" if test["top5"] is not None else "")
             + f" on {test['n']} images; " if test else "")
    print(f"trained in {model.info['seconds']:.0f} s ({model.info['steps']} steps); {score}model folder: {out} "
          f"(model.json, weights.pt). Use it: glico predict --model {out} IMAGES_OR_FOLDERS")
    return 0


# The GLICO composition flags' destinations (glico train refuses them with --run).
_COMPOSITION_DESTS = ("generator", "loss", "vgg_weights", "init", "feature_weights", "feature_net", "noise",
                      "interpolator", "classifier_f", "class_loss", "code_dim", "gamma")
# train.json entries whose flag is not --<last part of the name>.
_TRAIN_FLAGS = {"recipe.model.classifier": "--glico-classifier", "recipe.fit_epochs": "--fit-epochs",
                "recipe.glico_p": "--glico-p", "recipe.glico_t": "--glico-t", "recipe.glico_refresh": "--glico-refresh",
                "recipe.flip": "--flip/--no-flip", "run": "--run"}


def _train_files_in(out: Path) -> list[str]:
    """What an earlier ``glico train`` left in ``out`` (a ``glico/`` folder counts only with its run.json)."""
    from glico.classify import GLICO_RUN_DIR

    found = [f for f in TRAIN_FILES if (out / f).exists()]
    if (out / GLICO_RUN_DIR / "run.json").is_file() or (out / GLICO_RUN_DIR / "checkpoint.pt").is_file():
        found.append(GLICO_RUN_DIR)
    return found


# ---------------------------------------------------------------------------------------- predict
def cmd_predict(args) -> int:
    from glico.classify import folder_accuracy, image_files, load_classifier, predict_files, write_predictions
    from glico.training import resolve_device

    resolve_device(args.device)
    model = load_classifier(args.model, device=args.device)
    files = image_files(args.paths)
    if not files:
        raise ValueError(f"no image files in {', '.join(map(str, args.paths))} (looked for files ending in "
                         f".jpg, .png, ... in the folders given)")
    if args.out and Path(args.out).is_dir():
        raise ValueError(f"--out {args.out} is a folder; give a file for the predictions (e.g. predictions.csv)")
    fmt = args.format or ("jsonl" if args.out and args.out.endswith((".jsonl", ".ndjson")) else "csv")
    rows = predict_files(model, files, top_k=args.top_k, batch_size=args.batch_size, progress=not args.quiet)
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(out.name + ".tmp")
        with open(tmp, "w", newline="") as f:
            write_predictions(rows, f, fmt)
        os.replace(tmp, out)
    else:
        write_predictions(rows, sys.stdout, fmt)
    bad = [r for r in rows if r["error"] is not None]
    for r in bad[:10]:
        print(f"glico predict: warning: could not read {r['file']}: {r['error']}", file=sys.stderr)
    if len(bad) > 10:
        print(f"glico predict: warning: ... and {len(bad) - 10} more unreadable files (their rows have the error)",
              file=sys.stderr)
    acc = folder_accuracy(rows, model.class_names)
    where = f" to {args.out}" if args.out else ""
    print(f"glico predict: {len(rows) - len(bad)} of {len(rows)} files classified{where}"
          + (f"; {len(bad)} could not be read" if bad else "")
          + (f". Files in folders named like a class: top-1 {acc['top1']:.2f} % ({acc['correct']} of {acc['n']})"
             if acc else ""), file=sys.stderr)
    return 0 if len(bad) < len(rows) else 2


# ---------------------------------------------------------------------------------------- export
def cmd_export(args) -> int:
    from glico.classify import export_classifier, load_classifier

    model = load_classifier(args.model)
    default = {"torchscript": "model.torchscript.pt", "onnx": "model.onnx", "pt2": "model.pt2"}[args.format]
    out = Path(args.out) if args.out else Path(args.model) / default
    if out.is_dir() or (args.out and args.out.endswith(("/", os.sep))):
        raise ValueError(f"--out {args.out} is a folder; give the file to write (e.g. {Path(args.out) / default})")
    try:
        result = export_classifier(model, out, args.format)
    except ImportError as e:
        print(f"glico export: error: {e}", file=sys.stderr)
        return 2
    check = (f"its logits match the eager model's within {result['max_abs_diff']:.2g} ({result['checked_with']})"
             if result["checked_with"] else "not checked (onnxruntime is not installed)")
    print(f"wrote {out} ({args.format}; input: float images (N, {model.in_channels}, {model.image_size}, "
          f"{model.image_size}) in [0, 1], output: logits (N, {len(model.class_names)}), classes in the order of "
          f"{Path(args.model) / 'model.json'}); {check}")
    return 0


# ---------------------------------------------------------------------------------------- parser
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="glico", description="GLICO: learn to generate from a few labelled images per class.")
    p.add_argument("--version", action="version", version=f"glico {__version__}")
    p.add_argument("--threads", type=_positive_int, default=None,
                   help="CPU threads for torch (default: torch's choice; 1 is fastest for tiny images on a busy machine)")
    sub = p.add_subparsers(dest="command", required=True)

    from glico.experiments.demo import DemoConfig
    from glico.cli.options import add_test_fraction_flag, classifier_name
    from glico.experiments.grid import SCHEDULES

    d = sub.add_parser(
        "demo", help="GLICO against the baseline on scikit-learn's digits, over seeds 0, 1, 2 (CPU, minutes)",
        description="Fit GLICO on 5 digits per class for each seed, train the same classifier with and without GLICO "
                    "augmentation (several times each), and report both accuracies per seed and their mean, with "
                    "pictures of the samples. Needs no downloads.",
        epilog="example: glico demo --out glico-demo   (about 4 minutes on 2 cores)")
    d.add_argument("--out", default="glico-demo", help="folder for report.json and the pictures (default: glico-demo)")
    which = d.add_mutually_exclusive_group()
    which.add_argument("--seeds", default=DemoConfig.seeds, type=int_list,
                       help="comma-separated seeds; the demo reports each and their mean ± standard error")
    which.add_argument("--seed", default=None, type=nonnegative_int, help="run this one seed only (same as --seeds S)")
    d.add_argument("--spc", default=DemoConfig.spc, type=_positive_int, help="labelled images per class")
    d.add_argument("--fit-epochs", default=DemoConfig.fit_epochs, type=_positive_int, help="GLICO fit epochs")
    d.add_argument("--classifier", default=DemoConfig.classifier, type=classifier_name,
                   help="downstream classifier (weak, resnet18, wrn-DEPTH-K, ...), the same for both methods")
    d.add_argument("--steps", default=DemoConfig.steps, type=_positive_int, help="classifier training steps")
    d.add_argument("--batch-size", default=DemoConfig.batch_size, type=_positive_int, help="classifier batch size")
    d.add_argument("--lr", default=DemoConfig.lr, type=positive_float, help="classifier's initial SGD learning rate")
    d.add_argument("--weight-decay", default=DemoConfig.weight_decay, type=nonnegative_float,
                   help="classifier's SGD weight decay")
    d.add_argument("--schedule", default=DemoConfig.schedule, choices=SCHEDULES,
                   help="learning-rate schedule: cosine, or step (x0.2 at 30/60/80 %% of the steps)")
    d.add_argument("--glico-p", default=DemoConfig.glico_p, type=probability,
                   help="probability that a training example is replaced by a GLICO sample")
    d.add_argument("--glico-t", default=DemoConfig.glico_t, type=unit_float_list,
                   help="comma-separated values the interpolation factor t is drawn from")
    d.add_argument("--code-dim", default=DemoConfig.code_dim, type=_positive_int)
    d.add_argument("--validation", default=None, type=_positive_int, metavar="N",
                   help="score on N held-out training images per class instead of the test images (for choosing "
                        "settings; the test images are then not used)")
    d.add_argument("--restarts", default=DemoConfig.restarts, type=_positive_int,
                   help="classifiers trained per method and seed (own initialisation, batch order and draws); a "
                        "seed's accuracy is their mean, which averages out much of one training's luck (1: one "
                        "training per method)")
    d.add_argument("--jobs", default=None, type=_positive_int,
                   help="processes, each running one fit or one classifier at a time with --threads threads "
                        "(default 1) (default: the CPU cores; 1 runs in this process with progress bars)")
    d.add_argument("--quiet", action="store_true", help="no progress bars")
    d.set_defaults(func=cmd_demo)

    f = sub.add_parser(
        "fit", help="fit GLICO on a small labelled sample; writes a run folder",
        description="Fit GLICO (per-image codes, generator and classifier f, jointly) on SPC labelled images per class "
                    "and write a run folder: checkpoint.pt, run.json, samples.png, reconstructions.png, "
                    "interpolation.png, losses.png. Ctrl-C saves a checkpoint; --resume continues it (or extends a "
                    "finished fit with a larger --epochs).",
        epilog="example: glico fit --data folder:my_images/ --spc 10 --image-size 32 --loss laplacian+pixel "
               "--out runs/mine")
    f.add_argument("--data", required=True, help=data_help())
    f.add_argument("--spc", required=True, type=_spc_or_all,
                   help="labelled images per class (a seeded split), or 'all' for every training image")
    f.add_argument("--seed", default=0, type=nonnegative_int)
    f.add_argument("--out", required=True, help="run folder")
    f.add_argument("--epochs", default=200, type=_positive_int, help="fit epochs (default: 200, the paper's)")
    f.add_argument("--oversample-to", default=0, type=nonnegative_int, metavar="N",
                   help="an epoch is ceil(N / number of images) passes, each freshly shuffled, as the paper oversamples "
                        "small sets (e.g. 50000 for epochs the size of CIFAR's training set; default 0: one pass)")
    f.add_argument("--batch-size", default=128, type=_positive_int)
    f.add_argument("--lr", default=1e-3, type=positive_float, help="Adam learning rate of the generator and f")
    f.add_argument("--lr-codes", default=1e-2, type=positive_float, help="Adam learning rate of the codes")
    f.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N")
    f.add_argument("--image-size", default=None, type=_positive_int, help="resize images to this size (a power of two)")
    f.add_argument("--transductive", action="store_true", help="also reconstruct the (unlabelled) test images")
    add_test_fraction_flag(f)
    f.add_argument("--checkpoint-every", default=0, type=nonnegative_int,
                   help="steps between checkpoints (0: none by step count); one is also written at the end and on Ctrl-C")
    f.add_argument("--checkpoint-minutes", default=10.0, type=nonnegative_float,
                   help="minutes between checkpoints (default 10; 0: none by time)")
    f.add_argument("--resume", action="store_true",
                   help="continue the interrupted fit in --out (same command, same settings) from its checkpoint")
    f.add_argument("--overwrite", action="store_true",
                   help="replace the fit already in --out (its checkpoint, run.json and pictures are deleted first); "
                        "without it such a folder is refused")
    f.add_argument("--deterministic", action="store_true",
                   help="deterministic GPU algorithms (slower; see docs/reliability.md)")
    f.add_argument("--quiet", action="store_true", help="no progress bar")
    f.add_argument("--verbose", action="store_true", help="INFO log lines on the console (losses at each log point, checkpoints); they always go to log.txt")
    _family_args(f)
    f.set_defaults(func=cmd_fit, fit_parser=f)

    s = sub.add_parser(
        "sample", help="new images per class from a fitted run",
        description="Draw new images of every class from a 'glico fit' run (slerp between two codes of the class): "
                    "a grid (one row per class) or a folder of PNGs per class.",
        epilog="example: glico sample --run runs/mine --n 16 --out runs/mine/new.png")
    s.add_argument("--run", required=True, help="run folder written by 'glico fit'")
    s.add_argument("--n", default=8, type=_positive_int, help="images per class")
    s.add_argument("--out", required=True,
                   help="an image path for a grid (.png, .jpg, .webp, .gif, .bmp, .tif), or a folder for PNGs per class")
    s.add_argument("--folder", action="store_true", help="write a folder of PNGs per class even if --out ends in an image suffix")
    s.add_argument("--seed", default=0, type=nonnegative_int)
    s.set_defaults(func=cmd_sample)
    _add_model_parsers(sub)
    from glico.cli.grid import add_ablate_parser, add_evaluate_parser, add_merge_parser

    add_evaluate_parser(sub, lambda parser: _family_args(parser, "--glico-classifier", "classifier_f"))

    add_ablate_parser(sub, lambda parser: _family_args(parser, "--glico-classifier", "classifier_f"))

    add_merge_parser(sub)
    for command in sub.choices.values():
        _show_defaults(command)
    return p


def _add_model_parsers(sub) -> None:
    """``glico train``, ``predict`` and ``export``."""
    from glico.classify import EXPORT_FORMATS, RECIPES
    from glico.experiments.downstream import PRECISIONS
    from glico.cli.options import add_test_fraction_flag, classifier_name
    from glico.experiments.grid import SCHEDULES
    from glico.experiments.policies import policy_names

    t = sub.add_parser(
        "train", help="train the final classifier with GLICO augmentation on all labelled images; writes a model folder",
        description="Fit GLICO on the labelled training images (or reuse a 'glico fit' run with --run), train the "
                    "downstream classifier with the chosen augmentation on all of them, score it on the test split, "
                    "and write a model folder for 'glico predict' and 'glico export'.",
        epilog="example: glico train --data folder:my_images/ --out runs/final  then  glico predict --model "
               "runs/final new_images/")
    t.add_argument("--data", default=None, help=data_help() + " "
                                                "(not needed with --run)")
    t.add_argument("--out", required=True, help="model folder")
    t.add_argument("--method", default="glico", choices=policy_names(),
                   help="augmentation: glico, glico+autoaugment, baseline, ... (as glico evaluate's methods)")
    t.add_argument("--spc", default=None, type=_spc_or_all,
                   help="train on a seeded split of N images per class (as glico evaluate does) instead of all "
                        "training images (default: all)")
    t.add_argument("--seed", default=None, type=nonnegative_int,
                   help="seeds the split, the fit, the classifier and every draw (default: 0)")
    t.add_argument("--run", default=None, help="reuse the GLICO fit of this 'glico fit' run folder (and its data, "
                                               "split and seed) instead of fitting")
    t.add_argument("--recipe", default="auto", choices=("auto", *RECIPES),
                   help="the defaults of the flags below: cpu (wrn-10-1, 16 epochs, batch 64, cosine, wd 5e-3; GLICO "
                        "loss laplacian+pixel, 400 fit epochs, p 0.75; chosen on CIFAR-10 validation splits) or paper "
                        "(wrn-28-10, 200 epochs, batch 128, step schedule, wd 5e-4; perceptual loss, 200 fit epochs, "
                        "p 0.5); auto: paper on CUDA, cpu elsewhere")
    r = t.add_argument_group("recipe (default: the --recipe's)")
    r.add_argument("--classifier", default=None, type=classifier_name, help="downstream classifier")
    r.add_argument("--epochs", default=None, type=_positive_int,
                   help="epochs of the training set oversampled to 5000 images")
    r.add_argument("--batch-size", default=None, type=_positive_int)
    r.add_argument("--lr", default=None, type=positive_float)
    r.add_argument("--weight-decay", default=None, type=nonnegative_float)
    r.add_argument("--schedule", default=None, choices=SCHEDULES)
    r.add_argument("--precision", default=None, choices=list(PRECISIONS))
    r.add_argument("--glico-p", default=None, type=probability, help="GLICO replacement probability")
    r.add_argument("--glico-t", default=None, type=unit_float_list, help="the set t is drawn from")
    r.add_argument("--glico-refresh", default=None, type=_positive_int, metavar="K",
                   help="a bank of GLICO images redrawn every K steps (default: fresh draws)")
    r.add_argument("--fit-epochs", default=None, type=_positive_int, help="GLICO fit epochs")
    t.add_argument("--image-size", default=None, type=_positive_int,
                   help="resize the shorter side to this and centre-crop (needed for images that are not square "
                        "or not all the same size)")
    add_test_fraction_flag(t)
    t.add_argument("--flip", default=None, action=argparse.BooleanOptionalAction,
                   help="random horizontal flips in the standard augmentation (default: on, off for digits)")
    t.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N")
    t.add_argument("--resume", action="store_true",
                   help="continue the interrupted training in --out (same command) from its saved state")
    t.add_argument("--overwrite", action="store_true", help="replace the training already in --out")
    t.add_argument("--quiet", action="store_true", help="no progress bars")
    t.add_argument("--verbose", action="store_true", help="INFO log lines on the console (always in log.txt)")
    _family_args(t, "--glico-classifier", "classifier_f",
                 title="GLICO composition (defaults: the paper's choices, the loss the --recipe's; not with --run)")
    t.set_defaults(loss=None, func=cmd_train, fit_parser=t)
    for action in t._actions:
        if action.dest == "loss":
            action.help = "GLICO's reconstruction loss (default: the --recipe's: laplacian+pixel or perceptual)"

    pr = sub.add_parser(
        "predict", help="classify image files or folders with a model folder from 'glico train'",
        description="Classify images with a model written by 'glico train'. Writes one row per file (CSV, or JSON "
                    "lines): file, class, probability, the top-k classes, and the error for a file that could not "
                    "be read (the others go on). Files inside folders named like a class are also scored.",
        epilog="example: glico predict --model runs/final photos/ --out predictions.csv")
    pr.add_argument("--model", required=True, help="model folder written by 'glico train --out'")
    pr.add_argument("paths", nargs="+", help="image files and folders (searched recursively)")
    pr.add_argument("--out", default=None, help="file for the predictions (default: standard output)")
    pr.add_argument("--format", default=None, choices=("csv", "jsonl"),
                    help="csv or jsonl (default: jsonl for an --out ending in .jsonl, else csv)")
    pr.add_argument("--top-k", default=3, type=_positive_int, help="classes listed per file")
    pr.add_argument("--batch-size", default=256, type=_positive_int)
    pr.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N")
    pr.add_argument("--quiet", action="store_true", help="no progress bar")
    pr.set_defaults(func=cmd_predict)

    ex = sub.add_parser(
        "export", help="export a model folder's classifier (TorchScript, ONNX or torch.export), checked against the eager model",
        description="Export the classifier of a 'glico train' model folder for serving. The exported network takes "
                    "float images (N, C, S, S) in [0, 1] (resize and crop as model.json says) and returns logits; "
                    "its outputs are compared with the eager model's before the command succeeds.",
        epilog="example: glico export --model runs/final --format onnx")
    ex.add_argument("--model", required=True, help="model folder written by 'glico train --out'")
    ex.add_argument("--format", default="torchscript", choices=EXPORT_FORMATS)
    ex.add_argument("--out", default=None,
                    help="the exported file (default: MODEL/model.torchscript.pt, MODEL/model.onnx or MODEL/model.pt2)")
    ex.set_defaults(func=cmd_export)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        return args.func(args)
    except (ValueError, OSError, RuntimeError, TypeError, FloatingPointError) as e:  # FPE: non-finite fit
        if os.environ.get("GLICO_DEBUG"):
            raise
        print(f"glico {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as e:
        from glico.experiments.grid import GridInterrupted

        if not isinstance(e, GridInterrupted):  # a grid has already said what it kept
            print(f"glico {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
