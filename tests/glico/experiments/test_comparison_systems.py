"""glico evaluate's comparison systems (MixMatch, the cosine-loss classifier, the conditional DCGAN, FID):
where MixMatch's unlabelled images come from, the settings refused, FID against a closed form, and the
command end to end."""
import json

import numpy as np
import pytest
import torch

from glico.cli import main
from glico.data import load_data, small_sample_split, validation_split
from glico.experiments.evaluate import PRESETS, EvaluateConfig, resolve_preset
from glico.experiments.grid import _folder_images, fid_reference, generated_fid, grid_rows, unlabeled_images


@pytest.fixture(scope="module")
def digits():
    return load_data("digits")


def _rows(images: torch.Tensor) -> set[bytes]:
    return {bytes(x.numpy().tobytes()) for x in images}


def test_unlabelled_sources_are_disjoint_from_the_split_and_its_validation_images(digits):
    spc, seed, v = 3, 1, 4
    split = small_sample_split(digits.train, spc, seed)[0].images
    val = validation_split(digits.train, spc, seed, v)[0].images
    same, info = unlabeled_images("split", digits, spc, seed)
    assert torch.equal(same, split) and info == {"source": "split", "n": 30}
    rest, info = unlabeled_images("rest", digits, spc, seed, validation=v)
    assert info["n"] == 896 - 10 * (spc + v)  # every other training image
    assert not _rows(rest) & (_rows(split) | _rows(val))
    some, info = unlabeled_images("rest:5", digits, spc, seed, validation=v)
    assert info["n"] == 50 and _rows(some) <= _rows(rest)
    more, _ = unlabeled_images("rest:7", digits, spc, seed, validation=v)
    assert _rows(some) <= _rows(more)  # nested across N, like the splits
    test, info = unlabeled_images("test", digits, spc, seed)
    assert torch.equal(test, digits.test.images)


def test_more_unlabelled_images_than_left_are_capped_with_a_warning(digits, caplog):
    with caplog.at_level("WARNING"):
        _, info = unlabeled_images("rest:100", digits, 3, 0, validation=4)
    assert info["n"] == 10 * (87 - 7)  # the smallest class has 87 images
    assert "using 80 per class" in caplog.text


def test_unlabelled_source_errors_say_what_is_accepted(digits):
    with pytest.raises(ValueError, match="unknown unlabelled-image source 'elsewhere'.*split.*rest:N.*folder:PATH"):
        unlabeled_images("elsewhere", digits, 2, 0)
    with pytest.raises(ValueError, match="validation runs never touch the test set"):
        unlabeled_images("test", digits, 2, 0, validation=3)
    with pytest.raises(ValueError, match="no training images are left after the split"):
        unlabeled_images("rest:4", digits, 87, 0)  # the smallest class has 87 images
    with pytest.raises(ValueError, match="is not a folder"):
        unlabeled_images("folder:/no/such/place", digits, 2, 0)


def test_folder_images_reads_any_layout(tmp_path, digits):
    from PIL import Image

    rng = np.random.default_rng(0)
    (tmp_path / "a" / "b").mkdir(parents=True)
    for i, where in enumerate(["x.png", "a/y.png", "a/b/z.png"]):
        Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(tmp_path / where)
    (tmp_path / "notes.txt").write_text("not an image")
    images = _folder_images(tmp_path, None)
    assert images.shape == (3, 3, 8, 8) and 0 <= float(images.min()) and float(images.max()) <= 1
    with pytest.raises(ValueError, match=r"have shape \(3, 8, 8\); the data's are \(1, 8, 8\)"):
        unlabeled_images(f"folder:{tmp_path}", digits, 2, 0)  # RGB files for grayscale digits


def test_settings_that_cannot_work_are_refused():
    with pytest.raises(ValueError, match="mixmatch trains on unlabelled images too.*split \\(the labelled split"):
        EvaluateConfig(data="digits", methods=("mixmatch",))
    with pytest.raises(ValueError, match="used by mixmatch only"):
        EvaluateConfig(data="digits", methods=("baseline",), unlabeled="rest")
    with pytest.raises(ValueError, match="validation runs never touch the test set"):
        EvaluateConfig(data="digits", methods=("mixmatch",), unlabeled="test", validation=5)
    with pytest.raises(ValueError, match="fid is measured for the generative methods"):
        EvaluateConfig(data="digits", methods=("baseline",), fid="random-inception")
    with pytest.raises(ValueError, match="fid must be one of inception, random-inception"):
        EvaluateConfig(data="digits", methods=("glico",), fid="alexnet")
    with pytest.raises(FileNotFoundError, match="no Inception-v3 weights file at /no/w.pth"):
        EvaluateConfig(data="digits", methods=("glico",), fid="/no/w.pth")


def test_the_table1_preset():
    methods, unlabeled = resolve_preset(None, "table1", None)
    assert methods == ("baseline", "glico", "mixmatch", "cutout", "random-erasing", "cosine-loss")
    assert unlabeled == "split"  # Table I is labelled data only
    assert resolve_preset(None, "table1", "rest:10") == (methods, "rest:10")
    assert resolve_preset(None, None, None) == (("baseline", "glico"), None)
    with pytest.raises(ValueError, match="give --methods or --preset, not both"):
        resolve_preset(("glico",), "table1", None)
    EvaluateConfig(data="digits", methods=PRESETS["table1"]["methods"], unlabeled="split")  # a valid configuration


def test_fid_reference_avoids_the_grid_and_fid_of_itself_is_zero(digits):
    seen = []

    def flat(x):  # a feature extractor, (B, C, H, W) -> (B, 16), that keeps what it saw
        seen.append(x)
        return x.flatten(1)[:, :16].double()

    cfg = EvaluateConfig(data="digits", spcs=(3,), seeds=(0, 1, 2), methods=("glico",), validation=4)
    exclude = grid_rows(digits.train, cfg)
    used = set()  # every seed's split and validation rows
    for seed in (0, 1, 2):
        used |= set(small_sample_split(digits.train, 3, seed)[1].tolist())
        used |= set(validation_split(digits.train, 3, seed, 4)[1].tolist())
    assert set(exclude.tolist()) == used
    reference = fid_reference(digits.train, 200, flat, "cpu", exclude=exclude)
    real = torch.cat(seen)
    assert real.shape[0] == 200 and not _rows(real) & _rows(digits.train.images[exclude])
    assert generated_fid(real, flat, reference, "cpu") == 0.0  # to 2 decimals
    # halved images: mean μ/2 and covariance Σ/4, so FID = ‖μ/2‖² + Tr(Σ + Σ/4 − 2·Σ/2) = (‖μ‖² + Tr Σ) / 4
    expected = (float(reference.mu.pow(2).sum()) + float(torch.trace(reference.sigma))) / 4
    assert generated_fid(real * 0.5, flat, reference, "cpu") == pytest.approx(expected, abs=0.01)


def test_comparison_systems_end_to_end(tmp_path):
    out = tmp_path / "ev"
    argv = ["evaluate", "--data", "digits", "--spc", "2", "--seeds", "0", "--methods", "mixmatch,cosine-loss,cdcgan,glico",
            "--unlabeled", "rest:3", "--fid", "random-inception", "--fid-images", "10", "--classifier", "weak",
            "--epochs", "1", "--fit-epochs", "1", "--max-test", "100", "--out", str(out), "--quiet",
            "--loss", "pixel", "--code-dim", "8", "--glico-t", "0.5"]
    assert main(argv) == 0
    results = json.loads((out / "results.json").read_text())
    runs = {r["method"]: r for r in results["runs"]}
    assert set(runs) == {"mixmatch", "cosine-loss", "cdcgan", "glico"}
    assert all(0 <= r["top1"] <= 100 for r in runs.values())
    assert runs["mixmatch"]["fit"] == {"source": "rest:3", "n": 30}
    assert "fid" in runs["cdcgan"] and "fid" in runs["glico"] and "fid" not in runs["mixmatch"] and runs["cdcgan"]["fit"]["steps"] == 1
    recipe = results["recipe"]
    assert recipe["unlabeled"] == "rest:3" and recipe["transductive"] is False
    assert recipe["mixmatch"]["temperature"] == 0.5 and recipe["cosine_loss_xent_weight"] == 0.1
    assert recipe["fid"]["features"] == "random-inception"
    table = (out / "results.md").read_text()
    assert "FID @ 2 spc" in table and "MixMatch's unlabelled images: rest:3" in table
    assert (out / "cdcgan-samples-spc2-seed0.png").stat().st_size > 0


def test_mixmatch_without_unlabelled_images_says_where_to_give_them(capsys, tmp_path):
    assert main(["evaluate", "--data", "digits", "--spc", "2", "--methods", "mixmatch", "--out", str(tmp_path / "x")]) != 0
    err = capsys.readouterr().err
    assert "--unlabeled" in err and "split" in err and "folder:PATH" in err


def test_split_independent_unlabelled_images_are_read_once_and_said_to_be_transductive(tmp_path, monkeypatch, capsys):
    import glico.experiments.grid as grid

    calls = []
    real = grid.unlabeled_images
    monkeypatch.setattr(grid, "unlabeled_images", lambda *a, **k: calls.append(a[0]) or real(*a, **k))
    argv = ["evaluate", "--data", "digits", "--spc", "2", "--seeds", "0,1", "--methods", "mixmatch", "--unlabeled",
            "test", "--classifier", "weak", "--epochs", "1", "--max-test", "60", "--out", str(tmp_path / "t")]
    assert main(argv) == 0
    assert calls == ["test"]  # once before the grid, reused by both seeds
    assert "transductive" in capsys.readouterr().out
    results = json.loads((tmp_path / "t" / "results.json").read_text())
    assert results["recipe"]["transductive"] is True
    assert all(r["fit"] == {"source": "test", "n": 60} for r in results["runs"])
