import pytest
import torch
from torch import nn

from glico.classifiers import Classifier, WeakCNN

from tests.glico.classifiers.helpers import assert_gradients_everywhere, assert_raw_logits


@pytest.mark.parametrize(
    "channels,size", [(1, 8), (3, 32), (4, 28), (3, 64), (1, 16), (2, 13), (3, (16, 24))]
)
def test_output_shape(gen, channels, size):
    model = WeakCNN(channels, 7, size)
    h, w = (size, size) if isinstance(size, int) else size
    logits = model(torch.rand(3, channels, h, w, generator=gen))
    assert logits.shape == (3, 7)
    assert logits.dtype == torch.float32


@pytest.mark.parametrize("size,final", [(8, 2), (32, 2), (64, 4), (256, 16), (28, 2)])
def test_strides_follow_image_size(gen, size, final):
    model = WeakCNN(1, 3, size)
    fmap = model.features(torch.rand(2, 1, size, size, generator=gen))
    assert fmap.shape[-2:] == (final, final)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 4


def test_is_a_small_image_classifier():
    model = WeakCNN(3, 10, 32)
    assert isinstance(model, Classifier)
    assert WeakCNN.consumes_codes is False
    assert model.num_classes == 10
    # Weak by design: well under a million parameters at the default width.
    assert sum(p.numel() for p in model.parameters()) < 1_000_000


def test_returns_raw_logits(gen):
    model = WeakCNN(3, 10, 32).eval()
    assert_raw_logits(model, model(torch.rand(8, 3, 32, 32, generator=gen)))


@pytest.mark.parametrize("batch_norm", [True, False])
def test_is_not_an_affine_map(gen, batch_norm):
    # The reference code's identity activation made f affine. In eval mode (BatchNorm is then affine
    # too) an affine f satisfies f(a+b) - f(0) == (f(a) - f(0)) + (f(b) - f(0)); ours must not.
    model = WeakCNN(3, 5, 16, batch_norm=batch_norm).eval()
    a = torch.rand(4, 3, 16, 16, generator=gen)
    b = torch.rand(4, 3, 16, 16, generator=gen)
    zero = torch.zeros_like(a)
    with torch.no_grad():
        f0 = model(zero)
        lhs = model(a + b) - f0
        rhs = (model(a) - f0) + (model(b) - f0)
    assert (lhs - rhs).abs().max() > 1e-3 * lhs.abs().max()
    assert sum(isinstance(m, nn.LeakyReLU) for m in model.modules()) == 4


def test_negative_slope_zero_is_relu_like(gen):
    model = WeakCNN(1, 3, 8, negative_slope=0.0)
    acts = [m for m in model.modules() if isinstance(m, nn.LeakyReLU)]
    assert all(m.negative_slope == 0.0 for m in acts)
    assert model(torch.rand(2, 1, 8, 8, generator=gen)).shape == (2, 3)


@pytest.mark.parametrize("batch_norm", [True, False])
def test_gradient_reaches_input_and_parameters(gen, batch_norm):
    model = WeakCNN(3, 4, 16, width=8, batch_norm=batch_norm)
    assert_gradients_everywhere(model, torch.rand(4, 3, 16, 16, generator=gen))


def test_wrong_channel_count_is_a_clear_error(gen):
    model = WeakCNN(3, 4, 16)
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        model(torch.rand(2, 1, 16, 16, generator=gen))


@pytest.mark.parametrize("bad", [dict(in_channels=0), dict(num_classes=0), dict(width=0), dict(image_size=0)])
def test_invalid_arguments(bad):
    args = dict(in_channels=3, num_classes=10, image_size=32) | bad
    with pytest.raises(ValueError):
        WeakCNN(**args)
