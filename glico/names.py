"""The one place where names (strings) become components: used by the CLI, by run folders and results.

Each family is a plain dict from a name to a factory; :func:`choices` lists a family's names and
:func:`resolve` turns one into its factory (an unknown name fails with the valid ones). The families:

- GLICO's parts (:class:`ModelSpec` fields): ``generator``, ``loss``, ``init``, ``feature_net``, ``noise``,
  ``interpolator``, ``classifier`` (f), ``class_loss``;
- ``downstream``: the classifiers ``glico evaluate`` / ``ablate`` / ``train`` train (:func:`downstream_classifier`;
  also ``wrn-DEPTH-K`` for any WideResNet);
- ``method``: what a grid compares (:func:`method_names`): the batch policies of
  :mod:`glico.experiments.policies` and the comparison systems of :data:`OTHER_METHODS`;
- ``data``: the schemes of a data SPEC (``digits``, ``cifar10:DIR``, ... :func:`data_help`).

One thing has one name: a WideResNet-28-2 is ``wrn-28-2`` as f and downstream alike (f's old name
``wrn`` is read as ``wrn-28-2``, :data:`OLD_NAMES`, so that stored specs still load).
"""
from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

from torch import nn

from glico.model import GLICO


#: Names a family once used for a part that now has another (read as the new one, never listed).
OLD_NAMES: dict[str, dict[str, str]] = {"classifier": {"wrn": "wrn-28-2"}}


def canonical(family: str, name: str) -> str:
    """``name`` as ``family`` spells it now (:data:`OLD_NAMES`); other names unchanged."""
    return OLD_NAMES.get(family, {}).get(name, name)


def canonical_names(obj: Any) -> Any:
    """``obj`` (plain JSON data: a saved header, settings, a run.json) with every old name of :data:`OLD_NAMES`
    replaced by today's, wherever it is the value of its family's key (``{"classifier": "wrn"}``), so that
    what was saved compares equal to what is asked for now."""
    if isinstance(obj, dict):
        return {k: (canonical(k, v) if isinstance(v, str) else canonical_names(v)) for k, v in obj.items()}
    if isinstance(obj, list):
        return [canonical_names(v) for v in obj]
    return obj


@dataclass(frozen=True)
class ModelSpec:
    """A GLICO composition by names, as given on the command line (and stored in run folders).

    Each field is a command-line flag (``feature_weights`` is ``--feature-weights``). ``init="features"``
    (the paper's "ResNet init") uses the torchvision network ``feature_net`` (``resnet50``, the paper's
    choice, or ``resnet18``) with ``feature_weights``: ``imagenet`` (torchvision's weights API; an
    actionable error when they cannot be had), the path of a state-dict file, or ``random`` (only when
    asked for by name: a random network is not the paper's init).
    """

    image_shape: tuple[int, int, int]
    num_classes: int
    generator: str = "dcgan"
    loss: str = "perceptual"
    vgg_weights: str = "imagenet"
    init: str = "random"
    feature_weights: str = "imagenet"
    noise: str = "concat"
    interpolator: str = "slerp"
    classifier: str = "weak"
    class_loss: str = "ce"
    code_dim: int = 128
    gamma: float = 0.1
    # Last, so that specs stored before it existed (and positional construction) still work.
    feature_net: str = "resnet50"

    def __post_init__(self) -> None:
        for family, old in OLD_NAMES.items():
            value = getattr(self, family)
            if value in old:
                object.__setattr__(self, family, old[value])

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["image_shape"] = list(self.image_shape)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ModelSpec":
        d = dict(d)
        d["image_shape"] = tuple(d["image_shape"])
        return cls(**d)


def _weights_arg(name: str, imagenet: Any) -> Any:
    """'imagenet' -> the torchvision weights enum, 'random' -> None, anything else -> a file path."""
    if name == "imagenet":
        return imagenet
    if name in ("random", "none"):
        return None
    path = Path(name)
    if not path.is_file():
        raise ValueError(f"weights must be 'imagenet', 'random' or the path of an existing file; {name!r} is none of these")
    return path


def _vgg(spec: ModelSpec):
    from torchvision.models import VGG16_Weights

    return _weights_arg(spec.vgg_weights, VGG16_Weights.IMAGENET1K_V1)


def _lpips(spec: ModelSpec):
    from glico.losses import LPIPSLoss

    if spec.vgg_weights not in ("imagenet", "random"):
        raise ValueError("the lpips loss takes --vgg-weights imagenet or random (it loads its backbone itself)")
    return LPIPSLoss(net="vgg", pretrained=spec.vgg_weights == "imagenet")


def _losses() -> dict[str, Callable[[ModelSpec], Any]]:
    from glico.losses import LaplacianPyramidLoss, PerceptualLoss, PixelLoss

    return {
        "perceptual": lambda s: PerceptualLoss(weights=_vgg(s)),
        "laplacian": lambda s: LaplacianPyramidLoss(),
        "pixel": lambda s: PixelLoss(p=1),
        "pixel-l2": lambda s: PixelLoss(p=2),
        "lpips": _lpips,
    }


def _feature_nets() -> dict[str, Callable[[ModelSpec], Any]]:
    """Feature networks for ``init="features"``: name -> factory(spec) -> (builder, ImageNet weights enum)."""
    from torchvision.models import ResNet18_Weights, ResNet50_Weights, resnet18, resnet50

    return {
        "resnet18": lambda s: (resnet18, ResNet18_Weights.IMAGENET1K_V1),
        "resnet50": lambda s: (resnet50, ResNet50_Weights.IMAGENET1K_V1),
    }


def _feature_network(spec: ModelSpec):
    """The penultimate-layer features of ``spec.feature_net`` with ``spec.feature_weights``, as a function
    of images (B, C, H, W) in [0, 1] (grey images are repeated to RGB, small ones upsampled to 64 px)."""
    import torch
    from torchvision.models import WeightsEnum

    from glico._downloads import fetch_weights_enum
    from glico.classifiers.torchvision_models import load_torchvision_weights

    build, imagenet = resolve("feature_net", spec.feature_net)(spec)
    net = build(weights=None)
    w = _weights_arg(spec.feature_weights, imagenet)
    if isinstance(w, WeightsEnum):
        alternatives = (
            f"  - pass feature_weights=PATH (--feature-weights PATH): that file, or any torchvision "
            f"{spec.feature_net} state dict, or\n"
            f"  - pick another network whose weights you have: --feature-net {', '.join(choices('feature_net'))}, or\n"
            f"  - pass feature_weights='random' (--feature-weights random) for a randomly initialised "
            f"{spec.feature_net}: that is not the paper's ResNet init, only a way to test the pipeline."
        )
        net.load_state_dict(fetch_weights_enum(
            w, f"ImageNet {spec.feature_net} weights ({w!r}) for the ResNet init (init='features')", alternatives))
    elif w is not None:
        load_torchvision_weights(net, w)
    net.fc = torch.nn.Identity()
    mean = torch.tensor([0.485, 0.456, 0.406])[:, None, None]
    std = torch.tensor([0.229, 0.224, 0.225])[:, None, None]

    def features(x):
        x = x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x
        x = torch.nn.functional.interpolate(x, size=max(64, x.shape[-1]), mode="bilinear", align_corners=False)
        return net((x - mean.to(x)) / std.to(x))

    net.eval()
    features.network = net  # the torchvision module behind the function (for inspection)
    return features


def _inits() -> dict[str, Callable[[ModelSpec], Any]]:
    from glico.latents import FeatureInit, HypercubeInit, PCAInit, RandomSphere

    return {
        "random": lambda s: RandomSphere(),
        "hypercube": lambda s: HypercubeInit(),
        "pca": lambda s: PCAInit(),
        "features": lambda s: FeatureInit(_feature_network(s)),
    }


def _noises() -> dict[str, Callable[[ModelSpec], Any]]:
    from glico.noise import AdditiveNoise, ConcatNoise, NoNoise

    return {"concat": lambda s: ConcatNoise(), "additive": lambda s: AdditiveNoise(), "none": lambda s: NoNoise()}


def _interpolators() -> dict[str, Callable[[ModelSpec], Any]]:
    from glico.interpolation import Lerp, MultiSlerp, Slerp

    return {"slerp": lambda s: Slerp(), "lerp": lambda s: Lerp(), "slerp3": lambda s: MultiSlerp(3)}


def _classifiers() -> dict[str, Callable[[ModelSpec], Any]]:
    from glico.classifiers import VGG19, LatentMLP, ResNet50, WeakCNN, WideResNet

    return {
        "weak": lambda s: WeakCNN(in_channels=s.image_shape[0], num_classes=s.num_classes, image_size=s.image_shape[1]),
        "latent": lambda s: LatentMLP(code_dim=s.code_dim, num_classes=s.num_classes),
        "wrn-28-2": lambda s: WideResNet(depth=28, widen_factor=2, num_classes=s.num_classes,
                                         in_channels=s.image_shape[0]),
        "resnet50": lambda s: ResNet50(num_classes=s.num_classes, in_channels=s.image_shape[0]),
        "vgg19": lambda s: VGG19(num_classes=s.num_classes, in_channels=s.image_shape[0]),
        "none": lambda s: None,
    }


def _class_losses() -> dict[str, Callable[[ModelSpec], Any]]:
    from glico.classifiers import CosineLoss, CrossEntropy

    return {"ce": lambda s: CrossEntropy(), "cosine": lambda s: CosineLoss()}


def _generators() -> dict[str, Callable[[ModelSpec, int], Any]]:
    from glico.generators import DCGANGenerator

    return {"dcgan": lambda s, in_dim: DCGANGenerator(in_dim, image_size=s.image_shape[1], channels=s.image_shape[0])}


#: The comparison systems of a grid that are not batch policies, and what each is.
OTHER_METHODS: dict[str, str] = {
    "mixmatch": "MixMatch (Berthelot et al.) on the split and unlabelled images (--unlabeled)",
    "cosine-loss": "Barz & Denzler's cosine-loss classifier (+ 0.1 cross-entropy), the paper's [29]",
    "cdcgan": "a conditional DCGAN fitted on the split (the fit's budget), its samples replacing examples with "
              "the GLICO probability",
}


def method_names() -> tuple[str, ...]:
    """The methods a grid (``glico evaluate``, ``glico ablate``) compares: the batch policies
    (:func:`glico.experiments.policies.policy_names`), then :data:`OTHER_METHODS`."""
    from glico.experiments.policies import policy_names

    return policy_names() + tuple(OTHER_METHODS)


def _methods() -> dict[str, str]:
    from glico.experiments.policies import policy_names

    return {**{m: f"batch policy {m}" for m in policy_names()}, **OTHER_METHODS}


def _data_schemes() -> dict[str, Callable]:
    from glico.data.spec import DATA_SCHEMES

    return {scheme: loader for scheme, (loader, _) in DATA_SCHEMES.items()}


def data_help() -> str:
    """What a data SPEC looks like, scheme by scheme (for --help)."""
    from glico.data.spec import DATA_SCHEMES

    return " | ".join(form.split(" (")[0] for _, form in DATA_SCHEMES.values())


FAMILIES: dict[str, Callable[[], dict]] = {
    "generator": _generators,
    "loss": _losses,
    "init": _inits,
    "feature_net": _feature_nets,
    "noise": _noises,
    "interpolator": _interpolators,
    "classifier": _classifiers,
    "class_loss": _class_losses,
    "downstream": lambda: _downstream_classifiers(),
    "method": _methods,
    "data": _data_schemes,
}


def choices(family: str) -> list[str]:
    """Valid names of a family (for --help and error messages)."""
    return sorted(FAMILIES[family]())


def resolve(family: str, name: str) -> Callable:
    """The factory registered under ``name`` in ``family`` (``downstream``: :func:`downstream_classifier`, which
    also takes ``wrn-DEPTH-K``); unknown names raise with the valid list."""
    if family == "downstream":
        return downstream_classifier(name)
    name = canonical(family, name)
    table = FAMILIES[family]()
    if name not in table:
        raise ValueError(f"unknown {family.replace('_', '-')} {name!r}; valid: {', '.join(sorted(table))}")
    return table[name]


def build_loss(spec: ModelSpec):
    """The reconstruction loss named by ``spec.loss``: one name, or a sum 'a+b' with equal weights."""
    from glico.losses import WeightedSum

    parts = spec.loss.split("+")
    if len(parts) == 1:
        return resolve("loss", parts[0])(spec)
    return WeightedSum([(1.0, resolve("loss", p)(spec)) for p in parts])


def build_model(spec: ModelSpec) -> GLICO:
    """Compose the GLICO model that ``spec`` names."""
    if spec.image_shape[1] != spec.image_shape[2]:
        c, h, w = spec.image_shape
        raise ValueError(f"images must be square for the DCGAN generator; got {w}x{h} (width x height). Pass "
                         f"--image-size N on the command line (image_size=N to glico.data.load_data) to resize "
                         f"each image's shorter side to N and centre-crop a square, N a power of two such as "
                         f"{max(8, min(256, 1 << (min(h, w).bit_length() - 1)))}")
    noise = resolve("noise", spec.noise)(spec)
    return GLICO(
        image_shape=spec.image_shape,
        num_classes=spec.num_classes,
        code_dim=spec.code_dim,
        generator=resolve("generator", spec.generator)(spec, noise.out_dim(spec.code_dim)),
        loss=build_loss(spec),
        noise=noise,
        interpolator=resolve("interpolator", spec.interpolator)(spec),
        classifier=resolve("classifier", spec.classifier)(spec),
        class_loss=resolve("class_loss", spec.class_loss)(spec),
        init=resolve("init", spec.init)(spec),
        gamma=spec.gamma,
    )


# ------------------------------------------------------------------ downstream classifiers (glico evaluate, ablate, train)
def _downstream_classifiers(pretrained: Any = None) -> dict[str, Callable[[int, int, int], nn.Module]]:
    """Downstream classifier names (the CLI's ``--classifier``) -> factory(in_channels, num_classes, size).
    Any other WideResNet is named ``wrn-DEPTH-K`` (:func:`downstream_classifier`). ``pretrained``: the
    torchvision classifiers' ``weights`` (an enum, a file path or None)."""
    from glico.classifiers import VGG19, ResNet50, WeakCNN, WideResNet

    weights = {name: _pretrained_weights(name, pretrained) for name in PRETRAINABLE}
    return {
        "wrn-28-10": lambda c, k, s: WideResNet(depth=28, widen_factor=10, num_classes=k, in_channels=c),
        "wrn-28-2": lambda c, k, s: WideResNet(depth=28, widen_factor=2, num_classes=k, in_channels=c),
        "wrn-16-1": lambda c, k, s: WideResNet(depth=16, widen_factor=1, num_classes=k, in_channels=c),
        "resnet50": lambda c, k, s: ResNet50(num_classes=k, in_channels=c, weights=weights["resnet50"]),
        "vgg19": lambda c, k, s: VGG19(num_classes=k, in_channels=c, weights=weights["vgg19"]),
        "weak": lambda c, k, s: WeakCNN(in_channels=c, num_classes=k, image_size=s),
    }


#: The downstream classifiers that take pretrained weights (torchvision's), and what ``imagenet`` means for
#: each: the ImageNet weights torchvision had when the paper was written (IMAGENET1K_V1).
PRETRAINABLE = ("resnet50", "vgg19")


def _pretrained_weights(name: str, pretrained: Any) -> Any:
    """``pretrained`` (None, ``"imagenet"``, a file path, or already a weights enum) as ``weights=`` of
    the torchvision classifier ``name``."""
    if pretrained != "imagenet":
        return pretrained
    from torchvision.models import ResNet50_Weights, VGG19_Weights

    return {"resnet50": ResNet50_Weights.IMAGENET1K_V1, "vgg19": VGG19_Weights.IMAGENET1K_V1}[name]


def downstream_choices() -> list[str]:
    """The named downstream classifiers (any other WideResNet is ``wrn-DEPTH-K``)."""
    return list(_downstream_classifiers())


def check_pretrained(classifier: str, pretrained: str | None) -> None:
    """Refuse, before any work, pretrained weights that cannot be used: for a classifier that takes none,
    a file that does not exist, or ImageNet weights that are neither in torch's hub cache nor downloadable
    (the message says where the file goes and what else to pass). Fetching them here also fills the cache.

    Raises:
        ValueError: ``classifier`` is not one of :data:`PRETRAINABLE`.
        FileNotFoundError: ``pretrained`` names a file that does not exist.
        RuntimeError: the ImageNet weights could not be had.
    """
    if pretrained is None:
        return
    if classifier not in PRETRAINABLE:
        raise ValueError(f"pretrained weights are for the torchvision classifiers ({', '.join(PRETRAINABLE)}); "
                         f"{classifier!r} is trained from random initialisation. Drop --pretrained or use "
                         f"--classifier resnet50")
    from glico.classifiers.torchvision_models import _fetch_state_dict

    _fetch_state_dict(_pretrained_weights(classifier, pretrained))


_WRN_NAME = re.compile(r"wrn-(\d+)-(\d+)")


def downstream_classifier(name: str, pretrained: Any = None) -> Callable[[int, int, int], nn.Module]:
    """The factory ``(in_channels, num_classes, image_size) -> classifier`` of a downstream classifier name:
    one of :func:`_downstream_classifiers`, or ``wrn-DEPTH-K`` for any WideResNet (DEPTH = 6n + 4 >= 10,
    K >= 1; e.g. ``wrn-16-1``, 0.18 M parameters, the CPU-sized recipe of docs/reproducing.md).
    ``pretrained`` (``"imagenet"``, a file path or None) is passed to the torchvision classifiers
    (:data:`PRETRAINABLE`; :func:`check_pretrained` refuses it for the others).

    Raises:
        ValueError: an unknown name or an impossible WideResNet (the message says what is accepted).
    """
    from glico.classifiers import WideResNet

    table = _downstream_classifiers(pretrained)
    if name in table:
        return table[name]
    m = _WRN_NAME.fullmatch(name) if isinstance(name, str) else None
    if m is None:
        raise ValueError(f"unknown classifier {name!r}; valid: {', '.join(table)}, or wrn-DEPTH-K for any WideResNet "
                         f"(e.g. wrn-16-2)")
    depth, k = int(m[1]), int(m[2])
    if depth < 10 or (depth - 4) % 6 or k < 1:
        raise ValueError(f"classifier {name!r}: a WideResNet needs DEPTH = 6n + 4 >= 10 (10, 16, 22, 28, ...) and "
                         f"K >= 1; got DEPTH {depth}, K {k}")
    return lambda c, n, s: WideResNet(depth=depth, widen_factor=k, num_classes=n, in_channels=c)
