"""Builders for small on-disk data sets in the real formats, written into each test's tmp_path.

Every image has a distinct, known pattern, so tests can check exactly which image ended up where.
"""
from __future__ import annotations

import io
import pickle
import tarfile
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image


def pattern(split: str, class_index: int, image_index: int, size: tuple[int, int] = (8, 8)) -> np.ndarray:
    """A distinct uint8 RGB image (H, W, 3) for (split, class, index): a constant per channel plus a ramp."""
    h, w = size
    base = np.array([40 * class_index + 5 * image_index + (100 if split == "test" else 0), 10 * image_index,
                     200 - 30 * class_index], dtype=np.int64) % 256
    ramp = (np.arange(h)[:, None] + np.arange(w)[None, :]) % 8
    return ((base[None, None, :] + ramp[:, :, None]) % 256).astype(np.uint8)


def write_image(path: Path, arr: np.ndarray, fmt: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    img = Image.fromarray(arr)
    if fmt == "jpg":
        img.save(path, format="JPEG", quality=95)
    else:
        img.save(path, format=fmt.upper())


def build_image_folder(root: Path, counts: dict[str, tuple[int, int]] | None = None, fmt: str = "png",
                       size: tuple[int, int] = (8, 8)) -> Path:
    """``root/{train,test}/<class>/<NNNN>.<fmt>``; ``counts`` maps class -> (n_train, n_test)."""
    counts = counts or {"cat": (4, 2), "dog": (3, 2), "ant": (5, 3)}
    for c, cls in enumerate(sorted(counts)):
        for split, n in zip(("train", "test"), counts[cls], strict=True):
            for i in range(n):
                write_image(root / split / cls / f"{i:04d}.{fmt}", pattern(split, c, i, size), fmt)
    return root


def build_archive(src: Path, dest: Path, arcname: str = "") -> Path:
    """Pack the folder ``src`` into ``dest`` (format from its ending), members under ``arcname``."""
    name = dest.name
    if name.endswith(".zip"):
        with zipfile.ZipFile(dest, "w") as zf:
            for p in sorted(src.rglob("*")):
                rel = p.relative_to(src).as_posix()
                zf.write(p, f"{arcname}/{rel}" if arcname else rel)
    else:
        mode = {".tar": "w", ".gz": "w:gz", ".xz": "w:xz", ".bz2": "w:bz2"}[Path(name).suffix]
        with tarfile.open(dest, mode) as tf:
            for p in sorted(src.rglob("*")):
                rel = p.relative_to(src).as_posix()
                tf.add(p, arcname=f"{arcname}/{rel}" if arcname else rel, recursive=False)
    return dest


def cifar_row(class_index: int, image_index: int) -> np.ndarray:
    """One CIFAR row: 3072 uint8, channel-major (1024 R, 1024 G, 1024 B), distinct per image."""
    img = np.zeros((3, 32, 32), dtype=np.int64)
    img[0] = 17 * class_index + image_index
    img[1] = np.arange(32)[:, None] * 4 + image_index  # varies with y
    img[2] = np.arange(32)[None, :] * 2 + class_index  # varies with x
    return (img % 256).astype(np.uint8).reshape(-1)


def build_fake_cifar(root: Path, variant: str = "cifar10", per_batch: int = 4) -> Path:
    """A tiny copy of torchvision's on-disk CIFAR format (pickle protocol 2, like the release)."""
    if variant == "cifar10":
        folder, num_classes = root / "cifar-10-batches-py", 10
        batches = {f"data_batch_{i}": per_batch for i in range(1, 6)} | {"test_batch": per_batch + 1}
        meta = {"num_cases_per_batch": per_batch, "label_names": [f"class{c}" for c in range(10)],
                "num_vis": 3072}
        meta_name, label_key = "batches.meta", "labels"
    else:
        folder, num_classes = root / "cifar-100-python", 100
        batches = {"train": 2 * per_batch, "test": per_batch + 1}
        meta = {"fine_label_names": [f"fine{c}" for c in range(100)],
                "coarse_label_names": [f"coarse{c}" for c in range(20)]}
        meta_name, label_key = "meta", "fine_labels"
    folder.mkdir(parents=True)
    counter = 0
    for fname, n in batches.items():
        labels = [(counter + k) * 7 % num_classes for k in range(n)]
        data = np.stack([cifar_row(lab, counter + k) for k, lab in enumerate(labels)])
        batch = {"batch_label": fname, "data": data, label_key: labels,
                 "filenames": [f"img{counter + k}.png" for k in range(n)]}
        if variant == "cifar100":
            batch["coarse_labels"] = [lab // 5 for lab in labels]
        counter += n
        (folder / fname).write_bytes(pickle.dumps(batch, protocol=2))
    (folder / meta_name).write_bytes(pickle.dumps(meta, protocol=2))
    return root


CUB_CLASSES = ("001.Black_footed_Albatross", "002.Laysan_Albatross", "003.Sooty_Albatross")


def build_fake_cub(root: Path, sizes: list[tuple[int, int]] | None = None, classes_txt: bool = True) -> Path:
    """A tiny CUB_200_2011 folder: 3 classes x 3 images (ids interleaved), the released index files."""
    cub = root / "CUB_200_2011"
    (cub / "images").mkdir(parents=True)
    sizes = sizes or [(10, 14), (12, 9), (16, 16)]
    lines = {"images.txt": [], "image_class_labels.txt": [], "train_test_split.txt": []}
    image_id = 0
    for k in range(3):
        for c, cls in enumerate(CUB_CLASSES):
            image_id += 1
            rel = f"{cls}/{cls.split('.')[1]}_{image_id:04d}_{k}.jpg"
            h, w = sizes[(image_id - 1) % len(sizes)]
            write_image(cub / "images" / rel, pattern("train", c, k, (h, w)), "jpg")
            lines["images.txt"].append(f"{image_id} {rel}")
            lines["image_class_labels.txt"].append(f"{image_id} {c + 1}")
            lines["train_test_split.txt"].append(f"{image_id} {0 if k == 1 else 1}")
    for name, content in lines.items():
        (cub / name).write_text("\n".join(content) + "\n")
    if classes_txt:
        (cub / "classes.txt").write_text("".join(f"{c + 1} {cls}\n" for c, cls in enumerate(CUB_CLASSES)))
    return cub


def png_bytes(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()
