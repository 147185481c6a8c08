"""Seeded small-sample splits and stratified subsampling, and the ImageSet / Dataset contracts."""
import numpy as np
import pytest
import torch

from glico.data import DataError, Dataset, ImageSet, small_sample_split, stratified_subsample


def make_set(counts: list[int], gen: torch.Generator | None = None) -> ImageSet:
    """An ImageSet whose image i is filled with a value unique to i (so images identify their index)."""
    labels = torch.cat([torch.full((n,), c, dtype=torch.int64) for c, n in enumerate(counts)])
    # Shuffle so classes are interleaved, as in CIFAR's batches.
    labels = labels[torch.randperm(len(labels), generator=gen)] if gen is not None else labels
    n = len(labels)
    images = (torch.arange(n, dtype=torch.float32) / n).view(n, 1, 1, 1).expand(n, 1, 2, 2).contiguous()
    return ImageSet(images, labels, tuple(f"c{c}" for c in range(len(counts))))


@pytest.mark.parametrize("spc", [1, 3, 10])
def test_split_sizes_and_subset(gen, spc):
    train = make_set([12, 10, 15, 11], gen)
    subset, idx = small_sample_split(train, spc, seed=0)
    assert idx.dtype == torch.int64 and idx.shape == (spc * 4,)
    assert torch.equal(subset.class_counts(), torch.full((4,), spc))
    assert torch.all(idx[1:] > idx[:-1]), "indices are ascending and distinct"
    assert torch.equal(subset.images, train.images[idx])
    assert torch.equal(subset.labels, train.labels[idx])
    assert subset.class_names == train.class_names


def test_split_is_deterministic_and_seed_dependent(gen):
    train = make_set([50, 50, 50], gen)
    _, a = small_sample_split(train, 5, seed=3)
    _, b = small_sample_split(train, 5, seed=3)
    _, c = small_sample_split(train, 5, seed=4)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_split_pinned_indices():
    """The exact indices for a fixed input: any change here breaks reproducibility of published splits."""
    train = make_set([6, 6, 6])
    _, idx = small_sample_split(train, 2, seed=0)
    assert idx.tolist() == [2, 5, 7, 9, 15, 17]  # RandomState(0).permutation(6)[:2] per class
    _, idx = small_sample_split(train, 2, seed=1)
    assert idx.tolist() == [1, 2, 8, 10, 12, 14]


def test_split_nested_across_spc(gen):
    train = make_set([30, 30, 30], gen)
    small = set(small_sample_split(train, 3, seed=7)[1].tolist())
    large = set(small_sample_split(train, 10, seed=7)[1].tolist())
    assert small < large


def test_split_disjoint_from_test(gen):
    both = make_set([10, 10, 6, 6], gen)  # every image unique; classes 0, 1 -> train, 2, 3 -> test
    names = ("c0", "c1")
    is_train = both.labels < 2
    data = Dataset(ImageSet(both.images[is_train], both.labels[is_train], names),
                   ImageSet(both.images[~is_train], both.labels[~is_train] - 2, names), "toy")
    subset, idx = small_sample_split(data.train, 4, seed=0)
    chosen = set(subset.images[:, 0, 0, 0].tolist())
    assert chosen <= set(data.train.images[:, 0, 0, 0].tolist())
    assert not chosen & set(data.test.images[:, 0, 0, 0].tolist())


def test_split_seed_reproducible_across_generators_state(gen):
    """The split depends on the seed only, not on torch's or numpy's global random state."""
    train = make_set([20, 20], gen)
    _, a = small_sample_split(train, 3, seed=11)
    torch.manual_seed(123)
    np.random.seed(456)
    torch.rand(10)
    np.random.rand(10)
    _, b = small_sample_split(train, 3, seed=11)
    assert torch.equal(a, b)


@pytest.mark.parametrize("spc", [0, -1])
def test_split_spc_below_one(spc):
    with pytest.raises(DataError, match=r"spc .* must be >= 1; got " + str(spc)):
        small_sample_split(make_set([5, 5]), spc, seed=0)


@pytest.mark.parametrize("spc", [2.5, "3", True])
def test_split_spc_not_integer(spc):
    with pytest.raises(DataError, match="must be an integer"):
        small_sample_split(make_set([5, 5]), spc, seed=0)


def test_split_spc_larger_than_a_class():
    with pytest.raises(DataError, match=r"'c1' has 3.*spc must be in 1\.\.3") as info:
        small_sample_split(make_set([8, 3, 9]), 5, seed=0)
    assert "'c0'" not in str(info.value)


def test_split_class_without_images():
    s = make_set([4, 4])
    s = ImageSet(s.images, s.labels, ("c0", "c1", "empty"))
    with pytest.raises(DataError, match="'empty' has 0"):
        small_sample_split(s, 1, seed=0)


@pytest.mark.parametrize("seed", [-1, 2**32, 1.5])
def test_split_bad_seed(seed):
    with pytest.raises(DataError, match="seed"):
        small_sample_split(make_set([4, 4]), 1, seed=seed)


def test_stratified_subsample_proportions(gen):
    s = make_set([60, 30, 10], gen)
    sub, idx = stratified_subsample(s, 10, seed=0)
    assert sub.class_counts().tolist() == [6, 3, 1]
    assert torch.equal(sub.images, s.images[idx])
    sub2, idx2 = stratified_subsample(s, 10, seed=0)
    assert torch.equal(idx, idx2)
    _, idx3 = stratified_subsample(s, 10, seed=1)
    assert not torch.equal(idx, idx3)


def test_stratified_subsample_rounding_adds_up(gen):
    s = make_set([7, 7, 7], gen)
    sub, _ = stratified_subsample(s, 10, seed=0)
    assert len(sub) == 10 and sorted(sub.class_counts().tolist()) == [3, 3, 4]


def test_stratified_subsample_keeps_all_when_n_large():
    s = make_set([3, 3])
    sub, idx = stratified_subsample(s, 100, seed=0)
    assert sub is s and idx.tolist() == list(range(6))


class TestImageSetContract:
    def test_rejects_uint8(self):
        with pytest.raises(TypeError, match="divide uint8 images by 255"):
            ImageSet(torch.zeros(2, 3, 4, 4, dtype=torch.uint8), torch.zeros(2, dtype=torch.int64), ("a",))

    def test_rejects_out_of_range(self):
        with pytest.raises(ValueError, match=r"\[0, 1\]"):
            ImageSet(torch.full((2, 3, 4, 4), 2.0), torch.zeros(2, dtype=torch.int64), ("a",))

    def test_rejects_nan(self):
        x = torch.rand(2, 3, 4, 4)
        x[1, 0, 0, 0] = float("nan")
        with pytest.raises(ValueError, match="NaN"):
            ImageSet(x, torch.zeros(2, dtype=torch.int64), ("a",))

    def test_rejects_wrong_rank(self):
        with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
            ImageSet(torch.rand(2, 4, 4), torch.zeros(2, dtype=torch.int64), ("a",))

    def test_rejects_label_count_mismatch(self):
        with pytest.raises(DataError, match="2 images but 3 labels"):
            ImageSet(torch.rand(2, 3, 4, 4), torch.zeros(3, dtype=torch.int64), ("a",))

    def test_rejects_labels_out_of_range(self):
        with pytest.raises(DataError, match=r"0\.\.1 .* got values in 0\.\.2"):
            ImageSet(torch.rand(3, 3, 4, 4), torch.tensor([0, 1, 2]), ("a", "b"))

    def test_rejects_float_labels(self):
        with pytest.raises(DataError, match="int64"):
            ImageSet(torch.rand(2, 3, 4, 4), torch.zeros(2), ("a",))

    def test_rejects_duplicate_class_names(self):
        with pytest.raises(DataError, match="unique"):
            ImageSet(torch.rand(2, 3, 4, 4), torch.tensor([0, 1]), ("a", "a"))

    def test_rejects_list_class_names(self):
        with pytest.raises(DataError, match="tuple of str"):
            ImageSet(torch.rand(2, 3, 4, 4), torch.tensor([0, 1]), ["a", "b"])

    def test_dataset_rejects_mismatched_classes_and_shapes(self):
        a = ImageSet(torch.rand(2, 3, 4, 4), torch.tensor([0, 1]), ("a", "b"))
        b = ImageSet(torch.rand(2, 3, 4, 4), torch.tensor([0, 1]), ("a", "c"))
        c = ImageSet(torch.rand(2, 3, 5, 5), torch.tensor([0, 1]), ("a", "b"))
        with pytest.raises(DataError, match="class names differ"):
            Dataset(a, b, "x")
        with pytest.raises(DataError, match="must match"):
            Dataset(a, c, "x")


# --- validation_split: held-out training images for choosing settings ---------------------------

@pytest.mark.parametrize("spc,per_class", [(1, 1), (3, 5), (5, 5)])
def test_validation_split_is_disjoint_from_the_split_and_balanced(gen, spc, per_class):
    from glico.data import validation_split

    train = make_set([12, 10, 15, 11], gen)
    _, chosen = small_sample_split(train, spc, seed=4)
    held, idx = validation_split(train, spc, 4, per_class)
    assert idx.dtype == torch.int64 and idx.shape == (4 * per_class,)
    assert torch.equal(held.class_counts(), torch.full((4,), per_class))
    assert not set(idx.tolist()) & set(chosen.tolist()), "validation images must not be training images"
    assert torch.equal(held.images, train.images[idx]) and torch.all(idx[1:] > idx[:-1])
    # Same arguments, same images; the next images of each class's seeded order (split at a larger spc).
    assert torch.equal(validation_split(train, spc, 4, per_class)[1], idx)
    _, both = small_sample_split(train, spc + per_class, seed=4)
    assert set(both.tolist()) == set(chosen.tolist()) | set(idx.tolist())


def test_validation_split_refuses_classes_too_small_naming_the_limit():
    from glico.data import validation_split

    train = make_set([12, 7, 15])
    with pytest.raises(DataError, match=r"'c1' has 7; use at most 4 validation images per class"):
        validation_split(train, 3, 0, 5)
    with pytest.raises(DataError, match="validation images per class must be an integer >= 1"):
        validation_split(train, 3, 0, 0)
