"""LPIPSLoss against the lpips package itself; WeightedSum against its parts."""
import os
import urllib.error

import lpips
import pytest
import torch
import torchvision
from tolerances import tol

from glico.losses import LaplacianPyramidLoss, LPIPSLoss, PerceptualLoss, PixelLoss, WeightedSum


@pytest.mark.parametrize("net", ["squeeze", "alex", "vgg"])
def test_lpips_equals_the_package_on_images_in_0_1(net, gen):
    torch.manual_seed(0)
    loss = LPIPSLoss(net=net, pretrained=False)
    pred, target = torch.rand(3, 3, 32, 32, generator=gen), torch.rand(3, 3, 32, 32, generator=gen)
    # The package takes [-1, 1]; the loss takes the library's [0, 1] and maps it inside.
    expected = loss.metric(pred * 2 - 1, target * 2 - 1).flatten()
    torch.testing.assert_close(loss(pred, target), expected, **tol(torch.float32))
    package_normalized = loss.metric(pred, target, normalize=True).flatten()
    torch.testing.assert_close(loss(pred, target), package_normalized, **tol(torch.float32))


def test_lpips_grayscale_and_small_images(gen):
    torch.manual_seed(0)
    loss = LPIPSLoss(net="alex", pretrained=False)
    gray = torch.rand(2, 1, 8, 8, generator=gen), torch.rand(2, 1, 8, 8, generator=gen)
    rgb = [torch.nn.functional.interpolate(x.expand(-1, 3, -1, -1), size=(32, 32), mode="bilinear") for x in gray]
    torch.testing.assert_close(loss(*gray), loss.metric(rgb[0] * 2 - 1, rgb[1] * 2 - 1).flatten(), **tol(torch.float32))


def test_lpips_linear_layers_come_from_the_package():
    # The calibrated linear layers ship with lpips and load offline even with a random backbone.
    loss = LPIPSLoss(net="squeeze", pretrained=False)
    shipped = torch.load(
        os.path.join(os.path.dirname(lpips.__file__), "weights", "v0.1", "squeeze.pth"),
        map_location="cpu",
        weights_only=True,
    )
    assert shipped
    for key, value in shipped.items():
        torch.testing.assert_close(loss.metric.state_dict()[key], value, rtol=0, atol=0)
        assert (value >= 0).all()


def test_lpips_missing_backbone_weights_give_an_actionable_error(hub_dir, monkeypatch):
    def offline(*args, **kwargs):
        raise urllib.error.URLError("[Errno -2] Name or service not known")

    # lpips builds its backbone through torchvision, which fetches the checkpoint with this function.
    monkeypatch.setattr("torchvision.models._api.load_state_dict_from_url", offline)
    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    with pytest.raises(RuntimeError) as info:
        LPIPSLoss(net="squeeze", pretrained=True)
    message = str(info.value)
    assert str(hub_dir / "checkpoints" / "squeezenet1_1-b8a52dc0.pth") in message
    assert "Name or service not known" in message and "pretrained=False" in message
    assert isinstance(info.value.__cause__, urllib.error.URLError)


def test_lpips_pretrained_backbone_from_the_hub_cache(hub_dir, no_download, gen):
    # A checkpoint where torchvision keeps its downloads is used offline (a random one stands in for ImageNet's).
    torch.manual_seed(3)
    state = torchvision.models.squeezenet1_1(weights=None).state_dict()
    (hub_dir / "checkpoints").mkdir(parents=True)
    torch.save(state, hub_dir / "checkpoints" / "squeezenet1_1-b8a52dc0.pth")
    loss = LPIPSLoss(net="squeeze", pretrained=True)
    conv = loss.metric.net.slice1[0]
    torch.testing.assert_close(conv.weight, state["features.0.weight"], rtol=0, atol=0)
    pred, target = torch.rand(2, 3, 32, 32, generator=gen), torch.rand(2, 3, 32, 32, generator=gen)
    assert (loss(pred, target) > 0).all()


@pytest.mark.parametrize("kwargs, match", [(dict(net="resnet"), "alex"), (dict(net="alex", min_size=16), ">= 31")])
def test_lpips_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        LPIPSLoss(pretrained=False, **kwargs)


# ---------------------------------------------------------------------------------------------- sums


def test_weighted_sum_equals_the_sum_of_its_parts(gen):
    torch.manual_seed(0)
    perceptual, laplacian, pixel = PerceptualLoss(weights=None, min_size=16), LaplacianPyramidLoss(), PixelLoss(2)
    total = WeightedSum([(0.7, perceptual), (2.0, laplacian), (0.0, pixel)])
    pred, target = torch.rand(3, 3, 16, 16, generator=gen), torch.rand(3, 3, 16, 16, generator=gen)
    expected = 0.7 * perceptual(pred, target) + 2.0 * laplacian(pred, target)
    torch.testing.assert_close(total(pred, target), expected, **tol(torch.float32))
    prepared = total.prepare_target(target)
    assert isinstance(prepared, tuple) and len(prepared) == 3
    torch.testing.assert_close(prepared[2], target, rtol=0, atol=0)
    torch.testing.assert_close(total.forward_prepared(pred, prepared), expected, **tol(torch.float32))


def test_weighted_sums_nest(gen):
    inner = WeightedSum([(1.0, PixelLoss(1)), (1.0, PixelLoss(2))])
    outer = WeightedSum([(0.5, inner), (3.0, LaplacianPyramidLoss())])
    pred, target = torch.rand(2, 2, 8, 8, generator=gen), torch.rand(2, 2, 8, 8, generator=gen)
    expected = 0.5 * (PixelLoss(1)(pred, target) + PixelLoss(2)(pred, target)) + 3.0 * LaplacianPyramidLoss()(
        pred, target
    )
    torch.testing.assert_close(outer(pred, target), expected, **tol(torch.float32))


@pytest.mark.parametrize(
    "terms, error, match",
    [
        ([], ValueError, "at least one"),
        ([(-1.0, PixelLoss())], ValueError, "non-negative"),
        ([(float("inf"), PixelLoss())], ValueError, "finite"),
        ([(PixelLoss(), 1.0)], TypeError, r"\(weight, loss\)"),
        ([(1.0, torch.nn.L1Loss())], TypeError, "not a reconstruction loss"),
        ([PixelLoss()], TypeError, "pair"),
    ],
)
def test_weighted_sum_bad_terms(terms, error, match):
    with pytest.raises(error, match=match):
        WeightedSum(terms)


def test_weighted_sum_checks_prepared_parts(gen):
    total = WeightedSum([(1.0, PixelLoss()), (1.0, LaplacianPyramidLoss())])
    x = torch.rand(1, 1, 8, 8, generator=gen)
    with pytest.raises(ValueError, match="2 losses"):
        total.forward_prepared(x, (x,))
