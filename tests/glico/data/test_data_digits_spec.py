"""scikit-learn's digits loader and the SPEC strings of load_data."""
import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits as sk_load_digits

from glico.data import DATA_SCHEMES, DataError, MissingDataError, load_data, load_digits


def test_digits_shapes_and_range():
    data = load_data("digits")
    assert data.name == "digits"
    assert data.train.images.shape == (896, 1, 8, 8) and data.test.images.shape == (901, 1, 8, 8)
    assert data.train.images.dtype == torch.float32
    for s in (data.train, data.test):
        assert float(s.images.min()) == 0.0 and float(s.images.max()) == 1.0
        assert torch.equal(s.images * 16, (s.images * 16).round()), "values are k/16"
        assert s.class_names == tuple(str(c) for c in range(10))
        assert (s.class_counts() >= 87).all()


def test_digits_split_is_a_fixed_partition():
    a, b = load_digits(), load_digits()
    assert torch.equal(a.train.images, b.train.images) and torch.equal(a.test.labels, b.test.labels)
    # train + test is exactly scikit-learn's data set (each image once), with matching labels
    bunch = sk_load_digits()
    ours = torch.cat([a.train.images, a.test.images]).flatten(1) * 16
    ours = np.concatenate([ours.numpy(), torch.cat([a.train.labels, a.test.labels]).numpy()[:, None]], axis=1)
    theirs = np.concatenate([bunch.images.reshape(len(bunch.images), -1), bunch.target[:, None]], axis=1)
    assert np.array_equal(ours[np.lexsort(ours.T[::-1])], theirs[np.lexsort(theirs.T[::-1])])
    # per class, train gets half (rounded down)
    assert (a.test.class_counts() - a.train.class_counts()).tolist() == [0, 0, 1, 1, 1, 0, 1, 1, 0, 0]


def test_digits_image_size():
    data = load_data("digits", image_size=16)
    assert data.train.images.shape == (896, 1, 16, 16)
    assert 0 <= float(data.train.images.min()) and float(data.train.images.max()) <= 1


def test_max_test_is_stratified_and_fixed():
    a = load_data("digits", max_test=50)
    b = load_data("digits", max_test=50)
    assert len(a.test) == 50 and a.test.class_counts().tolist() == [5] * 10
    assert torch.equal(a.test.images, b.test.images)
    assert len(a.train) == 896


@pytest.mark.parametrize("max_test", [0, -3, 2.5, True])
def test_max_test_invalid(max_test):
    with pytest.raises(DataError, match="max_test"):
        load_data("digits", max_test=max_test)


@pytest.mark.parametrize("image_size", [0, -8, "32", 3.0])
def test_image_size_invalid(image_size):
    with pytest.raises(DataError, match="image_size"):
        load_data("digits", image_size=image_size)


@pytest.mark.parametrize("spec", ["imagenet:/data", "mnist", "Digits", "cifar-10:/x"])
def test_unknown_scheme_lists_valid_ones(spec):
    with pytest.raises(DataError, match="unknown data SPEC") as info:
        load_data(spec)
    for scheme in DATA_SCHEMES:
        assert scheme in str(info.value)


@pytest.mark.parametrize("spec", ["", "   ", None, 3])
def test_empty_spec(spec):
    with pytest.raises(DataError, match="non-empty string"):
        load_data(spec)


@pytest.mark.parametrize("scheme", ["cifar10", "cifar100", "cub", "folder"])
def test_scheme_without_path(scheme):
    with pytest.raises(DataError, match="needs a path"):
        load_data(scheme)
    with pytest.raises(DataError, match="needs a path"):
        load_data(scheme + ":")


def test_digits_takes_no_path():
    with pytest.raises(DataError, match="takes no path"):
        load_data("digits:/tmp")


@pytest.mark.parametrize("scheme", ["cifar10", "cifar100", "cub", "folder"])
def test_nonexistent_path(tmp_path, scheme):
    missing = tmp_path / "nope"
    with pytest.raises(MissingDataError, match="nope") as info:
        load_data(f"{scheme}:{missing}", root_cache=tmp_path / "cache")
    assert isinstance(info.value, FileNotFoundError) and isinstance(info.value, ValueError)


def test_docs_data_examples_run():
    import re
    from pathlib import Path

    doc = Path(__file__).resolve().parents[3] / "docs" / "data.md"
    blocks = re.findall(r"```python\n(.*?)```", doc.read_text(), flags=re.S)
    assert blocks
    for block in blocks:
        exec(compile(block, str(doc), "exec"), {})
