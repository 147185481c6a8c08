import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import kernels
from glico.interpolation import Lerp, Slerp, draw_partners
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


@settings(max_examples=40, deadline=None)
@given(
    sizes=st.lists(st.integers(1, 5), min_size=1, max_size=6),
    seed=st.integers(0, 2**31 - 1),
)
def test_partners_same_class_never_self_t_in_set(sizes, seed):
    labels = torch.cat([torch.full((n,), c) for c, n in enumerate(sizes)])
    labels = labels[torch.randperm(labels.numel(), generator=torch.Generator().manual_seed(seed))]
    index = kernels.class_index(labels)
    idx = torch.arange(labels.numel()).repeat(3)
    g = torch.Generator().manual_seed(seed)
    partners, t = draw_partners(index, idx, (0.1, 0.2, 0.3, 0.4), g)
    assert (labels[partners] == labels[idx]).all()
    alone = torch.tensor([sizes[int(c)] == 1 for c in labels[idx]])
    assert (partners[~alone] != idx[~alone]).all()
    assert (partners[alone] == idx[alone]).all()
    assert all(any(abs(x - v) < 1e-6 for v in (0.1, 0.2, 0.3, 0.4)) for x in t.tolist())


def test_partner_draw_is_uniform_over_other_members():
    labels = torch.tensor([0, 0, 0, 0, 1])
    index = kernels.class_index(labels)
    idx = torch.zeros(30000, dtype=torch.long)
    partners, _ = draw_partners(index, idx, (0.5,), torch.Generator().manual_seed(0))
    counts = torch.bincount(partners, minlength=5).float()
    assert counts[0] == 0 and counts[4] == 0
    # each of rows 1..3 expected 10000, std ~82: 5-sigma bound
    assert ((counts[1:4] - 10000).abs() < 410).all()


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
