"""MixMatch: sharpening, the MixUp step and the weight average against closed forms; a tiny run learns."""
import pytest
import torch

from glico.experiments.downstream import TrainConfig, evaluate
from glico.experiments.mixmatch import (
    MixMatchConfig,
    WeightEMA,
    mix_rows,
    sharpen,
    train_mixmatch,
    unlabeled_weight_for,
)
from tests.tolerances import tol


def _probs(b: int, k: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.softmax(torch.randn(b, k, generator=g, dtype=torch.float64) * 2, dim=1)


@pytest.mark.parametrize("t", [0.25, 0.5, 1.0, 2.0])
def test_sharpen_is_the_closed_form(t):
    p = _probs(16, 7, 0)
    expected = p ** (1 / t) / (p ** (1 / t)).sum(1, keepdim=True)
    torch.testing.assert_close(sharpen(p, t), expected, **tol(torch.float64))


def test_sharpen_properties():
    p = _probs(32, 5, 1)
    torch.testing.assert_close(sharpen(p, 1.0), p, **tol(torch.float64))  # T = 1 is the identity
    entropy = lambda q: -(q * q.log()).sum(1)  # noqa: E731
    assert bool((entropy(sharpen(p, 0.5)) <= entropy(p) + 1e-12).all())  # T < 1 lowers every row's entropy
    cold = sharpen(p, 1e-3)  # T -> 0 tends to the one-hot argmax
    assert torch.equal(cold.argmax(1), p.argmax(1)) and bool((cold.max(1).values > 0.99).all())
    with pytest.raises(ValueError, match="temperature must be > 0"):
        sharpen(p, 0.0)


def test_mix_rows_closed_form_and_lambda_prime():
    g = torch.Generator().manual_seed(2)
    x = torch.rand(6, 1, 3, 3, generator=g, dtype=torch.float64)
    t = _probs(6, 4, 3)
    partner = torch.tensor([3, 0, 5, 1, 2, 4])
    lam = torch.tensor([0.2, 0.9, 0.5, 0.0, 1.0, 0.7], dtype=torch.float64)
    xm, tm = mix_rows(x, t, partner, lam)
    for r in range(6):
        lp = max(float(lam[r]), 1 - float(lam[r]))  # λ' = max(λ, 1 − λ): the row stays closer to itself
        torch.testing.assert_close(xm[r], lp * x[r] + (1 - lp) * x[partner[r]], **tol(torch.float64))
        torch.testing.assert_close(tm[r], lp * t[r] + (1 - lp) * t[partner[r]], **tol(torch.float64))
    torch.testing.assert_close(tm.sum(1), torch.ones(6, dtype=torch.float64), **tol(torch.float64))
    torch.testing.assert_close(xm[3], x[3], **tol(torch.float64))  # λ = 0 gives λ' = 1: the row itself
    with pytest.raises(ValueError, match="one entry per row"):
        mix_rows(x, t, partner[:5], lam)


def test_weight_ema_follows_the_warmed_up_decay():
    net = torch.nn.Sequential(torch.nn.Linear(2, 1), torch.nn.BatchNorm1d(1))
    ema = WeightEMA(net, decay=0.9)
    avg = net[0].weight.detach().clone()
    for t in range(30):
        with torch.no_grad():
            net[0].weight.fill_(float(t))
        net[1].num_batches_tracked.fill_(t)
        ema.update(net)
        d = min(0.9, (1 + t) / (10 + t))
        avg = d * avg + (1 - d) * float(t)
    torch.testing.assert_close(ema.model[0].weight, avg, **tol(torch.float32))
    assert int(ema.model[1].num_batches_tracked) == 29  # integer buffers are copied
    assert not any(p.requires_grad for p in ema.model.parameters())
    with pytest.raises(ValueError, match="decay must be in"):
        WeightEMA(net, 1.0)


def test_paper_settings():
    c = MixMatchConfig()
    assert (c.temperature, c.augmentations, c.alpha, c.ema) == (0.5, 2, 0.75, 0.999)
    assert unlabeled_weight_for(10) == 75 and unlabeled_weight_for(100) == 150
    assert c.rampup_for(100_000) == 16_000 and c.rampup_for(1000) == 400
    assert MixMatchConfig(rampup_steps=7).rampup_for(1000) == 7
    for bad in ({"temperature": 0}, {"augmentations": 0}, {"alpha": -1}, {"ema": 1.0}, {"unlabeled_weight": -1},
                {"rampup_steps": -1}):
        with pytest.raises(ValueError):
            MixMatchConfig(**bad)


def _digits_split(spc: int, seed: int = 0):
    from glico.data import load_data, small_sample_split

    data = load_data("digits")
    train, chosen = small_sample_split(data.train, spc, seed)
    keep = torch.ones(data.train.images.shape[0], dtype=torch.bool)
    keep[chosen] = False
    return data, train, data.train.images[keep]


def test_a_tiny_mixmatch_run_learns_and_is_deterministic():
    from glico.classifiers import WeakCNN

    data, train, unlabeled = _digits_split(5)
    cfg = TrainConfig(steps=150, batch_size=50, lr=0.05, crop_pad=1, flip=False, progress=False, cosine=True)

    def run():
        torch.manual_seed(0)
        net = WeakCNN(in_channels=1, num_classes=10, image_size=8)
        return train_mixmatch(net, train.images, train.labels, unlabeled[:500], 10, cfg)

    a, b = run(), run()
    acc = evaluate(a, data.test.images, data.test.labels)["top1"]
    assert acc > 80.0, acc  # chance is 10 %; 50 labelled digits (measured: 92.6; the baseline recipe 90.2)
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert ka == kb and torch.equal(va, vb), ka
    assert not a.training


def test_mixmatch_refuses_bad_unlabelled_images():
    from glico.classifiers import WeakCNN

    _, train, unlabeled = _digits_split(2)
    net = WeakCNN(in_channels=1, num_classes=10, image_size=8)
    cfg = TrainConfig(steps=1, progress=False)
    with pytest.raises(ValueError, match="unlabeled images have shape"):
        train_mixmatch(net, train.images, train.labels, torch.rand(4, 3, 8, 8), 10, cfg)
    with pytest.raises(ValueError, match=r"\[0, 1\]|range"):
        train_mixmatch(net, train.images, train.labels, unlabeled[:4] * 3, 10, cfg)
    with pytest.raises(ValueError, match="beyond num_classes"):
        train_mixmatch(net, train.images, train.labels, unlabeled[:4], 5, cfg)
