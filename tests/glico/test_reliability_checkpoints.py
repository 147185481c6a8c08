"""Safe loading: checkpoints hold tensors and plain data only, load with weights_only=True, and every
broken, foreign, malicious or incompatible file fails with a clear ValueError while executing nothing."""
import os
import pickle
import zipfile

import pytest
import torch

import glico
from glico.checkpoint import FORMAT, read_checkpoint, save_checkpoint
from glico.cli import main
from glico.interpolation import Lerp
from glico.losses import PixelLoss
from glico.model import GLICO
from glico.training import FitConfig, fit


def _small(**kw) -> GLICO:
    return GLICO(image_shape=(1, 8, 8), num_classes=2, **{"code_dim": 8, "loss": PixelLoss(), **kw})


@pytest.fixture(scope="module")
def good(tmp_path_factory) -> str:
    """A checkpoint written by fit (model + trainer state)."""
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(6, 1, 8, 8, generator=g), torch.tensor([0, 0, 0, 1, 1, 1])
    path = str(tmp_path_factory.mktemp("good") / "c.pt")
    fit(_small(), x, y, config=FitConfig(epochs=2, batch_size=4, progress=False, checkpoint=path))
    return path


class Evil:
    """Unpickling this runs a shell command (it would create ``marker``)."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _plain_only(obj, where="payload"):
    if isinstance(obj, dict):
        for k, v in obj.items():
            assert isinstance(k, (str, int)), f"{where}: key {k!r}"
            _plain_only(v, f"{where}[{k!r}]")
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            _plain_only(v, f"{where}[{i}]")
    else:
        assert obj is None or isinstance(obj, (str, int, float, bool, torch.Tensor)), f"{where}: {type(obj).__name__}"


def test_checkpoint_holds_only_tensors_and_plain_data(good):
    payload = torch.load(good, weights_only=True)
    _plain_only(payload)
    assert payload["format"] == FORMAT and payload["glico_version"] == glico.__version__
    trainer = payload["extra"]["trainer"]
    for key in ("shuffle_rng", "noise_rng", "torch_rng"):
        assert trainer[key].dtype == torch.uint8
    assert {"optimizer", "optimizer_codes", "schedulers", "perm", "step"} <= set(trainer)


def test_truncated_checkpoint(good, tmp_path):
    data = open(good, "rb").read()
    for n in (len(data) // 2, 100, 0):
        bad = tmp_path / f"trunc{n}.pt"
        bad.write_bytes(data[:n])
        with pytest.raises(ValueError, match="truncated, corrupted"):
            read_checkpoint(bad)


def test_random_bytes(tmp_path):
    bad = tmp_path / "noise.pt"
    bad.write_bytes(torch.randint(0, 256, (4096,), dtype=torch.uint8, generator=torch.Generator().manual_seed(1)).numpy().tobytes())
    with pytest.raises(ValueError, match="could not be read as a glico checkpoint"):
        read_checkpoint(bad)


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
@pytest.mark.parametrize("how", ["torch.save", "pickle.dump", "inside-a-checkpoint"])
def test_pickle_with_code_executes_nothing(how, good, tmp_path):
    marker = tmp_path / "marker"
    path = tmp_path / "evil.pt"
    if how == "torch.save":
        torch.save(Evil(marker), path)
    elif how == "pickle.dump":
        path.write_bytes(pickle.dumps(Evil(marker)))
    else:  # a real checkpoint with one entry replaced by the payload
        payload = torch.load(good, weights_only=True)
        payload["extra"]["spec"] = Evil(marker)
        torch.save(payload, path)
    assert not marker.exists()
    with pytest.raises(ValueError, match="never unpickled, for safety"):
        read_checkpoint(path)
    with pytest.raises(ValueError):
        _small().load(path)
    assert not marker.exists()
    if how == "pickle.dump":  # the payload is real: a plain unpickler runs it
        pickle.loads(path.read_bytes())
        assert marker.exists()


def test_pickle_with_code_through_the_cli(tmp_path, capsys):
    marker = tmp_path / "marker"
    run = tmp_path / "run"
    run.mkdir()
    torch.save(Evil(marker), run / "checkpoint.pt")
    assert main(["sample", "--run", str(run), "--out", str(tmp_path / "g.png")]) == 2
    assert "never unpickled" in capsys.readouterr().err
    assert not marker.exists()


@pytest.mark.parametrize(
    "obj,match",
    [
        ({"weight": torch.zeros(3)}, r"not a glico checkpoint .*keys \['weight'\]"),
        (torch.zeros(3), "not a glico checkpoint .*got Tensor"),
        ({"format": FORMAT, "model": [1]}, "not a glico checkpoint"),
    ],
)
def test_a_torch_file_that_is_not_ours(obj, match, tmp_path):
    path = tmp_path / "foreign.pt"
    torch.save(obj, path)
    with pytest.raises(ValueError, match=match):
        read_checkpoint(path)


def test_zip_that_is_not_a_torch_file(tmp_path):
    path = tmp_path / "x.pt"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("hello.txt", "hi")
    with pytest.raises(ValueError, match="could not be read"):
        read_checkpoint(path)


def test_missing_checkpoint(tmp_path):
    with pytest.raises(FileNotFoundError, match="no checkpoint at"):
        read_checkpoint(tmp_path / "none.pt")


@pytest.mark.parametrize(
    "other,match",
    [
        (dict(interpolator=Lerp()), "interpolator: checkpoint has Slerp.*model has Lerp"),
        (dict(code_dim=4), "code_dim: checkpoint has 8, model has 4"),
        (dict(classifier=None), "classifier: checkpoint has WeakCNN, model has None"),
    ],
)
def test_incompatible_composition_names_the_part(other, match, good):
    with pytest.raises(ValueError, match=match):
        _small(**other).load(good)


def test_library_version_is_recorded_and_checked(good, tmp_path, monkeypatch):
    assert read_checkpoint(good)["glico_version"] == glico.__version__  # same version: fine
    _small().load(good)
    m = _small()
    m.load(good)
    major = int(glico.__version__.split(".")[0])
    monkeypatch.setattr(glico, "__version__", f"{major + 1}.0.0")
    save_checkpoint(tmp_path / "newer.pt", m)
    monkeypatch.undo()
    with pytest.raises(ValueError, match=rf"written by glico '{major + 1}\.0\.0', a newer major version.*upgrade"):
        read_checkpoint(tmp_path / "newer.pt")
    payload = torch.load(good, weights_only=True)
    payload["format"] = "glico-checkpoint-v9"
    torch.save(payload, tmp_path / "v9.pt")
    with pytest.raises(ValueError, match="format 'glico-checkpoint-v9'.*reads 'glico-checkpoint-v1' only"):
        read_checkpoint(tmp_path / "v9.pt")


def test_a_crash_while_writing_keeps_the_previous_checkpoint(good, tmp_path, monkeypatch):
    path = tmp_path / "c.pt"
    m = _small()
    m.load(good)
    save_checkpoint(path, m, extra={"n": 1})
    before = path.read_bytes()

    def crash(obj, f, *a, **k):
        f.write(b"half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, m, extra={"n": 2})
    monkeypatch.undo()
    assert path.read_bytes() == before and read_checkpoint(path)["extra"] == {"n": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.pt"]


def test_load_is_exact(good):
    """Loading keeps every saved bit (codes included: they are not re-normalised)."""
    m = _small()
    m.load(good)
    saved = torch.load(good, weights_only=True)["model"]
    assert torch.equal(m.codes.weight.detach(), saved["codes"])
    for k, v in m.generator.state_dict().items():
        assert torch.equal(v, saved[f"generator.{k}"])
