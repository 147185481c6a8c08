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
    this costs one launch, and no synchronisation with ``distinct_rows=True``.

    The gradient must be row-sparse, as :class:`glico.latents.CodeTable` (``F.embedding(...,
    sparse=True)``) produces. By default it is coalesced first (repeated rows summed, as SparseAdam
    does), which synchronises host and device on CUDA. ``distinct_rows=True`` skips that and takes
    the gradient's row ids as they are: only for callers that know no row appears twice in a step,
    such as the fit loop (a batch is a slice of a permutation, looked up once). With a repeated row
    it would be wrong, silently (the row would get one of its updates, not their sum).

    The state (``step``, ``exp_avg``, ``exp_avg_sq``) has SparseAdam's names and shapes, so either
    optimiser's ``state_dict`` loads into the other.

    Args:
        params: the code table's weight (any ``(N, d)`` floating parameters).
        lr: learning rate.
        betas: Adam's ``(β₁, β₂)``.
        eps: Adam's ε.
        project: renormalise the updated rows onto the unit sphere.
        distinct_rows: the sparse gradient never names a row twice (see above); default False.
    """

    def __init__(self, params: Iterable[torch.Tensor], lr: float = 1e-2, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, project: bool = True, distinct_rows: bool = False) -> None:
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
                if p.dim() != 2 or grad.sparse_dim() != 1:
                    raise ValueError(f"SphereRowAdam updates (N, d) tables from row-sparse gradients (sparse in the "
                                     f"first dimension only, as an embedding's); got a parameter of shape "
                                     f"{tuple(p.shape)} with a gradient sparse in {grad.sparse_dim()} dimension(s)")
                if group.get("maximize", False):
                    raise ValueError("SphereRowAdam minimises only; this parameter group has maximize=True (from a "
                                     "SparseAdam state dict?)")
                # Loaded from a SparseAdam state dict (no such key): coalesce, as SparseAdam did.
                if not group.get("distinct_rows", False):
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
