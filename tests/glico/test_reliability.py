"""Interruptions, resume and numerical faults of the fit loop (Python API, CPU).

A fit interrupted by SIGINT/SIGTERM at any step and resumed from its checkpoint must end bit-identical
(torch.equal) to an uninterrupted one; a non-finite loss must stop the fit without overwriting the last
good checkpoint. Signals are real (os.kill on this process), sent from inside a step.
"""
import os
import random
import signal
import threading

import pytest
import torch

from glico.checkpoint import read_checkpoint
from glico.losses import PixelLoss
from glico.model import GLICO, StepLosses
from glico.training import FitConfig, FitInterrupted, NonFiniteLossError, fit

# 12 images, batch 5: 3 steps per epoch (the last one short), 6 epochs = 18 steps.
BASE = dict(epochs=6, batch_size=5, progress=False, log_every=4, seed=3, checkpoint_minutes=0)
TOTAL = 18
STEPS_PER_EPOCH = 3


def toy_data(n_per_class=4, classes=3, size=8):
    """Class c lights up row block c, plus a little seeded noise."""
    g = torch.Generator().manual_seed(0)
    base = torch.zeros(classes, 1, size, size)
    for c in range(classes):
        base[c, :, c * size // classes : (c + 1) * size // classes] = 0.9
    images = (base.repeat_interleave(n_per_class, 0) + 0.05 * torch.rand(classes * n_per_class, 1, size, size, generator=g))
    return images.clamp(0, 1), torch.arange(classes).repeat_interleave(n_per_class)


def small_model(**kw) -> GLICO:
    return GLICO(image_shape=(1, 8, 8), num_classes=3, **{"code_dim": 16, "loss": PixelLoss(p=2), **kw})


@pytest.fixture(scope="module")
def data():
    return toy_data()


def _model(**kw) -> GLICO:
    torch.manual_seed(0)  # the model's own initial weights
    return small_model(**kw)


def _learned(m: GLICO) -> dict[str, torch.Tensor]:
    state = {f"model.{k}": v for k, v in m.state_dict().items()}
    state["codes"] = m.codes.weight.detach()
    return state


def assert_identical(a: GLICO, b: GLICO) -> None:
    sa, sb = _learned(a), _learned(b)
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), f"{k} differs"


@pytest.fixture
def signal_at(monkeypatch):
    """signal_at(step, signum, times=1): the step-th call of step_losses sends ``signum`` to this process
    (``times`` times), i.e. the signal arrives in the middle of that step."""

    def arm(step: int, signum=signal.SIGINT, times: int = 1):
        original = GLICO.step_losses
        calls = {"n": 0}

        def step_losses(self, *a, **k):
            calls["n"] += 1
            if calls["n"] == step:
                for _ in range(times):
                    os.kill(os.getpid(), signum)
            return original(self, *a, **k)

        monkeypatch.setattr(GLICO, "step_losses", step_losses)
        return lambda: monkeypatch.setattr(GLICO, "step_losses", original)

    return arm


@pytest.fixture(scope="module")
def reference(data):
    """The uninterrupted fit: its model and history."""
    m = _model()
    h = fit(m, *data, config=FitConfig(**BASE))
    return m, h


# Interruption points drawn at random (fixed seed: a failure is reproducible), plus the edges: the
# first step, an epoch boundary, and the step before the last.
_rng = random.Random(20240607)
STOPS = sorted({1, STEPS_PER_EPOCH * 2, TOTAL - 1, *_rng.sample(range(2, TOTAL - 1), 3)})


@pytest.mark.parametrize("stop", STOPS)
def test_interrupted_and_resumed_fit_is_bit_identical(stop, data, reference, signal_at, tmp_path):
    ref_model, ref_history = reference
    ckpt = str(tmp_path / "ckpt.pt")
    disarm = signal_at(stop)
    with pytest.raises(FitInterrupted) as info:
        fit(_model(), *data, config=FitConfig(**BASE, checkpoint=ckpt))
    disarm()
    e = info.value
    assert (e.step, e.total_steps, e.signal_name, e.checkpoint) == (stop, TOTAL, "SIGINT", ckpt)
    assert f"after step {stop} of {TOTAL}" in str(e) and ckpt in str(e)
    assert read_checkpoint(ckpt)["extra"]["trainer"]["step"] == stop

    # A fresh process would build a fresh model with other initial weights: the checkpoint replaces them.
    torch.manual_seed(999)
    resumed = small_model()
    h = fit(resumed, *data, config=FitConfig(**BASE, checkpoint=ckpt, resume=True))
    assert_identical(resumed, ref_model)
    assert (h.step, h.total, h.reconstruction, h.classification) == (
        ref_history.step, ref_history.total, ref_history.reconstruction, ref_history.classification)
    assert h.resumed_from == stop
    torch.testing.assert_close(resumed.sample([0, 1, 2, 2], seed=5), ref_model.sample([0, 1, 2, 2], seed=5), rtol=0, atol=0)


def test_sigterm_twice_interrupted_transductive_fit(data, signal_at, tmp_path):
    """Two interruptions (SIGTERM, then SIGINT) of a fit with unlabelled images, other log and checkpoint
    intervals in each session: still identical to the uninterrupted fit."""
    unl = data[0][:4].flip(-1)
    ref = _model()
    fit(ref, *data, unlabeled=unl, config=FitConfig(**BASE))
    ckpt = str(tmp_path / "c.pt")
    disarm = signal_at(5, signal.SIGTERM)
    with pytest.raises(FitInterrupted, match="SIGTERM"):
        fit(_model(), *data, unlabeled=unl, config=FitConfig(**{**BASE, "log_every": 1}, checkpoint=ckpt, checkpoint_every=2))
    disarm()
    disarm = signal_at(6)  # the sixth step of the second session: step 11
    with pytest.raises(FitInterrupted) as info:
        fit(_model(), *data, unlabeled=unl, config=FitConfig(**{**BASE, "log_every": 7}, checkpoint=ckpt, resume=True))
    disarm()
    assert info.value.step == 11
    m = _model()
    fit(m, *data, unlabeled=unl, config=FitConfig(**BASE, checkpoint=ckpt, resume=True))
    assert_identical(m, ref)


class DropoutHead(torch.nn.Module):
    """A latent classifier with dropout: it draws from the global RNG at every step."""

    consumes_codes = True

    def __init__(self, code_dim=16, num_classes=3):
        super().__init__()
        self.num_classes = num_classes
        self.drop = torch.nn.Dropout(0.5)
        self.fc = torch.nn.Linear(code_dim, num_classes)

    def forward(self, z):
        return self.fc(self.drop(z))


def test_resume_restores_the_global_rng_that_dropout_draws_from(data, signal_at, tmp_path):
    def model():
        torch.manual_seed(0)
        return small_model(classifier=DropoutHead())

    ref = model()
    fit(ref, *data, config=FitConfig(**BASE))
    ckpt = str(tmp_path / "c.pt")
    disarm = signal_at(7)
    with pytest.raises(FitInterrupted):
        fit(model(), *data, config=FitConfig(**BASE, checkpoint=ckpt))
    disarm()
    m = model()
    torch.rand(100)  # the new process's global RNG is somewhere else
    fit(m, *data, config=FitConfig(**BASE, checkpoint=ckpt, resume=True))
    assert_identical(m, ref)


def test_signal_handlers_are_restored(data, signal_at, tmp_path):
    mine = lambda signum, frame: None  # noqa: E731
    previous = signal.signal(signal.SIGTERM, mine)
    try:
        before_int = signal.getsignal(signal.SIGINT)
        fit(_model(), *data, config=FitConfig(**{**BASE, "epochs": 1}))
        assert signal.getsignal(signal.SIGTERM) is mine and signal.getsignal(signal.SIGINT) is before_int
        signal_at(2)
        with pytest.raises(FitInterrupted):
            fit(_model(), *data, config=FitConfig(**BASE, checkpoint=str(tmp_path / "c.pt")))
        assert signal.getsignal(signal.SIGTERM) is mine and signal.getsignal(signal.SIGINT) is before_int
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_second_signal_stops_at_once_and_keeps_the_last_checkpoint(data, signal_at, tmp_path):
    ckpt = str(tmp_path / "c.pt")
    signal_at(6, times=2)
    with pytest.raises(KeyboardInterrupt) as info:
        fit(_model(), *data, config=FitConfig(**BASE, checkpoint=ckpt, checkpoint_every=4))
    assert not isinstance(info.value, FitInterrupted)
    assert read_checkpoint(ckpt)["extra"]["trainer"]["step"] == 4


def test_interrupt_without_a_checkpoint_file_says_so(data, signal_at):
    signal_at(3)
    with pytest.raises(FitInterrupted, match="no checkpoint file was configured") as info:
        fit(_model(), *data, config=FitConfig(**BASE))
    assert info.value.checkpoint is None


def test_fit_in_a_worker_thread_installs_no_handlers(data):
    before = signal.getsignal(signal.SIGINT)
    errors = []

    def work():
        try:
            fit(_model(), *data, config=FitConfig(**{**BASE, "epochs": 1}))
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    t = threading.Thread(target=work)
    t.start()
    t.join()
    assert errors == [] and signal.getsignal(signal.SIGINT) is before


def test_checkpoint_schedule(data, monkeypatch, tmp_path):
    import glico.checkpoint

    written = []
    real = glico.checkpoint.save_checkpoint

    def spy(path, model, extra=None, state=None):
        written.append(extra["trainer"]["step"])
        return real(path, model, extra, state)

    monkeypatch.setattr(glico.checkpoint, "save_checkpoint", spy)
    ckpt = str(tmp_path / "c.pt")
    fit(_model(), *data, config=FitConfig(**BASE, checkpoint=ckpt))
    assert written == [TOTAL]
    written.clear()
    fit(_model(), *data, config=FitConfig(**BASE, checkpoint=ckpt, checkpoint_every=5))
    assert written == [5, 10, 15, TOTAL]
    written.clear()
    fit(_model(), *data, config=FitConfig(**{**BASE, "checkpoint_minutes": 1e-9}, checkpoint=ckpt))
    assert written == list(range(1, TOTAL + 1))
    assert [p.name for p in tmp_path.iterdir()] == ["c.pt"]  # no temporary files left behind


def test_resuming_a_finished_fit_changes_nothing(data, reference, tmp_path):
    ckpt = str(tmp_path / "c.pt")
    fit(_model(), *data, config=FitConfig(**BASE, checkpoint=ckpt))
    before = os.stat(ckpt).st_mtime_ns
    m = small_model()
    h = fit(m, *data, config=FitConfig(**BASE, checkpoint=ckpt, resume=True))
    assert_identical(m, reference[0])
    assert h.step == reference[1].step and os.stat(ckpt).st_mtime_ns == before


def _nan_after(monkeypatch, step: int):
    """From the step-th step on, the loss (and so every gradient) is NaN: a diverging fit."""
    original = GLICO.step_losses
    calls = {"n": 0}

    def step_losses(self, *a, **k):
        calls["n"] += 1
        losses = original(self, *a, **k)
        if calls["n"] >= step:
            return StepLosses(losses.total * float("nan"), losses.reconstruction, losses.classification)
        return losses

    monkeypatch.setattr(GLICO, "step_losses", step_losses)


@pytest.mark.parametrize(
    "bad_step,log_every,checkpoint_every,detected,kept",
    [
        (7, 4, 3, 8, 6),  # found at the log point of step 8; the checkpoint of step 6 is kept
        (7, 5, 3, 9, 6),  # found right before the checkpoint of step 9 (not a log point)
        (2, 50, 3, 3, None),  # before any checkpoint: none is written
    ],
)
def test_nonfinite_loss_stops_and_keeps_the_last_good_checkpoint(bad_step, log_every, checkpoint_every, detected, kept,
                                                                 data, monkeypatch, tmp_path):
    ckpt = tmp_path / "c.pt"
    _nan_after(monkeypatch, bad_step)
    cfg = FitConfig(**{**BASE, "log_every": log_every}, checkpoint=str(ckpt), checkpoint_every=checkpoint_every)
    with pytest.raises(NonFiniteLossError) as info:
        fit(_model(), *data, config=cfg)
    e = info.value
    assert (e.step, e.detected_at, e.checkpoint_step) == (bad_step, detected, kept)
    assert f"at step {bad_step}" in str(e) and f"detected at step {detected}" in str(e)
    if kept is None:
        assert not ckpt.exists() and "No checkpoint had been written" in str(e)
        return
    assert f"from step {kept}, is kept" in str(e) and str(ckpt) in str(e)
    payload = read_checkpoint(ckpt)
    assert payload["extra"]["trainer"]["step"] == kept
    assert all(bool(torch.isfinite(v).all()) for v in payload["model"].values() if v.is_floating_point())


def test_nonfinite_weights_are_never_checkpointed(data, tmp_path):
    """A weight can go bad without the loss showing it (here: the classifier, with gamma = 0)."""
    ckpt = tmp_path / "c.pt"

    def poison(step, losses):
        if step == 5:
            with torch.no_grad():
                m.classifier.head.weight.fill_(float("inf"))

    m = _model(gamma=0.0)
    with pytest.raises(NonFiniteLossError, match=r"weights \(classifier\.head\.weight") as info:
        fit(m, *data, config=FitConfig(**{**BASE, "log_every": 1}, checkpoint=str(ckpt), checkpoint_every=3), on_log=poison)
    assert info.value.checkpoint_step == 3 and info.value.detected_at == 6
    assert read_checkpoint(ckpt)["extra"]["trainer"]["step"] == 3


def test_resume_without_a_checkpoint_is_a_clear_error(data, tmp_path):
    with pytest.raises(FileNotFoundError, match="no checkpoint at .*nothing.pt"):
        fit(_model(), *data, config=FitConfig(**BASE, checkpoint=str(tmp_path / "nothing.pt"), resume=True))
    with pytest.raises(ValueError, match="resume=True needs checkpoint"):
        FitConfig(resume=True)


@pytest.fixture(scope="module")
def interrupted_ckpt(data, tmp_path_factory):
    ckpt = str(tmp_path_factory.mktemp("interrupted") / "c.pt")
    fit(_model(), *data, config=FitConfig(**BASE, checkpoint=ckpt, checkpoint_every=4))
    return ckpt


@pytest.mark.parametrize(
    "change,match",
    [
        (dict(lr=2e-3), r"lr: checkpoint has 0\.001, now 0\.002"),
        (dict(seed=4), "seed: checkpoint has 3, now 4"),
        (dict(epochs=7, batch_size=4), "batch_size: checkpoint has 5, now 4"),
        (dict(cosine=False), "cosine"),
    ],
)
def test_resume_with_other_settings_names_them(change, match, data, interrupted_ckpt):
    with pytest.raises(ValueError, match=match):
        fit(_model(), *data, config=FitConfig(**{**BASE, **change}, checkpoint=interrupted_ckpt, resume=True))


def test_a_fit_without_schedule_extended_on_resume_is_the_longer_fit(data, tmp_path):
    """Without the cosine schedule nothing depends on the budget: 2 epochs, then resumed with 5, is the
    5-epoch fit bit for bit."""
    plain = {**BASE, "cosine": False}
    longer = _model()
    fit(longer, *data, config=FitConfig(**{**plain, "epochs": 5}))
    ckpt = str(tmp_path / "c.pt")
    fit(_model(), *data, config=FitConfig(**{**plain, "epochs": 2}, checkpoint=ckpt))
    extended = _model()
    hist = fit(extended, *data, config=FitConfig(**{**plain, "epochs": 5}, checkpoint=ckpt, resume=True))
    assert hist.resumed_from == 2 * STEPS_PER_EPOCH and hist.step[-1] == 5 * STEPS_PER_EPOCH
    for (k, a), b in zip(_learned(longer).items(), _learned(extended).values()):
        torch.testing.assert_close(b, a, rtol=0, atol=0, msg=k)
    with pytest.raises(ValueError, match="cannot continue this fit at step 15"):  # below the steps done
        fit(_model(), *data, config=FitConfig(**{**plain, "epochs": 4}, checkpoint=ckpt, resume=True))


def test_a_finished_cosine_fit_is_extended_by_a_new_cycle(data, interrupted_ckpt, tmp_path):
    import shutil

    ckpt = str(tmp_path / "c.pt")
    shutil.copy(interrupted_ckpt, ckpt)  # a finished 6-epoch (18-step) cosine fit
    before = read_checkpoint(ckpt)["extra"]["trainer"]
    assert before["step"] == TOTAL and before["optimizer"]["param_groups"][0]["lr"] < 1e-5
    hist = fit(_model(), *data, config=FitConfig(**{**BASE, "epochs": 8}, checkpoint=ckpt, resume=True))
    assert hist.resumed_from == TOTAL and hist.step[-1] == 8 * STEPS_PER_EPOCH
    after = read_checkpoint(ckpt)["extra"]["trainer"]
    added = 2 * STEPS_PER_EPOCH
    assert [s["T_max"] for s in after["schedulers"]] == [added, added]  # one cosine cycle over the added steps
    assert all(s["last_epoch"] == added for s in after["schedulers"])
    assert after["optimizer"]["param_groups"][0]["initial_lr"] == BASE.get("lr", FitConfig.lr)


def test_an_unfinished_cosine_fit_cannot_change_its_budget(data, tmp_path):
    ckpt = str(tmp_path / "c.pt")
    with pytest.raises(FitInterrupted):
        fit(_model(), *data, config=FitConfig(**BASE, checkpoint=ckpt),
            on_log=lambda step, _: os.kill(os.getpid(), signal.SIGINT))
    with pytest.raises(ValueError, match="only once it has finished"):
        fit(_model(), *data, config=FitConfig(**{**BASE, "epochs": 8}, checkpoint=ckpt, resume=True))


def test_resume_with_other_data_or_composition_is_refused(data, interrupted_ckpt):
    x, y = data
    with pytest.raises(ValueError, match="training data"):
        fit(_model(), x.flip(-1), y, config=FitConfig(**BASE, checkpoint=interrupted_ckpt, resume=True))
    with pytest.raises(ValueError, match="code_dim: checkpoint has 16, model has 8"):
        fit(_model(code_dim=8), x, y, config=FitConfig(**BASE, checkpoint=interrupted_ckpt, resume=True))
    # Same loss class, another setting: the composition cannot tell, the recorded objective can.
    with pytest.raises(ValueError, match=r"objective: checkpoint fitted with loss PixelLoss\(p=2\).*now loss PixelLoss\(p=1\)"):
        fit(_model(loss=PixelLoss(p=1)), x, y, config=FitConfig(**BASE, checkpoint=interrupted_ckpt, resume=True))


def test_resume_from_a_model_only_checkpoint_is_refused(data, tmp_path):
    m = _model()
    fit(m, *data, config=FitConfig(**{**BASE, "epochs": 1}))
    m.save(tmp_path / "m.pt")
    with pytest.raises(ValueError, match="no trainer state"):
        fit(_model(), *data, config=FitConfig(**BASE, checkpoint=str(tmp_path / "m.pt"), resume=True))


def test_deterministic_option_gives_the_same_result_and_restores_settings(data, reference):
    assert not torch.are_deterministic_algorithms_enabled()
    m = _model()
    fit(m, *data, config=FitConfig(**BASE, deterministic=True))
    assert_identical(m, reference[0])
    assert not torch.are_deterministic_algorithms_enabled()
    assert torch.backends.cudnn.deterministic is False


@pytest.mark.parametrize(
    "kw,match",
    [
        (dict(checkpoint_every=-1), "checkpoint_every"),
        (dict(checkpoint_minutes=-1.0), "checkpoint_minutes"),
        (dict(log_every=0), "log_every"),
        (dict(lr=float("nan")), "learning rates"),
    ],
)
def test_fit_config_rejects_bad_values(kw, match):
    with pytest.raises(ValueError, match=match):
        FitConfig(**kw)
