"""glico.names is the one registry: every family's names in one place, one name per thing."""
import json

import pytest

from glico.cli import main
from glico.data.spec import DATA_SCHEMES
from glico.experiments.policies import policy_names
from glico.names import (OLD_NAMES, OTHER_METHODS, ModelSpec, canonical, choices, data_help, downstream_classifier,
                         method_names, resolve)


def test_methods_are_the_policies_then_the_comparison_systems():
    assert method_names() == policy_names() + tuple(OTHER_METHODS)
    assert choices("method") == sorted(method_names())
    with pytest.raises(ValueError, match="unknown method 'nope'; valid: .*mixmatch"):
        resolve("method", "nope")


def test_data_schemes_and_their_help_come_from_the_loaders():
    assert choices("data") == sorted(DATA_SCHEMES)
    assert data_help().split(" | ") == ["digits", "cifar10:DIR", "cifar100:DIR", "cub:DIR", "folder:PATH"]


def test_downstream_names_resolve_like_downstream_classifier():
    assert "wrn-28-2" in choices("downstream") and "weak" in choices("downstream")
    net = resolve("downstream", "wrn-10-1")(1, 10, 8)  # any WideResNet by depth and width
    assert type(net) is type(downstream_classifier("wrn-10-1")(1, 10, 8))
    with pytest.raises(ValueError, match="DEPTH = 6n \\+ 4"):
        resolve("downstream", "wrn-12-1")
    with pytest.raises(ValueError, match="wrn-DEPTH-K"):
        resolve("downstream", "resnet18")


def test_a_wideresnet_28_2_has_one_name_and_the_old_one_is_read_as_it():
    # f and the downstream classifier share the name; f's old name 'wrn' is read as it, never listed.
    assert "wrn-28-2" in choices("classifier") and "wrn" not in choices("classifier")
    assert OLD_NAMES["classifier"]["wrn"] == "wrn-28-2" and canonical("classifier", "wrn") == "wrn-28-2"
    spec = ModelSpec(image_shape=(1, 8, 8), num_classes=10, classifier="wrn")
    assert spec.classifier == "wrn-28-2" and ModelSpec.from_dict(spec.to_dict() | {"classifier": "wrn"}) == spec
    assert type(resolve("classifier", "wrn")(spec)) is type(resolve("classifier", "wrn-28-2")(spec))


def test_the_old_name_on_the_command_line_is_stored_under_the_new_one(tmp_path):
    run = tmp_path / "run"
    assert main(["fit", "--data", "digits", "--spc", "2", "--epochs", "1", "--batch-size", "8", "--code-dim", "8",
                 "--loss", "pixel", "--quiet", "--classifier", "wrn", "--out", str(run)]) == 0
    assert json.loads((run / "run.json").read_text())["model"]["classifier"] == "wrn-28-2"
