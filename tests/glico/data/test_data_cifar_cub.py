"""CIFAR-10/100 in torchvision's pickle format and CUB-200-2011 in its released folder format,
on tiny fakes the tests write in those formats."""
import pickle

import numpy as np
import pytest
import torch
import torchvision.datasets
from data_builders import CUB_CLASSES, build_fake_cifar, build_fake_cub, cifar_row, pattern

import glico.data.cub as cub_mod
from glico.data import DataError, MissingDataError, load_cifar10, load_cifar100, load_cub, load_data


def _fail_download(*args, **kwargs):
    raise AssertionError("downloaded without being asked")


@pytest.fixture
def no_download(monkeypatch):
    monkeypatch.setattr(torchvision.datasets, "CIFAR10", _fail_download)
    monkeypatch.setattr(torchvision.datasets, "CIFAR100", _fail_download)


# ---------------------------------------------------------------- CIFAR


def test_cifar10_layout_labels_and_pixels(tmp_path, no_download):
    root = build_fake_cifar(tmp_path, "cifar10", per_batch=4)
    data = load_data(f"cifar10:{root}")
    assert data.name == "cifar10"
    assert data.train.images.shape == (20, 3, 32, 32) and data.test.images.shape == (5, 3, 32, 32)
    assert data.train.class_names == tuple(f"class{c}" for c in range(10))
    # batches are concatenated in order 1..5; labels as written; pixels channel-major
    assert data.train.labels.tolist() == [k * 7 % 10 for k in range(20)]
    assert data.test.labels.tolist() == [k * 7 % 10 for k in range(20, 25)]
    k = 13
    row = torch.from_numpy(cifar_row(k * 7 % 10, k).reshape(3, 32, 32)).float() / 255
    assert torch.equal(data.train.images[k], row)
    assert data.train.images.dtype == torch.float32


def test_cifar100_fine_labels(tmp_path, no_download):
    root = build_fake_cifar(tmp_path, "cifar100", per_batch=4)
    data = load_data(f"cifar100:{root}")
    assert data.name == "cifar100" and len(data.train.class_names) == 100
    assert data.train.class_names[3] == "fine3"
    assert data.train.labels.tolist() == [k * 7 % 100 for k in range(8)]
    assert data.test.images.shape == (5, 3, 32, 32)


def test_cifar_inner_folder_and_image_size(tmp_path, no_download):
    root = build_fake_cifar(tmp_path, "cifar10")
    data = load_cifar10(root / "cifar-10-batches-py", image_size=16)
    assert data.train.images.shape == (20, 3, 16, 16)
    assert 0 <= float(data.train.images.min()) and float(data.train.images.max()) <= 1


def test_cifar_missing_says_how_to_download(tmp_path, no_download):
    (tmp_path / "empty").mkdir()
    with pytest.raises(MissingDataError, match=r"has no cifar-10-batches-py/ folder.*download=True"):
        load_data(f"cifar10:{tmp_path / 'empty'}")
    with pytest.raises(MissingDataError, match=r"cifar-100-python"):
        load_cifar100(tmp_path / "empty")


def test_cifar_download_only_when_asked(tmp_path, monkeypatch):
    calls = []

    class FakeCIFAR10:
        def __init__(self, root, train=True, download=False):
            calls.append(download)
            build_fake_cifar(tmp_path / "dl", "cifar10")

    monkeypatch.setattr(torchvision.datasets, "CIFAR10", FakeCIFAR10)
    data = load_data(f"cifar10:{tmp_path / 'dl'}", download=True)
    assert calls == [True] and len(data.train) == 20
    load_data(f"cifar10:{tmp_path / 'dl'}", download=True)  # present now: no second download
    assert calls == [True]


def test_cifar_incomplete_folder(tmp_path, no_download):
    root = build_fake_cifar(tmp_path, "cifar10")
    (root / "cifar-10-batches-py" / "test_batch").unlink()
    with pytest.raises(MissingDataError, match=r"incomplete: missing \['test_batch'\]"):
        load_cifar10(root)


def test_cifar_wrong_content(tmp_path, no_download):
    root = build_fake_cifar(tmp_path, "cifar10")
    bad = {"data": np.zeros((2, 100), dtype=np.uint8), "labels": [0, 1]}
    (root / "cifar-10-batches-py" / "data_batch_3").write_bytes(pickle.dumps(bad, protocol=2))
    with pytest.raises(DataError, match=r"data_batch_3: 'data' must be uint8 of shape \(N, 3072\)"):
        load_cifar10(root)
    (root / "cifar-10-batches-py" / "data_batch_3").write_bytes(b"\x80\x02truncated")
    with pytest.raises(DataError, match="data_batch_3 is not a readable CIFAR batch file"):
        load_cifar10(root)


class _Exploit:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))  # unpickling this would create the marker file


def test_cifar_pickle_with_code_is_refused(tmp_path, no_download):
    root = build_fake_cifar(tmp_path, "cifar10")
    marker = tmp_path / "code-ran"
    evil = {"data": np.zeros((1, 3072), dtype=np.uint8), "labels": [0], "x": _Exploit(str(marker))}
    (root / "cifar-10-batches-py" / "data_batch_1").write_bytes(pickle.dumps(evil, protocol=2))
    with pytest.raises(DataError, match=r"refusing to load io\.open"):
        load_cifar10(root)
    assert not marker.exists()


def test_cifar_reads_python2_style_pickles(tmp_path, no_download):
    """The release was pickled by Python 2: keys and strings arrive as bytes-like; both spellings load."""
    root = build_fake_cifar(tmp_path, "cifar10")
    folder = root / "cifar-10-batches-py"
    meta = {b"label_names": [f"class{c}".encode() for c in range(10)]}
    (folder / "batches.meta").write_bytes(pickle.dumps(meta, protocol=2))
    batch = pickle.loads((folder / "data_batch_2").read_bytes())
    (folder / "data_batch_2").write_bytes(pickle.dumps({k.encode(): v for k, v in batch.items()}, protocol=2))
    data = load_cifar10(root)
    assert data.train.class_names[0] == "class0" and len(data.train) == 20


# ---------------------------------------------------------------- CUB


def test_cub_split_labels_and_resize(tmp_path, cache):
    build_fake_cub(tmp_path)
    data = load_data(f"cub:{tmp_path}", image_size=8, root_cache=cache)
    assert data.name == "cub200"
    assert data.train.class_names == CUB_CLASSES
    # 9 images, ids 1..9 cycle through classes 0,1,2; ids 4..6 (k = 1) are test
    assert data.train.labels.tolist() == [0, 1, 2, 0, 1, 2] and data.test.labels.tolist() == [0, 1, 2]
    assert data.train.images.shape == (6, 3, 8, 8) and data.test.images.shape == (3, 3, 8, 8)
    # the 16x16 image (id 3: class 2, k = 0), resized to 8: close to the pattern's mean colour
    mean = pattern("train", 2, 0, (16, 16)).reshape(-1, 3).mean(0) / 255
    assert torch.allclose(data.train.images[2].mean((1, 2)), torch.tensor(mean, dtype=torch.float32), atol=0.03)


def test_cub_root_itself_and_no_classes_txt(tmp_path, cache):
    cub = build_fake_cub(tmp_path, classes_txt=False)
    data = load_cub(cub, image_size=4, cache_root=cache)
    assert data.train.class_names == CUB_CLASSES  # from the image folders' names


def test_cub_mixed_sizes_need_image_size(tmp_path, cache):
    build_fake_cub(tmp_path)
    with pytest.raises(DataError, match="image_size"):
        load_cub(tmp_path, cache_root=cache)


def test_cub_same_sizes_without_image_size(tmp_path, cache):
    build_fake_cub(tmp_path, sizes=[(6, 6)])
    assert load_cub(tmp_path, cache_root=cache).train.images.shape == (6, 3, 6, 6)


def test_cub_decoded_cache(tmp_path, cache, monkeypatch):
    build_fake_cub(tmp_path)
    first = load_cub(tmp_path, image_size=8, cache_root=cache)

    def fail(*args, **kwargs):
        raise AssertionError("decoded again")

    monkeypatch.setattr(cub_mod, "decode_files", fail)
    second = load_cub(tmp_path, image_size=8, cache_root=cache)
    assert torch.equal(first.test.images, second.test.images)
    # changing the split file changes the key
    split = tmp_path / "CUB_200_2011" / "train_test_split.txt"
    split.write_text(split.read_text().replace("1 1\n", "1 0\n", 1))
    monkeypatch.undo()
    third = load_cub(tmp_path, image_size=8, cache_root=cache)
    assert len(third.test) == 4


def test_cub_missing_index_file(tmp_path):
    cub = build_fake_cub(tmp_path)
    (cub / "train_test_split.txt").unlink()
    with pytest.raises(MissingDataError, match=r"not a CUB-200-2011 folder: expected images\.txt"):
        load_cub(tmp_path)


def test_cub_missing_image(tmp_path):
    cub = build_fake_cub(tmp_path)
    next((cub / "images").rglob("*.jpg")).unlink()
    with pytest.raises(MissingDataError, match="1 images listed in images.txt are missing"):
        load_cub(tmp_path, image_size=8)


def test_cub_inconsistent_ids(tmp_path):
    cub = build_fake_cub(tmp_path)
    with open(cub / "image_class_labels.txt", "a") as f:
        f.write("99 1\n")
    with pytest.raises(DataError, match="must list the same image ids"):
        load_cub(tmp_path, image_size=8)


def test_cub_malformed_line(tmp_path):
    cub = build_fake_cub(tmp_path)
    (cub / "images.txt").write_text("one two\n")
    with pytest.raises(DataError, match=r"images\.txt, line 1: expected '<id> <value>'"):
        load_cub(tmp_path, image_size=8)
