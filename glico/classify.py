"""The final classifier: trained on all of a user's labelled images with GLICO (or another) augmentation,
saved as a model folder, loaded back with its class names and preprocessing, used on image files, and
exported for serving.

A model folder holds ``model.json`` (format, glico version, class names in label order, the preprocessing,
the classifier's name and shape, the method, the recipe, the test score when there was a test set) and
``weights.pt`` (the network's ``state_dict``: tensors only, loadable with ``torch.load(weights_only=True)``).

The network takes float images in [0, 1] of shape (N, C, S, S) and returns logits; there is no mean/std
normalisation. :meth:`TrainedClassifier.prepare` brings decoded images there: the shorter side resized to S
(bilinear, antialiased), the centre square cropped, RGB converted to the model's channel count (luma
0.299 R + 0.587 G + 0.114 B for a 1-channel model, a grey image repeated for a 3-channel one). That is the
resize :func:`glico.data.load_data` applies with ``image_size``, so a file scored by :func:`predict_files`
gets the pixels it would get in the test set.
"""
from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Iterable, Sequence

import torch
from torch import nn

from glico import __version__

log = logging.getLogger(__name__)

MODEL_FORMAT = "glico-classifier-v1"
MODEL_JSON = "model.json"
WEIGHTS_FILE = "weights.pt"
#: Files inside a ``glico train`` folder while it trains: the GLICO fit (a ``glico fit`` run folder) and
#: the classifier's training state (removed when the training ends).
GLICO_RUN_DIR = "glico"
TRAIN_STATE = "train-state.pt"
# ITU-R BT.601 luma, as torchvision's rgb_to_grayscale.
_LUMA = (0.299, 0.587, 0.114)


@dataclass(frozen=True)
class ClassifierRecipe:
    """How the final classifier (and the GLICO fit behind its augmentation) is trained.

    The defaults are the CPU recipe chosen on CIFAR-10 validation splits (docs/reproducing.md: WRN-10-1,
    16 epochs of the split oversampled to 5000 images, batch 64, cosine schedule, weight decay 5e-3; GLICO
    with the Laplacian-pyramid + pixel loss, 400 fit epochs, p 0.75, t in {0.1, ..., 0.5}).
    :data:`RECIPES` ``["paper"]`` is the paper's recipe (WRN-28-10, 200 epochs, batch 128, step schedule,
    weight decay 5e-4; the VGG perceptual loss, 200 fit epochs, p 0.5), for a GPU.

    Args:
        classifier: a downstream classifier name (:func:`glico.experiments.evaluate.downstream_classifier`).
        epochs: the budget, in epochs of the training set oversampled to 5000 images
            (:func:`glico.experiments.downstream.steps_for`).
        batch_size, lr, weight_decay, schedule (``step`` or ``cosine``): the SGD recipe.
        precision: ``auto``, ``fp32`` or ``bf16`` (:class:`glico.experiments.downstream.TrainConfig`).
        flip: random horizontal flips in the standard augmentation (off for digits).
        glico_p, glico_t, glico_refresh: the GLICO policy's replacement probability, the set t is drawn
            from (None: the paper's 0.1..0.4) and bank refresh (None: fresh draws every step).
        fit_epochs, fit_batch_size: the GLICO fit's budget.
        model: the GLICO composition by names (fields of :class:`glico.names.ModelSpec` without
            image_shape / num_classes; missing fields take the paper's choices).
    """

    classifier: str = "wrn-10-1"
    epochs: int = 16
    batch_size: int = 64
    lr: float = 0.1
    weight_decay: float = 5e-3
    schedule: str = "cosine"
    precision: str = "auto"
    flip: bool = True
    glico_p: float = 0.75
    glico_t: tuple[float, ...] | None = (0.1, 0.2, 0.3, 0.4, 0.5)
    glico_refresh: int | None = None
    fit_epochs: int = 400
    fit_batch_size: int = 128
    model: dict[str, Any] = field(default_factory=lambda: {"loss": "laplacian+pixel"})

    def __post_init__(self) -> None:
        from glico.experiments.downstream import PRECISIONS
        from glico.experiments.grid import SCHEDULES
        from glico.names import downstream_classifier
        from glico.interpolation import check_t_values

        downstream_classifier(self.classifier)
        for name in ("epochs", "batch_size", "fit_epochs", "fit_batch_size"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"ClassifierRecipe.{name} must be an integer >= 1; got {v!r}")
        if not self.lr > 0 or not self.weight_decay >= 0:
            raise ValueError(f"ClassifierRecipe needs lr > 0 and weight_decay >= 0; got {self.lr}, {self.weight_decay}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {', '.join(SCHEDULES)}; got {self.schedule!r}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}; got {self.precision!r}")
        if not 0.0 <= self.glico_p <= 1.0:
            raise ValueError(f"glico_p must be a probability in [0, 1]; got {self.glico_p}")
        if self.glico_t is not None:
            object.__setattr__(self, "glico_t", tuple(check_t_values(self.glico_t)))
        if self.glico_refresh is not None and (isinstance(self.glico_refresh, bool)
                                               or not isinstance(self.glico_refresh, int) or self.glico_refresh < 1):
            raise ValueError(f"glico_refresh must be None or a number of steps >= 1; got {self.glico_refresh!r}")

    def to_dict(self) -> dict[str, Any]:
        """Plain data (JSON), as model.json records it."""
        d = asdict(self)
        d["glico_t"] = None if self.glico_t is None else list(self.glico_t)
        return d


#: Named recipes: ``cpu`` (the defaults of :class:`ClassifierRecipe`) and ``paper``.
RECIPES: dict[str, ClassifierRecipe] = {
    "cpu": ClassifierRecipe(),
    "paper": ClassifierRecipe(classifier="wrn-28-10", epochs=200, batch_size=128, lr=0.1, weight_decay=5e-4,
                              schedule="step", glico_p=0.5, glico_t=None, fit_epochs=200, model={}),
}


def recipe_for(name: str, device: str | torch.device = "cpu", **overrides: Any) -> ClassifierRecipe:
    """A named recipe with some fields replaced; ``auto`` is ``paper`` on CUDA and ``cpu`` elsewhere.

    Raises:
        ValueError: an unknown name or field.
    """
    if name == "auto":
        name = "paper" if torch.device(device).type == "cuda" else "cpu"
    if name not in RECIPES:
        raise ValueError(f"unknown recipe {name!r}; valid: auto, {', '.join(RECIPES)}")
    unknown = sorted(set(overrides) - set(ClassifierRecipe.__dataclass_fields__))
    if unknown:
        raise ValueError(f"unknown ClassifierRecipe field(s) {', '.join(unknown)}")
    return replace(RECIPES[name], **overrides)


class TrainedClassifier(nn.Module):
    """A trained classifier with what is needed to use it: class names, input size and channels.

    Calling it (``forward``) maps prepared images (N, C, S, S) in [0, 1] to logits (N, K). Use
    :meth:`prepare` on decoded images first, or :meth:`predict` / :meth:`probabilities`, which do.

    Args:
        network: the classifier (any ``nn.Module`` from images to logits).
        class_names: the name of each class, index = label.
        image_size: the side S of the square input.
        in_channels: C, 1 (grey) or 3 (RGB).
        info: plain data kept in model.json (classifier name, method, recipe, test score, ...);
            ``info["classifier"]`` must name the network for :func:`load_classifier` to rebuild it.
    """

    def __init__(self, network: nn.Module, class_names: Sequence[str], image_size: int, in_channels: int,
                 info: dict[str, Any] | None = None) -> None:
        super().__init__()
        if in_channels not in (1, 3):
            raise ValueError(f"in_channels must be 1 (grey) or 3 (RGB); got {in_channels!r}")
        self.network = network
        self.class_names = tuple(str(c) for c in class_names)
        self.image_size, self.in_channels = int(image_size), int(in_channels)
        self.info = dict(info or {})
        self.eval()

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.network(images)

    @property
    def device(self) -> torch.device:
        return next(self.network.parameters()).device

    def prepare(self, images: torch.Tensor | Sequence[torch.Tensor]) -> torch.Tensor:
        """Decoded images -> the network's input: resized (shorter side to S), centre-cropped, channels
        converted (see the module docstring), float in [0, 1].

        Args:
            images: a batch (N, C, H, W) or a sequence of images (C, H, W) of any sizes; uint8 (0..255)
                or float in [0, 1]; C is 1 or 3 (4, RGBA: the alpha channel is dropped).

        Returns:
            float32 tensor on the CPU.

        Shape:
            -> (N, in_channels, image_size, image_size)
        """
        from glico.data.decode import resize_center_crop

        if isinstance(images, torch.Tensor) and images.dim() == 3:
            images = images[None]
        out = []
        for img in images:
            if img.dim() != 3 or img.shape[0] not in (1, 3, 4):
                raise ValueError(f"an image must be (C, H, W) with C = 1, 3 or 4; got shape {tuple(img.shape)}")
            img = img.detach().cpu()[:3]
            if img.dtype == torch.uint8:
                # Resized as 8-bit, then scaled: the order glico.data's loaders use, so that a file gets the
                # pixels it gets in a data set loaded with image_size.
                img = resize_center_crop(img, self.image_size).float() / 255
            else:
                img = img.float()
                if img.min() < 0 or img.max() > 1:
                    raise ValueError("float images must hold values in [0, 1] (uint8 images 0..255)")
                img = resize_center_crop(img, self.image_size)
            if self.in_channels == 1 and img.shape[0] == 3:
                img = sum(w * ch for w, ch in zip(_LUMA, img))[None]
            elif self.in_channels == 3 and img.shape[0] == 1:
                img = img.expand(3, -1, -1)
            out.append(img.clamp(0, 1))
        if not out:
            raise ValueError("no images given")
        return torch.stack(out).contiguous()

    @torch.no_grad()
    def probabilities(self, images: torch.Tensor | Sequence[torch.Tensor], batch_size: int = 256) -> torch.Tensor:
        """Class probabilities (softmax of the logits) of decoded images (:meth:`prepare` is applied).

        Shape:
            -> (N, num_classes), on the CPU
        """
        x = self.prepare(images)
        self.eval()
        dev = self.device
        return torch.cat([torch.softmax(self(x[i : i + batch_size].to(dev)).float(), 1).cpu()
                          for i in range(0, x.shape[0], batch_size)])

    def predict(self, images: torch.Tensor | Sequence[torch.Tensor], batch_size: int = 256) -> list[str]:
        """The most probable class name of each image."""
        return [self.class_names[i] for i in self.probabilities(images, batch_size).argmax(1).tolist()]

    def save(self, folder: str | os.PathLike) -> Path:
        """Write the model folder (``model.json`` and ``weights.pt``; other files there are left alone).

        Returns:
            The folder.
        """
        from glico.checkpoint import atomic_torch_save

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().cpu().contiguous() for k, v in self.network.state_dict().items()}
        atomic_torch_save(state, folder / WEIGHTS_FILE)
        meta = {"format": MODEL_FORMAT, "glico_version": __version__, "class_names": list(self.class_names),
                "preprocessing": {"image_size": self.image_size, "channels": self.in_channels,
                                  "resize": "shorter side to image_size (bilinear, antialiased), centre crop",
                                  "range": "[0, 1]", "normalisation": None},
                **self.info}
        tmp = folder / (MODEL_JSON + ".tmp")
        tmp.write_text(json.dumps(meta, indent=2))
        os.replace(tmp, folder / MODEL_JSON)
        return folder

    def extra_repr(self) -> str:
        return (f"{self.info.get('classifier', '?')}, {len(self.class_names)} classes, "
                f"{self.in_channels}x{self.image_size}x{self.image_size} input")


def _major_minor(version: object) -> tuple[int, ...] | None:
    try:
        return tuple(int(p) for p in str(version).split(".")[:2])
    except ValueError:
        return None


def load_classifier(path: str | os.PathLike, device: str | torch.device = "cpu") -> TrainedClassifier:
    """Restore a model folder written by ``glico train`` (or :meth:`TrainedClassifier.save`).

    Args:
        path: the folder (or its model.json).
        device: where to put the network.

    Raises:
        FileNotFoundError: no model.json / weights.pt there.
        ValueError: not a glico model folder, another format, a newer glico's folder, or weights that do not
            fit the network model.json names.
    """
    from glico.names import downstream_classifier

    folder = Path(path)
    if folder.name == MODEL_JSON:
        folder = folder.parent
    meta_file, weights_file = folder / MODEL_JSON, folder / WEIGHTS_FILE
    if not meta_file.is_file():
        hint = (" (it looks like a 'glico fit' run folder: train a classifier from it with "
                "'glico train --run PATH ...')" if (folder / "run.json").is_file() else "")
        raise FileNotFoundError(f"{folder} is not a glico model folder: it has no {MODEL_JSON}{hint}. "
                                f"Give the --out folder of 'glico train'")
    try:
        meta = json.loads(meta_file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{meta_file} is not valid JSON ({e}); it was not written by glico") from None
    fmt = meta.get("format") if isinstance(meta, dict) else None
    if fmt != MODEL_FORMAT:
        raise ValueError(f"{meta_file} is not a glico classifier of format {MODEL_FORMAT!r} (it has format "
                         f"{fmt!r}); this glico {__version__} reads {MODEL_FORMAT!r} folders only")
    saved, mine = _major_minor(meta.get("glico_version")), _major_minor(__version__)
    if saved is None or (mine is not None and saved > mine):
        raise ValueError(f"{folder} was written by glico {meta.get('glico_version')!r}, newer than this glico "
                         f"{__version__}: upgrade glico (pip install -U glico) to load it")
    try:
        pre = meta["preprocessing"]
        size, channels, names = int(pre["image_size"]), int(pre["channels"]), list(meta["class_names"])
        factory = downstream_classifier(meta["classifier"])
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError(f"{meta_file} lacks or has an invalid entry ({type(e).__name__}: {e}); it was not "
                         f"written by glico train") from None
    if not weights_file.is_file():
        raise FileNotFoundError(f"{folder} has {MODEL_JSON} but no {WEIGHTS_FILE}; the folder is incomplete")
    try:
        state = torch.load(weights_file, map_location="cpu", weights_only=True)
    except Exception as e:  # any unreadable or unsafe file: never unpickled beyond tensors
        raise ValueError(f"{weights_file} could not be read as a file of tensors ({type(e).__name__}): it is "
                         f"truncated, corrupted, or not the weights.pt 'glico train' writes (files holding other "
                         f"objects are never unpickled, for safety)") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{weights_file} is not a state_dict of tensors")
    network = factory(channels, len(names), size)
    try:
        network.load_state_dict(state)
    except RuntimeError as e:
        raise ValueError(f"{weights_file} does not fit a {meta['classifier']} for {len(names)} classes and "
                         f"{channels}x{size}x{size} images: {str(e)[:300]}") from None
    info = {k: v for k, v in meta.items() if k not in ("format", "glico_version", "class_names", "preprocessing")}
    info["saved_by"] = meta.get("glico_version")
    return TrainedClassifier(network, names, size, channels, info).to(device).eval()


def train_final_classifier(
    train,
    method: str = "glico",
    recipe: ClassifierRecipe | None = None,
    *,
    seed: int = 0,
    device: str = "cpu",
    test=None,
    glico_model=None,
    work_dir: str | os.PathLike | None = None,
    resume: bool = False,
    progress: bool = True,
    fit_extra: dict[str, Any] | None = None,
) -> TrainedClassifier:
    """Train the downstream classifier on all of ``train`` with the augmentation ``method``, as
    ``glico evaluate`` trains each of its classifiers (same seeding, budget rule and recipe), and return it
    ready to use.

    Args:
        train: the labelled images (:class:`glico.data.ImageSet`), square.
        method: a batch policy name (:func:`glico.experiments.policies.policy_names`): ``glico``,
            ``glico+autoaugment``, ``baseline``, ...
        recipe: :class:`ClassifierRecipe` (default: the CPU recipe; :func:`recipe_for` for ``paper``).
        seed: seeds the GLICO fit, the classifier's initial weights, the batch order and every draw.
        device: where to fit and train.
        test: an :class:`~glico.data.ImageSet` to score the trained classifier on (``info["test"]``).
        glico_model: a fitted :class:`glico.GLICO` whose code table's first rows are ``train``'s images in
            order (a ``glico fit`` run of the same split); fitted here when None and ``method`` needs it.
        work_dir: a folder for resumable state: the GLICO fit (``work_dir/glico/checkpoint.pt``) and the
            classifier's training state (``work_dir/train-state.pt``, removed at the end). None: no state
            is written (an interruption loses the work).
        resume: continue from the state in ``work_dir`` (the same call's settings).
        progress: progress bars.
        fit_extra: plain data stored with the GLICO fit's checkpoint (``glico train`` stores run.json's).

    Returns:
        A :class:`TrainedClassifier` in eval mode on ``device``; its ``info`` has the method, recipe, seed,
        steps, number of images per class, the fit's summary and, with ``test``, the test score.

    Raises:
        ValueError: an unknown method, non-square images, a ``glico_model`` that does not match ``train``.
        glico.experiments.downstream.TrainInterrupted, glico.training.FitInterrupted: stopped by a
            signal with ``work_dir`` set (the state is saved; call again with ``resume=True``).
    """
    import time

    from glico.augment import GLICOAugmenter
    from glico.experiments.downstream import evaluate, train_classifier
    from glico.experiments.grid import GLICO_METHODS, downstream_config, fit_glico
    from glico.names import downstream_classifier
    from glico.experiments.policies import build_policy, policy_names

    recipe = recipe or ClassifierRecipe()
    if method not in policy_names():
        raise ValueError(f"unknown method {method!r}; valid: {', '.join(policy_names())}")
    n, c, h, w = train.images.shape
    check_square(h, w)
    k = len(train.class_names)
    work = None if work_dir is None else Path(work_dir)
    t0 = time.perf_counter()
    fit_info: dict[str, Any] | None = None
    augmenter = None
    if method in GLICO_METHODS:
        if glico_model is None:
            ckpt = None if work is None else work / GLICO_RUN_DIR / "checkpoint.pt"
            glico_model, fit_info = fit_glico(recipe.model, train, seed=seed, epochs=recipe.fit_epochs,
                                              batch_size=recipe.fit_batch_size, device=device, progress=progress,
                                              checkpoint=ckpt, resume=resume and ckpt is not None and ckpt.is_file(),
                                              checkpoint_extra=fit_extra)
        else:
            _check_fitted_on(glico_model, train)
            glico_model.to(device)
            fit_info = {"given": True}
        augmenter = GLICOAugmenter(glico_model, p=recipe.glico_p, seed=seed, t_values=recipe.glico_t,
                                   refresh_every=recipe.glico_refresh)
    policy = build_policy(method, num_classes=k, glico_augmenter=augmenter, seed=seed, image_size=h)
    tcfg = downstream_config(n, h, epochs=recipe.epochs, batch_size=recipe.batch_size, lr=recipe.lr,
                             weight_decay=recipe.weight_decay, flip=recipe.flip, seed=seed, device=device,
                             progress=progress, precision=recipe.precision, cosine=recipe.schedule == "cosine")
    torch.manual_seed(seed)  # the classifier's initial weights, as glico evaluate seeds them
    network = downstream_classifier(recipe.classifier)(c, k, h)
    state = None if work is None else work / TRAIN_STATE
    train_classifier(network, train.images, train.labels, tcfg, policy=policy, desc=f"train {method}",
                     checkpoint=state, resume=resume and state is not None and state.is_file())
    info: dict[str, Any] = {
        "classifier": recipe.classifier, "method": method, "seed": seed, "steps": tcfg.steps,
        "recipe": recipe.to_dict(), "n_train": n, "per_class": train.class_counts().tolist(),
        "glico_fit": fit_info, "seconds": round(time.perf_counter() - t0, 1),
    }
    if test is not None:
        acc = evaluate(network, test.images, test.labels, device=device)
        info["test"] = {**acc, "n": len(test)}
    model = TrainedClassifier(network, train.class_names, h, c, info)
    if state is not None:
        state.unlink(missing_ok=True)
    return model


def check_square(h: int, w: int) -> None:
    """Refuse images that are not square (the classifiers and the DCGAN generator take squares), naming the
    fix with a suggested side: the largest power of two (8 to 256) not above the shorter side."""
    if h != w:
        raise ValueError(f"the classifier's images must be square; got {w}x{h} (width x height). Pass --image-size N "
                         f"on the command line (image_size=N to glico.data.load_data) to resize the shorter side to N "
                         f"and centre-crop, N a power of two such as {max(8, min(256, 1 << (min(h, w).bit_length() - 1)))}")


def _check_fitted_on(glico_model, train) -> None:
    """Refuse a GLICO model whose code table cannot be the fit of ``train`` (labels of its first rows)."""
    glico_model._require_fitted()
    labels = glico_model.labels.cpu()
    n = len(train)
    if labels.shape[0] < n or not torch.equal(labels[:n], train.labels.cpu()) or glico_model.num_classes != train.num_classes:
        raise ValueError(f"the GLICO model was not fitted on these {n} training images: its code table has "
                         f"{labels.shape[0]} rows and {glico_model.num_classes} classes whose labels do not match "
                         f"the images' in order. Fit it on the same split (glico train --run uses the run's own split)")


# ------------------------------------------------------------------------------------------ prediction
def image_files(paths: Iterable[str | os.PathLike]) -> list[Path]:
    """The image files named by ``paths``: a file is taken as it is (whatever its suffix), a folder
    contributes its image files (any depth, sorted, hidden ones skipped); a path that does not exist is
    kept, and :func:`predict_files` gives it an error row."""
    from glico.data.decode import is_image_name

    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found = []
            for dirpath, dirnames, filenames in os.walk(p):
                dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
                found += [Path(dirpath) / f for f in filenames if is_image_name(f)]
            out += sorted(found)
        else:
            out.append(p)  # a file, or a path that does not exist: predict_files reports it in its row
    return out


def predict_files(model: TrainedClassifier, files: Sequence[str | os.PathLike], *, top_k: int = 3,
                  batch_size: int = 256, progress: bool = True) -> list[dict[str, Any]]:
    """Classify image files. An unreadable file gets a row with its ``error`` and no class, and the others
    go on.

    Returns:
        One dict per file, in order: ``file``, ``class``, ``probability``, ``top`` (the ``top_k`` most
        probable ``[class, probability]`` pairs), ``error`` (None, or why the file could not be read).
    """
    from glico._progress import progress as bar
    from glico.data.decode import decode_file

    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
        raise ValueError(f"top_k must be an integer >= 1; got {top_k!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be an integer >= 1; got {batch_size!r}")
    k = min(top_k, len(model.class_names))
    rows: list[dict[str, Any]] = []
    with bar(total=len(files), desc="predict", unit="image", disable=not progress, leave=False) as pbar:
        for i in range(0, len(files), batch_size):
            chunk, images, ok = files[i : i + batch_size], [], []
            for f in chunk:
                try:
                    images.append(model.prepare([decode_file(f)])[0])
                    ok.append(True)
                except FileNotFoundError:
                    ok.append("no such file")
                except (ValueError, OSError) as e:
                    ok.append(str(e).splitlines()[0][:300] or type(e).__name__)
            probs = model.probabilities(torch.stack(images), batch_size) if images else torch.empty(0, 1)
            j = 0
            for f, status in zip(chunk, ok):
                if status is True:
                    p, idx = probs[j].topk(k)
                    j += 1
                    top = [[model.class_names[a], round(float(b), 6)] for a, b in zip(idx.tolist(), p.tolist())]
                    rows.append({"file": str(f), "class": top[0][0], "probability": top[0][1], "top": top,
                                 "error": None})
                else:
                    rows.append({"file": str(f), "class": None, "probability": None, "top": [], "error": status})
            pbar.update(len(chunk))
    return rows


def folder_accuracy(rows: Sequence[dict[str, Any]], class_names: Sequence[str]) -> dict[str, Any] | None:
    """Top-1 accuracy over the predicted files whose parent folder is named like a class (a labelled test
    folder such as ``test/<class>/<image>``); None when no predicted file sits in such a folder."""
    names = set(class_names)
    scored = [r for r in rows if r["error"] is None and Path(r["file"]).parent.name in names]
    if not scored:
        return None
    right = sum(r["class"] == Path(r["file"]).parent.name for r in scored)
    return {"top1": 100.0 * right / len(scored), "n": len(scored), "correct": right}


def write_predictions(rows: Sequence[dict[str, Any]], out, fmt: str = "csv") -> None:
    """Write :func:`predict_files` rows to a text stream ``out`` as CSV (``file,class,probability,top,error``;
    ``top`` as ``name:p;name:p``) or JSON lines (``jsonl``)."""
    import csv

    if fmt == "jsonl":
        for r in rows:
            out.write(json.dumps(r) + "\n")
        return
    if fmt != "csv":
        raise ValueError(f"format must be csv or jsonl; got {fmt!r}")
    w = csv.writer(out)
    w.writerow(["file", "class", "probability", "top", "error"])
    for r in rows:
        top = ";".join(f"{name}:{p:.6f}" for name, p in r["top"])
        w.writerow([r["file"], r["class"] or "", "" if r["probability"] is None else f"{r['probability']:.6f}", top,
                    r["error"] or ""])


# ------------------------------------------------------------------------------------------ export
EXPORT_FORMATS = ("torchscript", "onnx", "pt2")
#: How close the exported model's logits must be to the eager model's (float32, logits of order 1-10).
EXPORT_TOLERANCE = {"atol": 1e-4, "rtol": 1e-4}


def export_classifier(model: TrainedClassifier, path: str | os.PathLike, fmt: str = "torchscript",
                      batch: int = 4) -> dict[str, Any]:
    """Export the network (prepared images (N, C, S, S) in [0, 1] -> logits (N, K), any N) for serving and
    check the export against the eager model on ``batch`` seeded random images.

    ``torchscript``: ``torch.jit.trace``, saved with ``torch.jit.save`` (load with ``torch.jit.load``; torch
    2.14 marks TorchScript deprecated in favour of ``torch.export``).
    ``pt2``: ``torch.export.export`` with a dynamic batch, saved with ``torch.export.save`` (load with
    ``torch.export.load(path).module()``).
    ``onnx``: torch's ONNX exporter (needs the ``onnx`` and ``onnxscript`` packages: ``pip install
    'glico[onnx]'``), input ``images``, output ``logits``, dynamic batch; checked with ONNX Runtime.

    Returns:
        ``{"path", "format", "max_abs_diff", "checked_with"}``.

    Raises:
        ValueError: an unknown format, or an export whose outputs differ from the eager model's by more than
            :data:`EXPORT_TOLERANCE` (the file is removed).
        ImportError: ONNX requested without its packages (the message says what to install).
    """
    if fmt not in EXPORT_FORMATS:
        raise ValueError(f"unknown export format {fmt!r}; valid: {', '.join(EXPORT_FORMATS)}")
    import copy

    final = Path(path)
    if final.is_dir():
        raise ValueError(f"{final} is a folder; give the file to write")
    final.parent.mkdir(parents=True, exist_ok=True)
    path = final.with_name(f".{final.stem}.tmp{final.suffix}")  # renamed over the target once it has been checked
    net = copy.deepcopy(model.network).cpu().eval()  # the caller's model stays where it is
    g = torch.Generator().manual_seed(0)
    x = torch.rand(batch, model.in_channels, model.image_size, model.image_size, generator=g)
    with torch.no_grad():
        want = net(x)
    if fmt == "torchscript":
        import warnings

        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch.jit's deprecation notice: tracing is what we want here
            traced = torch.jit.trace(net, x[:1])
            torch.jit.save(traced, str(path))
            got = torch.jit.load(str(path))(x)
        checked = "torch.jit.load"
    elif fmt == "pt2":
        program = torch.export.export(net, (x,), dynamic_shapes={_forward_arg(net): {0: torch.export.Dim("batch", min=1)}})
        torch.export.save(program, str(path))
        with torch.no_grad():
            got = torch.export.load(str(path)).module()(x)
        checked = "torch.export.load"
    else:
        try:
            import onnx  # noqa: F401
            import onnxscript  # noqa: F401
        except ImportError as e:
            raise ImportError(f"ONNX export needs the onnx and onnxscript packages ({e.name} is missing): "
                              f"pip install 'glico[onnx]' (or pip install onnx onnxscript onnxruntime)") from None
        batch_dim = torch.export.Dim("batch", min=1)
        torch.onnx.export(net, (x,), str(path), input_names=["images"], output_names=["logits"],
                          dynamic_shapes={_forward_arg(net): {0: batch_dim}},
                          dynamo=True, external_data=False, verbose=False)  # one file, weights inside
        try:
            import onnxruntime as ort
        except ImportError:
            log.warning("onnxruntime is not installed: the ONNX file was written but not checked against the "
                        "eager model (pip install onnxruntime)")
            os.replace(path, final)
            return {"path": str(final), "format": fmt, "max_abs_diff": None, "checked_with": None}
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        got = torch.from_numpy(session.run(["logits"], {"images": x.numpy()})[0])
        checked = f"onnxruntime {ort.__version__}"
    diff = float((got - want).abs().max())
    if not torch.allclose(got, want, **EXPORT_TOLERANCE):
        path.unlink(missing_ok=True)
        raise ValueError(f"the {fmt} export's logits differ from the eager model's by up to {diff:.3g} (allowed: "
                         f"atol {EXPORT_TOLERANCE['atol']}, rtol {EXPORT_TOLERANCE['rtol']}); {final} was not "
                         f"written (an earlier file there is unchanged)")
    os.replace(path, final)
    return {"path": str(final), "format": fmt, "max_abs_diff": diff, "checked_with": checked}


def _forward_arg(net: nn.Module) -> str:
    import inspect

    params = [p for p in inspect.signature(net.forward).parameters]
    return params[0] if params else "x"
