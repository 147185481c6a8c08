"""PerceptualLoss: the VGG-16 layers, agreement with a layer-by-layer recomputation on torchvision's own
vgg16, and every way of getting (or failing to get) weights."""
import copy
import urllib.error

import pytest
import torch
import torch.nn.functional as F
import torchvision
from tolerances import tol
from torchvision.models import VGG16_Weights

from glico.losses import VGG16_LAYERS, VGG16_RELU_INDICES, PerceptualLoss

IMAGENET_MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
IMAGENET_STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)


@pytest.fixture(scope="module")
def tv_features():
    """torchvision's own VGG-16 feature extractor with random weights (the reference network)."""
    torch.manual_seed(1)
    return torchvision.models.vgg16(weights=None).features.eval()


def reference_loss(features, pred, target, layer_weights, min_size=32, mean=IMAGENET_MEAN, std=IMAGENET_STD):
    """Eq. 1 of the paper computed directly: run torchvision's layers one by one on both images."""

    def vgg_input(x):
        if x.shape[1] == 1:
            x = x.repeat(1, 3, 1, 1)
        h, w = x.shape[-2:]
        if h < min_size or w < min_size:
            x = F.interpolate(x, size=(max(h, min_size), max(w, min_size)), mode="bilinear", align_corners=False)
        return (x - mean) / std

    a, b = vgg_input(pred), vgg_input(target)
    total = torch.zeros(pred.shape[0])
    with torch.no_grad():
        for i, layer in enumerate(features):
            a, b = layer(a), layer(b)
            if i in VGG16_RELU_INDICES:
                j = VGG16_RELU_INDICES.index(i)
                total += layer_weights[j] * (a - b).abs().mean(dim=(1, 2, 3))
            if i == max(VGG16_RELU_INDICES):
                break
    return total


def features_state(tv_features, prefix=""):
    return {prefix + k: v.clone() for k, v in tv_features.state_dict().items()}


def test_layer_indices_are_the_papers_layers(tv_features):
    # conv{b}_2 is the 2nd conv of block b; VGG-16 blocks have 2, 2, 3, 3, 3 convs.
    conv_ordinal = {"conv1_2": 2, "conv2_2": 4, "conv3_2": 6, "conv4_2": 9, "conv5_2": 12}
    channels = {"conv1_2": 64, "conv2_2": 128, "conv3_2": 256, "conv4_2": 512, "conv5_2": 512}
    for name, idx in zip(VGG16_LAYERS, VGG16_RELU_INDICES):
        assert isinstance(tv_features[idx], torch.nn.ReLU)
        conv = tv_features[idx - 1]
        assert isinstance(conv, torch.nn.Conv2d) and conv.out_channels == channels[name]
        assert sum(isinstance(m, torch.nn.Conv2d) for m in tv_features[:idx]) == conv_ordinal[name]
        pools = sum(isinstance(m, torch.nn.MaxPool2d) for m in tv_features[:idx])
        assert pools == int(name[4]) - 1


def test_backbone_stops_at_last_needed_layer():
    assert len(PerceptualLoss(weights=None).backbone) == 28  # up to conv5_2's ReLU (index 27)
    shallow = PerceptualLoss(weights=None, layer_weights=(1.0, 1.0, 0.0, 0.0, 0.0), min_size=2)
    assert len(shallow.backbone) == 9
    torch.manual_seed(0)
    a, b = torch.rand(2, 3, 8, 8), torch.rand(2, 3, 8, 8)
    assert shallow(a, b).shape == (2,)


@pytest.mark.parametrize(
    "shape, layer_weights",
    [
        ((2, 3, 32, 32), (0.2, 0.2, 0.2, 0.2, 0.2)),
        ((2, 3, 40, 36), (0.1, 0.4, 0.0, 1.5, 0.3)),
        ((3, 1, 8, 8), (1.0, 0.5, 0.25, 0.125, 2.0)),  # grayscale, upsampled to 32x32
        ((1, 3, 12, 40), (0.2, 0.2, 0.2, 0.2, 0.2)),  # only the height is upsampled
    ],
)
def test_equals_layer_by_layer_recomputation(tv_features, gen, shape, layer_weights):
    torch.manual_seed(2)
    loss = PerceptualLoss(weights=None, layer_weights=layer_weights)
    reference = copy.deepcopy(tv_features)
    result = reference.load_state_dict(loss.backbone.state_dict(), strict=False)
    assert set(result.missing_keys) == {"28.weight", "28.bias"} and not result.unexpected_keys
    pred, target = torch.rand(shape, generator=gen), torch.rand(shape, generator=gen)
    expected = reference_loss(reference, pred, target, layer_weights)
    torch.testing.assert_close(loss(pred, target), expected, **tol(torch.float32))


def test_default_weights_average_the_five_layers():
    loss = PerceptualLoss(weights=None)
    assert loss.layer_weights == (0.2, 0.2, 0.2, 0.2, 0.2)
    assert loss.min_size == 32


@pytest.mark.parametrize("channels", [2, 4])
def test_other_channel_counts_point_to_other_losses(channels):
    loss = PerceptualLoss(weights=None)
    x = torch.rand(1, channels, 16, 16)
    with pytest.raises(ValueError, match=r"C=\d.*LaplacianPyramidLoss\(\) or PixelLoss\(\)"):
        loss(x, x)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(min_size=8), "min_size must be an int >= 16"),
        (dict(layer_weights=(1.0, 1.0)), "one weight per layer"),
        (dict(layer_weights=(1.0, -1.0, 0.0, 0.0, 0.0)), "non-negative"),
        (dict(layer_weights=(0.0,) * 5), "not all zero"),
        (dict(layer_weights=(1.0, float("nan"), 0.0, 0.0, 0.0)), "finite"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        PerceptualLoss(weights=None, **kwargs)


def test_min_size_follows_the_deepest_layer():
    PerceptualLoss(weights=None, layer_weights=(1.0, 0.0, 0.0, 0.0, 0.0), min_size=1)
    with pytest.raises(ValueError, match=">= 4"):
        PerceptualLoss(weights=None, layer_weights=(0.0, 0.0, 1.0, 0.0, 0.0), min_size=2)


def test_weights_of_the_wrong_type():
    with pytest.raises(TypeError, match="VGG16_Weights"):
        PerceptualLoss(weights=3)


# ---------------------------------------------------------------------------------------------- weights


def test_missing_imagenet_weights_give_an_actionable_error(hub_dir, monkeypatch):
    def offline(*args, **kwargs):
        raise urllib.error.URLError("[Errno -2] Name or service not known")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    with pytest.raises(RuntimeError) as info:
        PerceptualLoss()
    message = str(info.value)
    cache_file = str(hub_dir / "checkpoints" / "vgg16-397923af.pth")
    assert "Name or service not known" in message  # the cause
    assert cache_file in message  # where torchvision reads the file
    assert VGG16_Weights.IMAGENET1K_V1.url in message  # what to download
    assert "weights='/path/to/vgg16.pth'" in message
    assert "weights=None" in message and "LaplacianPyramidLoss()" in message and "PixelLoss()" in message
    assert isinstance(info.value.__cause__, urllib.error.URLError)


def test_missing_imagenet_weights_through_torch_hub(hub_dir, no_download):
    # The real torch.hub code path, with the network switched off: no cached file, download fails.
    with pytest.raises(RuntimeError, match="does not exist") as info:
        PerceptualLoss(weights=VGG16_Weights.IMAGENET1K_V1)
    assert str(hub_dir / "checkpoints" / "vgg16-397923af.pth") in str(info.value)


def test_corrupt_cached_imagenet_file(hub_dir, no_download):
    (hub_dir / "checkpoints").mkdir(parents=True)
    (hub_dir / "checkpoints" / "vgg16-397923af.pth").write_bytes(b"truncated download")
    with pytest.raises(RuntimeError, match="exists but could not be read"):
        PerceptualLoss()


def test_imagenet_weights_from_the_hub_cache(tv_features, hub_dir, no_download, gen):
    # A (random) checkpoint where torchvision keeps its downloads is used without any network access.
    (hub_dir / "checkpoints").mkdir(parents=True)
    torch.save(features_state(tv_features, "features."), hub_dir / "checkpoints" / "vgg16-397923af.pth")
    loss = PerceptualLoss()
    pred, target = torch.rand(2, 3, 32, 32, generator=gen), torch.rand(2, 3, 32, 32, generator=gen)
    expected = reference_loss(tv_features, pred, target, loss.layer_weights)
    torch.testing.assert_close(loss(pred, target), expected, **tol(torch.float32))


@pytest.mark.parametrize("prefix", ["features.", ""], ids=["whole-model-keys", "features-only-keys"])
@pytest.mark.parametrize("as_str", [True, False], ids=["str", "Path"])
def test_local_weights_file(tv_features, tmp_path, gen, prefix, as_str):
    path = tmp_path / "vgg16.pth"
    state = features_state(tv_features, prefix)
    if prefix:  # a whole-model state_dict also holds the classifier, which the loss ignores
        state["classifier.6.bias"] = torch.zeros(1000)
    torch.save(state, path)
    loss = PerceptualLoss(weights=str(path) if as_str else path)
    pred, target = torch.rand(2, 1, 16, 16, generator=gen), torch.rand(2, 1, 16, 16, generator=gen)
    expected = reference_loss(tv_features, pred, target, loss.layer_weights)
    torch.testing.assert_close(loss(pred, target), expected, **tol(torch.float32))
    assert not any(p.requires_grad for p in loss.parameters())


def test_missing_weights_file(tmp_path):
    path = tmp_path / "nowhere" / "vgg16.pth"
    with pytest.raises(FileNotFoundError, match=str(path)):
        PerceptualLoss(weights=path)


def test_weights_file_of_another_network(tmp_path):
    path = tmp_path / "resnet.pth"
    torch.save({"conv1.weight": torch.zeros(64, 3, 7, 7), "fc.weight": torch.zeros(10, 512)}, path)
    with pytest.raises(ValueError, match=r"resnet\.pth is not a VGG-16 state_dict: missing keys \['0.weight'"):
        PerceptualLoss(weights=path)


def test_weights_file_with_wrong_shapes(tv_features, tmp_path):
    path = tmp_path / "vgg16_bad.pth"
    state = features_state(tv_features, "features.")
    state["features.2.weight"] = torch.zeros(64, 64, 5, 5)
    torch.save(state, path)
    with pytest.raises(ValueError, match=r"layer shapes.*2\.weight: \(64, 64, 5, 5\) != \(64, 64, 3, 3\)"):
        PerceptualLoss(weights=path)


def test_weights_file_that_is_no_state_dict(tmp_path):
    not_a_dict = tmp_path / "list.pth"
    torch.save([torch.zeros(3)], not_a_dict)
    with pytest.raises(ValueError, match="does not hold a state_dict"):
        PerceptualLoss(weights=not_a_dict)
    pickled_model = tmp_path / "model.pth"
    torch.save(torch.nn.Linear(2, 2), pickled_model)
    with pytest.raises(ValueError, match=r"(?s)could not read .*model\.pth.*state_dict\(\)"):
        PerceptualLoss(weights=pickled_model)
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"\x00not a checkpoint")
    with pytest.raises(ValueError, match="could not read"):
        PerceptualLoss(weights=garbage)
