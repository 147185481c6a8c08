"""project_rows_: only the given rows change, and they end on the unit sphere."""
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import kernels
from kernel_helpers import BACKENDS, EXAMPLES, device, dims, dtypes, layouts, requires_triton, rows, seeds, unit
from tolerances import tol


@pytest.mark.parametrize("backend", BACKENDS)
@settings(max_examples=EXAMPLES, deadline=None)
@given(seed=seeds, n=st.integers(1, 60), k=st.integers(0, 80), d=dims, dtype=dtypes, layout=layouts, int32=st.booleans())
def test_only_idx_rows_change_and_become_unit(backend, seed, n, k, d, dtype, layout, int32):
    codes = rows(seed, n, d, dtype, layout) * 3
    before = codes.clone()
    idx = torch.randint(0, n, (k,), generator=torch.Generator().manual_seed(seed)).to(device())  # duplicates likely
    if int32:
        idx = idx.int()
    out = kernels.project_rows_(codes, idx, backend=backend)
    assert out is codes
    touched = torch.zeros(n, dtype=torch.bool, device=device())
    touched[idx.long()] = True
    assert torch.equal(codes[~touched], before[~touched])
    torch.testing.assert_close(codes[touched], unit(before[touched]).to(dtype), **tol(dtype))
    torch.testing.assert_close(
        codes[touched].float().norm(dim=1), torch.ones(int(touched.sum()), device=device()), **tol(dtype)
    )


@pytest.mark.parametrize("backend", BACKENDS)
def test_duplicates_zero_rows_and_parameters(backend):
    codes = torch.nn.Parameter(torch.tensor([[3.0, 4.0], [0.0, 0.0], [1.0, 1.0]], device=device()))
    kernels.project_rows_(codes, torch.tensor([0, 0, 1, 0], device=device()), backend=backend)
    assert codes.grad_fn is None
    torch.testing.assert_close(codes.detach(), torch.tensor([[0.6, 0.8], [0.0, 0.0], [1.0, 1.0]], device=device()))


@requires_triton
def test_triton_path_launches_on_distinct_ids_unless_told_they_are(monkeypatch):
    # Two Triton programs on one row race on a GPU (the interpreter runs them in turn and cannot show
    # it), so the checked path must hand the kernel each id once.
    from kernels import triton_project

    seen = []
    for name in ("project_rows_", "project_rows_direct"):
        real = getattr(triton_project, name)
        monkeypatch.setattr(triton_project, name, lambda c, i, _real=real: (seen.append(i.clone()), _real(c, i))[1])
    codes = rows(0, 6, 4, torch.float32) * 2
    kernels.project_rows_(codes, torch.tensor([4, 1, 4, 4, 0], device=device()), backend="triton")
    assert sorted(seen[-1].tolist()) == [0, 1, 4]
    kernels.project_rows_(codes, torch.tensor([5, 2], device=device()), backend="triton", check_indices=False)
    assert seen[-1].tolist() == [5, 2]


@pytest.mark.parametrize("backend", BACKENDS)
def test_projection_is_idempotent(backend):
    codes = rows(3, 20, 33, torch.float32)
    idx = torch.arange(0, 20, 3, device=device())
    kernels.project_rows_(codes, idx, backend=backend)
    once = codes.clone()
    kernels.project_rows_(codes, idx, backend=backend)
    torch.testing.assert_close(codes, once, **tol(torch.float32))
