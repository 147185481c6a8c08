"""Friction a new user met between a folder of images and a result (issue 17), each checked here."""
import json
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from glico import GLICO
from glico.augment import GLICOAugmenter
from glico.cli import main
from glico.losses import PixelLoss
from glico.training import FitConfig, fit
from tests.glico.toy_data import toy_data

FIT = ["--epochs", "2", "--loss", "pixel", "--code-dim", "8", "--quiet", "--batch-size", "4"]


@pytest.fixture(scope="module")
def fitted():
    torch.manual_seed(0)
    x, y = toy_data(n_per_class=6)
    m = GLICO(image_shape=(1, 8, 8), num_classes=3, code_dim=8, loss=PixelLoss(p=2))
    fit(m, x, y, config=FitConfig(epochs=1, progress=False))
    return m, x, y


def test_augmenter_checks_idx_cheaply_by_default(fitted):
    m, x, y = fitted
    aug = GLICOAugmenter(m, p=0.5, seed=0)
    with pytest.raises(ValueError, match=r"rows of the code table, 0\.\.17 .* got values in 0\.\.40"):
        aug(x[:2], torch.tensor([0, 40]))
    with pytest.raises(TypeError, match="integer tensor of training-set rows"):
        aug(x[:2], torch.tensor([0.0, 1.0]))
    with pytest.warns(UserWarning, match="looks like class labels"):
        GLICOAugmenter(m, p=0.5, seed=0)(x[:8], y[:8])  # labels given as idx
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        GLICOAugmenter(m, p=0.5, seed=0)(x[:8], torch.randperm(18)[:8])  # real rows: no warning


def test_glico_from_run_loads_a_fit_folder(tmp_path):
    run = tmp_path / "run"
    assert main(["fit", "--data", "digits", "--spc", "2", "--out", str(run), *FIT]) == 0
    model = GLICO.from_run(run)
    assert model.num_classes == 10 and model.codes.weight.shape[0] == 20
    assert model.sample([0, 1]).shape == (2, 1, 8, 8)
    with pytest.raises(FileNotFoundError, match="no checkpoint.pt"):
        GLICO.from_run(tmp_path)


def test_a_finished_fit_is_extended_with_resume(tmp_path, capsys):
    run = tmp_path / "run"
    args = ["fit", "--data", "digits", "--spc", "2", "--out", str(run), *FIT]
    assert main(args) == 0
    assert main(args + ["--epochs", "4", "--resume"]) == 0
    assert json.loads((run / "run.json").read_text())["fit"]["epochs"] == 4
    history = json.loads((run / "history.json").read_text())
    assert history["resumed_from"] == 2 * 5 and history["step"][-1] == 4 * 5  # 20 images, batch 4
    assert main(args + ["--epochs", "3", "--resume"]) == 2  # fewer than already done
    assert "cannot continue this fit" in capsys.readouterr().err
