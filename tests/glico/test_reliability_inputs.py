"""Bad inputs at the entry points (Python API and `glico fit`) get clear errors that say what was received
and what is accepted; and the input -> behaviour tables of docs/reliability.md name tests that exist."""
import ast
import re
import tarfile
from pathlib import Path

import pytest
import torch

from glico.cli import main
from glico.losses import PixelLoss
from glico.model import GLICO
from glico.names import resolve
from glico.training import FitConfig, fit, resolve_device

ROOT = Path(__file__).resolve().parents[2]
TINY = ["--spc", "2", "--epochs", "1", "--quiet", "--code-dim", "8", "--batch-size", "8", "--loss", "pixel"]


def _model() -> GLICO:
    return GLICO(image_shape=(1, 8, 8), num_classes=3, code_dim=8, loss=PixelLoss())


def _fit(images, labels, unlabeled=None):
    fit(_model(), images, labels, unlabeled=unlabeled, config=FitConfig(epochs=1, progress=False))


LABELS = torch.tensor([0, 0, 1, 1, 2, 2])


# ------------------------------------------------------------------------------------------ Python API
def test_fit_rejects_infinite_pixels():
    x = torch.rand(6, 1, 8, 8)
    x[2, 0, 3, 3] = float("inf")
    with pytest.raises(ValueError, match="1 NaN or infinite values"):
        _fit(x, LABELS)


@pytest.mark.parametrize(
    "labels,error,match",
    [
        (torch.tensor([0, 0, 1, 1, 2, -1]), ValueError, "negative label -1"),
        (torch.tensor([0, 1, 2, 3, 3, 3]), ValueError, "classes 0..3, but the model was built for num_classes=3"),
        (torch.tensor([0.0, 0, 1, 1, 2, 2]), TypeError, "integer class indices 0..C-1; got dtype torch.float32"),
        (torch.tensor([[0, 0, 1], [1, 2, 2]]), ValueError, r"shape \(N,\); got \(2, 3\)"),
    ],
)
def test_fit_rejects_labels_outside_the_classes(labels, error, match):
    with pytest.raises(error, match=match):
        _fit(torch.rand(6, 1, 8, 8), labels)


@pytest.mark.parametrize(
    "unlabeled,match",
    [
        (torch.rand(3, 1, 16, 16), r"unlabeled images have shape \(1, 16, 16\); expected \(1, 8, 8\)"),
        (torch.rand(3, 1, 8, 8) * 2, r"unlabeled must have values in \[0, 1\]"),
        (torch.randint(0, 255, (3, 1, 8, 8), dtype=torch.uint8), "divide uint8 images by 255"),
    ],
)
def test_fit_rejects_bad_unlabeled_images(unlabeled, match):
    with pytest.raises((ValueError, TypeError), match=match):
        _fit(torch.rand(6, 1, 8, 8), LABELS, unlabeled)


@pytest.mark.parametrize("device,match", [("tpu", "unknown device 'tpu'"), ("cuda:7", "cuda:7"), ("meta", "not supported")])
def test_unknown_or_absent_device(device, match):
    if device == "cuda:7" and torch.cuda.device_count() > 7:
        pytest.skip("this machine has a cuda:7")
    with pytest.raises(ValueError, match=match):
        resolve_device(device)
    with pytest.raises(ValueError, match=match):
        fit(_model(), torch.rand(6, 1, 8, 8), LABELS, config=FitConfig(epochs=1, progress=False, device=device))


@pytest.mark.parametrize("family,name", [("noise", "pink"), ("classifier", "resnet9000"), ("loss", "l3")])
def test_unknown_family_name_lists_the_valid_ones(family, name):
    with pytest.raises(ValueError, match=rf"unknown {family} '{name}'; valid: "):
        resolve(family, name)


def test_sample_rejects_classes_the_model_does_not_have():
    m = _model()
    fit(m, torch.rand(6, 1, 8, 8), LABELS, config=FitConfig(epochs=1, progress=False))
    with pytest.raises(ValueError, match=r"labels must be in 0..2; got values from 0 to 5"):
        m.sample([0, 5])


# ------------------------------------------------------------------------------------------ command line
def _cli_error(capsys, *argv) -> str:
    assert main(["fit", *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("glico fit: error: ") and "Traceback" not in err, err
    return err


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("GLICO_CACHE_DIR", str(tmp_path / "cache"))


def test_cli_nonexistent_data_path(tmp_path, capsys, cache):
    err = _cli_error(capsys, "--data", f"folder:{tmp_path}/nonexistent", *TINY, "--out", str(tmp_path / "r"))
    assert "nonexistent does not exist" in err and "train/ and test/" in err


def test_cli_empty_data_folder(tmp_path, capsys, cache):
    (tmp_path / "empty").mkdir()
    err = _cli_error(capsys, "--data", f"folder:{tmp_path}/empty", *TINY, "--out", str(tmp_path / "r"))
    assert "is empty" in err and "train/<class>/<image>" in err


def test_cli_archive_that_is_not_one(tmp_path, capsys, cache):
    bogus = tmp_path / "data.tar.xz"
    bogus.write_bytes(b"this is not an xz archive" * 40)
    err = _cli_error(capsys, "--data", f"folder:{bogus}", *TINY, "--out", str(tmp_path / "r"))
    assert "could not be read as a tar archive" in err and "corrupt, truncated, or have the wrong extension" in err


def test_cli_archive_without_images(tmp_path, capsys, cache):
    empty = tmp_path / "nothing.tar"
    with tarfile.open(empty, "w"):
        pass
    err = _cli_error(capsys, "--data", f"folder:{empty}", *TINY, "--out", str(tmp_path / "r"))
    assert "contains no files" in err


def test_cli_image_size_the_generator_cannot_make(tmp_path, capsys):
    err = _cli_error(capsys, "--data", "digits", "--image-size", "24", *TINY, "--out", str(tmp_path / "r"))
    assert "power of two from 8 to 256" in err and "got 24" in err and "--image-size 32" in err
    assert not (tmp_path / "r").exists()  # refused before the data are read or the run folder is made


def test_cli_vgg_weights_of_the_wrong_network(tmp_path, capsys):
    wrong = tmp_path / "linear.pt"
    torch.save(torch.nn.Linear(2, 2).state_dict(), wrong)
    err = _cli_error(capsys, "--data", "digits", *TINY, "--loss", "perceptual", "--vgg-weights", str(wrong),
                     "--out", str(tmp_path / "r"))
    assert "is not a VGG-16 state_dict" in err and "found keys like ['bias', 'weight']" in err


def test_cli_vgg_weights_that_are_not_a_torch_file(tmp_path, capsys):
    junk = tmp_path / "vgg.pth"
    junk.write_text("not weights")
    err = _cli_error(capsys, "--data", "digits", *TINY, "--loss", "perceptual", "--vgg-weights", str(junk),
                     "--out", str(tmp_path / "r"))
    assert str(junk) in err


def test_cli_unknown_data_scheme_and_device(tmp_path, capsys):
    err = _cli_error(capsys, "--data", "mnist:/x", *TINY, "--out", str(tmp_path / "r"))
    assert "unknown data SPEC 'mnist:/x'" in err and "folder:PATH" in err
    err = _cli_error(capsys, "--data", "digits", *TINY, "--device", "tpu", "--out", str(tmp_path / "r"))
    assert "unknown device 'tpu'" in err


def test_cli_bad_checkpoint_settings(tmp_path, capsys):
    # argparse refuses these itself, with the usage line, before anything is read or written.
    for flag, value, message in [("--checkpoint-every", "-1", "expected a whole number >= 0, got -1"),
                                 ("--checkpoint-minutes", "nan", "expected a finite number, got 'nan'"),
                                 ("--lr", "0", "expected a number > 0, got '0'")]:
        with pytest.raises(SystemExit) as info:
            main(["fit", "--data", "digits", *TINY, flag, value, "--out", str(tmp_path / "r")])
        err = capsys.readouterr().err
        assert info.value.code == 2 and f"glico fit: error: argument {flag}: {message}" in err, err
        assert not (tmp_path / "r").exists()


# ------------------------------------------------------------------------------------------ docs in sync
def _test_tables(doc: Path) -> list[tuple[str, list[str]]]:
    """(first cell, test references) for every row of every table in ``doc`` whose last column is 'Test'."""
    rows, header = [], None
    for line in doc.read_text().splitlines():
        if not line.startswith("|"):
            header = None
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if header is None:
            header = cells
        elif not set(line) <= set("|-: ") and header[-1].lower() == "test":
            rows.append((cells[0], re.findall(r"`(tests/[^`]+)`", cells[-1])))
    return rows


def _defined_tests(path: Path) -> set[str]:
    """Test functions of a file: ``name`` at module level, ``Class::name`` in classes."""
    tree = ast.parse(path.read_text())
    names = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            names.add(node.name)
        elif isinstance(node, ast.ClassDef):
            names |= {f"{node.name}::{f.name}" for f in node.body if isinstance(f, ast.FunctionDef)}
    return names


def test_docs_tables_name_tests_that_exist():
    rows = _test_tables(ROOT / "docs" / "reliability.md")
    assert len(rows) >= 40, "the tables of docs/reliability.md lost their rows"
    assert not [inp for inp, refs in rows if not refs], "rows without a test"
    missing = []
    for inp, refs in rows:
        for ref in refs:
            file, _, name = ref.partition("::")
            path = ROOT / file
            if not path.is_file() or name not in _defined_tests(path):
                missing.append(f"{inp!r} -> {ref}")
    assert not missing, "docs/reliability.md names tests that do not exist:\n" + "\n".join(missing)


def test_the_docs_table_check_can_fail(tmp_path):
    doc = tmp_path / "doc.md"
    doc.write_text("| Input | Behaviour | Test |\n|---|---|---|\n| x | y | `tests/glico/test_reliability_inputs.py::test_gone` |\n"
                   "| z | w | |\n\n| Other | table |\n|---|---|\n| a | b |\n")
    rows = _test_tables(doc)
    assert rows == [("x", ["tests/glico/test_reliability_inputs.py::test_gone"]), ("z", [])]
    assert "test_gone" not in _defined_tests(ROOT / "tests/glico/test_reliability_inputs.py")
