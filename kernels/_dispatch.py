"""The public entry points: validate the arguments in Python, then run the Triton kernel or the
PyTorch reference.

``backend``:
    ``"auto"``   Triton when every tensor is on CUDA and no autograd graph is needed (no input
                 requires grad while grad mode is on), the reference otherwise.
    ``"torch"``  the reference (``kernels.reference``), always; supports autograd.
    ``"triton"`` the Triton kernel; on CUDA tensors, or on CPU tensors when Triton's interpreter is
                 on (``TRITON_INTERPRET=1`` before triton is first imported). Refuses inputs that
                 require grad while grad mode is on (RuntimeError): the kernels have no backward.

Every argument is checked before anything is launched: wrong types or dtypes raise TypeError,
wrong shapes, devices or values raise ValueError, each message naming what was received and what
is accepted. Checking the *values* of index tensors (range, non-empty class) reads them back: on
CUDA that is one device synchronisation per call, which ``check_indices=False`` skips on hot paths
whose indices are known to be valid.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from functools import lru_cache

import torch

from . import reference
from ._types import ClassIndex, SampledCodes

BACKENDS = ("auto", "torch", "triton")
FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
INDEX_DTYPES = (torch.int64, torch.int32)
MAX_D = 8192  # as kernels.triton_common.MAX_D, repeated so that importing kernels needs no triton


# ----------------------------------------------------------------------------------------------
# Argument checks
# ----------------------------------------------------------------------------------------------
def _names(dtypes: Sequence[torch.dtype]) -> str:
    return ", ".join(str(dt).replace("torch.", "") for dt in dtypes)


def _check_tensor(name: str, x: object) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    return x


def _check_rows(name: str, x: object) -> torch.Tensor:
    """A ``(rows, d)`` floating matrix with ``d ≥ 1``."""
    x = _check_tensor(name, x)
    if x.ndim != 2:
        raise ValueError(f"{name} must be 2-D with shape (rows, d), got shape {tuple(x.shape)}")
    if x.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{name} must have a floating dtype ({_names(FLOAT_DTYPES)}), got {x.dtype}")
    if x.shape[1] == 0:
        raise ValueError(f"{name} must have d >= 1 columns, got shape {tuple(x.shape)}")
    return x


def _check_same_device(device: torch.device, **tensors: torch.Tensor | None) -> None:
    for name, x in tensors.items():
        if x is not None and x.device != device:
            raise ValueError(f"{name} is on {x.device} but the rows are on {device}; move them to one device")


def _check_index(name: str, i: object, batch: int | None = None) -> torch.Tensor:
    """A 1-D int32/int64 tensor (of length ``batch`` if given)."""
    i = _check_tensor(name, i)
    if i.ndim != 1:
        raise ValueError(f"{name} must be 1-D with shape (B,), got shape {tuple(i.shape)}")
    if i.dtype not in INDEX_DTYPES:
        raise TypeError(f"{name} must have an integer dtype ({_names(INDEX_DTYPES)}), got {i.dtype}")
    if batch is not None and i.shape[0] != batch:
        raise ValueError(f"{name} must have length {batch} (the batch), got shape {tuple(i.shape)}")
    return i


def _check_in_range(n_rows: int, **indices: torch.Tensor) -> None:
    """Every index in ``[0, n_rows)``, with a single read-back for all of them."""
    names = [name for name, i in indices.items() if i.numel() > 0]
    if not names:
        return
    bounds = torch.stack(
        [torch.stack([indices[name].min(), indices[name].max()]).to(torch.int64) for name in names]
    ).tolist()
    for name, (lo, hi) in zip(names, bounds):
        if lo < 0 or hi >= n_rows:
            raise ValueError(f"{name} must index rows in [0, {n_rows}), got values in [{lo}, {hi}]")


def _check_t(t: object, batch: int, device: torch.device) -> tuple[torch.Tensor | None, float]:
    """``(tensor of shape (B,) or None, scalar)``: a python number, a 0-d or a ``(B,)`` tensor."""
    if isinstance(t, torch.Tensor):
        if not t.is_floating_point():
            raise TypeError(f"t must be a python number or a floating tensor, got a tensor of dtype {t.dtype}")
        if t.ndim == 0:
            t = t.reshape(1).expand(batch)
        elif t.shape != (batch,):
            raise ValueError(f"t must be a number, a 0-d tensor or have shape ({batch},), got shape {tuple(t.shape)}")
        _check_same_device(device, t=t)
        return t, 0.0
    if isinstance(t, bool) or not isinstance(t, (int, float)):
        raise TypeError(f"t must be a python number or a floating tensor, got {type(t).__name__}")
    if not math.isfinite(t):
        raise ValueError(f"t must be finite, got {t}")
    return None, float(t)


# ----------------------------------------------------------------------------------------------
# Backend choice
# ----------------------------------------------------------------------------------------------
@lru_cache(maxsize=1)
def _triton_importable() -> bool:
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True


@lru_cache(maxsize=1)
def _interpreting() -> bool:
    from .triton_common import interpreting

    return interpreting()


def _needs_grad(*tensors: torch.Tensor | None) -> bool:
    return torch.is_grad_enabled() and any(x is not None and x.requires_grad for x in tensors)


def _resolve(backend: object, device: torch.device, d: int, grad_inputs: Sequence[torch.Tensor | None]) -> str:
    """``"torch"`` or ``"triton"``; raises if ``backend`` is unknown or cannot serve the call."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(repr(b) for b in BACKENDS)}, got {backend!r}")
    if backend == "torch":
        return "torch"
    needs_grad = _needs_grad(*grad_inputs)
    if backend == "auto":
        use_triton = device.type == "cuda" and not needs_grad and d <= MAX_D and _triton_importable()
        return "triton" if use_triton else "torch"
    if needs_grad:
        raise RuntimeError(
            "backend='triton' does not support autograd, but an input requires grad while grad mode is on; "
            "use backend='torch' (or 'auto', which then picks it), or call under torch.no_grad()"
        )
    if d > MAX_D:
        raise ValueError(f"backend='triton' takes rows of at most d = {MAX_D}, got d = {d}; use backend='torch'")
    if not _triton_importable():
        raise RuntimeError("backend='triton' needs the triton package, which is not installed; use backend='torch'")
    if device.type == "cpu" and not _interpreting():
        raise RuntimeError(
            "backend='triton' got CPU tensors but Triton's interpreter is off: move the tensors to CUDA, or set "
            "TRITON_INTERPRET=1 before triton is first imported, or use backend='torch'"
        )
    if device.type not in ("cpu", "cuda"):
        raise RuntimeError(f"backend='triton' runs on CUDA tensors, got tensors on {device}")
    return "triton"


_PLAIN = (torch.Tensor, torch.nn.Parameter)


def _direct(*tensors: torch.Tensor | None) -> bool:
    """Launch the Triton kernel directly instead of through its ``torch.library`` op.

    The op (``torch.ops.glico_kernels.*``) is what ``torch.compile``, export and other tracers see;
    in plain eager code going through the dispatcher only adds about 25 µs per call, a large share
    of an op at the training batch. So the direct path is taken when nothing could be tracing:
    not compiling, no ``TorchDispatchMode`` active, plain tensors only (no fake tensors or other
    subclasses).
    """
    if torch.compiler.is_compiling():
        return False
    dispatch_depth = getattr(torch._C, "_len_torch_dispatch_stack", None)
    if dispatch_depth is None or dispatch_depth() > 0:
        return False
    return all(x is None or type(x) in _PLAIN for x in tensors)


# ----------------------------------------------------------------------------------------------
# Public functions
# ----------------------------------------------------------------------------------------------
def slerp(a: torch.Tensor, b: torch.Tensor, t: float | torch.Tensor, *, backend: str = "auto") -> torch.Tensor:
    """Spherical linear interpolation between the normalised rows of ``a`` and ``b``.

    The inputs are normalised first, so the result always lies on the unit sphere; the angle is
    ``θ = 2·atan2(‖â − b̂‖, ‖â + b̂‖)`` (stable at 0 and π), identical rows return the (normalised)
    input, and antipodal rows rotate towards the coordinate axis least aligned with ``â`` (for
    ``d = 1``: the nearer endpoint). See ``kernels.reference`` for the full definition. Math is
    float32 whatever the dtype.

    Autograd: supported by the ``"torch"`` backend (and ``"auto"`` picks it when needed); the
    ``"triton"`` backend refuses inputs that require grad while grad mode is on.

    Args:
        a: ``(B, d)`` float32/float16/bfloat16 start rows, any strides.
        b: ``(B, d)`` end rows, same dtype and device.
        t: python number, 0-d tensor or ``(B,)`` floating tensor; 0 gives ``â``, 1 gives ``b̂``.
        backend: ``"auto"``, ``"torch"`` or ``"triton"`` (see the module docstring).

    Returns:
        ``(B, d)`` unit rows in ``a``'s dtype.
    """
    a = _check_rows("a", a)
    b = _check_rows("b", b)
    if b.shape != a.shape:
        raise ValueError(f"a and b must have the same shape (B, d), got {tuple(a.shape)} and {tuple(b.shape)}")
    if b.dtype != a.dtype:
        raise TypeError(f"a and b must have the same dtype, got {a.dtype} and {b.dtype}")
    _check_same_device(a.device, b=b)
    t_tensor, t_scalar = _check_t(t, a.shape[0], a.device)
    if _resolve(backend, a.device, a.shape[1], (a, b, t_tensor)) == "torch":
        return reference.slerp(a, b, t_tensor if t_tensor is not None else t_scalar)
    from . import triton_slerp

    run = triton_slerp.slerp_direct if _direct(a, b, t_tensor) else triton_slerp.slerp
    return run(a, b, t_tensor, t_scalar)


def slerp_gather(
    codes: torch.Tensor,
    i: torch.Tensor,
    j: torch.Tensor,
    t: float | torch.Tensor,
    *,
    backend: str = "auto",
    check_indices: bool = True,
) -> torch.Tensor:
    """``slerp(codes[i], codes[j], t)`` without materialising the gathered rows.

    Same definition, dtypes and autograd support as :func:`slerp`.

    Args:
        codes: ``(N, d)`` float32/float16/bfloat16 table, any strides.
        i, j: ``(B,)`` int64/int32 row ids in ``[0, N)``, on ``codes``' device.
        t: python number, 0-d tensor or ``(B,)`` floating tensor.
        backend: ``"auto"``, ``"torch"`` or ``"triton"``.
        check_indices: verify that ``i`` and ``j`` are in range (one device sync on CUDA).

    Returns:
        ``(B, d)`` unit rows in ``codes``' dtype.
    """
    codes = _check_rows("codes", codes)
    i = _check_index("i", i)
    j = _check_index("j", j, batch=i.shape[0])
    _check_same_device(codes.device, i=i, j=j)
    t_tensor, t_scalar = _check_t(t, i.shape[0], codes.device)
    if check_indices:
        _check_in_range(codes.shape[0], i=i, j=j)
    if _resolve(backend, codes.device, codes.shape[1], (codes, t_tensor)) == "torch":
        return reference.slerp_gather(codes, i, j, t_tensor if t_tensor is not None else t_scalar)
    from . import triton_slerp

    run = triton_slerp.slerp_gather_direct if _direct(codes, i, j, t_tensor) else triton_slerp.slerp_gather
    return run(codes, i.contiguous(), j.contiguous(), t_tensor, t_scalar)


def project_rows_(
    codes: torch.Tensor, idx: torch.Tensor, *, backend: str = "auto", check_indices: bool = True
) -> torch.Tensor:
    """Renormalise rows ``idx`` of ``codes`` to unit L2 norm, in place, in O(len(idx)·d).

    Other rows are not read or written; zero rows stay zero. Duplicate ids are allowed when
    ``check_indices`` is on (the Triton path removes them first: two programs writing one row would
    race); with ``check_indices=False`` the caller guarantees distinct ids on CUDA. This is an
    optimiser-style table update: it records no autograd history on any backend (so it can follow
    the step of a code table that is a parameter), and ``"auto"`` picks Triton for CUDA tables
    whether or not they require grad.

    Args:
        codes: ``(N, d)`` float32/float16/bfloat16 table, any strides, modified in place.
        idx: ``(K,)`` int64/int32 row ids in ``[0, N)``, on ``codes``' device.
        backend: ``"auto"``, ``"torch"`` or ``"triton"``.
        check_indices: verify that ``idx`` is in range (one device sync on CUDA) and, on the Triton
            path, drop repeated ids. Off: no sync, and ``idx`` must be distinct.

    Returns:
        ``codes``.
    """
    codes = _check_rows("codes", codes)
    idx = _check_index("idx", idx)
    _check_same_device(codes.device, idx=idx)
    if check_indices:
        _check_in_range(codes.shape[0], idx=idx)
    if _resolve(backend, codes.device, codes.shape[1], ()) == "torch":
        return reference.project_rows_(codes, idx)
    from . import triton_project

    if check_indices:
        idx = torch.unique(idx)

    run = triton_project.project_rows_direct if _direct(codes, idx) else triton_project.project_rows_
    with torch.no_grad():
        run(codes, idx.contiguous())
    return codes


def _check_distinct(n_rows: int, name: str, idx: torch.Tensor) -> None:
    """Every id in ``[0, n_rows)`` and none repeated, with one read-back."""
    if idx.numel() == 0:
        return
    ordered = idx.sort().values
    repeats = (ordered[1:] == ordered[:-1]).sum() if idx.numel() > 1 else ordered.new_zeros(())
    lo, hi, rep = torch.stack([ordered[0], ordered[-1], repeats]).to(torch.int64).tolist()
    if lo < 0 or hi >= n_rows:
        raise ValueError(f"{name} must index rows in [0, {n_rows}), got values in [{lo}, {hi}]")
    if rep:
        raise ValueError(f"{name} must not repeat a row (each row gets one update), got {rep} repeated id(s)")


def _check_hyper(step: object, lr: object, beta1: object, beta2: object, eps: object) -> None:
    if isinstance(step, bool) or not isinstance(step, int):
        raise TypeError(f"step must be an int (the update's number, >= 1, for the bias correction), got "
                        f"{type(step).__name__}")
    if step < 1:
        raise ValueError(f"step must be >= 1 (the update's number, for the bias correction), got {step}")
    for name, value, ok, accepted in (
        ("lr", lr, lambda x: x >= 0, ">= 0"),
        ("beta1", beta1, lambda x: 0 <= x < 1, "in [0, 1)"),
        ("beta2", beta2, lambda x: 0 <= x < 1, "in [0, 1)"),
        ("eps", eps, lambda x: x > 0, "> 0"),
    ):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise TypeError(f"{name} must be a python number, got {type(value).__name__}")
        if not math.isfinite(value) or not ok(value):
            raise ValueError(f"{name} must be a finite number {accepted}, got {value!r}")


def adam_rows_(
    param: torch.Tensor,
    exp_avg: torch.Tensor,
    exp_avg_sq: torch.Tensor,
    idx: torch.Tensor,
    grad: torch.Tensor,
    *,
    step: int,
    lr: float,
    beta1: float = 0.9,
    beta2: float = 0.999,
    eps: float = 1e-8,
    project: bool = True,
    backend: str = "auto",
    check_indices: bool = True,
) -> torch.Tensor:
    """A lazy-Adam step on rows ``idx`` of a table fused with their projection onto the unit sphere.

    The update is :class:`torch.optim.SparseAdam`'s (to float32 rounding) for a gradient whose
    non-zero rows are ``idx`` (see ``kernels.reference.adam_rows_``), followed when ``project`` by
    :func:`project_rows_` of
    those rows: one launch on CUDA, no device synchronisation. Rows outside ``idx`` are not read or
    written. Like :func:`project_rows_` it is an optimiser update: no autograd history on any
    backend, and ``"auto"`` picks Triton for CUDA tables whether or not they require grad.

    Args:
        param: ``(N, d)`` float32/float16/bfloat16 table, modified in place.
        exp_avg, exp_avg_sq: ``(N, d)`` Adam moments of ``param`` (floating), modified in place.
        idx: ``(B,)`` int64/int32 *distinct* row ids in ``[0, N)``.
        grad: ``(B, d)`` floating gradient rows; ``grad[k]`` belongs to row ``idx[k]``.
        step: the update's number (``≥ 1``; Adam's bias correction).
        lr, beta1, beta2, eps: Adam's hyper-parameters.
        project: renormalise the updated rows.
        backend: ``"auto"``, ``"torch"`` or ``"triton"``.
        check_indices: verify that ``idx`` is in range and repeats no row (one device sync on CUDA).

    Returns:
        ``param``.
    """
    param = _check_rows("param", param)
    n, d = param.shape
    for name, x in (("exp_avg", exp_avg), ("exp_avg_sq", exp_avg_sq)):
        x = _check_rows(name, x)
        if x.shape != param.shape:
            raise ValueError(f"{name} must have param's shape {tuple(param.shape)}, got {tuple(x.shape)}")
    idx = _check_index("idx", idx)
    grad = _check_rows("grad", grad)
    if grad.shape != (idx.shape[0], d):
        raise ValueError(f"grad must have shape (len(idx), d) = ({idx.shape[0]}, {d}), got {tuple(grad.shape)}")
    _check_same_device(param.device, exp_avg=exp_avg, exp_avg_sq=exp_avg_sq, idx=idx, grad=grad)
    _check_hyper(step, lr, beta1, beta2, eps)
    if check_indices:
        _check_distinct(n, "idx", idx)
    hyper = dict(step=step, lr=float(lr), beta1=float(beta1), beta2=float(beta2), eps=float(eps), project=bool(project))
    if _resolve(backend, param.device, d, ()) == "torch":
        return reference.adam_rows_(param, exp_avg, exp_avg_sq, idx, grad, **hyper)
    from . import triton_project

    step_size = float(lr) * math.sqrt(1.0 - float(beta2) ** step) / (1.0 - float(beta1) ** step)
    run = triton_project.adam_rows_direct if _direct(param, exp_avg, exp_avg_sq, idx, grad) else triton_project.adam_rows_
    with torch.no_grad():
        run(param, exp_avg, exp_avg_sq, idx.contiguous(), grad, step_size, float(beta1), float(beta2), float(eps),
            bool(project))
    return param


def class_index(labels: torch.Tensor, num_classes: int | None = None) -> ClassIndex:
    """Group the rows of a code table by class, once, for :func:`sample_codes`.

    Args:
        labels: ``(N,)`` integer class of every row, non-negative.
        num_classes: ``C`` (classes beyond the largest label are empty); defaults to
            ``labels.max() + 1``.

    Returns:
        :class:`ClassIndex` with ``order`` ``(N,)``, ``offsets`` ``(C + 1,)`` and ``labels`` ``(N,)``,
        all int64 on ``labels``' device.
    """
    labels = _check_tensor("labels", labels)
    if labels.ndim != 1:
        raise ValueError(f"labels must be 1-D with shape (N,), got shape {tuple(labels.shape)}")
    if labels.dtype.is_floating_point or labels.dtype.is_complex or labels.dtype == torch.bool:
        raise TypeError(f"labels must have an integer dtype, got {labels.dtype}")
    if labels.numel() and int(labels.min()) < 0:
        raise ValueError(f"labels must be non-negative, got a minimum of {int(labels.min())}")
    largest = int(labels.max()) if labels.numel() else -1
    if num_classes is not None:
        if isinstance(num_classes, bool) or not isinstance(num_classes, int):
            raise TypeError(f"num_classes must be an int or None, got {type(num_classes).__name__}")
        if num_classes <= largest:
            raise ValueError(f"num_classes must exceed the largest label {largest}, got {num_classes}")
    return reference.class_index(labels, num_classes)


@lru_cache(maxsize=64)
def _t_set_on(values: tuple[float, ...], device: torch.device) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float32, device=device)


def _check_t_values(t_values: object, device: torch.device) -> torch.Tensor:
    """``t_values`` as a contiguous ``(K,)`` float32 tensor on ``device`` (``K ≥ 1``)."""
    if isinstance(t_values, torch.Tensor):
        if not t_values.is_floating_point():
            raise TypeError(f"t_values must hold floating values, got a tensor of dtype {t_values.dtype}")
        if t_values.ndim > 1:
            raise ValueError(f"t_values must be 1-D, got shape {tuple(t_values.shape)}")
        if t_values.numel() == 0:
            raise ValueError("t_values must not be empty: t is drawn from it")
        _check_same_device(device, t_values=t_values)
        return t_values.reshape(-1).to(torch.float32).contiguous()
    if isinstance(t_values, (str, bytes)) or not isinstance(t_values, Sequence):
        raise TypeError(f"t_values must be a sequence of numbers or a tensor, got {type(t_values).__name__}")
    if len(t_values) == 0:
        raise ValueError("t_values must not be empty: t is drawn from it")
    for v in t_values:
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise TypeError(f"t_values must hold numbers, got an element of type {type(v).__name__}")
        if not math.isfinite(v):
            raise ValueError(f"t_values must be finite, got {v}")
    return _t_set_on(tuple(float(v) for v in t_values), device)


def _check_class_index(index: object, n_rows: int, device: torch.device) -> ClassIndex:
    if not isinstance(index, ClassIndex):
        raise TypeError(f"index must be a kernels.ClassIndex (see kernels.class_index), got {type(index).__name__}")
    for name in ("order", "labels"):
        x = _check_tensor(f"index.{name}", getattr(index, name))
        if x.shape != (n_rows,):
            raise ValueError(f"index.{name} must have shape ({n_rows},) (one per code), got {tuple(x.shape)}")
    offsets = _check_tensor("index.offsets", index.offsets)
    if offsets.ndim != 1 or offsets.shape[0] < 2:
        raise ValueError(f"index.offsets must have shape (C + 1,) with C >= 1, got {tuple(offsets.shape)}")
    for name in ("order", "offsets", "labels"):
        x = getattr(index, name)
        if x.dtype != torch.int64:
            raise TypeError(f"index.{name} must be int64, got {x.dtype}")
        _check_same_device(device, **{f"index.{name}": x})
    return index


def _check_classes_of(idx: torch.Tensor, index: ClassIndex) -> None:
    """Every anchor's label is a class of the index with at least one member (one read-back)."""
    if idx.numel() == 0:
        return
    n_classes = index.offsets.shape[0] - 1
    cls = index.labels[idx.to(torch.int64)]
    cls_ok = (cls >= 0) & (cls < n_classes)
    counts = index.offsets[1:] - index.offsets[:-1]
    members = counts[cls.clamp(0, n_classes - 1)]
    bad_label, empty = torch.stack([(~cls_ok).any(), (cls_ok & (members < 1)).any()]).tolist()
    if bad_label:
        raise ValueError(f"index.labels of some anchors lie outside [0, {n_classes}): the index does not fit")
    if empty:
        raise ValueError("some anchors belong to a class with no member in index.order/offsets (empty class)")


def sample_codes(
    codes: torch.Tensor,
    idx: torch.Tensor,
    index: ClassIndex,
    t_values: Sequence[float] | torch.Tensor,
    *,
    noise_dim: int = 0,
    sigma: float = 1.0,
    seed: int = 0,
    backend: str = "auto",
    check_indices: bool = True,
) -> SampledCodes:
    """Class-conditional interpolated generator inputs for a batch of anchors, in one launch.

    For every anchor ``idx[r]``: a partner uniform among the *other* members of its class (itself
    only if it is alone), ``t`` uniform from ``t_values``, and the row
    ``[slerp(codes[idx[r]], codes[partner], t), eps]`` with ``eps ~ N(0, sigma² I)`` of width
    ``noise_dim``. Draws are a deterministic function of ``seed`` (pass a fresh seed per call); the
    Triton kernel (Philox) and the reference (``torch.Generator``) draw from the same
    distributions but not the same numbers.

    Autograd: the ``"torch"`` backend is differentiable in ``codes``; ``"triton"`` refuses a
    ``codes`` that requires grad while grad mode is on.

    Args:
        codes: ``(N, d)`` float32/float16/bfloat16 table.
        idx: ``(B,)`` int64/int32 anchor row ids in ``[0, N)``.
        index: :class:`ClassIndex` of the table's labels (from :func:`class_index`).
        t_values: non-empty sequence or 1-D tensor of weights (a device tensor avoids a copy;
            python sequences are cached per device).
        noise_dim: noise columns appended (``≥ 0``).
        sigma: noise standard deviation (``≥ 0``).
        seed: seed of the draws, in ``[0, 2**63)``.
        backend: ``"auto"``, ``"torch"`` or ``"triton"``.
        check_indices: verify anchors are in range and their classes non-empty (one device sync on
            CUDA).

    Returns:
        :class:`SampledCodes`: ``inputs`` ``(B, d + noise_dim)`` in ``codes``' dtype, ``partners``
        ``(B,)`` int64, ``t`` ``(B,)`` float32.
    """
    codes = _check_rows("codes", codes)
    idx = _check_index("idx", idx)
    device = codes.device
    _check_same_device(device, idx=idx)
    index = _check_class_index(index, codes.shape[0], device)
    t_set = _check_t_values(t_values, device)
    if isinstance(noise_dim, bool) or not isinstance(noise_dim, int):
        raise TypeError(f"noise_dim must be an int, got {type(noise_dim).__name__}")
    if noise_dim < 0:
        raise ValueError(f"noise_dim must be >= 0, got {noise_dim}")
    if isinstance(sigma, bool) or not isinstance(sigma, (int, float)):
        raise TypeError(f"sigma must be a python number, got {type(sigma).__name__}")
    if not (math.isfinite(sigma) and sigma >= 0):
        raise ValueError(f"sigma must be finite and >= 0, got {sigma}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed must be an int, got {type(seed).__name__}")
    if not 0 <= seed < 2**63:
        raise ValueError(f"seed must be in [0, 2**63), got {seed}")
    if check_indices:
        _check_in_range(codes.shape[0], idx=idx)
        _check_classes_of(idx, index)
    if backend == "triton" and noise_dim > MAX_D:
        raise ValueError(f"backend='triton' takes at most {MAX_D} noise columns (a row's noise is held in registers), "
                         f"got noise_dim = {noise_dim}; use backend='torch'")
    # The noise tile is held like a row: 'auto' leaves over-wide noise to the reference.
    if _resolve(backend, device, max(codes.shape[1], noise_dim), (codes,)) == "torch":
        return reference.sample_codes(codes, idx, index, t_set, noise_dim=noise_dim, sigma=float(sigma), seed=seed)
    from . import triton_sample

    run = triton_sample.sample_codes_direct if _direct(codes, idx, *index) else triton_sample.sample_codes
    inputs, partners, t = run(
        codes, idx.contiguous(), index.order.contiguous(), index.offsets.contiguous(),
        index.labels.contiguous(), t_set, noise_dim, float(sigma), seed,
    )
    return SampledCodes(inputs=inputs, partners=partners, t=t)


def sample_codes_explicit(
    codes: torch.Tensor,
    idx: torch.Tensor,
    partners: torch.Tensor,
    t: float | torch.Tensor,
    eps: torch.Tensor | None = None,
    *,
    backend: str = "auto",
    check_indices: bool = True,
) -> torch.Tensor:
    """``[slerp_gather(codes, idx, partners, t), eps]``: the sampler with its draws given.

    Runs the same kernel as :func:`sample_codes`, so the two can be compared exactly with the
    reference. Autograd as :func:`slerp`.

    Args:
        codes: ``(N, d)`` float32/float16/bfloat16 table.
        idx, partners: ``(B,)`` int64/int32 row ids in ``[0, N)``.
        t: python number, 0-d tensor or ``(B,)`` floating tensor.
        eps: ``(B, noise_dim)`` floating tensor, or ``None`` for no noise columns.
        backend: ``"auto"``, ``"torch"`` or ``"triton"``.
        check_indices: verify that ``idx`` and ``partners`` are in range (one device sync on CUDA).

    Returns:
        ``(B, d + noise_dim)`` in ``codes``' dtype.
    """
    codes = _check_rows("codes", codes)
    idx = _check_index("idx", idx)
    partners = _check_index("partners", partners, batch=idx.shape[0])
    device = codes.device
    _check_same_device(device, idx=idx, partners=partners)
    t_tensor, t_scalar = _check_t(t, idx.shape[0], device)
    if eps is not None:
        eps = _check_tensor("eps", eps)
        if eps.ndim != 2 or eps.shape[0] != idx.shape[0]:
            raise ValueError(f"eps must have shape ({idx.shape[0]}, noise_dim), got {tuple(eps.shape)}")
        if not eps.is_floating_point():
            raise TypeError(f"eps must be a floating tensor, got dtype {eps.dtype}")
        _check_same_device(device, eps=eps)
    if check_indices:
        _check_in_range(codes.shape[0], idx=idx, partners=partners)
    if _resolve(backend, device, codes.shape[1], (codes, t_tensor, eps)) == "torch":
        return reference.sample_codes_explicit(
            codes, idx, partners, t_tensor if t_tensor is not None else t_scalar, eps
        )
    from . import triton_sample

    direct = _direct(codes, idx, partners, t_tensor, eps)
    run = triton_sample.sample_codes_explicit_direct if direct else triton_sample.sample_codes_explicit
    return run(codes, idx.contiguous(), partners.contiguous(), t_tensor, t_scalar, eps)
