"""The optimiser of the code table: lazy Adam on the rows of the batch, fused with their projection."""
from __future__ import annotations

from collections.abc import Iterable

import torch

import kernels


class SphereRowAdam(torch.optim.Optimizer):
    """Adam for code tables with sparse row gradients, keeping the updated rows on the unit sphere.

    The update of every row that has a gradient is :class:`torch.optim.SparseAdam`'s ("lazy" Adam:
    rows without a gradient keep their moments, the bias correction counts the table's steps), and
    with ``project=True`` those rows are then renormalised — all in one call of
    :func:`kernels.adam_rows_` (one Triton launch on CUDA). SparseAdam followed by a projection costs
    about fifteen small kernels and, through ``coalesce``, a host–device synchronisation per step;
    this costs one launch and no synchronisation.

    The gradient must be sparse, as :class:`glico.latents.CodeTable` (``F.embedding(...,
    sparse=True)``) produces. With ``distinct_rows=True`` (the fit loop: a batch is a slice of a
    permutation, looked up once) its row ids are taken as they are, without coalescing; a gradient
    that does repeat a row is then detected by the rows' ids only where the caller checks — pass
    ``distinct_rows=False`` when one table row can be looked up twice per step (then the gradient
    is coalesced first, which synchronises on CUDA).

    The state (``step``, ``exp_avg``, ``exp_avg_sq``) has SparseAdam's names and shapes, so either
    optimiser's ``state_dict`` loads into the other.

    Args:
        params: the code table's weight (any ``(N, d)`` floating parameters).
        lr: learning rate.
        betas: Adam's ``(β₁, β₂)``.
        eps: Adam's ε.
        project: renormalise the updated rows onto the unit sphere.
        distinct_rows: the sparse gradient never names a row twice (see above).
    """

    def __init__(self, params: Iterable[torch.Tensor], lr: float = 1e-2, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, project: bool = True, distinct_rows: bool = True) -> None:
        if not 0.0 <= lr:
            raise ValueError(f"lr must be >= 0; got {lr}")
        if not (0.0 <= betas[0] < 1.0 and 0.0 <= betas[1] < 1.0):
            raise ValueError(f"betas must be in [0, 1); got {betas}")
        if not 0.0 < eps:
            raise ValueError(f"eps must be > 0; got {eps}")
        super().__init__(params, dict(lr=lr, betas=tuple(betas), eps=eps, project=project, distinct_rows=distinct_rows))

    @torch.no_grad()
    def step(self, closure=None):  # noqa: D102 - torch.optim.Optimizer's contract
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                grad = p.grad
                if not grad.is_sparse:
                    raise RuntimeError("SphereRowAdam takes sparse row gradients (a CodeTable, or nn.Embedding with "
                                       "sparse=True); for dense gradients use torch.optim.Adam")
                if p.dim() != 2:
                    raise ValueError(f"SphereRowAdam updates (N, d) tables; got a parameter of shape {tuple(p.shape)}")
                # Loaded from a SparseAdam checkpoint or an older group: the defaults fill the gaps.
                if not group.get("distinct_rows", True):
                    grad = grad.coalesce()
                state = self.state[p]
                if len(state) == 0:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state["step"] = int(state["step"]) + 1
                kernels.adam_rows_(p.data, state["exp_avg"], state["exp_avg_sq"], grad._indices()[0], grad._values(),
                                   step=state["step"], lr=float(group["lr"]), beta1=beta1, beta2=beta2,
                                   eps=group["eps"], project=group.get("project", True), check_indices=False)
        return loss
