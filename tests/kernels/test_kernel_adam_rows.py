"""adam_rows_: the fused lazy-Adam step + projection equals torch.optim.SparseAdam followed by a
projection of the touched rows, touches nothing else, and refuses bad input before launching."""
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import kernels
from kernel_helpers import BACKENDS, EXAMPLES, device, dims, dtypes, layouts, rows, seeds
from kernels import reference
from tolerances import tol


def _state(seed: int, n: int, d: int, dtype: torch.dtype, layout: str):
    param = rows(seed, n, d, dtype, layout)
    exp_avg = rows(seed + 1, n, d, dtype, layout)
    exp_avg.mul_(0.1)  # in place: keeps the layout (strided / transposed)
    exp_avg_sq = rows(seed + 2, n, d, dtype, layout)
    exp_avg_sq.abs_().mul_(0.01)  # second moments are non-negative
    return param, exp_avg, exp_avg_sq


@pytest.mark.parametrize("backend", BACKENDS)
@settings(max_examples=EXAMPLES, deadline=None)
@given(seed=seeds, n=st.integers(1, 60), frac=st.floats(0.0, 1.0), d=dims, dtype=dtypes, layout=layouts,
       grad_layout=layouts, step=st.integers(1, 10_000), lr=st.sampled_from([0.0, 1e-3, 1e-2, 0.5]),
       beta1=st.sampled_from([0.0, 0.5, 0.9]), beta2=st.sampled_from([0.0, 0.99, 0.999]), project=st.booleans(),
       int32=st.booleans())
def test_matches_the_reference_and_touches_only_idx(backend, seed, n, frac, d, dtype, layout, grad_layout, step, lr,
                                                    beta1, beta2, project, int32):
    k = int(frac * n)
    idx = torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:k].to(device())
    if int32:
        idx = idx.int()
    grad = rows(seed + 3, k, d, dtype, grad_layout)
    hyper = dict(step=step, lr=lr, beta1=beta1, beta2=beta2, eps=1e-8, project=project)
    got = _state(seed, n, d, dtype, layout)
    want = [x.clone() for x in got]
    before = [x.clone() for x in got]
    out = kernels.adam_rows_(*got, idx, grad, backend=backend, **hyper)
    assert out is got[0]
    reference.adam_rows_(*want, idx.long(), grad, **hyper)
    touched = torch.zeros(n, dtype=torch.bool, device=device())
    touched[idx.long()] = True
    for g, w, b in zip(got, want, before):
        assert torch.equal(g[~touched], b[~touched])  # other rows: not read-modified-written
        torch.testing.assert_close(g, w, **tol(dtype))
    if project and k:
        norms = got[0][touched].float().norm(dim=1)
        torch.testing.assert_close(norms, torch.ones_like(norms), **tol(dtype))


@pytest.mark.parametrize("backend", BACKENDS)
def test_equals_sparse_adam_then_projection_over_many_steps(backend):
    """The independent truth: torch.optim.SparseAdam on an embedding's sparse gradient, then the
    touched rows renormalised; 25 steps with distinct random batches and a changing learning rate."""
    torch.manual_seed(0)
    n, d, batch = 50, 24, 16
    init = torch.nn.functional.normalize(torch.randn(n, d), dim=1)
    ours = torch.nn.Parameter(init.clone().to(device()))
    theirs = torch.nn.Parameter(init.clone().to(device()))
    opt = torch.optim.SparseAdam([theirs], lr=0.05, betas=(0.8, 0.99))
    m = torch.zeros_like(ours)
    v = torch.zeros_like(ours)
    target = torch.randn(n, d, device=device())
    g = torch.Generator().manual_seed(1)
    for step in range(1, 26):
        idx = torch.randperm(n, generator=g)[:batch].to(device())
        lr = 0.05 * (1 - step / 30)
        for group in opt.param_groups:
            group["lr"] = lr
        loss = ((torch.nn.functional.embedding(idx, theirs, sparse=True) - target[idx]) ** 2).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
        kernels.project_rows_(theirs.data, idx, backend="torch")
        with torch.no_grad():
            grad = 2 * (ours[idx] - target[idx])
        kernels.adam_rows_(ours.data, m, v, idx, grad, step=step, lr=lr, beta1=0.8, beta2=0.99, backend=backend)
        assert ours.grad_fn is None
    torch.testing.assert_close(ours.detach(), theirs.detach(), **tol(torch.float32))
    torch.testing.assert_close(m, opt.state[theirs]["exp_avg"], **tol(torch.float32))
    torch.testing.assert_close(v, opt.state[theirs]["exp_avg_sq"], **tol(torch.float32))


@pytest.mark.parametrize("backend", BACKENDS)
def test_empty_batch_changes_nothing(backend):
    state = _state(0, 5, 3, torch.float32, "contiguous")
    before = [x.clone() for x in state]
    kernels.adam_rows_(*state, torch.empty(0, dtype=torch.long, device=device()),
                       torch.empty(0, 3, device=device()), step=1, lr=0.1, backend=backend)
    assert all(torch.equal(a, b) for a, b in zip(state, before))


BAD = [
    (dict(idx=[1, 1]), ValueError, "must not repeat a row"),
    (dict(idx=[0, 7]), ValueError, r"in \[0, 6\), got values in \[0, 7\]"),
    (dict(grad_rows=3), ValueError, r"grad must have shape \(len\(idx\), d\) = \(2, 4\)"),
    (dict(step=0), ValueError, "step must be >= 1"),
    (dict(step=1.0), TypeError, "step must be an int"),
    (dict(lr=-1.0), ValueError, "lr must be a finite number >= 0"),
    (dict(lr="0.1"), TypeError, "lr must be a python number, got str"),
    (dict(beta1=1.0), ValueError, r"beta1 must be a finite number in \[0, 1\)"),
    (dict(eps=0.0), ValueError, "eps must be a finite number > 0"),
    (dict(moment_shape=(5, 4)), ValueError, r"exp_avg must have param's shape \(6, 4\)"),
    (dict(idx_dtype=torch.float32), TypeError, "idx must have an integer dtype"),
    (dict(backend="cuda"), ValueError, "backend must be one of"),
]


@pytest.mark.parametrize("change, error, message", BAD)
def test_bad_input_is_refused_before_anything_changes(change, error, message):
    param, m, v = _state(0, 6, 4, torch.float32, "contiguous")
    if "moment_shape" in change:
        m = torch.zeros(change["moment_shape"], device=device())
    before = [x.clone() for x in (param, m, v)]
    idx = torch.tensor(change.get("idx", [0, 3]), dtype=change.get("idx_dtype", torch.long), device=device())
    grad = torch.ones(change.get("grad_rows", 2), 4, device=device())
    kwargs = {k: change[k] for k in ("step", "lr", "beta1", "eps", "backend") if k in change}
    kwargs.setdefault("step", 1)
    kwargs.setdefault("lr", 0.1)
    with pytest.raises(error, match=message):
        kernels.adam_rows_(param, m, v, idx, grad, **kwargs)
    assert all(torch.equal(a, b) for a, b in zip((param, m, v), before))
