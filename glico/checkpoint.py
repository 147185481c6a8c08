"""Checkpoints: tensors and plain data only, written atomically, loaded with ``weights_only=True``.

A checkpoint records the library version and the model's composition; loading into a model built
from different parts is refused with a message that says what differs. The frozen perceptual
backbone is never saved (it is part of the loss, not of what was learned).
"""
from __future__ import annotations

import os
import pickle
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import torch

FORMAT = "glico-checkpoint-v1"


def model_state(model) -> dict[str, torch.Tensor]:
    """What was learned: generator, classifier, codes and labels (not the loss backbone)."""
    state: dict[str, torch.Tensor] = {}
    for name, part in (("generator", model.generator), ("classifier", model.classifier)):
        if part is not None:
            state.update({f"{name}.{k}": v.detach().cpu() for k, v in part.state_dict().items()})
    if model.codes is not None:
        state["codes"] = model.codes.weight.detach().cpu()
    state["labels"] = model.labels.detach().cpu()
    return state


def load_model_state(model, state: dict[str, torch.Tensor]) -> None:
    """Load :func:`model_state` output into ``model`` (creating its code table)."""
    from glico.latents import CodeTable

    for name, part in (("generator", model.generator), ("classifier", model.classifier)):
        if part is None:
            continue
        sub = {k[len(name) + 1 :]: v for k, v in state.items() if k.startswith(name + ".")}
        part.load_state_dict(sub)
    device = model.labels.device
    if "codes" in state:
        table = CodeTable(state["codes"])
        # The constructor re-normalises; keep the saved bits exactly (a resumed fit must match).
        with torch.no_grad():
            table.weight.copy_(state["codes"])
        model.codes = table.to(device)
    model.labels = state["labels"].to(device)
    model._index = None


def nonfinite_entries(state: dict[str, torch.Tensor]) -> list[str]:
    """Names of the floating-point tensors in ``state`` that hold NaN or inf."""
    return [k for k, v in state.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]


def save_checkpoint(path: str | os.PathLike, model, extra: dict[str, Any] | None = None,
                    state: dict[str, torch.Tensor] | None = None) -> Path:
    """Write ``model`` (and trainer state in ``extra``) to ``path`` atomically.

    The file is written to a temporary file in the same folder, flushed to disk, then renamed over
    ``path`` (and the folder entry synced), so a crash never leaves a half-written checkpoint where the
    last good one was.

    Args:
        path: the checkpoint file.
        model: the GLICO model.
        extra: plain data (str, numbers, bool, None, lists, tuples, dicts) and tensors.
        state: ``model_state(model)`` when the caller computed it already.
    """
    from glico import __version__

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "format": FORMAT,
        "glico_version": __version__,
        "composition": model.composition(),
        "model": model_state(model) if state is None else state,
        "extra": extra or {},
    }
    return atomic_torch_save(payload, path)


def atomic_torch_save(payload: Any, path: str | os.PathLike) -> Path:
    """``torch.save(payload)`` to ``path`` through a temporary file in the same folder, flushed to disk and
    renamed over ``path`` (the folder entry synced): a crash never leaves a half-written file where the last
    good one was."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        # mkstemp makes the file 0600; give it the permissions any other file written here gets.
        os.chmod(tmp, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as f:
            torch.save(payload, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)
    return path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _fsync_dir(folder: Path) -> None:
    """Make the rename durable (POSIX); a no-op where folders cannot be opened (Windows)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _major(version: object) -> int | None:
    try:
        return int(str(version).split(".")[0])
    except ValueError:
        return None


def read_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint safely (no code is executed) and check it is one of ours.

    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: the file is truncated, corrupted, not a torch file, holds code, is not a
            glico checkpoint, or was written by a newer major version of glico.
    """
    from glico import __version__

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except (pickle.UnpicklingError, zipfile.BadZipFile, RuntimeError, EOFError, AttributeError, TypeError,
            ValueError, IndexError, KeyError, UnicodeDecodeError, OverflowError, MemoryError) as e:
        raise ValueError(
            f"{path} could not be read as a glico checkpoint: it is truncated, corrupted, or holds objects other "
            f"than tensors and plain data (which are never unpickled, for safety). Cause: {type(e).__name__}: {str(e)[:300]}"
        ) from e
    fmt = payload.get("format") if isinstance(payload, dict) else None
    if isinstance(fmt, str) and fmt.startswith("glico-checkpoint-") and fmt != FORMAT:
        raise ValueError(f"{path} is a glico checkpoint in format {fmt!r}, written by glico "
                         f"{payload.get('glico_version')}; this glico {__version__} reads {FORMAT!r} only")
    if fmt != FORMAT or not isinstance(payload.get("model"), dict) or not isinstance(payload.get("composition"), dict):
        raise ValueError(f"{path} is a torch file but not a glico checkpoint (expected a dict with format {FORMAT!r}, "
                         f"composition and model entries; got {type(payload).__name__}"
                         f"{' with keys ' + str(sorted(map(str, payload))[:8]) if isinstance(payload, dict) else ''})")
    saved, mine = _major(payload.get("glico_version")), _major(__version__)
    if saved is None or (mine is not None and saved > mine):
        raise ValueError(f"{path} was written by glico {payload.get('glico_version')!r}, a newer major version than "
                         f"this glico {__version__}: upgrade glico to read it")
    payload.setdefault("extra", {})
    return payload


def check_composition(payload: dict[str, Any], model, path: str | os.PathLike) -> None:
    """Refuse to load a checkpoint into a model composed of different parts."""
    saved, mine = payload["composition"], model.composition()
    diff = {k: (saved.get(k), mine.get(k)) for k in set(saved) | set(mine) if saved.get(k) != mine.get(k)}
    if diff:
        lines = "; ".join(f"{k}: checkpoint has {a}, model has {b}" for k, (a, b) in sorted(diff.items()))
        raise ValueError(f"checkpoint {path} was written by a differently composed GLICO model ({lines})")


def load_run(run: str | os.PathLike, device: str | torch.device = "cpu", full_loss: bool = False):
    """Rebuild the model of a run folder written by ``glico fit`` (or the ``glico/`` folder of ``glico train``)
    and load its checkpoint.

    Args:
        run: the run folder, or its checkpoint.pt.
        device: where to put the model.
        full_loss: build the run's own reconstruction loss and code initialisation (which may need their
            weights files, e.g. ImageNet VGG-16), to fit further in Python. By default they are replaced by
            a pixel loss and a random init: neither is part of what was learned, and sampling,
            interpolating and augmenting do not use them.

    Returns:
        ``(model, payload)``: the fitted :class:`glico.GLICO` in eval mode, and the checkpoint's contents
        (``payload["extra"]["run"]`` is run.json's: data, split, seed, class names).

    Raises:
        FileNotFoundError: no checkpoint.pt there.
        ValueError: a checkpoint not written by ``glico fit`` (no model spec).
    """
    from glico.names import ModelSpec, build_model

    run = Path(run)
    ckpt = run / "checkpoint.pt" if run.is_dir() else run
    if not ckpt.exists():
        raise FileNotFoundError(f"no checkpoint.pt in {run}: pass the folder written by 'glico fit --out RUN'")
    payload = read_checkpoint(ckpt)
    if "spec" not in payload["extra"]:
        raise ValueError(f"{ckpt} has no model spec (it was not written by 'glico fit'); load it in Python with GLICO.load")
    spec = ModelSpec.from_dict(payload["extra"]["spec"])
    if not full_loss:
        spec = ModelSpec.from_dict({**spec.to_dict(), "loss": "pixel", "init": "random"})
    model = build_model(spec)
    load_model_state(model, payload["model"])
    return model.to(device).eval(), payload
