"""The final classifier: glico train writes a model folder that loads back to the same network, glico
predict on the test folder reproduces train's test score, export round-trips, a stopped training resumes
to the uninterrupted weights, and bad model folders, files and flags get clear errors."""
import json
import re

import numpy as np
import pytest
import torch
from PIL import Image

from glico.classify import (TrainedClassifier, export_classifier, folder_accuracy, image_files, load_classifier,
                            predict_files, recipe_for, train_final_classifier)
from glico.cli import main
from glico.data import load_data
from glico.data.decode import decode_file
from tests.glico.signal_at import SignalAt
from tolerances import tol

FAST = ["--classifier", "weak", "--epochs", "1", "--fit-epochs", "3", "--loss", "pixel", "--code-dim", "8", "--quiet"]


def _write_folder(root, n_train=4, n_test=3, size=8, width=None):
    """train/ and test/ with 3 classes of distinct RGB patterns (lossless PNGs)."""
    g = np.random.default_rng(0)
    width = width or size
    for split, n in (("train", n_train), ("test", n_test)):
        for c, name in enumerate(("ant", "bee", "cat")):
            d = root / split / name
            d.mkdir(parents=True)
            for i in range(n):
                img = (g.random((size, width, 3)) * 40).astype(np.uint8)
                img[c * size // 3 : (c + 1) * size // 3, :, c] = 230
                Image.fromarray(img).save(d / f"{i}.png")
    return root


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return _write_folder(tmp_path_factory.mktemp("imgs") / "data")


@pytest.fixture(scope="module")
def trained(folder, tmp_path_factory):
    out = tmp_path_factory.mktemp("model") / "m"
    assert main(["train", "--data", f"folder:{folder}", "--out", str(out), *FAST]) == 0
    return out


def test_train_writes_a_model_folder_that_loads_to_the_same_network(trained, folder):
    meta = json.loads((trained / "model.json").read_text())
    assert meta["format"] == "glico-classifier-v1" and meta["class_names"] == ["ant", "bee", "cat"]
    assert meta["preprocessing"]["image_size"] == 8 and meta["preprocessing"]["channels"] == 3
    assert meta["method"] == "glico" and meta["recipe"]["classifier"] == "weak" and meta["test"]["n"] == 9
    assert meta["n_train"] == 12 and meta["per_class"] == [4, 4, 4]  # all the training images by default
    state = torch.load(trained / "weights.pt", weights_only=True)
    assert all(isinstance(v, torch.Tensor) for v in state.values())
    assert not (trained / "train-state.pt").exists()  # the resumable state goes when the training ends
    assert (trained / "glico" / "samples.png").is_file() and (trained / "glico" / "run.json").is_file()
    model = load_classifier(trained)
    assert isinstance(model, TrainedClassifier) and model.class_names == ("ant", "bee", "cat")
    data = load_data(f"folder:{folder}")
    for k, v in model.network.state_dict().items():
        torch.testing.assert_close(v, state[k], rtol=0, atol=0)
    # The score model.json records is the loaded network's on the test split.
    pred = model.probabilities(data.test.images).argmax(1)
    assert 100.0 * float((pred == data.test.labels).float().mean()) == pytest.approx(meta["test"]["top1"])
    # The GLICO fit inside is a 'glico fit' run folder: glico sample reads it.
    assert main(["sample", "--run", str(trained / "glico"), "--n", "2", "--out", str(trained / "s.png")]) == 0


def test_predict_on_the_test_folder_reproduces_trains_score(trained, folder, tmp_path, capsys):
    csv_out = tmp_path / "p.csv"
    assert main(["predict", "--model", str(trained), str(folder / "test"), "--out", str(csv_out), "--quiet"]) == 0
    err = capsys.readouterr().err
    want = json.loads((trained / "model.json").read_text())["test"]["top1"]
    got = float(re.search(r"top-1 ([0-9.]+) %", err)[1])
    assert got == pytest.approx(round(want, 2), abs=0.005)
    lines = csv_out.read_text().splitlines()
    assert lines[0] == "file,class,probability,top,error" and len(lines) == 10
    first = lines[1].split(",")
    assert first[1] in ("ant", "bee", "cat") and 0 < float(first[2]) <= 1 and first[3].count(":") == 3


def test_predict_reports_unreadable_files_and_goes_on(trained, folder, tmp_path, capsys):
    d = tmp_path / "mixed"
    d.mkdir()
    (d / "fake.png").write_bytes(b"this is not an image")
    Image.open(folder / "test" / "bee" / "0.png").save(d / "real.png")
    out = tmp_path / "p.jsonl"
    assert main(["predict", "--model", str(trained), str(d), "--out", str(out), "--quiet", "--top-k", "5"]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    bad = next(r for r in rows if r["file"].endswith("fake.png"))
    good = next(r for r in rows if r["file"].endswith("real.png"))
    assert bad["class"] is None and bad["error"] and "BytesIO" not in bad["error"]
    assert good["error"] is None and len(good["top"]) == 3  # top-k capped at the number of classes
    assert abs(sum(p for _, p in good["top"]) - 1) < 1e-5
    assert "could not read" in capsys.readouterr().err
    only_bad = tmp_path / "bad"
    only_bad.mkdir()
    (only_bad / "x.jpg").write_bytes(b"nope")
    assert main(["predict", "--model", str(trained), str(only_bad), "--quiet"]) == 2
    assert main(["predict", "--model", str(trained), str(tmp_path / "missing"), "--quiet"]) == 2


def test_channels_are_converted_for_the_model(trained):
    model = load_classifier(trained)
    g = torch.Generator().manual_seed(0)
    grey = torch.randint(0, 256, (1, 8, 8), generator=g, dtype=torch.uint8)
    torch.testing.assert_close(model.prepare([grey]), model.prepare([grey.expand(3, -1, -1)]), **tol(torch.float32))
    rgb = torch.rand(3, 8, 8, generator=g)
    one = TrainedClassifier(torch.nn.Identity(), ["a"], 8, 1)
    luma = 0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2]
    torch.testing.assert_close(one.prepare([rgb])[0, 0], luma, **tol(torch.float32))
    big = torch.rand(3, 16, 24, generator=g)  # resized (shorter side) and centre-cropped
    assert model.prepare([big]).shape == (1, 3, 8, 8)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        model.prepare([rgb * 2])


def test_export_round_trips(trained, tmp_path, capsys):
    model = load_classifier(trained)
    x = torch.rand(5, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        want = model(x)
    assert main(["export", "--model", str(trained), "--out", str(tmp_path / "m.pt")]) == 0
    assert "match the eager model" in capsys.readouterr().out
    torch.testing.assert_close(torch.jit.load(str(tmp_path / "m.pt"))(x), want, **tol(torch.float32))
    res = export_classifier(model, tmp_path / "m.pt2", "pt2")
    assert res["checked_with"] == "torch.export.load"
    torch.testing.assert_close(torch.export.load(str(tmp_path / "m.pt2")).module()(x), want, **tol(torch.float32))
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    res = export_classifier(model, tmp_path / "m.onnx", "onnx")
    assert res["checked_with"].startswith("onnxruntime")
    got = ort.InferenceSession(str(tmp_path / "m.onnx")).run(["logits"], {"images": x.numpy()})[0]
    torch.testing.assert_close(torch.from_numpy(got), want, **tol(torch.float32))
    with pytest.raises(ValueError, match="torchscript, onnx, pt2"):
        export_classifier(model, tmp_path / "m.x", "tflite")


def test_bad_model_folders_are_refused_clearly(trained, tmp_path):
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(trained, bad)
    meta = json.loads((bad / "model.json").read_text())
    (bad / "model.json").write_text(json.dumps({**meta, "glico_version": "99.0.0"}))
    with pytest.raises(ValueError, match="newer than this glico"):
        load_classifier(bad)
    (bad / "model.json").write_text(json.dumps({**meta, "format": "something-else"}))
    with pytest.raises(ValueError, match="glico-classifier-v1"):
        load_classifier(bad)
    (bad / "model.json").write_text(json.dumps(meta))
    torch.save({"x": torch.zeros(2)}, bad / "weights.pt")
    with pytest.raises(ValueError, match="does not fit a weak"):
        load_classifier(bad)
    (bad / "weights.pt").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="could not be read"):
        load_classifier(bad)
    with pytest.raises(FileNotFoundError, match="'glico train --run PATH"):
        load_classifier(trained / "glico")
    assert main(["predict", "--model", str(tmp_path), str(trained)]) == 2


def test_train_refuses_a_used_folder_and_mismatched_run_flags(trained, folder, capsys):
    assert main(["train", "--data", f"folder:{folder}", "--out", str(trained), *FAST]) == 2
    assert "--resume to continue it, --overwrite" in capsys.readouterr().err
    assert main(["train", "--run", str(trained / "glico"), "--spc", "2", "--out", str(trained / "x"), *FAST[:4]]) == 2
    assert "--spc 2 differs from the fit" in capsys.readouterr().err
    assert main(["train", "--run", str(trained / "glico"), "--method", "mixup", "--out", str(trained / "x")]) == 2
    assert main(["train", "--out", str(trained / "x")]) == 2
    assert "give --data" in capsys.readouterr().err


def test_train_with_run_equals_train_that_fits(folder, tmp_path):
    """glico fit then glico train --run gives the classifier glico train makes when it fits itself."""
    fit_args = ["--epochs", "3", "--loss", "pixel", "--code-dim", "8", "--quiet", "--spc", "3"]
    assert main(["fit", "--data", f"folder:{folder}", "--out", str(tmp_path / "run"), *fit_args]) == 0
    down = ["--classifier", "weak", "--epochs", "1", "--quiet"]
    assert main(["train", "--run", str(tmp_path / "run"), "--out", str(tmp_path / "a"), *down]) == 0
    assert main(["train", "--data", f"folder:{folder}", "--spc", "3", "--out", str(tmp_path / "b"), *down,
                 "--loss", "pixel", "--code-dim", "8", "--fit-epochs", "3"]) == 0
    a = torch.load(tmp_path / "a" / "weights.pt", weights_only=True)
    b = torch.load(tmp_path / "b" / "weights.pt", weights_only=True)
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0)


def test_train_on_a_split_scores_what_evaluate_scores(tmp_path):
    """The same split, seed and recipe: glico train's test score is glico evaluate's run."""
    recipe = ["--classifier", "weak", "--epochs", "1", "--fit-epochs", "3", "--loss", "pixel", "--code-dim", "8",
              "--batch-size", "64", "--lr", "0.1", "--weight-decay", "5e-3", "--schedule", "cosine",
              "--glico-p", "0.75", "--glico-t", "0.1,0.2,0.3,0.4,0.5", "--quiet"]
    assert main(["evaluate", "--data", "digits", "--spc", "3", "--seeds", "1", "--methods", "glico",
                 "--out", str(tmp_path / "ev"), *recipe]) == 0
    assert main(["train", "--data", "digits", "--spc", "3", "--seed", "1", "--out", str(tmp_path / "tr"),
                 *recipe]) == 0
    ev = json.loads((tmp_path / "ev" / "results.json").read_text())["runs"][0]
    tr = json.loads((tmp_path / "tr" / "model.json").read_text())
    assert tr["test"]["top1"] == ev["top1"] and tr["steps"] == ev["steps"]
    assert tr["recipe"]["flip"] is False  # digits are not mirror-symmetric, as in evaluate


def test_an_interrupted_train_resumes_to_the_uninterrupted_model(trained, folder, tmp_path, monkeypatch, capsys):
    from glico.experiments import policies

    real = policies.build_policy
    monkeypatch.setattr(policies, "build_policy", lambda *a, **k: SignalAt(real(*a, **k), 3))
    out = tmp_path / "m"
    assert main(["train", "--data", f"folder:{folder}", "--out", str(out), *FAST]) == 130
    err = capsys.readouterr().err
    assert "after step 3 of" in err and (out / "train-state.pt").is_file() and not (out / "model.json").exists()
    command = err.split("To continue, run: ")[1].strip()
    assert command.endswith("--resume") and "train" in command
    monkeypatch.setattr(policies, "build_policy", real)
    assert main(["train", "--data", f"folder:{folder}", "--out", str(out), "--loss", "pixel", *FAST[:-3],
                 "--code-dim", "8", "--quiet", "--epochs", "2"]) == 2  # other settings than the stopped one
    assert main(["train", "--data", f"folder:{folder}", "--out", str(out), *FAST, "--resume"]) == 0
    a = torch.load(out / "weights.pt", weights_only=True)
    b = torch.load(trained / "weights.pt", weights_only=True)
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0)
    assert main(["train", "--data", f"folder:{folder}", "--out", str(out), *FAST, "--resume"]) == 2
    assert "has finished" in capsys.readouterr().err


def test_images_that_are_not_square_get_an_error_naming_image_size(tmp_path, capsys):
    wide = _write_folder(tmp_path / "wide", n_train=2, n_test=1, size=8, width=12)
    assert main(["fit", "--data", f"folder:{wide}", "--spc", "2", "--out", str(tmp_path / "f"), "--epochs", "1",
                 "--loss", "pixel", "--quiet"]) == 2
    assert "--image-size N" in capsys.readouterr().err
    assert main(["train", "--data", f"folder:{wide}", "--out", str(tmp_path / "t"), *FAST]) == 2
    err = capsys.readouterr().err
    assert "--image-size N" in err and "such as 8" in err  # 8x12: the largest power of two <= 8
    assert not (tmp_path / "t").exists()  # refused before --out was made
    assert main(["evaluate", "--data", f"folder:{wide}", "--spc", "2", "--seeds", "0", "--methods", "glico",
                 "--out", str(tmp_path / "e"), *FAST]) == 2
    assert "--image-size N" in capsys.readouterr().err
    assert main(["train", "--data", f"folder:{wide}", "--out", str(tmp_path / "t2"), "--image-size", "8", *FAST]) == 0


def test_python_api(folder):
    data = load_data(f"folder:{folder}")
    recipe = recipe_for("cpu", classifier="weak", epochs=1, fit_epochs=2, model={"loss": "pixel", "code_dim": 8})
    model = train_final_classifier(data.train, "baseline", recipe, test=data.test, progress=False)
    assert model.info["glico_fit"] is None and model.info["test"]["n"] == len(data.test)
    assert set(model.predict(data.test.images)) <= {"ant", "bee", "cat"}
    rows = predict_files(model, image_files([folder / "test"]), progress=False)
    acc = folder_accuracy(rows, model.class_names)
    assert acc["top1"] == pytest.approx(model.info["test"]["top1"]) and acc["n"] == len(data.test)
    assert recipe_for("auto", "cuda").classifier == "wrn-28-10" and recipe_for("auto", "cpu").classifier == "wrn-10-1"
    with pytest.raises(ValueError, match="unknown recipe"):
        recipe_for("fast")
    with pytest.raises(ValueError, match="unknown method"):
        train_final_classifier(data.train, "glico++", recipe)


def test_overwrite_removes_only_trains_own_files_and_only_after_the_checks(trained, folder, tmp_path):
    import shutil

    out = tmp_path / "m"
    shutil.copytree(trained, out)
    assert main(["export", "--model", str(out), "--format", "pt2"]) == 0
    (out / "notes.txt").write_text("mine")
    before = (out / "weights.pt").read_bytes()
    # A check that fails (square images needed) leaves the earlier model whole.
    wide = _write_folder(tmp_path / "wide", n_train=2, n_test=1, width=12)
    assert main(["train", "--data", f"folder:{wide}", "--out", str(out), "--overwrite", *FAST]) == 2
    assert (out / "weights.pt").read_bytes() == before and (out / "model.pt2").is_file()
    # A retry with the fix the error names is not blocked by the failed attempt.
    fresh = tmp_path / "fresh"
    assert main(["train", "--data", f"folder:{wide}", "--out", str(fresh), *FAST]) == 2
    assert not (fresh / "train.json").exists()
    assert main(["train", "--data", f"folder:{wide}", "--out", str(fresh), "--image-size", "8", *FAST]) == 0
    # --overwrite replaces the model and removes its stale exports, nothing else of the user's.
    assert main(["train", "--data", f"folder:{folder}", "--out", str(out), "--overwrite", "--method", "baseline",
                 *FAST]) == 0
    assert not (out / "model.pt2").exists() and not (out / "glico").exists() and (out / "notes.txt").is_file()
    assert json.loads((out / "model.json").read_text())["method"] == "baseline"


def test_a_folder_that_is_not_trains_is_left_alone(folder, tmp_path, capsys):
    out = tmp_path / "pkg"
    (out / "glico").mkdir(parents=True)
    (out / "glico" / "__init__.py").write_text("# someone's package")
    assert main(["train", "--data", f"folder:{folder}", "--out", str(out), *FAST]) == 2
    assert "is not a GLICO fit written by glico train" in capsys.readouterr().err
    assert main(["train", "--data", f"folder:{folder}", "--out", str(out), "--overwrite", *FAST]) == 2
    assert (out / "glico" / "__init__.py").is_file()
    (tmp_path / "afile").write_text("x")
    assert main(["train", "--data", f"folder:{folder}", "--out", str(tmp_path / "afile"), *FAST]) == 2
    assert "is a file" in capsys.readouterr().err


def test_run_takes_the_fits_composition_and_refuses_composition_flags(folder, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["fit", "--data", f"folder:{folder}", "--spc", "3", "--out", str(run), "--epochs", "2",
                 "--loss", "pixel", "--code-dim", "8", "--quiet"]) == 0
    assert main(["train", "--run", str(run), "--out", str(tmp_path / "x"), "--code-dim", "64", *FAST[:4]]) == 2
    assert "--code-dim would have no effect" in capsys.readouterr().err
    assert main(["train", "--run", str(run), "--out", str(tmp_path / "y"), *FAST[:4], "--quiet"]) == 0
    recipe = json.loads((tmp_path / "y" / "model.json").read_text())["recipe"]
    assert recipe["model"]["loss"] == "pixel" and recipe["model"]["code_dim"] == 8 and recipe["fit_epochs"] == 2


def test_predict_matches_the_test_set_after_a_resize_and_reports_missing_files(tmp_path, capsys):
    wide = _write_folder(tmp_path / "wide", n_train=3, n_test=3, size=9, width=13)
    out = tmp_path / "m"
    assert main(["train", "--data", f"folder:{wide}", "--image-size", "8", "--out", str(out), *FAST]) == 0
    want = json.loads((out / "model.json").read_text())["test"]["top1"]
    model = load_classifier(out)
    data = load_data(f"folder:{wide}", image_size=8)
    files = image_files([wide / "test"])
    prepared = torch.cat([model.prepare([decode_file(f)]) for f in files])
    torch.testing.assert_close(prepared, data.test.images, rtol=0, atol=0)  # the loader's pixels exactly
    rows = predict_files(model, files + [tmp_path / "missing.png"], progress=False)
    assert folder_accuracy(rows, model.class_names)["top1"] == pytest.approx(want)
    assert rows[-1]["error"] == "no such file" and rows[-1]["class"] is None
    assert main(["predict", "--model", str(out), str(wide / "test"), str(tmp_path / "missing.png"), "--quiet",
                 "--out", str(tmp_path / "p.csv")]) == 0
    assert main(["predict", "--model", str(out), str(wide / "test"), "--out", str(tmp_path)]) == 2
    assert "is a folder" in capsys.readouterr().err
    assert main(["export", "--model", str(out), "--out", str(tmp_path)]) == 2
    assert "is a folder" in capsys.readouterr().err


def test_the_printed_resume_command_runs_and_refusals_name_the_right_flag(folder, tmp_path, monkeypatch, capsys):
    import shlex

    from glico.experiments import policies

    real = policies.build_policy
    monkeypatch.setattr(policies, "build_policy", lambda *a, **k: SignalAt(real(*a, **k), 2))
    out = tmp_path / "m"
    args = ["train", "--data", f"folder:{folder}", "--out", str(out), "--glico-t", "0.2,0.3", "--no-flip", *FAST]
    assert main(args) == 130
    command = capsys.readouterr().err.split("To continue, run: ")[1].strip()
    monkeypatch.setattr(policies, "build_policy", real)
    assert main(args + ["--resume", "--glico-classifier", "none"]) == 2
    err = capsys.readouterr().err
    assert "--glico-classifier: train.json has 'weak', this command 'none'" in err
    words = shlex.split(command)
    assert words[0] == "glico" and "--no-flip" in words and "0.2,0.3" in words
    assert main(words[1:]) == 0
    assert json.loads((out / "model.json").read_text())["recipe"]["flip"] is False


def test_onnx_without_its_packages_says_what_to_install(trained, tmp_path, monkeypatch, capsys):
    import sys

    monkeypatch.setitem(sys.modules, "onnxscript", None)  # an import of it now fails
    assert main(["export", "--model", str(trained), "--format", "onnx", "--out", str(tmp_path / "m.onnx")]) == 2
    assert "pip install 'glico[onnx]'" in capsys.readouterr().err and not (tmp_path / "m.onnx").exists()
