import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from glico.classifiers import ClassLoss, CosineLoss, CrossEntropy
from tests.tolerances import tol


def _batch(seed: int, b: int, c: int, dtype: torch.dtype):
    g = torch.Generator().manual_seed(seed)
    logits = (3 * torch.randn(b, c, generator=g)).to(dtype)
    labels = torch.randint(0, c, (b,), generator=g)
    return logits, labels


def test_losses_follow_the_protocol():
    assert isinstance(CrossEntropy(), ClassLoss)
    assert isinstance(CosineLoss(), ClassLoss)


@settings(deadline=None, max_examples=30)
@given(
    seed=st.integers(0, 2**31 - 1),
    b=st.integers(1, 9),
    c=st.integers(2, 12),
    smoothing=st.sampled_from([0.0, 0.1, 0.5]),
    dtype=st.sampled_from([torch.float32, torch.float64]),
)
def test_cross_entropy_is_per_sample_torch_cross_entropy(seed, b, c, smoothing, dtype):
    logits, labels = _batch(seed, b, c, dtype)
    got = CrossEntropy(label_smoothing=smoothing)(logits, labels)
    assert got.shape == (b,)
    for i in range(b):
        want = F.cross_entropy(logits[i : i + 1], labels[i : i + 1], label_smoothing=smoothing)
        torch.testing.assert_close(got[i], want, **tol(dtype))


def test_cross_entropy_mean_matches_the_batch_loss(gen):
    logits = torch.randn(16, 5, generator=gen)
    labels = torch.randint(0, 5, (16,), generator=gen)
    got = CrossEntropy()(logits, labels).mean()
    torch.testing.assert_close(got, F.cross_entropy(logits, labels), **tol(torch.float32))


def test_cross_entropy_rejects_bad_smoothing():
    with pytest.raises(ValueError):
        CrossEntropy(label_smoothing=1.0)


@settings(deadline=None, max_examples=30)
@given(
    seed=st.integers(0, 2**31 - 1),
    b=st.integers(1, 9),
    c=st.integers(2, 12),
    dtype=st.sampled_from([torch.float32, torch.float64]),
)
def test_cosine_loss_closed_form(seed, b, c, dtype):
    logits, labels = _batch(seed, b, c, dtype)
    got = CosineLoss()(logits, labels)
    want = 1 - F.cosine_similarity(logits, F.one_hot(labels, c).to(dtype), dim=1)
    assert got.shape == (b,)
    torch.testing.assert_close(got, want, **tol(dtype))
    assert ((got >= 0) & (got <= 2)).all()


def test_cosine_loss_special_cases():
    labels = torch.tensor([0, 2, 1, 3])
    one_hot = F.one_hot(labels, 4).float()
    loss = CosineLoss()
    zeros = torch.zeros(4)
    f32 = tol(torch.float32)
    torch.testing.assert_close(loss(one_hot, labels), zeros, **f32)  # aligned
    torch.testing.assert_close(loss(7.5 * one_hot, labels), zeros, **f32)  # scale-invariant
    torch.testing.assert_close(loss(one_hot.roll(1, dims=1), labels), zeros + 1, **f32)  # orthogonal
    torch.testing.assert_close(loss(-one_hot, labels), zeros + 2, **f32)  # opposite
    torch.testing.assert_close(loss(torch.zeros(4, 4), labels), zeros + 1, **f32)  # no direction


def test_cosine_loss_gradient_is_finite_even_at_zero_logits():
    logits = torch.zeros(3, 5, requires_grad=True)
    CosineLoss()(logits, torch.tensor([0, 1, 4])).sum().backward()
    assert torch.isfinite(logits.grad).all()


@pytest.mark.parametrize("loss", [CrossEntropy(), CosineLoss()])
def test_shape_errors(loss):
    with pytest.raises(ValueError):
        loss(torch.zeros(4, 3), torch.zeros(3, dtype=torch.long))
    with pytest.raises(TypeError):
        loss(torch.zeros(4, 3), torch.zeros(4))
