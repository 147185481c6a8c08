import pytest
import torch
from torch import nn

from glico.classifiers import Classifier, LatentMLP

from tests.glico.classifiers.helpers import assert_gradients_everywhere, assert_raw_logits


def test_three_linear_layers_with_relu_between():
    model = LatentMLP(128, 10)
    layers = [m for m in model.modules() if isinstance(m, (nn.Linear, nn.ReLU))]
    kinds = [type(m) for m in layers]
    assert kinds == [nn.Linear, nn.ReLU, nn.Linear, nn.ReLU, nn.Linear]
    linears = [m for m in layers if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(128, 256), (256, 256), (256, 10)]


def test_consumes_codes():
    model = LatentMLP(16, 3, hidden=32)
    assert isinstance(model, Classifier)
    assert LatentMLP.consumes_codes is True
    assert model.num_classes == 3


@pytest.mark.parametrize("batch,dim", [(1, 7), (5, 128), (3, 33)])
def test_output_shape_and_raw_logits(gen, batch, dim):
    model = LatentMLP(dim, 6)
    z = torch.nn.functional.normalize(torch.randn(batch, dim, generator=gen), dim=1)
    logits = model(z)
    assert logits.shape == (batch, 6)
    if batch > 1:
        assert_raw_logits(model, logits)


def test_gradient_reaches_codes_and_parameters(gen):
    assert_gradients_everywhere(LatentMLP(12, 4, hidden=16), torch.randn(6, 12, generator=gen))


def test_wrong_code_shape_is_a_clear_error(gen):
    with pytest.raises(ValueError, match=r"\(B, 12\)"):
        LatentMLP(12, 4)(torch.randn(2, 3, 4, 4, generator=gen))
