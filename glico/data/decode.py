"""Decoding image files into tensors, resizing, and the cache of decoded data sets.

Files are decoded by torchvision's decoders (JPEG, PNG, GIF, WebP; about 3x faster than PIL on small JPEGs,
with the same pixels on JPEG), falling back to PIL for other formats (BMP, TIFF, PNM, ...) and for
torchvision versions without them (torchvision 0.29 deprecates them in favour of TorchCodec). Every image
becomes 3-channel, 8-bit RGB (grayscale is repeated, alpha dropped); EXIF orientation is applied. Images stay
uint8 until the very end: a quarter of float32's memory during decoding, and what the cache stores.

The decoded cache is a ``torch.save`` file of tensors, strings and ints only, read with
``torch.load(weights_only=True)``; a file that fails to load or does not look right is ignored (and rebuilt),
never trusted.
"""
from __future__ import annotations

import hashlib
import io
import logging
import os
import re
import tempfile
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torchvision.io as tio
import torchvision.transforms.v2.functional as TF
from tqdm.auto import tqdm

from glico.data.types import DataError, ImageSet

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".gif", ".webp", ".bmp", ".tif", ".tiff", ".ppm", ".pgm", ".pbm")

# torchvision's decoder when this torchvision has it (deprecated since 0.29; see decode_bytes).
_TV_DECODE = getattr(tio, "decode_image", None)

# Bump when the decoding (and so the cached pixels) changes.
CACHE_FORMAT = 1


def is_image_name(name: str) -> bool:
    """True for a visible file name ending in one of :data:`IMAGE_SUFFIXES` (any case)."""
    return not name.startswith(".") and name.lower().endswith(IMAGE_SUFFIXES)


def _decode_with_pil(data: bytes) -> torch.Tensor:
    from PIL import Image, ImageOps

    with Image.open(io.BytesIO(data)) as img:
        img = ImageOps.exif_transpose(img)
        if img.mode in ("I;16", "I;16B", "I;16L", "I"):  # 16/32-bit grayscale: scale to 8 bits
            arr = np.asarray(img, dtype=np.float64)
            arr = np.clip(arr / (65535.0 if arr.max() > 255 else 255.0) * 255.0 + 0.5, 0, 255).astype(np.uint8)
            arr = np.repeat(arr[:, :, None], 3, axis=2)
        else:
            arr = np.array(img.convert("RGB"))
    return torch.from_numpy(np.ascontiguousarray(arr)).permute(2, 0, 1).contiguous()


def decode_bytes(data: bytes, source: str | Path = "<bytes>") -> torch.Tensor:
    """Decode the contents of an image file to an 8-bit RGB tensor.

    torchvision decodes JPEG, PNG, GIF and WebP; anything else (or anything it refuses) goes to PIL.

    Args:
        data: the file's bytes.
        source: where they came from, for error messages.

    Returns:
        uint8 tensor, values 0..255; for an animated GIF, the first frame.

    Raises:
        DataError: not a readable image (the message names ``source``).

    Shape:
        (3, H, W)
    """
    if _TV_DECODE is not None:
        try:
            with warnings.catch_warnings():
                # torchvision >= 0.29 deprecates its decoders in favour of TorchCodec (not a dependency);
                # they are still the fastest option here, and PIL takes over once they are gone.
                warnings.simplefilter("ignore", DeprecationWarning)
                img = _TV_DECODE(torch.frombuffer(bytearray(data), dtype=torch.uint8),
                                 mode=tio.ImageReadMode.RGB, apply_exif_orientation=True)
            if img.dim() == 4:
                img = img[0]
            if img.dtype != torch.uint8:
                img = TF.to_dtype(img, torch.uint8, scale=True)
            return img
        except (RuntimeError, ValueError):
            pass  # a format torchvision doesn't read (BMP, TIFF, ...) or a variant it refuses: try PIL
    try:
        return _decode_with_pil(data)
    except Exception as exc:  # PIL raises many types (UnidentifiedImageError, OSError, SyntaxError, ...)
        # PIL names the in-memory buffer ("cannot identify image file <_io.BytesIO object at 0x...>"): say
        # what the file's start looks like instead, which is what tells a user why.
        why = re.sub(r"\s*<_io\.BytesIO object at 0x[0-9a-f]+>", "", str(exc)).strip(" :")
        head = data[:8]
        kind = ("it is empty" if not data else
                "it starts with text, not image data" if all(32 <= b < 127 or b in (9, 10, 13) for b in head) else
                f"it starts with the bytes {head.hex(' ')}")
        raise DataError(f"could not decode image file {source}: {why or type(exc).__name__} ({kind}; readable "
                        f"formats: JPEG, PNG, GIF, WebP, BMP, TIFF, PNM)") from exc


def decode_file(path: str | Path) -> torch.Tensor:
    """Decode one image file to an 8-bit RGB tensor (see :func:`decode_bytes`).

    Args:
        path: an image file.

    Returns:
        uint8 tensor, values 0..255.

    Raises:
        DataError: the file is not a readable image (the message names the file).

    Shape:
        (3, H, W)
    """
    with open(path, "rb") as f:
        return decode_bytes(f.read(), path)


def resize_center_crop(images: torch.Tensor, size: int) -> torch.Tensor:
    """Resize so that the shorter side is ``size`` (bilinear, antialiased), then crop the centre square.

    Works on uint8 or float images; float results are clamped to [0, 1].

    Args:
        images: one image or a batch.
        size: the side of the output square.

    Returns:
        The resized images, same dtype.

    Shape:
        (..., C, H, W) -> (..., C, size, size)
    """
    if images.shape[-2:] == (size, size):
        return images
    out = TF.resize(images, [size], interpolation=TF.InterpolationMode.BILINEAR, antialias=True)
    out = TF.center_crop(out, [size, size])
    return out.clamp_(0, 1) if out.is_floating_point() else out


def check_image_size(image_size: int | None) -> int | None:
    """Validate the ``image_size`` option (None or an int >= 1) and return it."""
    if image_size is None:
        return None
    if isinstance(image_size, bool) or not isinstance(image_size, (int, np.integer)) or image_size < 1:
        raise DataError(f"image_size must be None or an integer >= 1 (the output side in pixels); got {image_size!r}")
    return int(image_size)


def decode_files(paths: Sequence[str | Path], image_size: int | None, desc: str = "decoding images",
                 preloaded: dict[str, bytes] | None = None) -> torch.Tensor:
    """Decode many image files into one uint8 batch.

    Args:
        paths: the files, in the order wanted.
        image_size: resize each image's shorter side to this and centre-crop a square; None keeps the files'
            own size, which must then be the same for all of them.
        desc: the progress bar's label.
        preloaded: file contents already in memory, keyed by ``str(path)``; used (and removed, to free the
            memory) instead of reading those files.

    Returns:
        uint8 tensor, RGB, values 0..255.

    Raises:
        DataError: an unreadable file, or files of different sizes while ``image_size`` is None.

    Shape:
        (len(paths), 3, H, W), with H = W = image_size when given.
    """
    if not paths:
        raise DataError("no image files to decode")
    out: torch.Tensor | None = None
    first = None
    for i, path in enumerate(tqdm(paths, desc=desc, unit=" img", disable=None, leave=False, mininterval=0.5)):
        data = preloaded.pop(str(path), None) if preloaded is not None else None
        img = decode_file(path) if data is None else decode_bytes(data, path)
        if image_size is not None:
            img = resize_center_crop(img, image_size)
        if out is None:
            out = torch.empty((len(paths), *img.shape), dtype=torch.uint8)
            first = path
        elif img.shape != out.shape[1:]:
            raise DataError(
                f"images have different sizes: {first} is {out.shape[3]}x{out.shape[2]} but {path} is "
                f"{img.shape[2]}x{img.shape[1]} (width x height); pass image_size=N (CLI: --image-size N) "
                f"to resize every image's shorter side to N and centre-crop it to NxN"
            )
        out[i] = img
    assert out is not None
    return out


def to_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 images (0..255) to float32 in [0, 1] (the library's image range).

    Shape:
        (N, C, H, W) -> (N, C, H, W)
    """
    return images.to(torch.float32).div_(255.0)


def fingerprint_files(root: str | Path, paths: Sequence[str | Path], extra: str = "", stat: bool = True) -> str:
    """A hash of the files' paths relative to ``root`` (and, with ``stat``, their sizes and modification
    times), plus ``extra``.

    With ``stat``, any added, removed, renamed or rewritten file changes it, so a decoded cache keyed by it is
    never stale. ``root`` must be a prefix of every path.
    """
    h = hashlib.sha256(f"{CACHE_FORMAT}\0{extra}\0".encode())
    skip = len(str(root).rstrip(os.sep)) + 1
    for p in paths:
        p = str(p)
        if stat:
            st = os.stat(p)
            h.update(f"{p[skip:]}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
        else:
            h.update(f"{p[skip:]}\n".encode())
    return h.hexdigest()[:16]


def decoded_cache_path(cache_root: Path, name: str, fingerprint: str, image_size: int | None) -> Path:
    """Where the decoded tensors of a data set live: ``<cache_root>/decoded/<name>-<fingerprint>-<size>.pt``
    (``native`` when ``image_size`` is None)."""
    size = "native" if image_size is None else str(image_size)
    return Path(cache_root) / "decoded" / f"{name}-{fingerprint}-{size}.pt"


def save_decoded(path: Path, train_u8: torch.Tensor, train_labels: torch.Tensor, test_u8: torch.Tensor,
                 test_labels: torch.Tensor, class_names: Sequence[str]) -> None:
    """Write a decoded data set atomically (temporary file, fsync, rename). Failure only logs a warning:
    the cache is an optimisation."""
    payload = {
        "format": CACHE_FORMAT,
        "train_images": train_u8, "train_labels": train_labels,
        "test_images": test_u8, "test_labels": test_labels,
        "class_names": list(class_names),
    }
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent)
        with os.fdopen(fd, "wb") as f:
            torch.save(payload, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        log.info("cached the decoded images in %s", path)
    except OSError as exc:
        log.warning("could not write the decoded-image cache %s (%s); continuing without it", path, exc)
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)


def load_decoded(path: Path) -> tuple[ImageSet, ImageSet] | None:
    """Read a decoded data set written by :func:`save_decoded`; None when absent or unusable."""
    if not path.is_file():
        return None
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
        if payload.get("format") != CACHE_FORMAT:
            return None
        names = tuple(payload["class_names"])
        sets = []
        for split in ("train", "test"):
            u8, labels = payload[f"{split}_images"], payload[f"{split}_labels"]
            if u8.dtype != torch.uint8 or u8.dim() != 4:
                raise ValueError(f"{split} images: dtype {u8.dtype}, shape {tuple(u8.shape)}")
            sets.append(ImageSet(to_float(u8), labels, names))
    except Exception as exc:  # a truncated or foreign file: rebuild rather than fail
        log.warning("ignoring the unusable decoded-image cache %s (%s: %s)", path, type(exc).__name__, exc)
        return None
    log.info("loaded decoded images from %s", path)
    return sets[0], sets[1]
