import pytest
import torch
from torch import nn

from glico.classifiers import Classifier, WideResNet
from glico.classifiers.wide_resnet import _PreActBlock

from tests.glico.classifiers.helpers import assert_gradients_everywhere, assert_raw_logits


def test_wrn_28_10_has_the_papers_parameter_count():
    # Zagoruyko & Komodakis report 36.5M parameters for WRN-28-10 on CIFAR-10. Built on the meta
    # device: nothing is allocated or run.
    with torch.device("meta"):
        model = WideResNet(28, 10, num_classes=10)
    n = sum(p.numel() for p in model.parameters())
    assert 36.4e6 < n < 36.6e6


@pytest.mark.parametrize("depth,k", [(28, 10), (16, 4), (10, 1), (40, 2)])
def test_structure(depth, k):
    with torch.device("meta"):
        model = WideResNet(depth, k, num_classes=10)
    n = (depth - 4) // 6
    blocks = [m for m in model.modules() if isinstance(m, _PreActBlock)]
    assert len(blocks) == 3 * n
    assert [b.conv1.out_channels for b in blocks] == [16 * k] * n + [32 * k] * n + [64 * k] * n
    assert [b.conv1.stride[0] for b in blocks[::n]] == [1, 2, 2]
    # depth = 6n + 4: the 3×3 layers are the stem and two per block (6n + 1); the paper's count adds
    # the three 1×1 shortcut projections, one per group.
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3)]
    assert len(convs) == 6 * n + 1
    assert model.head.in_features == 64 * k


@pytest.mark.parametrize("depth", [4, 7, 27, 30, 29])
def test_invalid_depth_is_a_clear_error(depth):
    with pytest.raises(ValueError, match=r"\(depth - 4\) % 6 == 0"):
        WideResNet(depth, 2, num_classes=10)


@pytest.mark.parametrize("channels,size", [(3, 32), (1, 8), (4, 16), (3, 28)])
def test_output_shape(gen, channels, size):
    model = WideResNet(10, 1, num_classes=7, in_channels=channels)
    logits = model(torch.rand(2, channels, size, size, generator=gen))
    assert logits.shape == (2, 7)


def test_depth_28_forward_on_digits_size(gen):
    model = WideResNet(28, 1, num_classes=10, in_channels=1).eval()
    with torch.no_grad():
        logits = model(torch.rand(3, 1, 8, 8, generator=gen))
    assert logits.shape == (3, 10)
    assert isinstance(model, Classifier)
    assert WideResNet.consumes_codes is False


def test_returns_raw_logits(gen):
    model = WideResNet(10, 1, num_classes=10)
    # Zero-initialised head bias would give all-equal logits before training; perturb it to test.
    with torch.no_grad():
        model.head.bias.normal_(generator=gen)
    assert_raw_logits(model, model(torch.rand(4, 3, 32, 32, generator=gen)))


def test_gradient_reaches_input_and_parameters(gen):
    assert_gradients_everywhere(WideResNet(10, 2, num_classes=4, dropout=0.3), torch.rand(3, 3, 16, 16, generator=gen))


def test_dropout_only_in_training(gen):
    model = WideResNet(10, 1, num_classes=4, dropout=0.5)
    x = torch.rand(2, 3, 16, 16, generator=gen)
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(model(x), model(x))
    model.train()
    with torch.no_grad():
        # BatchNorm in train mode is deterministic given the batch: a difference means dropout.
        assert not torch.allclose(model(x), model(x))
