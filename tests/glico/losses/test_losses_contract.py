"""The contract every reconstruction loss keeps: shape (B,), zero on identical inputs, prepared == direct,
gradients to the prediction only, frozen backbones, input checks."""
import warnings

import pytest
import torch
from tolerances import tol

from glico.losses import (
    LaplacianPyramidLoss,
    LPIPSLoss,
    PerceptualLoss,
    PixelLoss,
    ReconstructionLoss,
    ReconstructionLossBase,
    WeightedSum,
    select_prepared,
)


def _perceptual():
    torch.manual_seed(0)
    # min_size=16 (conv5_2 at 1x1) keeps the suite fast on two CPU cores; the default is covered elsewhere.
    return PerceptualLoss(weights=None, min_size=16)


def _lpips():
    torch.manual_seed(0)
    return LPIPSLoss(net="squeeze", pretrained=False)


FACTORIES = {
    "perceptual": _perceptual,
    "laplacian": LaplacianPyramidLoss,
    "pixel_l1": lambda: PixelLoss(p=1),
    "pixel_l2": lambda: PixelLoss(p=2),
    "lpips": _lpips,
    "sum": lambda: WeightedSum([(1.0, _perceptual()), (0.5, LaplacianPyramidLoss()), (2.0, PixelLoss(p=2))]),
}
ANY_CHANNELS = {"laplacian", "pixel_l1", "pixel_l2"}


@pytest.fixture(scope="module", params=sorted(FACTORIES))
def loss(request):
    return request.param, FACTORIES[request.param]()


def _pair(gen, shape):
    return torch.rand(shape, generator=gen), torch.rand(shape, generator=gen)


@pytest.mark.parametrize("shape", [(3, 3, 16, 16), (2, 1, 8, 8), (1, 3, 8, 12), (2, 3, 19, 13)])
def test_shape_zero_and_positive(loss, gen, shape):
    _, fn = loss
    a, b = _pair(gen, shape)
    out = fn(a, b)
    assert out.shape == (shape[0],)
    assert torch.isfinite(out).all()
    assert (out > 0).all()
    assert torch.equal(fn(a, a.clone()), torch.zeros(shape[0]))


def test_any_channel_count(loss, gen):
    name, fn = loss
    a, b = _pair(gen, (2, 5, 16, 16))
    if name in ANY_CHANNELS:
        assert fn(a, b).shape == (2,)
    else:
        with pytest.raises(ValueError, match="LaplacianPyramidLoss"):
            fn(a, b)


def test_prepared_equals_direct_and_rows_select(loss, gen):
    _, fn = loss
    a, b = _pair(gen, (4, 3, 16, 16))
    direct = fn(a, b)
    prepared = fn.prepare_target(b)
    torch.testing.assert_close(fn.forward_prepared(a, prepared), direct, **tol(torch.float32))
    # A cache of prepared targets can be indexed by batch rows.
    idx = torch.tensor([3, 1])
    picked = fn.forward_prepared(a[idx], select_prepared(prepared, idx))
    torch.testing.assert_close(picked, direct[idx], **tol(torch.float32))


def test_per_sample_values_do_not_mix(loss, gen):
    _, fn = loss
    a, b = _pair(gen, (3, 3, 16, 16))
    together = fn(a, b)
    alone = torch.cat([fn(a[i : i + 1], b[i : i + 1]) for i in range(3)])
    torch.testing.assert_close(together, alone, **tol(torch.float32))


def test_gradients_reach_pred_not_parameters(loss, gen):
    _, fn = loss
    a, b = _pair(gen, (2, 3, 16, 16))
    a.requires_grad_(True)
    fn(a, b).sum().backward()
    assert a.grad is not None and torch.isfinite(a.grad).all() and a.grad.abs().sum() > 0
    for p in fn.parameters():
        assert not p.requires_grad
        assert p.grad is None


def test_backbone_stays_in_eval_mode(loss, gen):
    _, fn = loss
    a, b = _pair(gen, (2, 3, 16, 16))
    expected = fn(a, b)
    fn.train()
    try:
        assert fn.training  # the loss module itself follows .train() ...
        for name, m in fn.named_modules():
            if not isinstance(m, (ReconstructionLossBase, torch.nn.ModuleList)):
                assert not m.training, f"{name} ({type(m).__name__}) switched to training mode"  # ... not its nets
        torch.testing.assert_close(fn(a, b), expected, rtol=0, atol=0)  # no dropout, no batch statistics
    finally:
        fn.eval()


def test_follows_protocol(loss):
    _, fn = loss
    assert isinstance(fn, ReconstructionLoss)
    assert isinstance(fn, torch.nn.Module)


@pytest.mark.parametrize(
    "bad, match",
    [
        (torch.full((2, 3, 16, 16), 2.0), r"\[0, 1\]"),
        (torch.full((2, 3, 16, 16), -0.5), r"\[0, 1\]"),
        (torch.full((2, 3, 16, 16), float("nan")), "NaN"),
        (torch.zeros(3, 16, 16), r"\(N, C, H, W\)"),
    ],
)
def test_bad_target_values(loss, bad, match):
    _, fn = loss
    good = torch.rand(2, 3, 16, 16)
    with pytest.raises(ValueError, match=match):
        fn(good, bad)


@pytest.mark.parametrize("bad", [torch.zeros(3, 16, 16), torch.zeros(2, 3, 8, 8)])
def test_pred_of_the_wrong_shape_refused(loss, bad):
    # pred is the generator output inside the fit loop: only its structure is checked (no host sync)
    _, fn = loss
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        fn(bad, torch.rand(2, 3, 16, 16))


def test_integer_images_refused(loss):
    _, fn = loss
    with pytest.raises(TypeError, match="255"):
        fn(torch.rand(2, 3, 16, 16), torch.zeros(2, 3, 16, 16, dtype=torch.uint8))
    with pytest.raises(TypeError, match="floating-point torch.Tensor"):
        fn(torch.zeros(2, 3, 16, 16, dtype=torch.uint8), torch.rand(2, 3, 16, 16))


def test_non_tensor_refused(loss):
    _, fn = loss
    with pytest.raises(TypeError, match="torch.Tensor"):
        fn([[0.5]], torch.rand(1, 3, 16, 16))
    with pytest.raises(TypeError, match="torch.Tensor"):
        fn(torch.rand(1, 3, 16, 16), [[0.5]])


def test_non_contiguous_and_float64_inputs(loss, gen):
    _, fn = loss
    a, b = _pair(gen, (2, 3, 16, 12))
    expected = fn(a.transpose(2, 3).contiguous(), b.transpose(2, 3).contiguous())
    torch.testing.assert_close(fn(a.transpose(2, 3), b.transpose(2, 3)), expected, **tol(torch.float32))
    out64 = fn(a.double(), b.double())
    torch.testing.assert_close(out64.float(), fn(a, b), **tol(torch.float32))


def test_inputs_that_require_grad_do_not_warn(loss, gen):
    _, fn = loss
    a, b = _pair(gen, (2, 3, 16, 16))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fn(a.requires_grad_(True), b.requires_grad_(True)).sum().backward()


def test_shape_mismatch(loss, gen):
    _, fn = loss
    a, _ = _pair(gen, (2, 3, 16, 16))
    for other in [(3, 3, 16, 16), (2, 3, 16, 8), (2, 1, 16, 16)]:
        with pytest.raises(ValueError, match="same shape"):
            fn(a, torch.rand(other, generator=gen))
