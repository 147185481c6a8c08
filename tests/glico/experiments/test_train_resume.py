"""A checkpointed downstream training stopped by a signal resumes to the weights of the uninterrupted one,
for every kind of policy state (per-call seeds, GLICO draws, a GLICO bank, a composition), and refuses a
checkpoint of another training."""
import pytest
import torch

from glico import GLICO
from glico.augment import GLICOAugmenter
from glico.classifiers import WeakCNN
from glico.experiments.downstream import TrainConfig, TrainInterrupted, train_classifier
from glico.experiments.policies import build_policy
from glico.losses import PixelLoss
from glico.training import FitConfig, fit
from tests.glico.signal_at import SignalAt
from tests.glico.toy_data import toy_data

STEPS = 9
CFG = TrainConfig(steps=STEPS, batch_size=5, lr=0.05, progress=False, crop_pad=1, cosine=False,
                  milestones=(0.3, 0.6))


@pytest.fixture(scope="module")
def fitted():
    torch.manual_seed(0)
    x, y = toy_data()
    m = GLICO(image_shape=(1, 8, 8), num_classes=3, code_dim=8, loss=PixelLoss(p=2))
    fit(m, x, y, config=FitConfig(epochs=2, progress=False))
    return m, x, y


def _policy(name, fitted, refresh=None):
    aug = GLICOAugmenter(fitted[0], p=0.6, seed=3, refresh_every=refresh) if "glico" in name else None
    return build_policy(name, num_classes=3, glico_augmenter=aug, seed=3, image_size=8)


def _net():
    torch.manual_seed(1)
    return WeakCNN(in_channels=1, num_classes=3, image_size=8)


@pytest.mark.parametrize("name,refresh", [("baseline", None), ("mixup", None), ("glico", None), ("glico", 2),
                                          ("glico+autoaugment", None)])
def test_a_signalled_training_resumes_to_the_uninterrupted_weights(fitted, tmp_path, name, refresh):
    _, x, y = fitted
    whole = train_classifier(_net(), x, y, CFG, policy=_policy(name, fitted, refresh))
    ckpt = tmp_path / "state.pt"
    with pytest.raises(TrainInterrupted) as info:
        train_classifier(_net(), x, y, CFG, policy=SignalAt(_policy(name, fitted, refresh), 4), checkpoint=ckpt)
    assert info.value.step == 4 and info.value.total_steps == STEPS and ckpt.is_file()
    torch.manual_seed(123)  # the global stream is part of the saved state, not of the caller's
    resumed = train_classifier(_net(), x, y, CFG, policy=_policy(name, fitted, refresh), checkpoint=ckpt,
                               resume=True)
    for (k, a), b in zip(whole.state_dict().items(), resumed.state_dict().values()):
        torch.testing.assert_close(b, a, rtol=0, atol=0, msg=k)


def test_resume_continues_the_step_count_and_refuses_another_training(fitted, tmp_path):
    _, x, y = fitted
    ckpt = tmp_path / "state.pt"
    with pytest.raises(TrainInterrupted):
        train_classifier(_net(), x, y, CFG, policy=SignalAt(_policy("baseline", fitted), 2), checkpoint=ckpt)
    with pytest.raises(ValueError, match="the recipe"):
        train_classifier(_net(), x, y, TrainConfig(**{**CFG.__dict__, "lr": 0.01}), checkpoint=ckpt, resume=True)
    with pytest.raises(ValueError, match="training images or labels"):
        train_classifier(_net(), x.flip(0), y.flip(0), CFG, checkpoint=ckpt, resume=True)
    with pytest.raises(ValueError, match="needs the checkpoint"):
        train_classifier(_net(), x, y, CFG, resume=True)
    ckpt.write_bytes(b"not a torch file")
    with pytest.raises(ValueError, match="not a readable"):
        train_classifier(_net(), x, y, CFG, checkpoint=ckpt, resume=True)


def test_a_policy_without_state_is_resumed_with_a_warning(fitted, tmp_path, caplog):
    _, x, y = fitted
    ckpt = tmp_path / "state.pt"

    def plain(images, labels, idx):
        return images, labels

    with pytest.raises(TrainInterrupted):
        train_classifier(_net(), x, y, CFG, policy=SignalAt(plain, 2), checkpoint=ckpt)
    with caplog.at_level("WARNING", logger="glico"):
        train_classifier(_net(), x, y, CFG, policy=plain, checkpoint=ckpt, resume=True)
    assert "draws restart" in caplog.text
