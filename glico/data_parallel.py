"""Data-parallel training of one model over the ranks of a process group (``torchrun``), equal to the
single process's training on the same global batches.

Every rank draws the same global batch (same permutation, same policy and augmentation draws) and keeps
a share of its rows. Three things then make a step the single process's step:

- the loss of a share is its rows' sum divided by the *global* batch size, and the gradients of the
  shared weights are **summed** over the ranks (:func:`summed_gradients`: ``DistributedDataParallel``
  with a SUM communication hook instead of its mean), so they are the gradient of the global mean;
- BatchNorm normalises with the statistics of the global batch (:class:`DistributedBatchNorm`, swapped
  in by :func:`synchronised_batchnorm`: per-rank count, mean and sum of squared deviations, combined by
  a differentiable all-reduce, so it also works on the CPU with gloo, where ``nn.SyncBatchNorm``
  refuses);
- layers whose output depends on the process's own random stream (dropout) are refused
  (:func:`refuse_rank_dependent_layers`): each rank would draw other masks than the single process.

Equal means equal up to the order of floating-point sums (a share's sum, then the ranks' sum). See
``docs/data-parallel.md``. :func:`glico.experiments.downstream.train_classifier` and
:func:`glico.training.fit` use these with ``data_parallel=True``.
"""
from __future__ import annotations

import contextlib
import gc
from typing import Iterator

import torch
import torch.distributed as dist
from torch import nn
from torch.nn import functional as F

from glico import distributed

__all__ = ["active", "share", "DistributedBatchNorm", "synchronised_batchnorm", "summed_gradients",
           "refuse_rank_dependent_layers", "all_reduce_sum", "gather_owned_rows_"]

_BATCHNORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)
_DROPOUTS = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout, nn.FeatureAlphaDropout)
# Input dimensions each BatchNorm class accepts (SyncBatchNorm: any with a channel dimension).
_INPUT_DIMS = {nn.BatchNorm1d: (2, 3), nn.BatchNorm2d: (4,), nn.BatchNorm3d: (5,)}


def active(data_parallel: bool) -> distributed.Ranks | None:
    """The ranks to share the work with: the joined process group when ``data_parallel`` and it has more
    than one rank; None otherwise (a world of one trains exactly as without ``data_parallel``)."""
    if not data_parallel:
        return None
    ranks = distributed.current()
    return ranks if ranks.world > 1 else None


def share(batch: int, ranks: distributed.Ranks) -> slice:
    """This rank's rows of a global batch of ``batch`` rows: a contiguous chunk, the chunks as even as
    they can be (``batch=5`` on 2 ranks: rows 0-1 and 2-4).

    Raises:
        ValueError: fewer rows than ranks (some rank would have none).
    """
    if batch < ranks.world:
        raise ValueError(f"a global batch of {batch} rows cannot be shared by {ranks.world} ranks: data-parallel "
                         f"training needs a global batch of at least the world size ({ranks.world})")
    return slice(ranks.rank * batch // ranks.world, (ranks.rank + 1) * batch // ranks.world)


class _SumOverRanks(torch.autograd.Function):
    """All-reduce (SUM) whose backward is the all-reduce (SUM) of the gradient: every rank's loss uses the
    sum, so the gradient of the total loss with respect to one rank's input is the sum of the ranks'."""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor, group) -> torch.Tensor:  # noqa: D102 - autograd's contract
        ctx.group = group
        out = tensor.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(out, group=group)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # noqa: D102
        return _SumOverRanks.apply(grad, ctx.group), None


def all_reduce_sum(tensor: torch.Tensor, group=None) -> torch.Tensor:
    """The sum of ``tensor`` over the ranks (a new tensor, identical on every rank), differentiable: the
    gradient reaching each rank's ``tensor`` is the sum of the ranks' gradients of the result."""
    return _SumOverRanks.apply(tensor, group)


class DistributedBatchNorm(nn.Module):
    """BatchNorm over the rows of all ranks: in training mode it normalises with the mean and (biased)
    variance of the global batch, the rows of every rank together, and updates the running statistics
    as BatchNorm does (momentum, or the cumulative average for ``momentum=None``; unbiased variance);
    in eval mode it is BatchNorm (``F.batch_norm`` with the running statistics).

    It holds the *same* parameter and buffer tensors as the BatchNorm it is made from (same names, so
    the same state-dict keys), and updates the buffers in place: swapping the original back after
    training (:func:`synchronised_batchnorm` does) leaves it with the trained state.

    The statistics: each rank's row count ``n_r``, mean ``m_r`` and sum of squared deviations ``M2_r``
    per channel, combined after one all-reduce as ``mean = Σ n_r m_r / N`` and
    ``M2 = Σ M2_r + n_r (m_r − mean)²`` (Chan et al.'s pairwise update: no cancellation from
    ``E[x²] − E[x]²``). The all-reduce is differentiable (:func:`all_reduce_sum`), so the backward sums
    the statistics' gradients over the ranks as well; every rank must run the forward and the backward
    of every BatchNorm in the same order (with zero rows if it has none: it then contributes nothing).
    Works on the CPU (gloo) and on CUDA (NCCL). Statistics are computed in float32 for float16 and
    bfloat16 inputs (the result is returned in the input's dtype).

    The global batch must have more than one value per channel (as for BatchNorm); the trainers that use
    it refuse a global batch smaller than the world size.

    Args:
        batchnorm: the ``nn.BatchNorm1d/2d/3d`` (or ``nn.SyncBatchNorm``) whose tensors and settings to use.
        group: the process group (None: the default one).

    Shape:
        input (B_rank, C, *) -> (B_rank, C, *); B_rank may be 0.
    """

    def __init__(self, batchnorm: nn.Module, group=None) -> None:
        super().__init__()
        if not isinstance(batchnorm, _BATCHNORMS):
            raise TypeError(f"DistributedBatchNorm is made from a BatchNorm1d/2d/3d or SyncBatchNorm; got "
                            f"{type(batchnorm).__name__}")
        if isinstance(batchnorm, nn.modules.lazy.LazyModuleMixin) and batchnorm.has_uninitialized_params():
            raise ValueError(f"{type(batchnorm).__name__} has not been initialised yet (run one forward first)")
        self.num_features, self.eps, self.momentum = batchnorm.num_features, batchnorm.eps, batchnorm.momentum
        self.affine, self.track_running_stats = batchnorm.affine, batchnorm.track_running_stats
        self.weight, self.bias = batchnorm.weight, batchnorm.bias
        for name in ("running_mean", "running_var", "num_batches_tracked"):
            self.register_buffer(name, getattr(batchnorm, name))
        self.group = group
        self.input_dims = next((d for cls, d in _INPUT_DIMS.items() if type(batchnorm) is cls), None)
        self.source = type(batchnorm).__name__
        self.train(batchnorm.training)

    def extra_repr(self) -> str:
        return (f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, affine={self.affine}, "
                f"track_running_stats={self.track_running_stats}, from {self.source}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalise ``x`` (this rank's rows of the global batch)."""
        if (self.input_dims is not None and x.dim() not in self.input_dims) or x.dim() < 2:
            raise ValueError(f"{self.source} expects {' or '.join(f'{d}-D' for d in self.input_dims or (2,))} "
                             f"input; got shape {tuple(x.shape)}")
        factor = 0.0 if self.momentum is None else self.momentum
        if self.training and self.track_running_stats and self.num_batches_tracked is not None:
            self.num_batches_tracked.add_(1)
            factor = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
        if not (self.training or self.running_mean is None):
            # Eval mode with running statistics: exactly BatchNorm's eval-mode call.
            return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, False, factor,
                                self.eps)
        return self._global_batch_norm(x, factor)

    def _global_batch_norm(self, x: torch.Tensor, factor: float) -> torch.Tensor:
        c = x.shape[1]
        dims = [0, *range(2, x.dim())]
        shape = [1, c] + [1] * (x.dim() - 2)
        xf = x.float() if x.dtype in (torch.float16, torch.bfloat16) else x
        n = x.numel() // c if c else 0
        mean = xf.sum(dims) / max(n, 1)
        m2 = (xf - mean.view(shape)).square().sum(dims)
        rank, world = dist.get_rank(self.group), dist.get_world_size(self.group)
        # Row `rank` of a (world, 1 + 2C) table holds this rank's statistics, the others zeros: the sum over
        # the ranks is every rank's statistics (an all-gather made of a differentiable all-reduce).
        row = torch.cat([mean.new_full((1,), float(n)), mean, m2])
        table = torch.cat([row.new_zeros(rank, row.numel()), row[None], row.new_zeros(world - rank - 1, row.numel())])
        table = all_reduce_sum(table, self.group)
        counts, means, m2s = table[:, :1], table[:, 1 : c + 1], table[:, c + 1 :]
        total = counts.sum()
        g_mean = (counts * means).sum(0) / total
        g_m2 = (m2s + counts * (means - g_mean).square()).sum(0)
        var = g_m2 / total
        if self.training and self.track_running_stats and self.running_mean is not None:
            with torch.no_grad():
                self.running_mean.mul_(1.0 - factor).add_(g_mean.to(self.running_mean.dtype), alpha=factor)
                unbiased = (g_m2 / (total - 1)).to(self.running_var.dtype)
                self.running_var.mul_(1.0 - factor).add_(unbiased, alpha=factor)
        scale = torch.rsqrt(var + self.eps)
        if self.weight is not None:
            scale = scale * self.weight
        y = (xf - g_mean.view(shape)) * scale.view(shape)
        if self.bias is not None:
            y = y + self.bias.view(shape)
        return y.to(x.dtype)


@contextlib.contextmanager
def synchronised_batchnorm(*modules: nn.Module | None, group=None) -> Iterator[int]:
    """Within the block, every BatchNorm inside ``modules`` is a :class:`DistributedBatchNorm` sharing its
    tensors; afterwards the original BatchNorm modules are back in place (with the trained state and
    the block's train/eval mode), also when the block raises. Yields the number of layers swapped.

    Raises:
        ValueError: one of ``modules`` is itself a BatchNorm (pass the module that contains it).
    """
    swapped: list[tuple[nn.Module, str, nn.Module]] = []
    try:
        for module in modules:
            if module is None:
                continue
            if isinstance(module, _BATCHNORMS):
                raise ValueError(f"cannot swap {type(module).__name__} itself for a DistributedBatchNorm: pass "
                                 f"the module that contains it")
            for parent in list(module.modules()):
                for name, child in list(parent.named_children()):
                    if isinstance(child, _BATCHNORMS):
                        setattr(parent, name, DistributedBatchNorm(child, group))
                        swapped.append((parent, name, child))
        yield len(swapped)
    finally:
        for parent, name, child in reversed(swapped):
            child.train(getattr(parent, name).training)
            setattr(parent, name, child)


def _sum_hook(group, bucket):
    """DDP communication hook: the SUM of the ranks' gradients (DDP's own hook divides by the world)."""
    return dist.all_reduce(bucket.buffer(), group=group, async_op=True).get_future().then(lambda f: f.value()[0])


@contextlib.contextmanager
def summed_gradients(module: nn.Module, device: torch.device, group=None) -> Iterator[nn.Module]:
    """``module`` wrapped in ``DistributedDataParallel`` whose gradients are the **sum** over the ranks
    (not DDP's mean), for losses that are already divided by the global batch size. DDP's start (rank 0's
    parameters and buffers broadcast to all) and its bucketed, overlapped all-reduce are kept; buffers are
    not re-broadcast at each forward (BatchNorm's are kept equal by :class:`DistributedBatchNorm`). The
    wrapper is dropped at the end of the block, so ``module`` is a plain module again.

    Every parameter that requires grad must get a gradient at every step (DDP's rule without
    ``find_unused_parameters``).
    """
    import inspect

    from torch.nn.parallel import DistributedDataParallel

    # No buffer broadcast at each forward; newer torch names the setting forward_sync_buffers.
    params = inspect.signature(DistributedDataParallel).parameters
    no_sync = {"forward_sync_buffers": False} if "forward_sync_buffers" in params else {"broadcast_buffers": False}
    device_ids = None
    if device.type == "cuda":
        device_ids = [device.index if device.index is not None else torch.cuda.current_device()]
    ddp = DistributedDataParallel(module, device_ids=device_ids, process_group=group, **no_sync)
    ddp.register_comm_hook(group, _sum_hook)
    try:
        yield ddp
    finally:
        # The reducer removes its autograd hooks from the parameters when it is freed.
        del ddp
        gc.collect()


def _dropout_p(module: nn.Module) -> float:
    """The dropout probability a module applies in training mode (``nn.Dropout*``'s ``p``, or a numeric
    ``dropout`` attribute as :class:`glico.classifiers.WideResNet`'s blocks have)."""
    if isinstance(module, _DROPOUTS):
        return float(module.p)
    p = getattr(module, "dropout", 0.0)
    return float(p) if isinstance(p, (int, float)) and not isinstance(p, bool) else 0.0


def refuse_rank_dependent_layers(module: nn.Module | None, role: str, allow_batchnorm: bool = True) -> None:
    """Refuse what data-parallel training cannot make equal to the single process's: dropout in a module
    that trains (each rank would draw its own masks from its own random stream, not the single process's
    masks of the global batch), and, with ``allow_batchnorm=False`` (modules whose BatchNorm is not
    synchronised, such as a reconstruction loss), BatchNorm in training mode.

    Raises:
        ValueError: naming the layers, and what is accepted.
    """
    if module is None:
        return
    found = [f"{name or type(module).__name__} ({type(m).__name__}, dropout {_dropout_p(m):g})"
             for name, m in module.named_modules() if _dropout_p(m) > 0 and m.training]
    if found:
        raise ValueError(f"data-parallel training cannot reproduce the dropout of the {role}: {', '.join(found[:5])} "
                         f"draw(s) masks from each rank's own random stream. Use dropout 0 in the {role} (or "
                         f"data_parallel=False)")
    if not allow_batchnorm:
        bns = [name for name, m in module.named_modules() if isinstance(m, _BATCHNORMS) and m.training]
        if bns:
            raise ValueError(f"the {role} has BatchNorm layers in training mode ({', '.join(bns[:5])}): only the "
                             f"generator's and the classifier's BatchNorm are synchronised over the ranks. Keep the "
                             f"{role}'s BatchNorm in eval mode (as glico's losses do) or use data_parallel=False")


@torch.no_grad()
def gather_owned_rows_(table: torch.Tensor, ranks: distributed.Ranks, group=None) -> torch.Tensor:
    """Give every rank the rows each rank owns (row ``i`` is owned by rank ``i % world``), in place: the
    table's other rows are stale on each rank after a fit that updated only its own rows. Exact (a
    masked sum of one owner's value and zeros).

    Shape:
        table (N, *)
    """
    owner = torch.arange(table.shape[0], device=table.device) % ranks.world
    mine = (owner == ranks.rank).view(-1, *([1] * (table.dim() - 1)))
    summed = torch.where(mine, table, torch.zeros_like(table))
    dist.all_reduce(summed, group=group)
    table.copy_(summed)
    return table
