"""The conditional DCGAN baseline: networks keep the image contract and are conditioned by the label,
fits are deterministic and learn the classes, sampling is seeded, the policy replaces rows by its
coins with samples of their own class and resumes its draws exactly, and bad inputs are refused."""
import math

import pytest
import torch

from glico.experiments.cdcgan import (
    CDCGANConfig,
    CDCGANPolicy,
    ConditionalDiscriminator,
    ConditionalGenerator,
    fit_cdcgan,
    sample_cdcgan,
)
from glico.experiments.policies import load_policy_state, policy_state
from tests.tolerances import tol

SMALL = dict(noise_dim=8, base_width=8)


def _toy(seed: int = 0, n: int = 32):
    """Two classes, 1-channel 8 px: class 0 dark (about 0.1), class 1 bright (about 0.9)."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 2
    x = (0.1 + 0.8 * y.float())[:, None, None, None] + 0.03 * torch.randn(n, 1, 8, 8, generator=g)
    return x.clamp(0, 1), y


def _config(**kw) -> CDCGANConfig:
    return CDCGANConfig(**{**dict(steps=5, batch_size=8, progress=False, **SMALL), **kw})


@pytest.fixture(scope="module")
def fitted():
    """A conditional generator fitted briefly on the toy set (3 classes, so labels matter)."""
    x, y = _toy()
    y = torch.arange(x.shape[0]) % 3
    gen, info = fit_cdcgan(x, y, _config(steps=20))
    return gen, info


# --- networks ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("size", [8, 16, 32])
@pytest.mark.parametrize("channels", [1, 3])
@torch.no_grad()
def test_generator_shape_range_and_conditioning(size, channels):
    torch.manual_seed(0)
    g = ConditionalGenerator(4, (channels, size, size), **SMALL)
    assert (g.num_classes, g.noise_dim, g.image_shape) == (4, 8, (channels, size, size))
    z, labels = torch.randn(8, 8), torch.arange(8) % 4
    # Mixed labels in the batch: in train mode BatchNorm would cancel a label shared by the whole batch.
    out, other = g(z, labels), g(z, (labels + 1) % 4)
    assert out.shape == (8, channels, size, size) and out.dtype == torch.float32
    assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0
    g.eval()
    assert float(g(z, labels).min()) >= 0.0 and float(g(z, labels).max()) <= 1.0
    # Same noise, another class: every image changes, by far more than float rounding.
    assert ((out - other).abs().flatten(1).amax(1) > 100 * tol(torch.float32)["atol"]).all()


@pytest.mark.parametrize("size", [8, 16, 32])
@pytest.mark.parametrize("channels", [1, 3])
@torch.no_grad()
def test_discriminator_shape_and_conditioning(size, channels):
    torch.manual_seed(0)
    d = ConditionalDiscriminator(4, (channels, size, size), base_width=8)
    x, labels = torch.rand(8, channels, size, size), torch.arange(8) % 4
    a, b = d(x, labels), d(x, (labels + 1) % 4)
    assert a.shape == (8,) and torch.isfinite(a).all()
    # Every logit moves with the claimed class, by more than float rounding.
    assert ((a - b).abs() > tol(torch.float32)["atol"]).all()
    assert d.eval()(x, labels).shape == (8,)


@torch.no_grad()
def test_discriminator_layout_8_and_256():
    convs8 = [m for m in ConditionalDiscriminator(2, (3, 8, 8), base_width=8).modules() if isinstance(m, torch.nn.Conv2d)]
    # 8 px: one stride-2 conv (8 -> 4) on image + label planes, then the 4x4 conv to the logit.
    assert [(c.in_channels, c.out_channels, c.stride) for c in convs8] == [(5, 8, (2, 2)), (8, 1, (1, 1))]
    d = ConditionalDiscriminator(2, (1, 256, 256), base_width=2)
    convs = [m for m in d.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [c.out_channels for c in convs] == [2, 4, 8, 16, 32, 64, 1]
    bns = [m for m in d.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert len(bns) == len(convs) - 2 and all(float(b.bias.abs().max()) == 0 for b in bns)
    assert d.eval()(torch.rand(2, 1, 256, 256), torch.tensor([0, 1])).shape == (2,)


@torch.no_grad()
def test_discriminator_init_is_dcgan():
    torch.manual_seed(0)
    d = ConditionalDiscriminator(3, (3, 64, 64), base_width=64)
    w = torch.cat([m.weight.flatten() for m in d.modules() if isinstance(m, torch.nn.Conv2d)])
    scale = torch.cat([m.weight for m in d.modules() if isinstance(m, torch.nn.BatchNorm2d)])
    # Standard errors of the std estimates are tiny at these counts (~1e6 weights, ~900 scales).
    assert abs(float(w.std()) - 0.02) < 0.001 and abs(float(w.mean())) < 0.001
    assert abs(float(scale.mean()) - 1.0) < 5 * 0.02 / math.sqrt(scale.numel())


# --- fitting ----------------------------------------------------------------------------------------

def test_fit_is_deterministic_and_seeded():
    x, y = _toy()
    state_before = torch.random.get_rng_state()
    g1, info = fit_cdcgan(x, y, _config(seed=3))
    assert torch.equal(torch.random.get_rng_state(), state_before)  # the global RNG is left alone
    g2, _ = fit_cdcgan(x, y, _config(seed=3))
    g3, _ = fit_cdcgan(x, y, _config(seed=4))
    s1, s2, s3 = g1.state_dict(), g2.state_dict(), g3.state_dict()
    assert s1.keys() == s2.keys() and all(torch.equal(s1[k], s2[k]) for k in s1)
    assert any(not torch.equal(s1[k], s3[k]) for k in s1 if s1[k].is_floating_point())
    assert not g1.training and set(info) == {"seconds", "steps", "d_loss_last", "g_loss_last"}
    assert info["steps"] == 5 and all(math.isfinite(info[k]) for k in ("d_loss_last", "g_loss_last"))


def test_fit_trains_the_generator():
    x, y = _toy()
    g0, _ = fit_cdcgan(x, y, _config(steps=1))
    g1, _ = fit_cdcgan(x, y, _config(steps=6))
    assert any(not torch.equal(a, b) for a, b in zip(g0.state_dict().values(), g1.state_dict().values()))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_fit_learns_class_conditioning(seed):
    # Measured over seeds 0..9 with these settings: margins 0.49 to 0.84.
    x, y = _toy(seed)
    gen, _ = fit_cdcgan(x, y, _config(steps=300, lr=1e-3, batch_size=16, seed=seed))
    s = sample_cdcgan(gen, torch.tensor([0] * 64 + [1] * 64), torch.Generator().manual_seed(seed))
    assert float(s[64:].mean() - s[:64].mean()) > 0.3


def test_fit_num_classes_and_batch_cap():
    x, y = _toy(n=6)
    gen, info = fit_cdcgan(x, y, _config(batch_size=64, steps=3), num_classes=5)
    assert gen.num_classes == 5 and info["steps"] == 3
    assert sample_cdcgan(gen, torch.tensor([4])).shape == (1, 1, 8, 8)


# --- sampling ---------------------------------------------------------------------------------------

def test_sample_deterministic_in_range_and_keeps_mode(fitted):
    gen, _ = fitted
    labels = torch.tensor([0, 1, 2, 1])
    a = sample_cdcgan(gen, labels, torch.Generator().manual_seed(7))
    b = sample_cdcgan(gen, labels, torch.Generator().manual_seed(7))
    c = sample_cdcgan(gen, labels, torch.Generator().manual_seed(8))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.shape == (4, 1, 8, 8) and float(a.min()) >= 0 and float(a.max()) <= 1
    # The same draws by hand: eval-mode forward of the noise drawn from the same state.
    z = torch.randn(4, gen.noise_dim, generator=torch.Generator().manual_seed(7))
    torch.testing.assert_close(a, gen.eval()(z, labels), **tol(torch.float32))
    gen.train()
    torch.testing.assert_close(sample_cdcgan(gen, labels, torch.Generator().manual_seed(7)), a, **tol(torch.float32))
    assert gen.training
    gen.eval()


@pytest.mark.parametrize("bad", [[-1], [3], [0, 5]])
def test_sample_refuses_out_of_range_labels(fitted, bad):
    with pytest.raises(ValueError, match=r"labels must be classes in 0\.\.2"):
        sample_cdcgan(fitted[0], torch.tensor(bad))


def test_sample_refuses_float_labels(fitted):
    with pytest.raises(TypeError, match="integer class indices"):
        sample_cdcgan(fitted[0], torch.tensor([0.0, 1.0]))


# --- policy -----------------------------------------------------------------------------------------

def _batch(b: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, 1, 8, 8, generator=g), torch.randint(0, 3, (b,), generator=g), torch.arange(b)


def test_policy_p0_is_identity(fitted):
    x, y, idx = _batch(16)
    out, labels = CDCGANPolicy(fitted[0], p=0.0)(x, y, idx)
    assert torch.equal(out, x) and torch.equal(labels, y)


def test_policy_p1_replaces_every_row_with_its_class(fitted):
    gen = fitted[0]
    x, y, idx = _batch(12)
    out, labels = CDCGANPolicy(gen, p=1.0, seed=5)(x, y, idx)
    expected = sample_cdcgan(gen, y, torch.Generator().manual_seed(6))
    assert torch.equal(labels, y)
    torch.testing.assert_close(out, expected, **tol(torch.float32))
    assert (out != x).flatten(1).any(1).all()


def test_policy_half_follows_the_coins(fitted):
    gen, b, p, seed = fitted[0], 4000, 0.5, 11
    x, y, idx = _batch(b, seed=1)
    out, labels = CDCGANPolicy(gen, p=p, seed=seed)(x, y, idx)
    coins = torch.rand(b, generator=torch.Generator().manual_seed(seed)) < p
    changed = (out != x).flatten(1).any(1)
    assert torch.equal(changed, coins) and torch.equal(labels, y)
    # Binomial(4000, 0.5): 5 standard deviations.
    assert abs(int(coins.sum()) - b * p) < 5 * math.sqrt(b * p * (1 - p))
    rows = coins.nonzero().squeeze(1)
    expected = sample_cdcgan(gen, y[rows], torch.Generator().manual_seed(seed + 1))
    torch.testing.assert_close(out[rows], expected, **tol(torch.float32))


def test_policy_state_round_trip(fitted):
    gen = fitted[0]
    batches = [_batch(32, seed=s) for s in range(3)]
    a = CDCGANPolicy(gen, p=0.5, seed=2)
    a(*batches[0]), a(*batches[1])
    state = policy_state(a)
    third_a, _ = a(*batches[2])
    b = CDCGANPolicy(gen, p=0.5, seed=2)
    assert load_policy_state(b, state)
    third_b, _ = b(*batches[2])
    assert torch.equal(third_a, third_b)
    fresh, _ = CDCGANPolicy(gen, p=0.5, seed=2)(*batches[2])
    assert not torch.equal(fresh, third_a)  # the state mattered
    with pytest.raises(ValueError, match="CDCGANPolicy state must be"):
        b.load_state_dict({"calls": 2})


def test_policy_refuses_soft_targets_and_bad_p(fitted):
    gen = fitted[0]
    x, y, idx = _batch(4)
    with pytest.raises(ValueError, match=r"hard labels \(B,\), not soft targets"):
        CDCGANPolicy(gen)(x, torch.full((4, 3), 1 / 3), idx)
    for p in (-0.1, 1.5, True):
        with pytest.raises(ValueError, match="p must be a probability in"):
            CDCGANPolicy(gen, p=p)
    with pytest.raises(ValueError, match=r"generator's shape"):
        CDCGANPolicy(gen, p=1.0)(torch.rand(4, 3, 8, 8), y, idx)
    assert repr(CDCGANPolicy(gen, p=0.25, seed=3)) == "CDCGANPolicy(num_classes=3, p=0.25, seed=3)"


# --- bad input --------------------------------------------------------------------------------------

def test_fit_refuses_bad_images_and_labels():
    x, y = _toy(n=8)
    with pytest.raises(ValueError, match=r"values in \[0, 1\]"):
        fit_cdcgan(x * 3, y, _config())
    with pytest.raises(ValueError, match="7 entries but there are 8 images"):
        fit_cdcgan(x, y[:7], _config())
    with pytest.raises(ValueError, match="power of two"):
        fit_cdcgan(torch.rand(8, 1, 12, 12), y, _config())
    with pytest.raises(ValueError, match="num_classes must be a whole number >= labels.max"):
        fit_cdcgan(x, y, _config(), num_classes=1)


@pytest.mark.parametrize("shape, match", [((1, 12, 12), "power of two"), ((1, 8, 16), "square"),
                                          ((1, 512, 512), "power of two"), ((8, 8), r"\(C, H, W\)")])
def test_networks_refuse_bad_sizes(shape, match):
    with pytest.raises(ValueError, match=match):
        ConditionalGenerator(2, shape)
    with pytest.raises(ValueError, match=match):
        ConditionalDiscriminator(2, shape)


def test_forward_refuses_bad_inputs():
    g = ConditionalGenerator(2, (1, 8, 8), **SMALL)
    with pytest.raises(ValueError, match=r"z must have shape \(B, 8\)"):
        g(torch.randn(3, 5), torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match=r"labels must have shape \(B,\) with B = 3"):
        g(torch.randn(3, 8), torch.zeros(2, dtype=torch.long))
    with pytest.raises(ValueError, match=r"0\.\.1"):
        g(torch.randn(3, 8), torch.tensor([0, 1, 2]))
    d = ConditionalDiscriminator(2, (1, 8, 8), base_width=8)
    with pytest.raises(ValueError, match=r"images must have shape \(B, 1, 8, 8\)"):
        d(torch.rand(3, 3, 8, 8), torch.zeros(3, dtype=torch.long))


@pytest.mark.parametrize("kw, match", [
    (dict(steps=0), "steps must be a whole number >= 1; got 0"),
    (dict(batch_size=2.5), "batch_size must be a whole number"),
    (dict(lr=0.0), "lr must be a positive finite number; got 0.0"),
    (dict(lr=float("nan")), "lr must be a positive finite number"),
    (dict(betas=(0.5, 1.0)), r"betas must be two numbers .* in \[0, 1\); got \(0.5, 1.0\)"),
    (dict(betas=(0.5,)), "betas must be two numbers"),
    (dict(noise_dim=0), "noise_dim must be"),
    (dict(base_width=-1), "base_width must be"),
    (dict(seed=-1), "seed must be a whole number >= 0; got -1"),
    (dict(device="gpu0"), "device must be a device name .*got 'gpu0'"),
    (dict(progress="yes"), "progress must be True or False"),
])
def test_config_refuses_bad_values(kw, match):
    with pytest.raises(ValueError, match=match):
        CDCGANConfig(**kw)


def test_config_defaults_are_radford():
    c = CDCGANConfig()
    assert (c.steps, c.batch_size, c.lr, c.betas, c.noise_dim, c.base_width) == (2000, 64, 2e-4, (0.5, 0.999), 100, 64)
    assert CDCGANConfig(betas=[0.0, 0.9]).betas == (0.0, 0.9)
