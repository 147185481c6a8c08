import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import kernels
from glico.interpolation import Lerp, Slerp
from glico.noise import AdditiveNoise, ConcatNoise, NoNoise


def _unit(n, d, gen):
    return torch.nn.functional.normalize(torch.randn(n, d, generator=gen), dim=1)


def test_slerp_endpoints_and_norm(gen):
    a, b = _unit(6, 9, gen), _unit(6, 9, gen)
    s = Slerp()
    torch.testing.assert_close(s(a, b, 0.0), a, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(s(a, b, 1.0), b, atol=1e-5, rtol=1e-5)
    mid = s(a, b, torch.full((6,), 0.3))
    torch.testing.assert_close(mid.norm(dim=1), torch.ones(6))


def test_slerp_closed_form_on_a_quarter_circle():
    a, b = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]])
    for t in (0.1, 0.25, 0.7):
        want = torch.tensor([[math.cos(t * math.pi / 2), math.sin(t * math.pi / 2)]])
        torch.testing.assert_close(Slerp()(a, b, t), want)


def test_lerp_is_linear_and_leaves_the_sphere(gen):
    a, b = _unit(4, 16, gen), _unit(4, 16, gen)
    out = Lerp()(a, b, 0.5)
    torch.testing.assert_close(out, (a + b) / 2)
    assert (out.norm(dim=1) < 1).all()


def test_lerp_samples_the_draws_slerp_samples(gen):
    # Swapping Slerp for Lerp must change only the interpolation: same partners, t and noise for a seed.
    codes = _unit(12, 8, gen)
    index = kernels.class_index(torch.arange(12) % 3)
    idx = torch.arange(12).repeat(4)
    noise = ConcatNoise(dim=4, sigma=0.1)
    drawn = kernels.sample_codes(codes, idx, index, (0.1, 0.2, 0.3, 0.4), noise_dim=4, sigma=0.1, seed=5)
    lerp = Lerp().sample_inputs(codes, idx, index, (0.1, 0.2, 0.3, 0.4), noise, seed=5)
    slerp = Slerp().sample_inputs(codes, idx, index, (0.1, 0.2, 0.3, 0.4), noise, seed=5)
    t = drawn.t[:, None]
    torch.testing.assert_close(lerp[:, :8], (1 - t) * codes[idx] + t * codes[drawn.partners])
    torch.testing.assert_close(slerp, drawn.inputs)
    assert torch.equal(lerp[:, 8:], slerp[:, 8:])


def test_subclasses_of_slerp_and_concat_noise_are_used_when_sampling(gen):
    # A subclass overriding __call__ must not be bypassed by the fused kernel path.
    class Halfway(Slerp):
        def __call__(self, a, b, t):
            return super().__call__(a, b, torch.full_like(torch.as_tensor(t, dtype=torch.float32), 0.5))

    class Ones(ConcatNoise):
        def __call__(self, codes, generator=None):
            return torch.cat([codes, torch.ones(codes.shape[0], self.dim, dtype=codes.dtype)], dim=1)

    codes = _unit(12, 8, gen)
    index = kernels.class_index(torch.arange(12) % 3)
    idx = torch.arange(12)
    drawn = kernels.sample_codes(codes, idx, index, (0.1,), seed=2)
    out = Halfway().sample_inputs(codes, idx, index, (0.1,), Ones(dim=3), seed=2)
    torch.testing.assert_close(out[:, :8], kernels.slerp(codes[idx], codes[drawn.partners], 0.5))
    assert torch.equal(out[:, 8:], torch.ones(12, 3))
    assert repr(Halfway()) == "Halfway()"


@pytest.mark.parametrize("noise", [ConcatNoise(dim=4, sigma=0.1), AdditiveNoise(0.01), NoNoise()])
@pytest.mark.parametrize("interp", [Slerp(), Lerp()])
def test_sample_inputs_shape(noise, interp, gen):
    codes = _unit(12, 8, gen)
    labels = torch.arange(12) % 3
    out = interp.sample_inputs(codes, torch.arange(12), kernels.class_index(labels), (0.1, 0.2), noise, seed=3)
    assert out.shape == (12, noise.out_dim(8))
    z = out[:, :8]
    if isinstance(interp, Slerp) and not isinstance(noise, AdditiveNoise):
        torch.testing.assert_close(z.norm(dim=1), torch.ones(12))


def test_substreams_are_distinct_valid_seeds():
    from glico._rng import substream

    seeds = {substream(s, k) for s in range(200) for k in range(3)}
    assert len(seeds) == 600 and all(0 <= v < 2**63 for v in seeds)
    assert substream(7, 1) == substream(7, 1)  # a function of its arguments


def _slerp64(a, b, t):
    """Slerp in float64 from its defining formula (an independent reference for the kernels)."""
    a, b, t = a.double(), b.double(), torch.as_tensor(t, dtype=torch.float64)[:, None]
    omega = torch.arccos((a * b).sum(1, keepdim=True).clamp(-1, 1))
    same = omega < 1e-6
    s = torch.where(same, torch.ones_like(omega), torch.sin(omega))
    wa = torch.where(same, 1 - t, torch.sin((1 - t) * omega) / s)
    wb = torch.where(same, t, torch.sin(t * omega) / s)
    return wa * a + wb * b


@pytest.mark.parametrize("noise", [ConcatNoise(dim=4, sigma=0.1), AdditiveNoise(0.01), NoNoise()])
def test_multislerp_of_two_codes_samples_what_slerp_samples(noise, gen):
    from glico.interpolation import MultiSlerp

    codes = _unit(12, 8, gen)
    index = kernels.class_index(torch.arange(12) % 3)
    idx = torch.arange(12).repeat(3)
    want = Slerp().sample_inputs(codes, idx, index, (0.1, 0.3), noise, seed=9)
    torch.testing.assert_close(MultiSlerp(2).sample_inputs(codes, idx, index, (0.1, 0.3), noise, seed=9), want)


def test_multislerp_chains_slerp_through_same_class_partners(gen):
    from glico._rng import substream
    from glico.interpolation import MultiSlerp, draw_partners

    codes = _unit(15, 8, gen)
    labels = torch.arange(15) % 3
    index = kernels.class_index(labels)
    idx = torch.arange(15).repeat(4)
    tv = (0.1, 0.2, 0.3, 0.4)
    noise = ConcatNoise(dim=4, sigma=0.1)
    out = MultiSlerp(4).sample_inputs(codes, idx, index, tv, noise, seed=11)
    # The reference: the same draws (the first partner from the fused sampler, the others from
    # substream(seed, 2)), interpolated in float64 from slerp's formula.
    drawn = kernels.sample_codes(codes, idx, index, tv, noise_dim=4, sigma=0.1, seed=11)
    g = torch.Generator().manual_seed(substream(11, 2))
    z = _slerp64(codes[idx], codes[drawn.partners], drawn.t)
    for _ in range(2):
        partners, t = draw_partners(index, idx, tv, g)
        assert torch.equal(labels[partners], labels[idx])
        z = _slerp64(z, codes[partners].double(), t)
    torch.testing.assert_close(out[:, :8].double(), z, atol=1e-5, rtol=1e-5)
    assert torch.equal(out[:, 8:], drawn.inputs[:, 8:])  # the noise part is the fused sampler's
    torch.testing.assert_close(out[:, :8].norm(dim=1), torch.ones(60))


def test_multislerp_stays_inside_the_class_hull():
    from glico.interpolation import MultiSlerp

    # Class 0 is e0, e1, e2; class 1 is e3, e4. A new class-0 code has non-negative weights on e0..e2 only.
    codes = torch.eye(6)[:5]
    labels = torch.tensor([0, 0, 0, 1, 1])
    idx = torch.zeros(64, dtype=torch.long)
    z = MultiSlerp(3).sample_inputs(codes, idx, kernels.class_index(labels), (0.2, 0.5), NoNoise(), seed=3)
    assert (z[:, :3] >= -1e-6).all() and z[:, 3:].abs().max() < 1e-6
    torch.testing.assert_close(z.norm(dim=1), torch.ones(64))
    assert (z[:, 1:3] > 1e-3).any(dim=0).all()  # both partners occur


@pytest.mark.parametrize("bad", [1, 0, 2.5, True, "3"])
def test_multislerp_refuses_fewer_than_two_codes(bad):
    from glico.interpolation import MultiSlerp

    with pytest.raises(ValueError, match="num_codes must be a whole number >= 2"):
        MultiSlerp(bad)
