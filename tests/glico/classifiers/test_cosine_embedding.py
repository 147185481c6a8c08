"""Barz & Denzler's cosine-loss classifier against the library's own cosine loss and closed forms."""
import pytest
import torch
from torch.nn import functional as F

from glico.classifiers import CosineEmbeddingClassifier, CosineLoss, WeakCNN
from tests.tolerances import tol


class _Fixed(torch.nn.Module):
    """Returns the given outputs, whatever the images."""

    def __init__(self, out: torch.Tensor) -> None:
        super().__init__()
        self.out = torch.nn.Parameter(out.clone())

    def forward(self, images):
        return self.out


def _outputs(b=12, k=5, seed=0):
    return torch.randn(b, k, generator=torch.Generator().manual_seed(seed))


def test_forward_is_the_cosine_to_each_one_hot_class_vector():
    out = _outputs()
    clf = CosineEmbeddingClassifier(_Fixed(out), 5)
    cos = clf(torch.zeros(12, 1, 8, 8))
    expected = torch.stack([F.cosine_similarity(out, F.one_hot(torch.full((12,), c), 5).float(), dim=1)
                            for c in range(5)], dim=1)
    torch.testing.assert_close(cos, expected, **tol(torch.float32))
    assert torch.equal(cos.argmax(1), out.argmax(1))  # the nearest class embedding is the largest output
    scaled = CosineEmbeddingClassifier(_Fixed(out * 7.5), 5)(torch.zeros(12, 1, 8, 8))
    torch.testing.assert_close(scaled, cos, **tol(torch.float32))  # invariant to the outputs' scale


def test_cosine_only_loss_is_the_cosine_loss_mean():
    out, y = _outputs(), torch.randint(0, 5, (12,), generator=torch.Generator().manual_seed(1))
    clf = CosineEmbeddingClassifier(_Fixed(out), 5, xent_weight=0.0)
    assert clf.head is None
    loss = clf.training_loss(clf(None), y)
    torch.testing.assert_close(loss, CosineLoss()(out, y).mean(), **tol(torch.float32))
    # a one-hot soft target is the hard label
    torch.testing.assert_close(clf.training_loss(clf(None), F.one_hot(y, 5).float()), loss, **tol(torch.float32))


def test_soft_targets_use_their_direction_and_the_xent_term_is_added():
    out = _outputs()
    t = torch.softmax(_outputs(seed=2), dim=1)
    clf = CosineEmbeddingClassifier(_Fixed(out), 5)  # Barz & Denzler's λ = 0.1
    cos = clf(None)
    expected = (1 - F.cosine_similarity(out, t, dim=1)).mean() + 0.1 * (
        -(t * torch.log_softmax(clf.head(cos), dim=1)).sum(1).mean())
    torch.testing.assert_close(clf.training_loss(cos, t), expected, **tol(torch.float32))
    assert any(p is clf.head.weight for p in clf.parameters())  # the extra layer is trained


def test_train_classifier_uses_the_classifiers_own_loss():
    from glico.experiments.downstream import TrainConfig, train_classifier

    torch.manual_seed(0)
    clf = CosineEmbeddingClassifier(WeakCNN(in_channels=1, num_classes=3, image_size=8), 3)
    calls = []
    own = clf.training_loss
    clf.training_loss = lambda o, t: calls.append(o.shape) or own(o, t)
    x = torch.rand(6, 1, 8, 8)
    train_classifier(clf, x, torch.tensor([0, 1, 2, 0, 1, 2]), TrainConfig(steps=3, batch_size=6, progress=False))
    assert calls == [torch.Size([6, 3])] * 3


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="num_classes must be an integer >= 2"):
        CosineEmbeddingClassifier(_Fixed(_outputs()), 1)
    with pytest.raises(ValueError, match="xent_weight must be >= 0"):
        CosineEmbeddingClassifier(_Fixed(_outputs()), 5, xent_weight=-1)
    with pytest.raises(ValueError, match=r"must return \(B, 4\)"):
        CosineEmbeddingClassifier(_Fixed(_outputs()), 4)(None)
