"""The table of per-image latent codes, kept on the unit sphere."""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

import kernels


class CodeTable(nn.Module):
    """N codes in R^d, one per training image, each of unit L2 norm.

    Lookups produce *sparse* gradients (only the rows of the batch), so an optimiser such as
    :class:`glico.latents.SphereRowAdam` (the fit's: lazy Adam fused with the projection) or
    :class:`torch.optim.SparseAdam` touches only those rows; :meth:`project_` re-normalises just
    given rows (through the kernels dispatch: Triton on CUDA). The whole table is never
    renormalised per step.

    Args:
        codes: initial codes; they are normalised to unit norm.

    Shape:
        codes: (N, d)
    """

    def __init__(self, codes: torch.Tensor) -> None:
        super().__init__()
        if codes.dim() != 2 or codes.shape[0] < 1 or codes.shape[1] < 1:
            raise ValueError(f"codes must have shape (N, d) with N, d >= 1; got {tuple(codes.shape)}")
        if not codes.is_floating_point():
            raise TypeError(f"codes must be floating point; got {codes.dtype}")
        self.weight = nn.Parameter(F.normalize(codes.detach().clone(), dim=1))

    @property
    def num_codes(self) -> int:
        return self.weight.shape[0]

    @property
    def dim(self) -> int:
        return self.weight.shape[1]

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        """Look up codes with a sparse gradient.

        Shape:
            idx (B,) int64 -> (B, d)
        """
        return F.embedding(idx, self.weight, sparse=True)

    @torch.no_grad()
    def project_(self, idx: torch.Tensor | None = None) -> None:
        """Re-project rows ``idx`` (all rows when None) onto the unit sphere, in place."""
        if idx is None:
            self.weight.copy_(F.normalize(self.weight, dim=1))
        else:
            # idx comes from the fit loop's own permutation: skip the range check (a device sync).
            kernels.project_rows_(self.weight.data, idx, check_indices=False)
