"""glico's kernels: Triton fused slerp, class-conditional code sampler and sphere projection,
a fused sparse-Adam step + projection for code tables, each beside its plain-PyTorch reference (``kernels.reference``, the specification).

Every public function takes ``backend="auto" | "torch" | "triton"``; ``"auto"`` runs Triton on CUDA
tensors that need no autograd graph and the reference otherwise. See ``docs/kernels.md``.

Importing this package does not import triton; the Triton modules load on first use.
"""
from ._dispatch import (
    BACKENDS,
    adam_rows_,
    class_index,
    project_rows_,
    sample_codes,
    sample_codes_explicit,
    slerp,
    slerp_gather,
)
from ._types import ClassIndex, SampledCodes

__all__ = [
    "BACKENDS",
    "ClassIndex",
    "SampledCodes",
    "adam_rows_",
    "class_index",
    "project_rows_",
    "sample_codes",
    "sample_codes_explicit",
    "slerp",
    "slerp_gather",
]
