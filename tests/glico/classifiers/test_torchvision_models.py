import urllib.error

import pytest
import torch
import torch.hub
from torch import nn
from torchvision.models import ResNet50_Weights, VGG19_Weights, resnet50

from glico.classifiers import VGG19, Classifier, ResNet50
from glico.classifiers.torchvision_models import IMAGENET_MEAN, IMAGENET_STD
from tests.glico.classifiers.helpers import assert_gradients_everywhere, assert_raw_logits
from tests.tolerances import tol


@pytest.fixture(scope="module")
def imagenet_like_state() -> dict[str, torch.Tensor]:
    """A state dict in the format of torchvision's ImageNet ResNet-50 checkpoint (random values)."""
    torch.manual_seed(1)
    net = resnet50(weights=None)
    with torch.no_grad():
        # Non-trivial BatchNorm statistics, so that loading them is visible.
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    return {k: v.clone() for k, v in net.state_dict().items()}


@pytest.fixture
def hub_dir(tmp_path):
    """An empty torch hub cache, so that no cached checkpoint can satisfy a lookup."""
    previous = torch.hub.get_dir()
    torch.hub.set_dir(str(tmp_path / "hub"))
    yield tmp_path / "hub"
    torch.hub.set_dir(previous)


def _record_backbone_input(model):
    """The tensors the backbone receives (after the wrapper's resizing and normalisation)."""
    seen = []
    model.backbone.register_forward_pre_hook(lambda m, args: seen.append(args[0].detach().clone()))
    return seen


@pytest.fixture(scope="module")
def rgb_resnet():
    torch.manual_seed(2)
    return ResNet50(5).eval()


@pytest.fixture(scope="module")
def grey_resnet():
    torch.manual_seed(3)
    return ResNet50(5, in_channels=1)


@pytest.mark.parametrize(
    "channels,h,w,expected",
    [(3, 32, 32, (32, 32)), (1, 8, 8, (32, 32)), (4, 8, 16, (32, 64)), (3, 40, 36, (40, 36))],
)
def test_resnet50_shapes_and_small_inputs(gen, rgb_resnet, grey_resnet, channels, h, w, expected):
    model = {3: rgb_resnet, 1: grey_resnet}.get(channels) or ResNet50(5, in_channels=channels)
    model.eval()
    seen = _record_backbone_input(model)
    x = torch.rand(1, channels, h, w, generator=gen)
    with torch.no_grad():
        logits = model(x)
    assert logits.shape == (1, 5)
    assert seen[-1].shape == (1, channels, *expected)
    if (h, w) == expected:
        # Large enough: passed on untouched (random weights: no normalisation either).
        torch.testing.assert_close(seen[-1], x, rtol=0, atol=0)
    assert model.backbone.conv1.in_channels == channels
    assert model.backbone.fc.out_features == 5
    assert isinstance(model, Classifier) and ResNet50.consumes_codes is False


def test_resnet50_raw_logits_and_gradients(gen, grey_resnet):
    x = torch.rand(2, 1, 8, 8, generator=gen)
    grey_resnet.eval()
    with torch.no_grad():
        assert_raw_logits(grey_resnet, grey_resnet(x))
    grey_resnet.train()
    assert_gradients_everywhere(grey_resnet, x)


@pytest.fixture(scope="module")
def vgg():
    return VGG19(4, in_channels=1)


def test_vgg19_shapes_small_inputs_and_gradients(gen, vgg):
    seen = _record_backbone_input(vgg)
    x = torch.rand(2, 1, 8, 8, generator=gen)
    vgg.eval()
    with torch.no_grad():
        logits = vgg(x)
    assert logits.shape == (2, 4)
    assert [t.shape for t in seen] == [(2, 1, 32, 32)]
    assert_raw_logits(vgg, logits)
    assert vgg.backbone.features[0].in_channels == 1
    assert vgg.backbone.classifier[6].out_features == 4
    # Plain VGG-19 (configuration E): 16 convolutions, no BatchNorm.
    assert sum(isinstance(m, nn.Conv2d) for m in vgg.backbone.modules()) == 16
    assert not any(isinstance(m, nn.BatchNorm2d) for m in vgg.backbone.modules())
    vgg.train()
    assert_gradients_everywhere(vgg, x)


def test_vgg19_enum_must_match_batch_norm_choice():
    with pytest.raises(TypeError, match="VGG19_BN_Weights"):
        VGG19(10, weights=VGG19_Weights.IMAGENET1K_V1, batch_norm=True)
    with pytest.raises(TypeError, match="ResNet50_Weights"):
        ResNet50(10, weights=VGG19_Weights.IMAGENET1K_V1)


def test_min_size_below_32_is_refused():
    with pytest.raises(ValueError, match="min_size"):
        ResNet50(10, min_size=16)


def test_offline_download_raises_an_actionable_error(monkeypatch, hub_dir):
    # Simulate no network at the lowest level torch.hub uses, so torchvision's own download path runs.
    def offline(*args, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(torch.hub, "urlopen", offline)
    weights = ResNet50_Weights.IMAGENET1K_V2
    with pytest.raises(RuntimeError) as info:
        ResNet50(10, weights=weights)
    msg = str(info.value)
    expected_path = str(hub_dir / "checkpoints" / weights.url.rsplit("/", 1)[-1])
    assert expected_path in msg
    assert weights.url in msg
    assert "weights=None" in msg and "weights=<path" in msg
    assert isinstance(info.value.__cause__, urllib.error.URLError)


def test_weights_enum_loads_and_normalises(monkeypatch, gen, imagenet_like_state):
    monkeypatch.setattr(ResNet50_Weights, "get_state_dict", lambda self, **kw: dict(imagenet_like_state))
    model = ResNet50(7, weights=ResNet50_Weights.IMAGENET1K_V2).eval()
    own = model.backbone.state_dict()
    for k, v in imagenet_like_state.items():
        if not k.startswith("fc."):
            torch.testing.assert_close(own[k], v, rtol=0, atol=0)
    assert own["fc.weight"].shape == (7, 2048)
    seen = _record_backbone_input(model)
    x = torch.rand(1, 3, 32, 32, generator=gen)
    with torch.no_grad():
        model(x)
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    torch.testing.assert_close(seen[-1], (x - mean) / std, **tol(torch.float32))


def test_local_file_round_trip(tmp_path, imagenet_like_state):
    path = tmp_path / "resnet50-imagenet.pth"
    torch.save(imagenet_like_state, path)
    model = ResNet50(5, weights=path)
    own = model.backbone.state_dict()
    for k, v in imagenet_like_state.items():
        if not k.startswith("fc."):
            torch.testing.assert_close(own[k], v, rtol=0, atol=0)
    # The 1000-class ImageNet head does not fit 5 classes: a fresh one is kept.
    assert own["fc.weight"].shape == (5, 2048)
    torch.testing.assert_close(model.input_mean.flatten(), torch.tensor(IMAGENET_MEAN))

    # A backbone saved after fine-tuning (head included) loads back whole, also from a str path.
    again = tmp_path / "finetuned.pth"
    torch.save(model.backbone.state_dict(), again)
    reloaded = ResNet50(5, weights=str(again))
    want, got = model.state_dict(), reloaded.state_dict()
    assert want.keys() == got.keys()
    for k in want:
        torch.testing.assert_close(got[k], want[k], rtol=0, atol=0)


def test_local_file_adapts_first_conv_to_grey(tmp_path, gen, imagenet_like_state):
    path = tmp_path / "resnet50.pth"
    torch.save(imagenet_like_state, path)
    grey = ResNet50(3, in_channels=1, weights=path)
    w = imagenet_like_state["conv1.weight"]
    torch.testing.assert_close(grey.backbone.conv1.weight, w.sum(dim=1, keepdim=True), **tol(torch.float32))
    # So a grey image gives the first layer the response its RGB copy gets from the ImageNet kernel.
    x = torch.rand(2, 1, 32, 32, generator=gen)
    with torch.no_grad():
        rgb = torch.nn.functional.conv2d(x.expand(-1, 3, -1, -1), w, stride=2, padding=3)
        torch.testing.assert_close(grey.backbone.conv1(x), rgb, **tol(torch.float32))
    # Grey channels get the average ImageNet statistics.
    torch.testing.assert_close(grey.input_mean.flatten(), torch.tensor([sum(IMAGENET_MEAN) / 3]))


def test_missing_file_and_bad_type_are_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="weights=None|None for random"):
        ResNet50(10, weights=tmp_path / "nope.pth")
    with pytest.raises(TypeError, match="weights must be"):
        ResNet50(10, weights=3)  # type: ignore[arg-type]
