"""Data-parallel training on two CPU ranks (gloo) equals the single process's.

Two processes are spawned once for the module (:func:`two_ranks`); each runs every scenario below with
``data_parallel=True`` in a world of two and saves what it ended with. The parent runs the same scenarios
as one process with ``data_parallel=False`` and compares, to the float32 tolerance of
``tests/tolerances.py``: the distributed BatchNorm against ``nn.BatchNorm2d`` on the whole batch, three
downstream trainings (even and uneven shares, MixUp and CutMix, BatchNorm in a WeakCNN and a WideResNet),
and two GLICO fits (13 images, so ownership is uneven and the last batch of an epoch, one image, leaves a
rank with no rows; unlabelled images; the target cache on and off; a classifier of images and one of
codes). The ranks must also agree with each other bit for bit.

The runs are a few steps each: the ranks sum their shares' gradients where one process sums the whole
batch's, so results differ by float rounding, which SGD and Adam carry from step to step. The tolerance
is not widened for that; the trajectories are kept short instead.

Refusals need no process group: they are raised before any collective, so a world of two is faked.
"""
import copy
import datetime
import os
import socket
import time

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from glico import data_parallel, distributed
from glico.classifiers import LatentMLP, WeakCNN, WideResNet
from glico.experiments.downstream import TrainConfig, train_classifier
from glico.experiments.policies import CutMix, MixUp
from glico.generators import DCGANGenerator
from glico.losses import LaplacianPyramidLoss, PixelLoss
from glico.losses.weighted import WeightedSum
from glico.model import GLICO
from glico.noise import ConcatNoise
from glico.training import FitConfig, fit
from tolerances import tol

WORLD = 2
TOL = tol(torch.float32)
SPAWN_TIMEOUT_S = 240


# ------------------------------------------------------------------------------------------------ data
def _digits(n: int, offset: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` of scikit-learn's 8×8 digits in [0, 1] (1 channel), every class among the first ten."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = torch.from_numpy(bunch.images[offset : offset + n]).float().div(16.0).unsqueeze(1)
    return images.contiguous(), torch.from_numpy(bunch.target[offset : offset + n]).long()


# ------------------------------------------------------------------------------------------------ scenarios
# Each takes ``data_parallel`` (True on the ranks, False in the parent) and returns plain tensors.
BATCHNORM_CASES = {
    # name: (BatchNorm factory, input shape, rank 0's rows, rank 1's rows)
    "2d, shares 3 + 4": (lambda: nn.BatchNorm2d(3), (7, 3, 4, 4), slice(0, 3), slice(3, 7)),
    # Cumulative running averages (momentum None); all rows on rank 0, none on rank 1.
    "1d, shares 6 + 0": (lambda: nn.BatchNorm1d(5, momentum=None), (6, 5), slice(0, 6), slice(6, 6)),
}


def _batchnorm_case(name: str, rank: int | None) -> dict:
    """Two training forwards (the first with a backward), then one in eval mode, of a BatchNorm on a batch
    whose rows are split between the ranks (``rank`` None: the whole batch, plain BatchNorm). Inputs have a
    mean far from 0, so no cancellation hides in the variance."""
    make, shape, *shares = BATCHNORM_CASES[name]
    g = torch.Generator().manual_seed(0)
    x = torch.randn(shape, generator=g) * 2 + 3
    x2 = torch.randn(shape, generator=g) * 0.5 - 1
    upstream = torch.randn(shape, generator=g)
    net = nn.Sequential(make())
    with torch.no_grad():
        net[0].weight.copy_(torch.rand(shape[1], generator=g) + 0.5)
        net[0].bias.copy_(torch.randn(shape[1], generator=g))
    rows = slice(None) if rank is None else shares[rank]
    xr = x[rows].clone().requires_grad_()
    with data_parallel.synchronised_batchnorm(net) if rank is not None else _nothing() as swapped:
        y = net(xr)
        (y * upstream[rows]).sum().backward()
        y2 = net(x2[rows])
        net.eval()
        y_eval = net(x[rows])
    return {"y": y.detach(), "y2": y2.detach(), "y_eval": y_eval.detach(), "x_grad": xr.grad,
            "weight_grad": net[0].weight.grad, "bias_grad": net[0].bias.grad, "state": net.state_dict(),
            "swapped": swapped, "type": type(net[0]).__name__}


class _nothing:
    def __enter__(self):
        return 0

    def __exit__(self, *exc):
        return False


CLASSIFIER_CASES = {
    # name: (classifier factory, policy factory, batch size, steps)
    "weakcnn": (lambda: WeakCNN(1, 10, 8, width=8), lambda: None, 10, 4),
    "wrn_mixup": (lambda: WideResNet(10, 1, num_classes=10, in_channels=1), lambda: MixUp(num_classes=10, seed=1),
                  9, 3),
    "weakcnn_cutmix": (lambda: WeakCNN(1, 10, 8, width=8), lambda: CutMix(num_classes=10, seed=2), 7, 4),
}


def _classifier_case(name: str, data_parallel: bool) -> dict:
    make, make_policy, batch, steps = CLASSIFIER_CASES[name]
    images, labels = _digits(40)
    torch.manual_seed(0)
    classifier = make()
    config = TrainConfig(steps=steps, batch_size=batch, lr=0.05, seed=3, progress=False, data_parallel=data_parallel)
    train_classifier(classifier, images, labels, config, policy=make_policy())
    out = {"state": {k: v.clone() for k, v in classifier.state_dict().items()},
           "bn_types": sorted({type(m).__name__ for m in classifier.modules() if "Norm" in type(m).__name__})}
    if name == "weakcnn":
        # Afterwards the classifier is a plain module: a backward on this rank's own images gives this
        # rank's own gradient (a wrapper left hooked on the parameters would sum it over the ranks).
        rank = dist.get_rank() if dist.is_initialized() else 0
        x, y = _digits(6, offset=100 + 10 * rank)
        twin = copy.deepcopy(classifier)
        for m in (classifier, twin):
            m.train()
            m.zero_grad(set_to_none=True)  # the last step's gradients are still there
            nn.functional.cross_entropy(m(x), y).backward()
        out["grad"] = classifier.head.weight.grad.clone()
        out["twin_grad"] = twin.head.weight.grad.clone()
        out["training_flag"] = classifier.training
    return out


FIT_CASES = {
    # name: (reconstruction loss, classifier factory, cache_targets)
    "laplacian+pixel": (lambda: WeightedSum([(1.0, LaplacianPyramidLoss()), (1.0, PixelLoss(p=1))]),
                        lambda: WeakCNN(1, 10, 8, width=8), None),
    "pixel_latent": (lambda: PixelLoss(p=1), lambda: LatentMLP(16, 10, hidden=32), False),
}


def _fit_case(name: str, data_parallel: bool) -> dict:
    make_loss, make_classifier, cache = FIT_CASES[name]
    images, labels = _digits(10)  # digits 0..9, one each
    unlabeled, _ = _digits(3, offset=10)
    torch.manual_seed(0)
    model = GLICO(image_shape=(1, 8, 8), num_classes=10, code_dim=16, noise=ConcatNoise(dim=4),
                  generator=DCGANGenerator(20, image_size=8, channels=1, base_width=16),
                  loss=make_loss(), classifier=make_classifier())
    # 13 images, batch 4: batches of 4, 4, 4 and 1 per epoch (the 1-image batch leaves a rank empty-handed).
    # lr is the default; at twice it the largest difference after 8 steps was 5e-6, half the tolerance.
    config = FitConfig(epochs=2, batch_size=4, lr=1e-3, lr_codes=1e-2, seed=5, log_every=3, progress=False,
                       cache_targets=cache, data_parallel=data_parallel)
    history = fit(model, images, labels, unlabeled=unlabeled, config=config)
    return {"codes": model.codes.weight.detach().clone(),
            "state": {k: v.clone() for k, v in model.state_dict().items()},
            "history": (history.step, history.total, history.reconstruction, history.classification),
            "bn_types": sorted({type(m).__name__ for m in model.modules() if "Norm" in type(m).__name__})}


def _all_cases(data_parallel: bool, rank: int | None) -> dict:
    out = {f"batchnorm/{name}": _batchnorm_case(name, rank) for name in BATCHNORM_CASES}
    for name in CLASSIFIER_CASES:
        out[f"classifier/{name}"] = _classifier_case(name, data_parallel)
    for name in FIT_CASES:
        out[f"fit/{name}"] = _fit_case(name, data_parallel)
    return out


def _worker(rank: int, port: int, out: str) -> None:
    """One rank: join the group of two, run every scenario data-parallel, save the results."""
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD,
                            timeout=datetime.timedelta(seconds=60))
    try:
        assert distributed.current().world == WORLD
        results = _all_cases(True, rank)
        torch.save(results, os.path.join(out, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory) -> list[dict]:
    out = tmp_path_factory.mktemp("data_parallel")
    ctx = mp.start_processes(_worker, args=(_free_port(), str(out)), nprocs=WORLD, start_method="spawn", join=False)
    deadline = time.monotonic() + SPAWN_TIMEOUT_S
    try:
        while not ctx.join(timeout=1):
            if time.monotonic() > deadline:
                pytest.fail(f"the {WORLD} ranks did not finish within {SPAWN_TIMEOUT_S} s (a collective hung?)")
    finally:
        for p in ctx.processes:
            if p.is_alive():
                p.kill()
    return [torch.load(out / f"rank{r}.pt", weights_only=False) for r in range(WORLD)]


@pytest.fixture(scope="module")
def one_process() -> dict:
    return _all_cases(False, None)


def _assert_ranks_identical(a, b, where: str) -> None:
    if isinstance(a, torch.Tensor):
        assert torch.equal(a, b), f"{where}: the ranks differ"
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for k in a:
            _assert_ranks_identical(a[k], b[k], f"{where}/{k}")
    else:
        assert a == b, f"{where}: the ranks differ ({a!r} vs {b!r})"


def _assert_close_states(got: dict, want: dict, where: str) -> None:
    assert got.keys() == want.keys(), f"{where}: state-dict keys differ"
    for k in want:
        torch.testing.assert_close(got[k], want[k], **TOL, msg=lambda m, k=k: f"{where}: {k}: {m}")


# ------------------------------------------------------------------------------------------------ tests
@pytest.mark.parametrize("name", list(BATCHNORM_CASES))
def test_distributed_batchnorm_equals_batchnorm_on_the_whole_batch(two_ranks, one_process, name):
    key = f"batchnorm/{name}"
    r0, r1 = two_ranks[0][key], two_ranks[1][key]
    want = one_process[key]
    assert r0["swapped"] == r1["swapped"] == 1 and r0["type"] == want["type"]  # swapped in, then back
    for part in ("y", "y2", "y_eval", "x_grad"):
        torch.testing.assert_close(torch.cat([r0[part], r1[part]]), want[part], **TOL)
    # Each rank's parameter gradient is its rows' part; their sum is the whole batch's.
    for part in ("weight_grad", "bias_grad"):
        torch.testing.assert_close(r0[part] + r1[part], want[part], **TOL)
    _assert_close_states(r0["state"], want["state"], "running statistics")
    assert int(r0["state"]["0.num_batches_tracked"]) == 2
    _assert_ranks_identical(r0["state"], r1["state"], "batchnorm state")


@pytest.mark.parametrize("name", list(CLASSIFIER_CASES))
def test_train_classifier_on_two_ranks_equals_one_process(two_ranks, one_process, name):
    key = f"classifier/{name}"
    got, want = two_ranks[0][key], one_process[key]
    _assert_close_states(got["state"], want["state"], key)
    _assert_ranks_identical(two_ranks[0][key]["state"], two_ranks[1][key]["state"], key)
    assert got["bn_types"] == want["bn_types"] == ["BatchNorm2d"]  # handed back with plain BatchNorm
    # The weights moved: the comparison is of a training, not of two initialisations.
    torch.manual_seed(0)
    initial = CLASSIFIER_CASES[name][0]().state_dict()
    assert any(not torch.allclose(initial[k].float(), want["state"][k].float()) for k in initial)


def test_trained_classifier_is_a_plain_module_again(two_ranks):
    for r in range(WORLD):
        got = two_ranks[r]["classifier/weakcnn"]
        assert got["training_flag"] is True
        torch.testing.assert_close(got["grad"], got["twin_grad"], atol=0, rtol=0)
    assert not torch.equal(two_ranks[0]["classifier/weakcnn"]["grad"], two_ranks[1]["classifier/weakcnn"]["grad"])


@pytest.mark.parametrize("name", list(FIT_CASES))
def test_fit_on_two_ranks_equals_one_process(two_ranks, one_process, name):
    key = f"fit/{name}"
    got, want = two_ranks[0][key], one_process[key]
    torch.testing.assert_close(got["codes"], want["codes"], **TOL)
    _assert_close_states(got["state"], want["state"], key)
    steps, *curves = want["history"]
    assert got["history"][0] == steps == [1, 3, 6, 8]
    for g, w in zip(got["history"][1:], curves):
        torch.testing.assert_close(torch.tensor(g), torch.tensor(w), **TOL)
    assert got["bn_types"] == want["bn_types"]
    # Every rank ends with every code (each updated only the ones it owns) and the same model.
    _assert_ranks_identical(two_ranks[0][key], two_ranks[1][key], key)
    assert curves[0][0] != curves[0][-1]  # the fit moved


def test_data_parallel_in_a_world_of_one_changes_nothing(one_process):
    assert distributed.current().world == 1
    got = _classifier_case("weakcnn_cutmix", True)
    want = one_process["classifier/weakcnn_cutmix"]
    _assert_ranks_identical(got["state"], want["state"], "train_classifier")
    got = _fit_case("laplacian+pixel", True)
    _assert_ranks_identical(got, one_process["fit/laplacian+pixel"], "fit")


# ------------------------------------------------------------------------------------------------ refusals
@pytest.fixture
def world_of_two(monkeypatch):
    """A fake world of two: the refusals come before any collective, so no process group is needed (were
    one not raised, the first collective would fail for want of a group)."""
    monkeypatch.setattr(distributed, "current", lambda: distributed.Ranks(0, WORLD, 0))


def test_train_classifier_refusals_name_what_is_accepted(world_of_two, tmp_path):
    images, labels = _digits(12)
    cfg = TrainConfig(steps=1, batch_size=4, progress=False, data_parallel=True)
    with pytest.raises(ValueError, match=r"writes no checkpoint: call train_classifier with checkpoint=None and "
                                         r"resume=False, or with data_parallel=False"):
        train_classifier(WeakCNN(1, 10, 8, width=4), images, labels, cfg, checkpoint=tmp_path / "state.pt")
    with pytest.raises(ValueError, match=r"global batch of 1 rows cannot be shared by 2 ranks.*at least the world "
                                         r"size \(2\)"):
        train_classifier(WeakCNN(1, 10, 8, width=4), images, labels,
                         TrainConfig(steps=1, batch_size=1, progress=False, data_parallel=True))
    wrn = WideResNet(10, 1, num_classes=10, in_channels=1, dropout=0.3)
    with pytest.raises(ValueError, match=r"dropout of the classifier.*blocks\.0 \(_PreActBlock, dropout 0\.3\).*Use "
                                         r"dropout 0"):
        train_classifier(wrn, images, labels, cfg)
    assert not wrn.training  # handed back in eval mode, as after any training
    with pytest.raises(ValueError, match="data_parallel must be True or False"):
        TrainConfig(data_parallel="yes")


def test_fit_refusals_name_what_is_accepted(world_of_two, tmp_path):
    images, labels = _digits(10)

    def model(**parts):
        torch.manual_seed(0)
        return GLICO(image_shape=(1, 8, 8), num_classes=10, code_dim=8,
                     **{"loss": PixelLoss(), "classifier": WeakCNN(1, 10, 8, width=4), **parts})

    base = dict(epochs=1, batch_size=4, progress=False, data_parallel=True)
    with pytest.raises(ValueError, match=r"writes no checkpoint and cannot resume: use checkpoint=None and "
                                         r"resume=False with data_parallel=True, or data_parallel=False"):
        fit(model(), images, labels, config=FitConfig(**base, checkpoint=str(tmp_path / "fit.pt")))
    with pytest.raises(ValueError, match=r"compile=True is not supported in a data-parallel fit.*use compile=False"):
        fit(model(), images, labels, config=FitConfig(**base, compile=True))
    with pytest.raises(ValueError, match=r"needs a batch of at least 2 images; this one has 1"):
        fit(model(), images, labels, config=FitConfig(**{**base, "batch_size": 1}))

    class DropoutGenerator(nn.Module):
        image_shape, in_dim = (1, 8, 8), 40

        def __init__(self):
            super().__init__()
            self.drop = nn.Dropout(0.2)
            self.net = nn.Linear(40, 64)

        def forward(self, x):
            return torch.sigmoid(self.net(self.drop(x))).view(-1, 1, 8, 8)

    m = model(generator=DropoutGenerator())
    with pytest.raises(ValueError, match=r"dropout of the generator: drop \(Dropout, dropout 0\.2\).*Use dropout 0"):
        fit(m, images, labels, config=FitConfig(**base))
    assert not m.training

    class NormalisedPixelLoss(PixelLoss):
        def __init__(self):
            super().__init__()
            self.norm = nn.BatchNorm2d(1)

    with pytest.raises(ValueError, match=r"reconstruction loss has BatchNorm layers in training mode \(norm\).*Keep "
                                         r"the reconstruction loss's BatchNorm in eval mode"):
        fit(model(loss=NormalisedPixelLoss()), images, labels, config=FitConfig(**base))
    with pytest.raises(ValueError, match="data_parallel must be True or False"):
        FitConfig(data_parallel=1)


def test_distributed_batchnorm_keeps_batchnorm_state_and_eval_output():
    """No group needed: swapping in and out shares the tensors, and eval mode is BatchNorm's own call."""
    torch.manual_seed(0)
    net = WeakCNN(1, 10, 8, width=4).eval()
    params = {k: v for k, v in net.state_dict().items()}
    x = torch.rand(5, 1, 8, 8)
    want = net(x)
    with data_parallel.synchronised_batchnorm(net) as swapped:
        assert swapped == 4
        assert all(type(m).__name__ != "BatchNorm2d" for m in net.modules())
        assert net.state_dict().keys() == params.keys()
        assert all(net.state_dict()[k] is not None and net.state_dict()[k].data_ptr() == v.data_ptr()
                   for k, v in params.items())
        assert torch.equal(net(x), want)
        net.train()
    assert net.training and all(m.training for m in net.modules())
    assert sum(isinstance(m, nn.BatchNorm2d) for m in net.modules()) == 4
    with pytest.raises(ValueError, match="pass the module that contains it"):
        with data_parallel.synchronised_batchnorm(nn.BatchNorm2d(3)):
            pass
