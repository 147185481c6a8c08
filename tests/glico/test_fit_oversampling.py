"""Fit oversampling (``FitConfig.oversample_to``): an epoch of a small set is several passes.

The truth it is checked against is the plain loop: with ``oversample_to = k * n`` an epoch is k passes,
each a fresh permutation drawn from the same generator in the same order as k plain epochs, so E
oversampled epochs must be bit-identical to E * k plain ones (cosine schedule included: same total).
"""
import os
import signal

import pytest
import torch

from glico.checkpoint import read_checkpoint, save_checkpoint
from glico.losses import PixelLoss
from glico.model import GLICO
from glico.training import FitConfig, FitInterrupted, fit
from tests.glico.toy_data import toy_data

# 12 images, batch 5: 3 steps per pass (the last one short).
BASE = dict(batch_size=5, progress=False, log_every=4, seed=3, checkpoint_minutes=0)


def _model() -> GLICO:
    torch.manual_seed(0)
    return GLICO(image_shape=(1, 8, 8), num_classes=3, code_dim=16, loss=PixelLoss(p=2))


def _learned(m: GLICO) -> dict[str, torch.Tensor]:
    return {**{f"model.{k}": v for k, v in m.state_dict().items()}, "codes": m.codes.weight.detach()}


def _assert_identical(a: GLICO, b: GLICO) -> None:
    sa, sb = _learned(a), _learned(b)
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), f"{k} differs"


@pytest.fixture(scope="module")
def data():
    return toy_data()  # 3 classes x 4 images


@pytest.mark.parametrize(
    "n,batch,epochs,oversample_to,passes,steps",
    [
        (100, 128, 200, 0, 1, 200),        # CIFAR-10 at 10 per class, the plain fit: one step per epoch
        (100, 128, 200, 5000, 50, 10000),  # ... oversampled to 5000 images: 50 passes per epoch
        (100, 128, 200, 50000, 500, 100000),  # ... to the full CIFAR-10 training set
        (101, 64, 2, 5000, 50, 2 * 50 * 2),   # ceil(5000 / 101) = 50 passes of ceil(101 / 64) = 2 steps
        (6000, 128, 3, 5000, 1, 3 * 47),   # a set larger than oversample_to is passed once per epoch
        (12, 5, 6, 12, 1, 18),             # oversample_to = n: one pass
        (12, 5, 6, 13, 2, 36),             # one image more: two passes
    ],
)
def test_steps_closed_form(n, batch, epochs, oversample_to, passes, steps):
    cfg = FitConfig(epochs=epochs, batch_size=batch, oversample_to=oversample_to)
    assert cfg.passes_per_epoch(n) == passes
    assert cfg.steps(n) == steps


@pytest.mark.parametrize("bad", [-1, 2.5, True, "5000"])
def test_bad_oversample_to_is_refused(bad):
    with pytest.raises(ValueError, match="oversample_to must be 0 .* or a number of images >= 1"):
        FitConfig(oversample_to=bad)


def test_every_pass_is_a_permutation_and_every_batch_has_distinct_rows(data, monkeypatch):
    seen: list[torch.Tensor] = []
    original = GLICO.step_losses

    def record(self, images, idx, **kw):
        seen.append(idx.clone())
        return original(self, images, idx, **kw)

    monkeypatch.setattr(GLICO, "step_losses", record)
    cfg = FitConfig(**BASE, epochs=2, oversample_to=30)  # 30 / 12 -> 3 passes of 3 steps per epoch
    h = fit(_model(), *data, config=cfg)
    assert len(seen) == cfg.steps(12) == 2 * 3 * 3 and h.step[-1] == 18
    for b in seen:
        assert b.unique().numel() == b.numel()
    for p in range(6):  # each pass covers every image exactly once
        rows = torch.cat(seen[3 * p : 3 * p + 3])
        assert torch.equal(rows.sort().values, torch.arange(12))
    passes = [torch.cat(seen[3 * p : 3 * p + 3]) for p in range(6)]
    assert any(not torch.equal(passes[0], q) for q in passes[1:])  # fresh shuffles, not one repeated


def test_oversampled_epochs_are_the_plain_loop_with_more_epochs(data):
    over, plain = _model(), _model()
    h1 = fit(over, *data, config=FitConfig(**BASE, epochs=2, oversample_to=36))  # 3 passes per epoch
    h2 = fit(plain, *data, config=FitConfig(**BASE, epochs=6))
    _assert_identical(over, plain)
    assert (h1.step, h1.total) == (h2.step, h2.total)


def test_oversample_to_not_above_the_set_size_changes_nothing(data):
    a, b = _model(), _model()
    fit(a, *data, config=FitConfig(**BASE, epochs=3, oversample_to=12))
    fit(b, *data, config=FitConfig(**BASE, epochs=3))
    _assert_identical(a, b)


@pytest.mark.parametrize("stop", [2, 4, 8, 11])  # mid pass, start of a pass, mid epoch, the step before the last
def test_interrupted_oversampled_fit_resumes_bit_identical(stop, data, monkeypatch, tmp_path):
    cfg = dict(BASE, epochs=2, oversample_to=24)  # 2 passes of 3 steps per epoch, 12 steps
    reference = _model()
    fit(reference, *data, config=FitConfig(**cfg))
    original, calls = GLICO.step_losses, {"n": 0}

    def step_losses(self, *a, **k):
        calls["n"] += 1
        if calls["n"] == stop:
            os.kill(os.getpid(), signal.SIGINT)
        return original(self, *a, **k)

    monkeypatch.setattr(GLICO, "step_losses", step_losses)
    ckpt = str(tmp_path / "c.pt")
    with pytest.raises(FitInterrupted):
        fit(_model(), *data, config=FitConfig(**cfg, checkpoint=ckpt))
    monkeypatch.setattr(GLICO, "step_losses", original)
    resumed = _model()
    fit(resumed, *data, config=FitConfig(**cfg, checkpoint=ckpt, resume=True))
    _assert_identical(resumed, reference)


def test_resume_with_another_oversampling_is_refused_and_an_older_checkpoint_means_none(data, tmp_path):
    ckpt = str(tmp_path / "c.pt")
    fit(_model(), *data, config=FitConfig(**BASE, epochs=2, checkpoint=ckpt))
    with pytest.raises(ValueError, match="oversample_to: checkpoint has 0, now 24"):
        fit(_model(), *data, config=FitConfig(**BASE, epochs=2, oversample_to=24, checkpoint=ckpt, resume=True))
    # A checkpoint written before the setting existed has no oversample_to: it was a plain fit and resumes as one.
    payload = read_checkpoint(ckpt)
    del payload["extra"]["fit_config"]["oversample_to"]
    m = _model()
    from glico.checkpoint import load_model_state

    load_model_state(m, payload["model"])
    save_checkpoint(ckpt, m, payload["extra"])
    fit(_model(), *data, config=FitConfig(**BASE, epochs=2, checkpoint=ckpt, resume=True))
