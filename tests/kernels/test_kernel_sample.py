"""The class-conditional sampler: partners, t and noise have the documented distributions, and
the explicit variant agrees with the reference."""
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import kernels
from kernel_helpers import BACKENDS, EXAMPLES, assert_slerp_close, device, dims, dtypes, requires_triton, rows, seeds
from kernels import reference
from tolerances import tol

T_VALUES = (0.1, 0.2, 0.3, 0.4)


def _labels(seed: int, n: int, n_classes: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, n_classes, (n,), generator=g).to(device())


@pytest.mark.parametrize("backend", BACKENDS)
@settings(max_examples=EXAMPLES, deadline=None)
@given(seed=seeds, n=st.integers(1, 60), n_classes=st.integers(1, 8), batch=st.integers(1, 64), d=dims,
       dtype=dtypes, noise_dim=st.integers(0, 9), int32=st.booleans())
def test_partners_t_and_shapes(backend, seed, n, n_classes, batch, d, dtype, noise_dim, int32):
    codes = rows(seed, n, d, dtype)
    labels = _labels(seed, n, n_classes)
    index = kernels.class_index(labels, num_classes=n_classes)
    idx = torch.randint(0, n, (batch,), generator=torch.Generator().manual_seed(seed + 1)).to(device())
    if int32:
        idx = idx.int()
    s = kernels.sample_codes(codes, idx, index, T_VALUES, noise_dim=noise_dim, seed=seed, backend=backend)
    assert s.inputs.shape == (batch, d + noise_dim) and s.inputs.dtype == dtype
    assert s.partners.dtype == torch.int64 and s.t.dtype == torch.float32
    idx = idx.long()
    assert torch.equal(labels[s.partners], labels[idx])
    class_size = torch.bincount(labels, minlength=n_classes)[labels[idx]]
    assert torch.equal(s.partners == idx, class_size == 1)
    assert torch.isin(s.t, torch.tensor(T_VALUES, device=device())).all()
    # The row is the slerp of the drawn pair, followed by the noise it reports.
    want = reference.sample_codes_explicit(codes, idx, s.partners, s.t, s.inputs[:, d:].float())
    torch.testing.assert_close(s.inputs, want, **tol(dtype))


@pytest.mark.parametrize("backend", BACKENDS)
@settings(max_examples=EXAMPLES, deadline=None)
@given(seed=seeds, n=st.integers(1, 40), batch=st.integers(1, 48), d=dims, dtype=dtypes,
       noise_dim=st.integers(0, 9), per_row_t=st.booleans())
def test_explicit_matches_reference(backend, seed, n, batch, d, dtype, noise_dim, per_row_t):
    codes = rows(seed, n, d, dtype)
    g = torch.Generator().manual_seed(seed)
    idx, partners = torch.randint(0, n, (2, batch), generator=g).to(device())
    t = torch.rand(batch, generator=g).to(device()) if per_row_t else 0.3
    eps = torch.randn(batch, noise_dim, generator=g).to(device()) if noise_dim else None
    got = kernels.sample_codes_explicit(codes, idx, partners, t, eps, backend=backend)
    want = reference.sample_codes_explicit(codes, idx, partners, t, eps)
    assert got.shape == want.shape and got.dtype == want.dtype
    assert_slerp_close(got[:, :d], want[:, :d], codes[idx], codes[partners], dtype)  # the slerp part
    torch.testing.assert_close(got[:, d:], want[:, d:], **tol(dtype))  # the noise, copied


def _five_sigma_counts(counts: torch.Tensor, p: float, draws: int) -> None:
    """Every count of a multinomial with equal cell probability p within 5 standard deviations."""
    mean = draws * p
    sd = math.sqrt(draws * p * (1 - p))
    assert ((counts.double() - mean).abs() <= 5 * sd).all(), (counts, mean, sd)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("class_size", [2, 5, 17])
def test_partner_and_t_are_uniform(backend, class_size):
    draws = 20000
    labels = torch.tensor([0] * class_size + [1] * 3, device=device())
    index = kernels.class_index(labels)
    codes = rows(0, labels.shape[0], 4, torch.float32)
    anchor = class_size // 2
    idx = torch.full((draws,), anchor, device=device())
    s = kernels.sample_codes(codes, idx, index, T_VALUES, seed=123, backend=backend)
    counts = torch.bincount(s.partners, minlength=class_size)[:class_size]
    assert counts[anchor] == 0
    _five_sigma_counts(counts[torch.arange(class_size, device=device()) != anchor], 1 / (class_size - 1), draws)
    t_counts = torch.stack([(s.t == torch.tensor(v, dtype=torch.float32)).sum() for v in T_VALUES])
    assert t_counts.sum() == draws
    _five_sigma_counts(t_counts, 1 / len(T_VALUES), draws)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("sigma", [1.0, 0.25])
def test_noise_moments(backend, sigma):
    # Mean, variance and neighbour correlation of ~250k draws within 5 standard errors of N(0, σ²).
    batch, noise_dim = 8192, 31
    codes = rows(0, 10, 4, torch.float32)
    index = kernels.class_index(torch.zeros(10, dtype=torch.int64, device=device()))
    idx = torch.arange(batch, device=device()) % 10
    eps = kernels.sample_codes(codes, idx, index, T_VALUES, noise_dim=noise_dim, sigma=sigma, seed=7, backend=backend).inputs[:, 4:].double()
    m = eps.numel()
    assert abs(eps.mean().item()) <= 5 * sigma / math.sqrt(m)
    var = eps.var().item()
    assert abs(var - sigma**2) <= 5 * sigma**2 * math.sqrt(2 / (m - 1))
    # Fourth moment of a normal: 3σ⁴ (catches a uniform or a clipped draw with the right variance).
    kurt = (eps**4).mean().item() / sigma**4
    assert abs(kurt - 3) <= 5 * math.sqrt(96 / m)
    for a, b in ((eps[:, 1:], eps[:, :-1]), (eps[1:], eps[:-1])):
        corr = ((a * b).mean() / sigma**2).item()
        assert abs(corr) <= 5 / math.sqrt(a.numel())


@pytest.mark.parametrize("backend", BACKENDS)
def test_same_seed_same_draws_other_seed_other_draws(backend):
    codes = rows(0, 30, 8, torch.float32)
    index = kernels.class_index(_labels(0, 30, 3))
    idx = torch.arange(30, device=device())
    first = kernels.sample_codes(codes, idx, index, T_VALUES, noise_dim=5, seed=11, backend=backend)
    again = kernels.sample_codes(codes, idx, index, T_VALUES, noise_dim=5, seed=11, backend=backend)
    other = kernels.sample_codes(codes, idx, index, T_VALUES, noise_dim=5, seed=12, backend=backend)
    for x, y in zip(first, again):
        assert torch.equal(x, y)
    assert not torch.equal(first.inputs[:, 8:], other.inputs[:, 8:])


@requires_triton
def test_triton_draws_do_not_depend_on_the_batch():
    # Philox counters are the row number: a prefix of the batch draws the same partners, t and noise.
    codes = rows(0, 30, 8, torch.float32)
    index = kernels.class_index(_labels(0, 30, 3))
    idx = torch.arange(30, device=device())
    full = kernels.sample_codes(codes, idx, index, T_VALUES, noise_dim=5, seed=3, backend="triton")
    part = kernels.sample_codes(codes, idx[:10], index, T_VALUES, noise_dim=5, seed=3, backend="triton")
    for x, y in zip(full, part):
        assert torch.equal(x[:10], y)


@pytest.mark.parametrize("backend", BACKENDS)
def test_zero_sigma_and_tensor_t_values(backend):
    codes = rows(1, 12, 6, torch.bfloat16)
    index = kernels.class_index(torch.arange(12, device=device()) % 2)
    s = kernels.sample_codes(
        codes, torch.arange(12, device=device()), index, torch.tensor([0.5], device=device()),
        noise_dim=3, sigma=0.0, backend=backend,
    )
    assert torch.equal(s.inputs[:, 6:], torch.zeros(12, 3, dtype=torch.bfloat16, device=device()))
    assert (s.t == 0.5).all()


def test_class_index():
    labels = torch.tensor([2, 0, 2, 1, 0, 2])
    index = kernels.class_index(labels, num_classes=4)
    assert torch.equal(index.offsets, torch.tensor([0, 2, 3, 6, 6]))
    assert torch.equal(index.order, torch.tensor([1, 4, 3, 0, 2, 5]))
    assert torch.equal(index.labels, labels)
    assert index.num_classes == 4
    for c in range(4):
        members = index.order[index.offsets[c]:index.offsets[c + 1]]
        assert (labels[members] == c).all()


@pytest.mark.parametrize(
    "anchor, u, want",
    [(0, 0.0, 2), (0, 0.49, 2), (0, 0.5, 1), (0, 0.99, 1), (1, 0.0, 0), (1, 0.5, 2), (2, 0.3, 0), (2, 0.7, 1)],
)
def test_draw_partners_maps_the_anchor_slot_to_the_last(anchor, u, want):
    # One class, order = [0, 1, 2]: k = floor(u * 2) picks slot 0 or 1; the anchor's own slot maps
    # to the last slot (2); an anchor in the last slot is never hit.
    index = reference.class_index(torch.tensor([0, 0, 0]))
    assert reference.draw_partners(torch.tensor([anchor]), index, torch.tensor([u])).item() == want
