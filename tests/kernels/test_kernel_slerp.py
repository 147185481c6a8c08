"""slerp and slerp_gather: the reference against closed forms, both backends against the
properties, Triton against the reference."""
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import kernels
from kernel_helpers import (
    BACKENDS,
    EXAMPLES,
    assert_slerp_close,
    batches,
    device,
    dims,
    dtypes,
    layouts,
    requires_triton,
    rows,
    seeds,
    ts,
    unit,
)
from kernels import reference
from tolerances import tol


def _angle(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Angle between rows, in float64, stable at 0 and pi."""
    x, y = x.double(), y.double()
    x = x / x.norm(dim=1, keepdim=True)
    y = y / y.norm(dim=1, keepdim=True)
    return 2 * torch.atan2((x - y).norm(dim=1), (x + y).norm(dim=1))


# ----------------------------------------------------------------------------------------------
# The reference against independent closed forms
# ----------------------------------------------------------------------------------------------
@settings(max_examples=50, deadline=None)
@given(alpha=st.floats(-math.pi, math.pi), delta=st.floats(-3.1, 3.1), t=st.floats(-0.5, 1.5))
def test_reference_is_rotation_in_the_plane(alpha, delta, t):
    # a = (cos α, sin α), b = (cos(α+δ), sin(α+δ)), |δ| < π: slerp turns a by tδ.
    a = torch.tensor([[math.cos(alpha), math.sin(alpha)]])
    b = torch.tensor([[math.cos(alpha + delta), math.sin(alpha + delta)]])
    want = torch.tensor([[math.cos(alpha + t * delta), math.sin(alpha + t * delta)]])
    torch.testing.assert_close(reference.slerp(a, b, t), want, **tol(torch.float32))


def test_reference_quarter_circle():
    e = torch.eye(2)
    t = torch.linspace(0, 1, 11)
    got = reference.slerp(e[:1].expand(11, 2), e[1:].expand(11, 2), t)
    want = torch.stack([torch.cos(t * math.pi / 2), torch.sin(t * math.pi / 2)], dim=1)
    torch.testing.assert_close(got, want, **tol(torch.float32))


@settings(max_examples=30, deadline=None)
@given(seed=seeds, batch=batches, d=st.integers(2, 64), t=ts)
def test_reference_matches_textbook_formula(seed, batch, d, t):
    # [sin((1-t)θ) â + sin(tθ) b̂] / sin θ in float64, θ = acos(â·b̂), of the same float32 inputs.
    g = torch.Generator().manual_seed(seed)
    a, b = torch.randn(2, batch, d, generator=g).double()  # float32 values, held in float64
    a_hat, b_hat = a / a.norm(dim=1, keepdim=True), b / b.norm(dim=1, keepdim=True)
    theta = torch.acos((a_hat * b_hat).sum(1, keepdim=True).clamp(-1, 1))
    want = (torch.sin((1 - t) * theta) * a_hat + torch.sin(t * theta) * b_hat) / torch.sin(theta)
    got = reference.slerp(a.float(), b.float(), t).double()
    # Random pairs in low d are often near-antipodal, where slerp's weights divide by sin θ: float32
    # math loses ~eps/sin θ there (bench/slerp_accuracy.py), so the table's atol is scaled by the
    # condition number 1/sin θ per row, as in test_constant_angle_steps.
    atol = tol(torch.float32)["atol"] / torch.sin(theta).clamp(1e-3, 1.0)
    assert ((got - want).abs() <= atol + tol(torch.float32)["rtol"] * want.abs()).all(), (got - want).abs().max()


@settings(max_examples=20, deadline=None)
@given(seed=seeds, batch=batches, d=st.integers(2, 32), t=ts)
def test_reference_is_rotation_equivariant(seed, batch, d, t):
    g = torch.Generator().manual_seed(seed)
    a, b = torch.randn(2, batch, d, generator=g)
    rotation, _ = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=torch.float64))
    rotation = rotation.float()
    got, want = reference.slerp(a @ rotation.T, b @ rotation.T, t), reference.slerp(a, b, t) @ rotation.T
    # Rotating the inputs perturbs them by float32 rounding, which slerp amplifies by its condition number
    # 1/sin θ near antipodal pairs (random pairs in d = 2 often are): the table's atol is scaled by it per
    # row, as in test_reference_matches_textbook_formula.
    cos = torch.nn.functional.cosine_similarity(a.double(), b.double(), dim=1, eps=1e-30).clamp(-1, 1)
    atol = tol(torch.float32)["atol"] / torch.sqrt(1 - cos**2).clamp(1e-3, 1.0)[:, None]
    assert ((got - want).abs() <= atol + tol(torch.float32)["rtol"] * want.abs()).all(), (got - want).abs().max()


def test_reference_gradients_follow_the_closed_form():
    # d/dt of the quarter circle is (π/2)(−sin(tπ/2), cos(tπ/2)); gradients stay finite for
    # identical and antipodal rows too.
    e = torch.eye(2)
    t = torch.tensor([0.3], requires_grad=True)
    out = reference.slerp(e[:1], e[1:], t)
    (grad_x,) = torch.autograd.grad(out[0, 0], t)
    torch.testing.assert_close(grad_x, torch.tensor([-math.pi / 2 * math.sin(0.3 * math.pi / 2)]), **tol(torch.float32))
    a = torch.randn(3, 5, requires_grad=True)
    b = torch.stack([a[0].detach(), -a[1].detach(), torch.randn(5)]).requires_grad_()
    reference.slerp(a, b, 0.4).sum().backward()
    assert torch.isfinite(a.grad).all() and torch.isfinite(b.grad).all()


# ----------------------------------------------------------------------------------------------
# Triton against the reference
# ----------------------------------------------------------------------------------------------
@requires_triton
@settings(max_examples=EXAMPLES, deadline=None)
@given(seed=seeds, batch=batches, d=dims, dtype=dtypes, layout=layouts, t=ts, per_row_t=st.booleans())
def test_triton_matches_reference(seed, batch, d, dtype, layout, t, per_row_t):
    a = rows(seed, batch, d, dtype, layout)
    b = rows(seed + 1, batch, d, dtype, layout)
    if per_row_t:
        t = torch.rand(batch, generator=torch.Generator().manual_seed(seed)).to(device())
    got = kernels.slerp(a, b, t, backend="triton")
    assert got.dtype == dtype and got.shape == (batch, d) and got.device == a.device
    assert_slerp_close(got, reference.slerp(a, b, t), a, b, dtype)


@requires_triton
@settings(max_examples=EXAMPLES, deadline=None)
@given(seed=seeds, n=st.integers(1, 40), batch=batches, d=dims, dtype=dtypes, layout=layouts, t=ts,
       int32=st.booleans(), per_row_t=st.booleans())
def test_triton_gather_matches_reference(seed, n, batch, d, dtype, layout, t, int32, per_row_t):
    codes = rows(seed, n, d, dtype, layout)
    g = torch.Generator().manual_seed(seed)
    i, j = torch.randint(0, n, (2, batch), generator=g).to(device())
    if int32:
        i, j = i.int(), j.int()
    if per_row_t:
        t = torch.rand(batch, generator=g).to(device())
    got = kernels.slerp_gather(codes, i, j, t, backend="triton")
    assert got.dtype == dtype and got.shape == (batch, d)
    a, b = codes[i.long()], codes[j.long()]
    assert_slerp_close(got, reference.slerp(a, b, t), a, b, dtype)


def test_the_slerp_comparison_fails_beyond_tolerance():
    # The helper above must be able to fail: a well-conditioned row (θ = 60°) off by 1e-4 in float32.
    a = torch.tensor([[1.0, 0.0]])
    b = torch.tensor([[0.5, math.sqrt(3) / 2]])
    want = reference.slerp(a, b, 0.5)
    assert_slerp_close(want + 5e-6, want, a, b, torch.float32)
    with pytest.raises(AssertionError, match="1 row"):
        assert_slerp_close(want + 1e-4, want, a, b, torch.float32)


# ----------------------------------------------------------------------------------------------
# Properties, on both backends
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("backend", BACKENDS)
@settings(max_examples=EXAMPLES, deadline=None)
@given(seed=seeds, batch=batches, d=dims, dtype=dtypes, t=ts)
def test_unit_norm(backend, seed, batch, d, dtype, t):
    # Inputs of any norm (scaled by up to 1e3 either way) come out on the sphere.
    scale = torch.logspace(-3, 3, batch).reshape(-1, 1).to(device())
    a = (rows(seed, batch, d, torch.float32) * scale).to(dtype)
    b = rows(seed + 1, batch, d, dtype)
    out = kernels.slerp(a, b, t, backend=backend)
    torch.testing.assert_close(out.float().norm(dim=1), torch.ones(batch, device=device()), **tol(dtype))


@pytest.mark.parametrize("backend", BACKENDS)
@settings(max_examples=EXAMPLES, deadline=None)
@given(seed=seeds, batch=batches, d=dims, dtype=dtypes)
def test_endpoints(backend, seed, batch, d, dtype):
    a, b = rows(seed, batch, d, dtype), rows(seed + 1, batch, d, dtype)
    t = torch.tensor([0.0, 1.0], device=device()).repeat_interleave(batch)
    out = kernels.slerp(torch.cat([a, a]), torch.cat([b, b]), t, backend=backend)
    torch.testing.assert_close(out[:batch], unit(a).to(dtype), **tol(dtype))
    torch.testing.assert_close(out[batch:], unit(b).to(dtype), **tol(dtype))


@pytest.mark.parametrize("backend", BACKENDS)
@settings(max_examples=EXAMPLES, deadline=None)
@given(seed=seeds, batch=batches, d=dims, dtype=dtypes, t=ts)
def test_symmetry(backend, seed, batch, d, dtype, t):
    a, b = rows(seed, batch, d, dtype), rows(seed + 1, batch, d, dtype)
    # The two sides round differently, so near antipodal (random pairs in low d often are) they differ by
    # ~eps / sin θ: the tolerance is scaled by slerp's condition number, as for backend agreement.
    assert_slerp_close(kernels.slerp(a, b, t, backend=backend), kernels.slerp(b, a, 1.0 - t, backend=backend), a, b,
                       dtype)


@pytest.mark.parametrize("backend", BACKENDS)
@settings(max_examples=EXAMPLES, deadline=None)
@given(seed=seeds, batch=batches, d=st.integers(2, 140), steps=st.integers(2, 6))
def test_constant_angle_steps(backend, seed, batch, d, steps):
    # Equal steps in t are equal steps in angle, each θ/steps, and the path stays on the great
    # circle: angle(a, out(t)) = tθ.
    a, b = rows(seed, batch, d, torch.float32), rows(seed + 1, batch, d, torch.float32)
    ts_ = torch.linspace(0, 1, steps + 1, device=device())
    outs = [kernels.slerp(a, b, float(t), backend=backend) for t in ts_]
    theta = _angle(a, b)
    # The dtype's tolerance, scaled by slerp's condition number 1/sin θ: near-antipodal pairs divide by
    # sin θ, so any fp32 implementation (the reference too) loses ~eps/sin θ in angle there.
    atol = tol(torch.float32)["atol"] / theta.sin().clamp(1e-3, 1.0)
    for k in range(steps):
        step = _angle(outs[k], outs[k + 1])
        assert ((step - theta / steps).abs() <= atol).all(), (step - theta / steps).abs().max()
        err = (_angle(a, outs[k]) - theta * float(ts_[k])).abs()
        assert (err <= atol).all(), err.max()


@pytest.mark.parametrize("backend", BACKENDS)
@settings(max_examples=EXAMPLES, deadline=None)
@given(seed=seeds, batch=batches, d=dims, dtype=dtypes, t=st.floats(-1.0, 2.0, width=32))
def test_identical_rows_return_the_input(backend, seed, batch, d, dtype, t):
    a = rows(seed, batch, d, dtype)
    out = kernels.slerp(a, a.clone(), t, backend=backend)
    torch.testing.assert_close(out, unit(a).to(dtype), **tol(dtype))


@pytest.mark.parametrize("backend", BACKENDS)
@settings(max_examples=EXAMPLES, deadline=None)
@given(seed=seeds, batch=batches, d=st.integers(2, 140), t=ts, gap=st.sampled_from([1e-3, 1e-5, 1e-6, 1e-7]))
def test_near_parallel_rows(backend, seed, batch, d, t, gap):
    # b is a turned by about `gap` radians: the result is finite, on the sphere, at angle t·θ from â.
    a = unit(rows(seed, batch, d, torch.float32))
    b = unit(a + gap * unit(rows(seed + 1, batch, d, torch.float32)))
    out = kernels.slerp(a, b, t, backend=backend)
    assert torch.isfinite(out).all()
    atol = tol(torch.float32)["atol"]
    torch.testing.assert_close(out.norm(dim=1), torch.ones(batch, device=device()), **tol(torch.float32))
    torch.testing.assert_close(_angle(a, out), t * _angle(a, b), atol=atol, rtol=0)
    torch.testing.assert_close(out, reference.slerp(a, b, t), **tol(torch.float32))


@pytest.mark.parametrize("backend", BACKENDS)
@settings(max_examples=EXAMPLES, deadline=None)
@given(seed=seeds, batch=batches, d=st.integers(2, 140), dtype=dtypes, t=ts)
def test_antipodal_rows(backend, seed, batch, d, dtype, t):
    # b = −a: the documented choice turns â towards the axis e_k least aligned with it, so the
    # result is cos(tπ) â + sin(tπ) q̂ with q̂ ⟂ â; it is symmetric and hits both endpoints.
    a = rows(seed, batch, d, dtype)
    b = -a
    out = kernels.slerp(a, b, t, backend=backend)
    a_hat = unit(a)
    k = a_hat.abs().argmin(dim=1, keepdim=True)
    q = torch.zeros_like(a_hat).scatter_(1, k, 1.0) - a_hat.gather(1, k) * a_hat
    q = q / q.norm(dim=1, keepdim=True)
    want = math.cos(math.pi * t) * a_hat + math.sin(math.pi * t) * q
    torch.testing.assert_close(out, want.to(dtype), **tol(dtype))
    torch.testing.assert_close(out, kernels.slerp(b, a, 1.0 - t, backend=backend), **tol(dtype))
    ends = kernels.slerp(torch.cat([a, a]), torch.cat([b, b]), torch.tensor([0.0, 1.0], device=device()).repeat_interleave(batch), backend=backend)
    torch.testing.assert_close(ends, torch.cat([a_hat, -a_hat]).to(dtype), **tol(dtype))


@pytest.mark.parametrize("backend", BACKENDS)
def test_one_dimensional_rows(backend):
    # d = 1: the sphere is {−1, +1}. Same signs return that sign; opposite signs give the nearer
    # endpoint and, at t = 1/2 exactly, +1 (so the result is symmetric).
    a = torch.tensor([[2.0], [-3.0], [0.5], [0.5], [-0.5], [4.0]], device=device())
    b = torch.tensor([[5.0], [-1.0], [-2.0], [-2.0], [2.0], [-1.0]], device=device())
    t = torch.tensor([0.7, 0.2, 0.3, 0.8, 0.5, 0.5], device=device())
    out = kernels.slerp(a, b, t, backend=backend)
    torch.testing.assert_close(out, torch.tensor([[1.0], [-1.0], [1.0], [-1.0], [1.0], [1.0]], device=device()))
    torch.testing.assert_close(kernels.slerp(b, a, 1 - t, backend=backend), out)


@pytest.mark.parametrize("backend", BACKENDS)
def test_zero_rows_stay_finite(backend):
    a = torch.zeros(3, 4, device=device())
    b = torch.tensor([[0.0] * 4, [1.0, 0, 0, 0], [0, 3.0, 0, 0]], device=device())
    out = kernels.slerp(a, b, 0.5, backend=backend)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out[1:], unit(b[1:]))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("zero", ["a", "b"])
def test_one_zero_endpoint_gives_the_other_direction(backend, zero):
    # One zero row among full unit rows (no zero/zero or padded row in the tile): the reference's
    # answer is the other endpoint's direction for 0 < t < 1, and the output stays a unit row.
    a, b = rows(0, 64, 16, torch.float32), rows(1, 64, 16, torch.float32)
    (a if zero == "a" else b)[5] = 0.0
    for t in (0.25, 0.5, 0.75):
        out = kernels.slerp(a, b, t, backend=backend)
        torch.testing.assert_close(out, reference.slerp(a, b, t), **tol(torch.float32))
        torch.testing.assert_close(out[5], unit(b if zero == "a" else a)[5], **tol(torch.float32))


@pytest.mark.parametrize("backend", BACKENDS)
def test_t_as_zero_dim_tensor_and_empty_batch(backend):
    a, b = rows(0, 5, 7, torch.float32), rows(1, 5, 7, torch.float32)
    torch.testing.assert_close(
        kernels.slerp(a, b, torch.tensor(0.25, device=device()), backend=backend), reference.slerp(a, b, 0.25)
    )
    empty = kernels.slerp(a[:0], b[:0], 0.5, backend=backend)
    assert empty.shape == (0, 7)


@pytest.mark.parametrize("backend", BACKENDS)
@settings(max_examples=EXAMPLES, deadline=None)
@given(seed=seeds, n=st.integers(1, 40), batch=batches, d=dims, dtype=dtypes, t=ts)
def test_gather_equals_slerp_of_gathered_rows(backend, seed, n, batch, d, dtype, t):
    codes = rows(seed, n, d, dtype)
    i, j = torch.randint(0, n, (2, batch), generator=torch.Generator().manual_seed(seed)).to(device())
    torch.testing.assert_close(
        kernels.slerp_gather(codes, i, j, t, backend=backend),
        kernels.slerp(codes[i], codes[j], t, backend=backend),
        **tol(dtype),
    )


@pytest.mark.parametrize("backend", BACKENDS)
@settings(max_examples=EXAMPLES, deadline=None)
@given(seed=seeds, batch=batches, d=st.integers(2, 140), t=ts, gap=st.sampled_from([0.3, 1e-2, 1e-4, 1e-5]))
def test_near_antipodal_rows_stay_on_the_sphere(backend, seed, batch, d, t, gap):
    # b is −a turned by about `gap`: the weights grow like 1/sin θ, the result must still be unit,
    # finite, and hit both endpoints.
    a = unit(rows(seed, batch, d, torch.float32))
    b = unit(-a + gap * unit(rows(seed + 1, batch, d, torch.float32)))
    out = kernels.slerp(a, b, t, backend=backend)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out.norm(dim=1), torch.ones(batch, device=device()), **tol(torch.float32))
    ends = kernels.slerp(torch.cat([a, a]), torch.cat([b, b]), torch.tensor([0.0, 1.0], device=device()).repeat_interleave(batch), backend=backend)
    torch.testing.assert_close(ends, torch.cat([a, b]), **tol(torch.float32))
