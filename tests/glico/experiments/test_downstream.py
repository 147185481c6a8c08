"""The downstream classifier recipe: budget, scoring, precision and memory-format choices."""
import pytest
import torch
from torch import nn

from glico.experiments import downstream
from glico.experiments.downstream import TrainConfig, evaluate, resolve_precision, steps_for, train_classifier
from tolerances import tol


def test_budget_is_epochs_over_the_oversampled_split():
    assert steps_for(100, 128, 200) == 200 * 40  # the paper's CIFAR-10 at 10 per class: 8000 steps
    assert steps_for(10_000, 128, 2) == 2 * 79  # large splits are not oversampled
    assert steps_for(1, 128, 0) == 1


class FixedLogits(nn.Module):
    """Logits = one-hot rows stored per image (image i is a constant image of value i / 100)."""

    def __init__(self, logits: torch.Tensor) -> None:
        super().__init__()
        self.logits = logits

    def forward(self, x):
        return self.logits[(x[:, 0, 0, 0] * 100).round().long()]


def test_top1_and_top5_count_exactly():
    n, k = 12, 7
    logits = torch.arange(k, dtype=torch.float32).repeat(n, 1)  # class 6 highest, then 5, 4, ...
    labels = torch.tensor([6, 5, 4, 3, 2, 1, 0, 6, 6, 2, 1, 0])
    images = (torch.arange(n, dtype=torch.float32) / 100).view(n, 1, 1, 1).expand(n, 1, 2, 2).contiguous()
    acc = evaluate(FixedLogits(logits), images, labels, batch_size=5)
    assert acc["top1"] == pytest.approx(100 * 3 / 12)  # labels 6
    assert acc["top5"] == pytest.approx(100 * 8 / 12)  # labels 6, 5, 4, 3, 2


def test_precision_names_and_where_bf16_runs(monkeypatch):
    assert resolve_precision("auto", "cpu") == "fp32"
    assert resolve_precision("fp32", "cpu") == "fp32"
    with pytest.raises(ValueError, match="'bf16' .* CUDA devices only; this run is on cpu"):
        resolve_precision("bf16", "cpu")
    with pytest.raises(ValueError, match="precision must be one of auto, fp32, bf16"):
        resolve_precision("fp16", "cpu")
    with pytest.raises(ValueError, match="precision must be one of"):
        TrainConfig(precision="half")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    for capability, want in (((8, 0), "bf16"), ((9, 0), "bf16"), ((7, 5), "fp32")):
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None, c=capability: c)
        assert resolve_precision("auto", "cuda") == want
        assert resolve_precision("fp32", "cuda") == "fp32"


def _tiny(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, stride=2), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4))


def test_channels_last_trains_the_same_classifier():
    g = torch.Generator().manual_seed(0)
    images, labels = torch.rand(24, 3, 12, 12, generator=g), torch.randint(0, 4, (24,), generator=g)
    cfg = dict(steps=3, batch_size=8, lr=0.05, crop_pad=2, seed=1, progress=False)
    plain = train_classifier(_tiny(), images, labels, TrainConfig(**cfg, channels_last=False))
    fast = train_classifier(_tiny(), images, labels, TrainConfig(**cfg, channels_last=True))
    for p, q in zip(plain.parameters(), fast.parameters()):
        torch.testing.assert_close(q, p, **tol(torch.float32))
        assert q.is_contiguous()  # handed back in the default layout
    assert all(p.dtype == torch.float32 for p in fast.parameters())


def test_bf16_request_off_cuda_fails_before_training():
    model = _tiny()
    before = [p.clone() for p in model.parameters()]
    with pytest.raises(ValueError, match="CUDA devices only"):
        train_classifier(model, torch.rand(4, 3, 8, 8), torch.zeros(4, dtype=torch.long),
                         TrainConfig(steps=2, batch_size=2, precision="bf16", progress=False))
    assert all(torch.equal(p, b) for p, b in zip(model.parameters(), before))


def test_bf16_means_autocast_and_channels_last_batches(monkeypatch):
    """What ``bf16`` does inside the step, checked on CPU with the device check mocked: the forward
    runs under bf16 autocast and sees channels-last batches; the loss gets float32 logits."""
    monkeypatch.setattr(downstream, "resolve_precision", lambda p, d: "bf16")
    calls, layouts = [], []

    class Spy:
        def __init__(self, device_type, dtype=None, enabled=True):
            calls.append((device_type, dtype, enabled))

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

    monkeypatch.setattr(torch, "autocast", Spy)
    model = _tiny()
    model[0].register_forward_pre_hook(lambda m, args: layouts.append(args[0].is_contiguous(memory_format=torch.channels_last)
                                                                      and not args[0].is_contiguous()))
    train_classifier(model, torch.rand(6, 3, 8, 8), torch.zeros(6, dtype=torch.long),
                     TrainConfig(steps=2, batch_size=3, progress=False))
    assert calls == [("cpu", torch.bfloat16, True)] * 2
    assert layouts == [True, True]
    assert all(p.is_contiguous() for p in model.parameters()) and not model.training


def test_interrupted_training_hands_the_classifier_back_in_the_default_layout():
    def policy(x, y, idx):
        raise KeyboardInterrupt

    model = _tiny()
    with pytest.raises(KeyboardInterrupt):
        train_classifier(model, torch.rand(6, 3, 8, 8), torch.zeros(6, dtype=torch.long),
                         TrainConfig(steps=2, batch_size=3, progress=False, channels_last=True), policy=policy)
    assert all(p.is_contiguous() for p in model.parameters()) and not model.training


def test_auto_follows_the_device(monkeypatch):
    seen = []
    real = downstream.resolve_precision
    monkeypatch.setattr(downstream, "resolve_precision", lambda p, d: seen.append(real(p, d)) or seen[-1])
    train_classifier(_tiny(), torch.rand(4, 3, 8, 8), torch.zeros(4, dtype=torch.long),
                     TrainConfig(steps=1, batch_size=2, progress=False))
    assert seen == ["fp32"]


def test_cpu_default_trains_in_channels_last():
    # channels_last=None means channels-last batches on the CPU (measured faster there), and the model
    # is handed back in the default layout.
    layouts = []
    model = _tiny()
    model[0].register_forward_pre_hook(
        lambda m, args: layouts.append(args[0].is_contiguous(memory_format=torch.channels_last)))
    images, labels = torch.rand(8, 3, 12, 12), torch.arange(4).repeat(2)
    train_classifier(model, images, labels, TrainConfig(steps=2, batch_size=4, progress=False))
    assert layouts == [True, True]
    assert all(p.is_contiguous() for p in model.parameters())
