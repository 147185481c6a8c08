"""Friction a new user met between a folder of images and a result (issue 17), each checked here."""
import json
import re
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


def _flat_folder(root, counts=(5, 7, 4), size=8):
    """<class>/<image>.jpg, no train/ or test/; classes of different sizes."""
    g = np.random.default_rng(0)
    for c, n in enumerate(counts):
        d = root / f"class{c}"
        d.mkdir(parents=True)
        for i in range(n):
            img = (g.random((size, size, 3)) * 60).astype(np.uint8)
            img[:, c * 2 : c * 2 + 3, c] = 220
            Image.fromarray(img).save(d / f"{i}.png")
    return root


def test_a_folder_of_class_folders_fits_and_trains(tmp_path, capsys):
    flat = _flat_folder(tmp_path / "mine")
    run = tmp_path / "run"
    assert main(["fit", "--data", f"folder:{flat}", "--spc", "all", "--out", str(run), *FIT]) == 0
    saved = json.loads((run / "run.json").read_text())
    assert saved["spc"] == "all" and len(saved["train_indices"]) == 16  # unequal classes kept whole
    out = tmp_path / "model"
    assert main(["train", "--data", f"folder:{flat}", "--out", str(out), "--classifier", "weak", "--epochs", "1",
                 "--fit-epochs", "2", "--loss", "pixel", "--code-dim", "8", "--quiet"]) == 0
    assert "not scored" in capsys.readouterr().err
    meta = json.loads((out / "model.json").read_text())
    assert meta["per_class"] == [5, 7, 4] and "test" not in meta
    # evaluate needs a test set: it says how to get one, and --test-fraction carves a seeded one.
    ev = ["evaluate", "--data", f"folder:{flat}", "--spc", "2", "--seeds", "0", "--methods", "baseline",
          "--classifier", "weak", "--epochs", "1", "--quiet"]
    assert main(ev + ["--out", str(tmp_path / "e1")]) == 2
    assert "--test-fraction F" in capsys.readouterr().err
    assert main(ev + ["--out", str(tmp_path / "e2"), "--test-fraction", "0.25"]) == 0
    results = json.loads((tmp_path / "e2" / "results.json").read_text())
    assert results["data"]["n_test"] == 1 + 2 + 1  # round(0.25 * n) per class, at least 1


def test_holdout_split_is_per_class_seeded_and_disjoint():
    from glico.data import ImageSet, holdout_split

    labels = torch.tensor([0] * 10 + [1] * 3 + [2] * 2)
    images = torch.arange(15, dtype=torch.float32).div(15).view(15, 1, 1, 1)
    data = ImageSet(images, labels, ("a", "b", "c"))
    train, test = holdout_split(data, 0.3, seed=0)
    assert test.class_counts().tolist() == [3, 1, 1] and train.class_counts().tolist() == [7, 2, 1]
    assert not set(train.images.flatten().tolist()) & set(test.images.flatten().tolist())
    again, _ = holdout_split(data, 0.3, seed=0)
    assert torch.equal(again.images, train.images)
    with pytest.raises(ValueError, match="strictly between 0 and 1"):
        holdout_split(data, 1.0)


def test_a_long_cpu_run_is_warned_about_with_its_estimated_time(monkeypatch, tmp_path, capsys):
    import importlib

    evaluate = importlib.import_module("glico.experiments.evaluate")
    text = evaluate.cpu_time_warning("wrn-28-10", (3, 32, 32), 10, 128, 8000, "glico evaluate")
    assert text and ("hours" in text or "days" in text)
    assert "--classifier wrn-10-1" in text and "--device cuda" in text
    assert evaluate.cpu_time_warning("weak", (3, 32, 32), 10, 128, 8000, "glico evaluate") is None
    seen = []
    monkeypatch.setattr(importlib.import_module("glico.experiments.grid"), "cpu_time_warning", lambda *a, **k: seen.append(a) or "WARNED")
    assert main(["evaluate", "--data", "digits", "--spc", "2", "--seeds", "0", "--methods", "baseline",
                 "--classifier", "weak", "--epochs", "1", "--max-test", "20", "--quiet",
                 "--out", str(tmp_path / "e")]) == 0
    assert "WARNED" in capsys.readouterr().out
    assert seen[0][0] == "weak" and seen[0][4] == importlib.import_module("glico.experiments.downstream").steps_for(20, 128, 1)


def test_reconstructions_png_puts_each_row_of_originals_above_its_reconstructions(tmp_path):
    from glico.viz import save_grid, write_fit_pictures

    m = GLICO(image_shape=(1, 8, 8), num_classes=3, code_dim=8, loss=PixelLoss(p=2))
    x, y = toy_data(n_per_class=3)  # 9 images: 2 rows of up to 8
    fit(m, x, y, config=FitConfig(epochs=1, progress=False))
    write_fit_pictures(m, tmp_path, y, train_images=x)
    save_grid(torch.zeros(32, 1, 8, 8), tmp_path / "four_rows.png", nrow=8)
    assert Image.open(tmp_path / "reconstructions.png").size == Image.open(tmp_path / "four_rows.png").size
    shown = np.asarray(Image.open(tmp_path / "reconstructions.png").convert("L"), dtype=np.float32) / 255
    cell = shown[2:66, 2:66][::8, ::8]  # the first original, enlarged 8x by nearest neighbour
    np.testing.assert_allclose(cell, x[0, 0].numpy(), atol=1 / 255)


def test_top5_is_left_out_with_five_classes_or_fewer(tmp_path, capsys):
    from tests.glico.test_classify import _write_folder

    data = _write_folder(tmp_path / "three")
    assert main(["evaluate", "--data", f"folder:{data}", "--spc", "2", "--seeds", "0", "--methods", "baseline",
                 "--classifier", "weak", "--epochs", "1", "--quiet", "--out", str(tmp_path / "e")]) == 0
    out = capsys.readouterr().out
    results = json.loads((tmp_path / "e" / "results.json").read_text())
    assert results["runs"][0]["top5"] is None and results["summary"][0]["top5"] is None
    assert "top-5" not in (tmp_path / "e" / "results.md").read_text() and "top-5" not in out


def test_results_plot_starts_at_zero(tmp_path, monkeypatch):
    from matplotlib.figure import Figure

    from glico.experiments.evaluate import plot_results

    seen = []
    real = Figure.savefig
    monkeypatch.setattr(Figure, "savefig", lambda self, *a, **k: (seen.append(self.axes[0].get_ylim()), real(self, *a, **k)))
    rows = [{"spc": 10, "method": m, "top1": v, "top1_ste": 0.5} for m, v in (("a", 61.0), ("b", 63.0))]
    plot_results(rows, tmp_path / "bars.png", "t")
    plot_results(rows + [{**r, "spc": 25, "top1": r["top1"] + 5} for r in rows], tmp_path / "lines.png", "t")
    assert [lo for lo, _ in seen] == [0.0, 0.0] and all(hi > 68 for _, hi in seen)


def test_sample_writes_a_gif_grid_and_refuses_an_unknown_suffix(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["fit", "--data", "digits", "--spc", "2", "--out", str(run), *FIT]) == 0
    assert main(["sample", "--run", str(run), "--n", "2", "--out", str(tmp_path / "new.gif")]) == 0
    assert (tmp_path / "new.gif").is_file() and Image.open(tmp_path / "new.gif").format == "GIF"
    assert main(["sample", "--run", str(run), "--n", "2", "--out", str(tmp_path / "new.pdf")]) == 2
    assert "not an image suffix" in capsys.readouterr().err and not (tmp_path / "new.pdf").exists()


def test_an_interrupted_evaluate_says_so_once_and_overwrite_starts_afresh(tmp_path, monkeypatch, capsys):
    import importlib

    evaluate = importlib.import_module("glico.experiments.evaluate")
    args = ["evaluate", "--data", "digits", "--spc", "2", "--seeds", "0", "--methods", "baseline,cutout",
            "--classifier", "weak", "--epochs", "1", "--max-test", "30", "--quiet", "--out", str(tmp_path / "e")]
    grid = importlib.import_module("glico.experiments.grid")
    real, calls = grid.train_and_score, []

    def stop_second(*a, **k):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(grid, "train_and_score", stop_second)
    assert main(args) == 130
    captured = capsys.readouterr()
    said = [line for line in (captured.out + captured.err).splitlines() if "interrupted" in line]
    assert len(said) == 1 and said[0].startswith("glico evaluate: interrupted; 1 finished run(s) kept")
    monkeypatch.setattr(grid, "train_and_score", real)
    assert main(args) == 2 and "--overwrite to replace them" in capsys.readouterr().err
    assert main(args + ["--overwrite"]) == 0
    assert (tmp_path / "e" / "runs.jsonl.replaced").is_file() and (tmp_path / "e" / "results.json").is_file()
    assert main(args + ["--overwrite", "--resume"]) == 2


def test_every_command_help_has_a_description_and_an_example(capsys):
    for command in ("demo", "fit", "sample", "evaluate", "ablate", "merge", "train", "predict", "export"):
        with pytest.raises(SystemExit):
            main([command, "--help"])
        text = capsys.readouterr().out
        assert "example: glico " + command in text, command
        usage_end = text.index("\n\n")
        assert text[usage_end:].strip().split("\n")[0][:1].isupper(), command  # a description follows the usage


def test_a_fit_shorter_than_one_log_interval_reports_its_first_and_last_loss(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["fit", "--data", "digits", "--spc", "2", "--out", str(run), *FIT]) == 0  # 10 steps < 50
    history = json.loads((run / "history.json").read_text())
    assert history["step"] == [1, 10] and history["reconstruction"][0] != history["reconstruction"][1]
    first, last = re.search(r"reconstruction loss ([0-9.]+) -> ([0-9.]+)", capsys.readouterr().out).groups()
    assert first != last
