"""ImageFolder loading (train/ and test/), decoding, resizing, the decoded cache, and its errors."""
import os

import numpy as np
import pytest
import torch
from data_builders import build_image_folder, pattern, write_image
from PIL import Image

import glico.data.decode as decode_mod
import glico.data.folder as folder_mod
from glico.data import DataError, MissingDataError, load_data, load_image_folder


def expected(split: str, c: int, i: int, size=(8, 8)) -> torch.Tensor:
    return torch.from_numpy(pattern(split, c, i, size)).permute(2, 0, 1).float() / 255


def test_png_folder_exact(image_folder, cache):
    data = load_data(f"folder:{image_folder}", root_cache=cache)
    assert data.name == "imgs"
    assert data.train.class_names == ("ant", "cat", "dog")  # sorted
    assert data.train.images.shape == (12, 3, 8, 8) and data.test.images.shape == (7, 3, 8, 8)
    assert data.train.labels.tolist() == [0] * 5 + [1] * 4 + [2] * 3
    assert data.test.labels.tolist() == [0] * 3 + [1] * 2 + [2] * 2
    # sorted file order within a class; PNG is lossless, so pixels are exact
    assert torch.equal(data.train.images[5 + 2], expected("train", 1, 2))
    assert torch.equal(data.test.images[6], expected("test", 2, 1))


def test_jpeg_folder(tmp_path, cache):
    root = build_image_folder(tmp_path / "jpgs", {"a": (2, 1), "b": (2, 1)}, fmt="jpg")
    data = load_image_folder(root, cache_root=cache)
    assert data.train.images.shape == (4, 3, 8, 8)
    assert (data.train.images[3] - expected("train", 1, 1)).abs().max() < 12 / 255  # JPEG quality 95


def test_grayscale_and_palette_become_rgb(tmp_path, cache):
    root = build_image_folder(tmp_path / "f", {"a": (1, 1), "b": (1, 1)})
    gray = (np.arange(64).reshape(8, 8) * 3).astype(np.uint8)
    Image.fromarray(gray, mode="L").save(root / "train" / "a" / "0000.png")
    Image.fromarray(pattern("train", 1, 0)).convert("P").save(root / "train" / "b" / "0000.png")
    data = load_image_folder(root, cache_root=cache)
    assert data.train.images.shape == (2, 3, 8, 8)
    g = data.train.images[0]
    assert torch.equal(g[0], g[1]) and torch.equal(g[1], g[2])
    assert torch.equal(g[0], torch.from_numpy(gray).float() / 255)


def test_other_formats_via_pil(tmp_path, cache):
    root = build_image_folder(tmp_path / "f", {"a": (1, 1), "b": (1, 1)})
    write_image(root / "train" / "a" / "0001.bmp", pattern("train", 0, 5), "bmp")
    write_image(root / "train" / "b" / "0001.tiff", pattern("train", 1, 5), "tiff")
    data = load_image_folder(root, cache_root=cache)
    assert len(data.train) == 4
    assert torch.equal(data.train.images[1], expected("train", 0, 5))
    assert torch.equal(data.train.images[3], expected("train", 1, 5))


def test_non_image_files_and_hidden_entries_are_ignored(image_folder, cache):
    (image_folder / "train" / "cat" / "notes.txt").write_text("not an image")
    (image_folder / "train" / "cat" / ".DS_Store").write_bytes(b"\0\1")
    (image_folder / "train" / ".hidden").mkdir()
    (image_folder / "train" / "README.md").write_text("loose file")
    data = load_image_folder(image_folder, cache_root=cache)
    assert data.train.class_names == ("ant", "cat", "dog") and len(data.train) == 12


def test_nested_subfolders_inside_a_class(image_folder, cache):
    write_image(image_folder / "train" / "cat" / "more" / "x.png", pattern("train", 1, 9), "png")
    data = load_image_folder(image_folder, cache_root=cache)
    assert int(data.train.class_counts()[1]) == 5


def test_single_top_level_folder(tmp_path, cache):
    build_image_folder(tmp_path / "outer" / "mydata")
    data = load_image_folder(tmp_path / "outer", cache_root=cache)
    assert len(data.train) == 12


def test_mixed_sizes_need_image_size(tmp_path, cache):
    root = build_image_folder(tmp_path / "f", {"a": (2, 1), "b": (1, 1)})
    write_image(root / "train" / "a" / "0001.png", pattern("train", 0, 1, (12, 10)), "png")
    with pytest.raises(DataError, match=r"different sizes.*0001\.png is 10x12.*image_size"):
        load_image_folder(root, cache_root=cache)
    data = load_image_folder(root, image_size=6, cache_root=cache)
    assert data.train.images.shape == (3, 3, 6, 6) and data.test.images.shape == (2, 3, 6, 6)


def test_resize_shorter_side_then_center_crop(tmp_path, cache):
    root = build_image_folder(tmp_path / "f", {"a": (1, 1), "b": (1, 1)})
    # H=8, W=48: left third red, middle third green, right third blue. Resized to 4x24 (shorter side 4),
    # the centre 4x4 crop (columns 10..13) lies inside the green third, clear of the blurred borders.
    wide = np.zeros((8, 48, 3), dtype=np.uint8)
    wide[:, :16, 0] = wide[:, 16:32, 1] = wide[:, 32:, 2] = 255
    Image.fromarray(wide).save(root / "train" / "a" / "0000.png")
    data = load_image_folder(root, image_size=4, cache_root=cache)
    img = data.train.images[0]
    assert img.shape == (3, 4, 4)
    assert torch.equal(img[1], torch.ones(4, 4)) and float(img[0].max()) == 0 and float(img[2].max()) == 0
    tall = np.zeros((40, 8, 3), dtype=np.uint8)  # H=40, W=8: only the middle rows are white
    tall[16:24] = 255
    Image.fromarray(tall).save(root / "train" / "b" / "0000.png")
    data = load_image_folder(root, image_size=2, cache_root=cache)
    assert data.train.images.shape == (2, 3, 2, 2) and float(data.train.images[1].min()) > 0.5


def test_train_and_test_sizes_differ(tmp_path, cache):
    root = build_image_folder(tmp_path / "f", {"a": (1, 1), "b": (1, 1)})
    for name in ("a", "b"):
        write_image(root / "test" / name / "0000.png", pattern("test", 0, 0, (6, 6)), "png")
    with pytest.raises(DataError, match="image_size"):
        load_image_folder(root, cache_root=cache)


def test_decoded_cache_is_used_and_invalidated(image_folder, cache, monkeypatch):
    first = load_image_folder(image_folder, cache_root=cache)
    assert list((cache / "decoded").glob("imgs-*-native.pt"))

    def no_decoding(*args, **kwargs):
        raise AssertionError("decoded again although the cache is valid")

    monkeypatch.setattr(folder_mod, "decode_files", no_decoding)
    second = load_image_folder(image_folder, cache_root=cache)
    assert torch.equal(first.train.images, second.train.images)
    assert torch.equal(first.test.labels, second.test.labels)
    assert second.train.class_names == first.train.class_names
    monkeypatch.undo()
    # rewriting one file changes the key: the new pixels are decoded
    target = image_folder / "train" / "ant" / "0000.png"
    write_image(target, pattern("train", 2, 7), "png")
    st = target.stat()
    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    third = load_image_folder(image_folder, cache_root=cache)
    assert torch.equal(third.train.images[0], expected("train", 2, 7))
    # a different image_size is another cache entry
    load_image_folder(image_folder, cache_root=cache, image_size=4)
    assert list((cache / "decoded").glob("imgs-*-4.pt"))


def test_corrupt_decoded_cache_is_rebuilt(image_folder, cache, caplog):
    load_image_folder(image_folder, cache_root=cache)
    (cache_file,) = (cache / "decoded").glob("*.pt")
    cache_file.write_bytes(cache_file.read_bytes()[:100])
    data = load_image_folder(image_folder, cache_root=cache)
    assert len(data.train) == 12 and "ignoring the unusable decoded-image cache" in caplog.text


def test_cache_can_be_turned_off(image_folder, cache):
    load_image_folder(image_folder, cache_root=cache, cache_decoded=False)
    assert not (cache / "decoded").exists()


def test_nonexistent_folder(tmp_path):
    with pytest.raises(MissingDataError, match="does not exist"):
        load_image_folder(tmp_path / "missing")


def test_empty_folder(tmp_path, cache):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="is empty"):
        load_data(f"folder:{tmp_path / 'empty'}", root_cache=cache)


def test_folder_without_train_and_test(tmp_path, cache):
    root = tmp_path / "f"
    (root / "train" / "a").mkdir(parents=True)
    (root / "val" / "a").mkdir(parents=True)
    with pytest.raises(DataError, match=r"no train/ and test/ folders \(found val/: rename it to test/\)"):
        load_image_folder(root, cache_root=cache)


def test_split_folder_without_classes(tmp_path, cache):
    root = build_image_folder(tmp_path / "f", {"a": (1, 1)})
    for p in (root / "test" / "a").iterdir():
        p.rename(root / "test" / p.name)
    (root / "test" / "a").rmdir()
    with pytest.raises(DataError, match="no class subfolders"):
        load_image_folder(root, cache_root=cache)


def test_class_without_images(image_folder, cache):
    (image_folder / "train" / "zebra").mkdir()
    (image_folder / "train" / "zebra" / "readme.txt").write_text("no images here")
    with pytest.raises(DataError, match="class 'zebra' has no images"):
        load_image_folder(image_folder, cache_root=cache)


def test_test_classes_must_match_train(image_folder, cache):
    (image_folder / "test" / "dog").rename(image_folder / "test" / "wolf")
    with pytest.raises(DataError, match=r"only in train/: \['dog'\], only in test/: \['wolf'\]"):
        load_image_folder(image_folder, cache_root=cache)


def test_unreadable_image_names_the_file(image_folder, cache):
    (image_folder / "train" / "cat" / "0001.png").write_bytes(b"definitely not a png")
    with pytest.raises(DataError, match=r"could not decode image file .*cat.*0001\.png"):
        load_image_folder(image_folder, cache_root=cache)


def test_a_file_that_is_not_an_archive(tmp_path, cache):
    f = tmp_path / "data.csv"
    f.write_text("a,b\n")
    with pytest.raises(DataError, match=r"neither a folder nor an archive.*\.tar\.xz"):
        load_data(f"folder:{f}", root_cache=cache)


def test_decode_bytes_matches_pil():
    arr = pattern("train", 1, 1, (5, 7))
    from data_builders import png_bytes

    assert torch.equal(decode_mod.decode_bytes(png_bytes(arr)), torch.from_numpy(arr).permute(2, 0, 1))
