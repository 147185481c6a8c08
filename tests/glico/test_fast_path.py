"""The fit's fast path computes what the plain path computes.

Cached targets (``FitConfig.cache_targets``: every training image's ``loss.prepare_target`` made once,
a batch's rows picked with ``select_prepared``) must give the same losses and gradients as preparing the
batch's targets at each step, for every kind of prepared target: VGG features (``PerceptualLoss``), a
Laplacian pyramid, plain pixels, and a ``WeightedSum``'s tuple of them. Compared on CPU, fixed seeds,
with the suite's float32 tolerance; one step, and a few epochs of ``fit`` (final codes and weights).
Also: the VGG backbone gets no gradient and stays in eval mode during a fit; the opt-in switches
(channels_last, autocast, compile) behave as documented.
"""
from __future__ import annotations

import copy
import time

import pytest
import torch

from glico import GLICO
from glico.losses import (
    LaplacianPyramidLoss,
    PerceptualLoss,
    PixelLoss,
    WeightedSum,
    concat_prepared,
    select_prepared,
)
from glico.training import FitConfig, fit
from tolerances import tol

TOL = tol(torch.float32)
SIZE = 8
N_PER_CLASS, CLASSES = 5, 3


def _loss(name: str):
    # min_size=16 keeps the VGG small on CPU (conv5_2 at 1x1); weights=None needs no download.
    if name == "perceptual":
        return PerceptualLoss(weights=None, min_size=16)
    if name == "laplacian":
        return LaplacianPyramidLoss()
    if name == "pixel":
        return PixelLoss(p=1)
    return WeightedSum([(1.0, PerceptualLoss(weights=None, min_size=16)), (0.5, LaplacianPyramidLoss()),
                        (0.25, PixelLoss(p=2))])


LOSSES = ("perceptual", "laplacian", "pixel", "weighted-sum")


def _data(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    n = N_PER_CLASS * CLASSES
    images = torch.rand(n, 3, SIZE, SIZE, generator=g)
    labels = torch.arange(CLASSES).repeat_interleave(N_PER_CLASS)
    return images, labels


def _model(loss_name: str, seed: int = 0) -> GLICO:
    torch.manual_seed(seed)  # generator, classifier and random VGG weights
    return GLICO(image_shape=(3, SIZE, SIZE), num_classes=CLASSES, code_dim=16, loss=_loss(loss_name))


def _config(**kw) -> FitConfig:
    base = dict(epochs=3, batch_size=4, lr=1e-3, lr_codes=1e-2, seed=3, progress=False, log_every=2,
                handle_signals=False)
    base.update(kw)
    return FitConfig(**base)


def _grads(m: GLICO) -> dict[str, torch.Tensor]:
    out = {"codes": m.codes.weight.grad.to_dense()}
    for prefix, part in (("generator", m.generator), ("classifier", m.classifier)):
        for name, p in part.named_parameters():
            out[f"{prefix}.{name}"] = p.grad.clone()
    return out


def _state(m: GLICO) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in m.state_dict().items() if not k.startswith("loss.")}


@pytest.mark.parametrize("loss_name", LOSSES)
def test_one_step_cached_target_equals_plain(loss_name):
    x, y = _data()
    plain = _model(loss_name)
    plain.init_codes(x, y, torch.Generator().manual_seed(0))
    cached = copy.deepcopy(plain)
    idx = torch.tensor([7, 0, 12, 3, 9, 14])

    lp = plain.step_losses(x[idx], idx, noise_generator=torch.Generator().manual_seed(1))
    lp.total.backward()

    # The whole set prepared in chunks (as the fit loop does), then the batch's rows picked out.
    with torch.no_grad():
        cache = concat_prepared([cached.loss.prepare_target(x[i : i + 4]) for i in range(0, len(x), 4)])
    lc = cached.step_losses(x[idx], idx, noise_generator=torch.Generator().manual_seed(1),
                            prepared_target=select_prepared(cache, idx))
    lc.total.backward()

    for a, b in zip((lp.total, lp.reconstruction, lp.classification), (lc.total, lc.reconstruction, lc.classification)):
        torch.testing.assert_close(b, a, **TOL)
    assert lp.reconstruction > 0 and lp.classification > 0
    gp, gc = _grads(plain), _grads(cached)
    assert gp.keys() == gc.keys()
    for k in gp:
        torch.testing.assert_close(gc[k], gp[k], **TOL, msg=lambda m, k=k: f"{k}: {m}")
    assert gp["codes"].abs().sum() > 0


class _CountPrepare:
    """Counts calls of ``loss.prepare_target`` (shadowing the method on the instance)."""

    def __init__(self, loss):
        self.calls = 0
        original = loss.prepare_target

        def counted(target):
            self.calls += 1
            return original(target)

        object.__setattr__(loss, "prepare_target", counted)


@pytest.mark.parametrize("loss_name", LOSSES)
def test_fit_with_cached_targets_equals_plain_fit(loss_name):
    x, y = _data()
    unl = _data(seed=1)[0][:3] if loss_name == "weighted-sum" else None  # transductive rows get cached too
    n = len(x) + (0 if unl is None else len(unl))
    steps = 2 * -(-n // 4)
    runs = {}
    for cache in (False, True):
        m = _model(loss_name)
        count = _CountPrepare(m.loss)
        h = fit(m, x, y, unlabeled=unl, config=_config(epochs=2, cache_targets=cache))
        runs[cache] = (_state(m), h)
        # The plain path prepares every step's batch; the cache prepares each chunk of 4 images once.
        assert count.calls == (-(-n // 4) if cache else steps)
    (sp, hp), (sc, hc) = runs[False], runs[True]
    assert hp.step == hc.step
    torch.testing.assert_close(torch.tensor(hc.total), torch.tensor(hp.total), **TOL)
    assert sp.keys() == sc.keys()
    for k in sp:
        torch.testing.assert_close(sc[k], sp[k], **TOL, msg=lambda m, k=k: f"{k}: {m}")
    # The fit moved the codes, so equality above is not the equality of two untouched tables.
    m0 = _model(loss_name)
    m0.init_codes(torch.cat([x, unl]) if unl is not None else x,
                  torch.cat([y, torch.full((len(unl),), -1)]) if unl is not None else y, torch.Generator().manual_seed(3))
    assert not torch.allclose(m0.codes.weight, sp["codes.weight"])


def test_target_cache_is_automatic_within_the_budget():
    x, y = _data()
    n_chunks = -(-len(x) // 4)
    m = _model("laplacian")
    count = _CountPrepare(m.loss)
    fit(m, x, y, config=_config(epochs=2))  # cache_targets=None: a few KiB fit the default budget
    assert count.calls == n_chunks
    m = _model("laplacian")
    count = _CountPrepare(m.loss)
    fit(m, x, y, config=_config(epochs=2, target_cache_mb=0))  # over budget: prepared per step, plus the estimate
    assert count.calls == 1 + 2 * n_chunks


def test_perceptual_backbone_gets_no_gradient_and_stays_in_eval_mode():
    x, y = _data()
    m = _model("perceptual")
    seen = []

    def check(step, losses):
        seen.append(step)
        assert m.training and m.generator.training and not m.loss.backbone.training
        assert all(not p.requires_grad and p.grad is None for p in m.loss.parameters())
        assert any(p.grad is not None for p in m.generator.parameters())  # the step did backpropagate

    for cache in (False, True):
        seen.clear()
        fit(m, x, y, config=_config(epochs=1, log_every=1, cache_targets=cache), on_log=check)
        assert seen == [1, 2, 3, 4]


def test_autocast_is_refused_off_cuda_and_checked():
    x, y = _data()
    with pytest.raises(ValueError, match="CUDA devices only"):
        fit(_model("pixel"), x, y, config=_config(autocast_dtype=torch.bfloat16, device="cpu"))
    with pytest.raises(ValueError, match="autocast_dtype must be"):
        _config(autocast_dtype=torch.float64)
    with pytest.raises(ValueError, match="target_cache_mb"):
        _config(target_cache_mb=-1)


def test_channels_last_fit_matches_and_restores_the_layout():
    # Channels-last convolutions sum in another order: the first step's loss agrees to the float32
    # tolerance; later steps are not compared, since Adam's normalised updates amplify last-bit differences
    # of near-zero gradients (seen: 2 of 73 728 weights 1e-4 apart after 4 steps), which is not a defect.
    x, y = _data()
    first = []
    for cl in (False, True):
        m = _model("laplacian")
        h = fit(m, x, y, config=_config(epochs=1, channels_last=cl, log_every=1))
        first.append(torch.tensor(h.total[0]))
        assert all(p.is_contiguous() for p in m.parameters())  # the layout is restored after the fit
        assert len(h.total) == 4 and all(torch.isfinite(torch.tensor(h.total)))
    torch.testing.assert_close(first[1], first[0], **TOL)


@pytest.mark.slow  # inductor compiles the generator, classifier and loss, forward and backward: minutes on 2 loaded cores
def test_compiled_fit_matches_eager_and_is_undone(monkeypatch):
    # 12 images, batch 4: one batch shape, so one compilation per function. As with channels_last, the
    # compiled kernels sum in another order, so the per-step losses are compared (to the float32
    # tolerance), not the weights after Adam's updates.
    x, y = _data()
    x, y = x[:12], y[:12]
    compiled = []
    real_compile = torch.compile

    def spy(fn, **kw):
        compiled.append(getattr(fn, "__qualname__", repr(fn)))
        return real_compile(fn, **kw)

    monkeypatch.setattr(torch, "compile", spy)
    totals = []
    for comp in (False, True):
        m = _model("pixel")
        h = fit(m, x, y, config=_config(epochs=1, compile=comp, log_every=1))
        totals.append(torch.tensor(h.total))
        for module in (m.generator, m.classifier, m.loss):
            assert "forward" not in vars(module) and "forward_prepared" not in vars(module)
    assert sorted(compiled) == sorted(["DCGANGenerator.forward", "WeakCNN.forward", "PixelLoss.forward_prepared"])
    assert len(totals[0]) == 3
    torch.testing.assert_close(totals[1], totals[0], **TOL)


def test_compile_mode_is_passed_to_torch_compile_and_bad_modes_are_refused(monkeypatch):
    # No compilation here (the spy returns the eager function): only that the mode reaches torch.compile.
    modes = []

    def spy(fn, **kw):
        modes.append(kw.get("mode"))
        return fn

    monkeypatch.setattr(torch, "compile", spy)
    x, y = _data()
    for comp, want in ((True, "default"), ("reduce-overhead", "reduce-overhead")):
        modes.clear()
        fit(_model("pixel"), x, y, config=_config(epochs=1, compile=comp))
        assert modes == [want] * 3
    with pytest.raises(ValueError, match=r"compile must be True/False or a torch.compile mode \(default, reduce-overhead"):
        FitConfig(compile="fast")
