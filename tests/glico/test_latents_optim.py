"""SphereRowAdam: the code table's optimiser equals SparseAdam followed by the projection of the
touched rows, reads SparseAdam's state, and says what it accepts."""
import pytest
import torch

from glico.latents import CodeTable, SphereRowAdam
from tolerances import tol


def _loss(table: CodeTable, idx: torch.Tensor, target: torch.Tensor, twice: bool = False) -> torch.Tensor:
    loss = ((table(idx) - target[idx]) ** 2).sum()
    if twice:  # a second lookup of the same rows: the sparse gradient repeats them
        loss = loss + (table(idx) * target[idx]).sum()
    return loss


def _run(opt_factory, steps: int, twice: bool = False, table: CodeTable | None = None, opt=None, start: int = 0):
    torch.manual_seed(0)
    init = torch.randn(40, 16)
    target = torch.randn(40, 16)
    table = table or CodeTable(init)
    opt = opt or opt_factory(table)
    g = torch.Generator().manual_seed(1)
    perms = [torch.randperm(40, generator=g)[:12] for _ in range(steps)]
    for idx in perms[start:]:
        opt.zero_grad()
        _loss(table, idx, target, twice).backward()
        opt.step()
        if isinstance(opt, torch.optim.SparseAdam):
            table.project_(idx)
    return table, opt


def _sparse_adam(table):
    return torch.optim.SparseAdam([table.weight], lr=0.05, betas=(0.8, 0.99))


def _ours(table, **kw):
    return SphereRowAdam([table.weight], lr=0.05, betas=(0.8, 0.99), **kw)


def test_equals_sparse_adam_then_projection():
    ours, opt = _run(_ours, 20)
    theirs, ref = _run(_sparse_adam, 20)
    torch.testing.assert_close(ours.weight, theirs.weight, **tol(torch.float32))
    for key in ("exp_avg", "exp_avg_sq"):
        torch.testing.assert_close(opt.state[ours.weight][key], ref.state[theirs.weight][key], **tol(torch.float32))
    assert opt.state[ours.weight]["step"] == ref.state[theirs.weight]["step"] == 20
    torch.testing.assert_close(ours.weight.norm(dim=1), torch.ones(40), **tol(torch.float32))


def test_repeated_rows_are_summed_by_default_as_sparse_adam_does():
    ours, _ = _run(_ours, 10, twice=True)
    theirs, _ = _run(_sparse_adam, 10, twice=True)
    torch.testing.assert_close(ours.weight, theirs.weight, **tol(torch.float32))


def test_the_fit_setting_distinct_rows_gives_the_same_result_on_distinct_batches():
    fast, _ = _run(lambda t: _ours(t, distinct_rows=True), 20)
    theirs, _ = _run(_sparse_adam, 20)
    torch.testing.assert_close(fast.weight, theirs.weight, **tol(torch.float32))


def test_continues_from_a_sparse_adam_state_dict():
    """Checkpoints written with SparseAdam (glico 0.1's fit) resume under SphereRowAdam."""
    theirs, ref = _run(_sparse_adam, 20)
    half, half_opt = _run(_sparse_adam, 10)
    state = half_opt.state_dict()
    opt = _ours(half)
    opt.load_state_dict(state)
    resumed, _ = _run(None, 20, table=half, opt=opt, start=10)
    torch.testing.assert_close(resumed.weight, theirs.weight, **tol(torch.float32))


def test_without_projection_rows_leave_the_sphere():
    ours, _ = _run(lambda t: _ours(t, project=False), 5)
    assert (ours.weight.norm(dim=1) - 1).abs().max() > 1e-3


def test_dense_gradients_and_bad_settings_are_refused():
    w = torch.nn.Parameter(torch.randn(4, 3))
    opt = SphereRowAdam([w])
    w.grad = torch.ones_like(w)
    with pytest.raises(RuntimeError, match="sparse row gradients"):
        opt.step()
    with pytest.raises(ValueError, match="betas must be in"):
        SphereRowAdam([w], betas=(1.0, 0.9))
    with pytest.raises(ValueError, match="lr must be >= 0"):
        SphereRowAdam([w], lr=-1)
    v = torch.nn.Parameter(torch.randn(4, 3, 2))
    v.grad = torch.sparse_coo_tensor(torch.tensor([[0], [0], [0]]), torch.tensor([1.0]), (4, 3, 2), check_invariants=True)
    with pytest.raises(ValueError, match=r"updates \(N, d\) tables from row-sparse gradients"):
        SphereRowAdam([v]).step()
    u = torch.nn.Parameter(torch.randn(4, 3))
    u.grad = torch.sparse_coo_tensor(torch.tensor([[0], [1]]), torch.tensor([1.0]), (4, 3), check_invariants=True)
    with pytest.raises(ValueError, match=r"sparse in 2 dimension\(s\)"):
        SphereRowAdam([u]).step()
    table = CodeTable(torch.randn(4, 3))
    opt = SphereRowAdam([table.weight])
    opt.param_groups[0]["maximize"] = True  # as a SparseAdam(maximize=True) state dict would bring
    table(torch.tensor([0])).sum().backward()
    with pytest.raises(ValueError, match="minimises only"):
        opt.step()
