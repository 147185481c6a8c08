"""Throughput of the kernels: Triton vs ``torch.compile`` of the reference vs the eager reference.

Run ``pytest bench/test_kernels.py`` on a CUDA machine; without CUDA every case skips. Each case
records the median and p20–p80 GPU time (``triton.testing.do_bench``), the bytes an ideal
implementation moves, GB/s and the fraction of the device's measured copy bandwidth; the ``wall``
cases record the time per call seen from Python at the training batch (B = 128); the last test
records the ratios the kernels issue sets as targets.

Providers:
    ``eager``          the reference (``kernels.reference``) as written;
    ``compile``        ``torch.compile`` of the same function, batch dimension marked dynamic so one
                       compilation serves every B (d and dtype are static);
    ``compile-static`` ``torch.compile(dynamic=False)``, only at the headline size (B = 1M, d = 128);
    ``compile-plain``  ``torch.compile`` of the straightforward slerp a user would write (acos of the
                       clamped dot product, small-angle lerp, no antipodal rule: :func:`plain_slerp`),
                       for slerp and slerp_gather — the bar the kernels issue sets, since the
                       reference's antipodal rule makes compile of the reference a lower one;
    ``triton``         the public entry point with ``backend="triton"``, ``check_indices=False``
                       (the hot-path setting: no device sync).

Sizes: slerp over B × d × dtype; slerp_gather and the sampler at d = 128 (both dtypes, a table of
N = B rows, 10 classes, 32 noise columns); project_rows_ of 128 rows of a 10k- and a 1M-row table.
"""
from __future__ import annotations

import pytest
import torch

import kernels
from bench_helpers import CUDA_REASON, recorded, timing, wall_time_per_call
from kernels import reference

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason=CUDA_REASON)

BATCHES = (128, 4096, 65536, 1 << 20)
DIMS = (64, 128, 512)
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
PROVIDERS = ("eager", "compile", "triton")
PLAIN_OPS = ("slerp", "slerp_gather")
T_VALUES = (0.1, 0.2, 0.3, 0.4)
NOISE_DIM = 32
N_CLASSES = 10
HEADLINE = (1 << 20, 128)
DEVICE = "cuda"


# ----------------------------------------------------------------------------------------------
# The functions under test, per provider
# ----------------------------------------------------------------------------------------------
def _sample_pipeline(codes, idx, order, offsets, labels, t_set):
    """The unfused reference pipeline the fused sampler replaces: partner draw, t draw, gather,
    slerp, noise, concatenation (global RNG, so that torch.compile can trace it)."""
    index = kernels.ClassIndex(order=order, offsets=offsets, labels=labels)
    u = torch.rand(idx.shape[0], device=idx.device)
    partners = reference.draw_partners(idx, index, u)
    t = t_set[torch.randint(t_set.shape[0], (idx.shape[0],), device=idx.device)]
    eps = torch.randn(idx.shape[0], NOISE_DIM, device=idx.device)
    return reference.sample_codes_explicit(codes, idx, partners, t, eps), partners, t


def plain_slerp(a: torch.Tensor, b: torch.Tensor, t: float) -> torch.Tensor:
    """Slerp as it is usually written: normalise, θ = acos(clamped dot), sine weights, a lerp below a
    small angle. Unit rows out for every pair that is not (nearly) antipodal; fp32 math."""
    a_hat = torch.nn.functional.normalize(a.float(), dim=-1)
    b_hat = torch.nn.functional.normalize(b.float(), dim=-1)
    theta = torch.acos((a_hat * b_hat).sum(-1, keepdim=True).clamp(-1.0, 1.0))
    sin_theta = torch.sin(theta)
    small = theta < 1e-4
    safe = torch.where(small, torch.ones_like(sin_theta), sin_theta)
    w_a = torch.where(small, torch.full_like(theta, 1.0 - t), torch.sin((1.0 - t) * theta) / safe)
    w_b = torch.where(small, torch.full_like(theta, t), torch.sin(t * theta) / safe)
    return (w_a * a_hat + w_b * b_hat).to(a.dtype)


def _plain(op: str):
    return {
        "slerp": lambda a, b: plain_slerp(a, b, 0.3),
        "slerp_gather": lambda codes, i, j: plain_slerp(codes[i], codes[j], 0.3),
    }[op]


def _reference(op: str):
    return {
        "slerp": lambda a, b: reference.slerp(a, b, 0.3),
        "slerp_gather": lambda codes, i, j: reference.slerp_gather(codes, i, j, 0.3),
        "sample_codes": _sample_pipeline,
        "project_rows_": reference.project_rows_,
    }[op]


def _triton(op: str):
    return {
        "slerp": lambda a, b: kernels.slerp(a, b, 0.3, backend="triton"),
        "slerp_gather": lambda codes, i, j: kernels.slerp_gather(codes, i, j, 0.3, backend="triton", check_indices=False),
        "sample_codes": lambda codes, idx, order, offsets, labels, t_set: kernels.sample_codes(
            codes, idx, kernels.ClassIndex(order, offsets, labels), t_set, noise_dim=NOISE_DIM, seed=0,
            backend="triton", check_indices=False,
        ),
        "project_rows_": lambda codes, idx: kernels.project_rows_(codes, idx, backend="triton", check_indices=False),
    }[op]


_COMPILED: dict[tuple, object] = {}


def _function(op: str, provider: str, d: int, dtype: torch.dtype):
    if provider == "eager":
        return _reference(op)
    if provider == "triton":
        return _triton(op)
    key = (op, provider, d, dtype)
    if key not in _COMPILED:
        fn = _plain(op) if provider == "compile-plain" else _reference(op)
        _COMPILED[key] = torch.compile(fn, dynamic=False if provider == "compile-static" else None)
    return _COMPILED[key]


# ----------------------------------------------------------------------------------------------
# Inputs and byte counts
# ----------------------------------------------------------------------------------------------
_INPUTS: dict[tuple, tuple] = {}


def _inputs(op: str, batch: int, d: int, dtype: torch.dtype, n_rows: int | None = None) -> tuple:
    """Inputs of one case, kept while the providers of that case run."""
    key = (op, batch, d, dtype, n_rows)
    if key not in _INPUTS:
        _INPUTS.clear()
        torch.cuda.empty_cache()
        g = torch.Generator(device=DEVICE).manual_seed(0)
        n = n_rows or batch
        if op == "slerp":
            args = tuple(torch.randn(batch, d, generator=g, device=DEVICE).to(dtype) for _ in range(2))
        else:
            codes = torch.randn(n, d, generator=g, device=DEVICE).to(dtype)
            idx = torch.randint(0, n, (batch,), generator=g, device=DEVICE)
            if op == "slerp_gather":
                args = (codes, idx, torch.randint(0, n, (batch,), generator=g, device=DEVICE))
            elif op == "sample_codes":
                index = kernels.class_index(torch.randint(0, N_CLASSES, (n,), generator=g, device=DEVICE))
                t_set = torch.tensor(T_VALUES, device=DEVICE)
                args = (codes, idx, index.order, index.offsets, index.labels, t_set)
            else:
                args = (codes, idx)
        _INPUTS[key] = args
    return _INPUTS[key]


def _mark_dynamic(op: str, args: tuple) -> None:
    """Batch (and table) dimensions dynamic, so that one compilation serves every size."""
    for x in args:
        if isinstance(x, torch.Tensor) and x.ndim >= 1 and not (op == "sample_codes" and x is args[-1]):
            torch._dynamo.maybe_mark_dynamic(x, 0)


def _bytes(op: str, batch: int, d: int, dtype: torch.dtype) -> int:
    """Bytes an ideal implementation reads and writes."""
    s = torch.empty((), dtype=dtype).element_size()
    if op == "slerp":
        return 3 * batch * d * s
    if op == "slerp_gather":
        return 3 * batch * d * s + 2 * batch * 8
    if op == "sample_codes":
        # two rows in, one row plus noise out; idx, label, offsets (2), order (2) in; partner, t out
        return 2 * batch * d * s + batch * (d + NOISE_DIM) * s + batch * (8 + 8 + 16 + 16) + batch * (8 + 4)
    return 2 * batch * d * s + batch * 8  # project_rows_


def _run_case(record, copy_bandwidth, op, provider, batch, d, dtype_name, n_rows=None):
    dtype = DTYPES[dtype_name]
    args = _inputs(op, batch, d, dtype, n_rows)
    fn = _function(op, provider, d, dtype)
    if provider.startswith("compile"):
        if provider in ("compile", "compile-plain"):
            _mark_dynamic(op, args)
        fn(*args)  # compile outside the timed region
        torch.cuda.synchronize()
    t = timing(lambda: fn(*args))
    nbytes = _bytes(op, batch, d, dtype)
    gbps = nbytes / (t["ms_median"] * 1e-3) / 1e9
    record(
        kind="throughput", op=op, provider=provider, B=batch, d=d, dtype=dtype_name, table_rows=n_rows or batch,
        bytes=nbytes, gbps=gbps, frac_copy=gbps / copy_bandwidth, **t,
    )


def _cases(ops, batches, dims, dtypes, providers):
    return [
        pytest.param(op, p, b, d, dt, id=f"{op}-B{b}-d{d}-{dt}-{p}")
        for op in ops for b in batches for d in dims for dt in dtypes for p in providers
    ]


# ----------------------------------------------------------------------------------------------
# Benchmarks
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "op, provider, batch, d, dtype_name",
    _cases(["slerp"], BATCHES, DIMS, DTYPES, PROVIDERS)
    + _cases(["slerp_gather", "sample_codes"], BATCHES, [128], DTYPES, PROVIDERS)
    + _cases(["slerp", "slerp_gather", "sample_codes"], [HEADLINE[0]], [HEADLINE[1]], ["fp32"], ["compile-static"])
    + _cases(["slerp"], BATCHES, DIMS, DTYPES, ["compile-plain"])
    + _cases(["slerp_gather"], BATCHES, [128], DTYPES, ["compile-plain"]),
)
def test_throughput(record, copy_bandwidth, op, provider, batch, d, dtype_name):
    _run_case(record, copy_bandwidth, op, provider, batch, d, dtype_name)


@pytest.mark.parametrize("n_rows", [10_000, 1_000_000])
@pytest.mark.parametrize("dtype_name", list(DTYPES))
@pytest.mark.parametrize("provider", PROVIDERS)
def test_project_rows(record, copy_bandwidth, provider, dtype_name, n_rows):
    _run_case(record, copy_bandwidth, "project_rows_", provider, 128, 128, dtype_name, n_rows)


@pytest.mark.parametrize(
    "op, provider",
    [(op, p) for op in ("slerp", "slerp_gather", "sample_codes", "project_rows_") for p in PROVIDERS]
    + [(op, "compile-plain") for op in PLAIN_OPS],
)
def test_wall_time_per_call(record, op, provider):
    batch, d = 128, 128
    args = _inputs(op, batch, d, torch.float32, 10_000 if op == "project_rows_" else None)
    fn = _function(op, provider, d, torch.float32)
    if provider in ("compile", "compile-plain"):
        _mark_dynamic(op, args)
    record(kind="wall", op=op, provider=provider, B=batch, d=d, dtype="fp32", us_per_call=wall_time_per_call(lambda: fn(*args)))


@pytest.mark.parametrize("n_rows", [10_000, 1_000_000])
@pytest.mark.parametrize("provider", ["sparse_adam", "triton"])
def test_codes_optimizer_step(record, provider, n_rows):
    """The code table's optimiser step at the training batch (128 distinct rows, d = 128), from a
    sparse embedding gradient: ``torch.optim.SparseAdam`` + Triton ``project_rows_`` (the plain way)
    vs ``glico.latents.SphereRowAdam`` (one fused launch, no coalesce). Wall time per call from
    Python; the gradient is built once and re-attached, so only the optimiser is timed."""
    from glico.latents import SphereRowAdam

    g = torch.Generator(device=DEVICE).manual_seed(0)
    weight = torch.nn.Parameter(torch.nn.functional.normalize(torch.randn(n_rows, 128, generator=g, device=DEVICE), dim=1))
    idx = torch.randperm(n_rows, generator=g, device=DEVICE)[:128]
    grad = torch.sparse_coo_tensor(idx[None], torch.randn(128, 128, generator=g, device=DEVICE), (n_rows, 128),
                                   check_invariants=True)
    if provider == "sparse_adam":
        opt = torch.optim.SparseAdam([weight], lr=1e-2)

        def step():
            weight.grad = grad
            opt.step()
            kernels.project_rows_(weight.data, idx, backend="triton", check_indices=False)
    else:
        opt = SphereRowAdam([weight], lr=1e-2, distinct_rows=True)  # as the fit: a batch never repeats a row

        def step():
            weight.grad = grad
            opt.step()
    record(kind="wall", op="codes_optimizer_step", provider=provider, B=128, d=128, dtype="fp32", table_rows=n_rows,
           us_per_call=wall_time_per_call(step))


def _find(**match) -> dict | None:
    for row in recorded("kernels"):
        if all(row.get(k) == v for k, v in match.items()):
            return row
    return None


def test_targets(record):
    """The ratios the kernels issue sets as targets, from the rows above (recorded, not asserted:
    timings are measurements, and the docs report them)."""
    batch, d = HEADLINE
    rows = []
    for dtype_name in DTYPES:
        for op in ("slerp", "slerp_gather"):
            tri = _find(kind="throughput", op=op, provider="triton", B=batch, d=d, dtype=dtype_name)
            if tri:
                rows.append(dict(target=f"{op} B=1M d=128 {dtype_name}: triton fraction of copy bandwidth (>= 0.90)",
                                 value=tri["frac_copy"]))
            for provider in ("compile", "compile-plain"):
                comp = _find(kind="throughput", op=op, provider=provider, B=batch, d=d, dtype=dtype_name)
                if tri and comp:
                    rows.append(dict(target=f"{op} B=1M d=128 {dtype_name}: triton speed / {provider} (>= 0.95)",
                                     value=comp["ms_median"] / tri["ms_median"]))
        for b in (65536, batch):
            tri = _find(kind="throughput", op="sample_codes", provider="triton", B=b, d=d, dtype=dtype_name)
            comp = _find(kind="throughput", op="sample_codes", provider="compile", B=b, d=d, dtype=dtype_name)
            if tri and comp:
                rows.append(dict(target=f"sample_codes B={b} {dtype_name}: triton speed / compiled pipeline (>= 1.2)",
                                 value=comp["ms_median"] / tri["ms_median"]))
    for op in ("slerp", "slerp_gather", "sample_codes", "project_rows_"):
        tri = _find(kind="wall", op=op, provider="triton")
        for provider in ("compile", "compile-plain"):
            comp = _find(kind="wall", op=op, provider=provider)
            if tri and comp:
                rows.append(dict(target=f"{op} B=128: triton wall time / {provider} wall time (<= 0.5)",
                                 value=tri["us_per_call"] / comp["us_per_call"]))
    for dtype_name in DTYPES:
        small = _find(kind="throughput", op="project_rows_", provider="triton", table_rows=10_000, dtype=dtype_name)
        large = _find(kind="throughput", op="project_rows_", provider="triton", table_rows=1_000_000, dtype=dtype_name)
        if small and large:
            rows.append(dict(target=f"project_rows_ 128 rows {dtype_name}: time(1M-row table) / time(10k) (~1)",
                             value=large["ms_median"] / small["ms_median"]))
    for row in rows:
        record(kind="target", **row)
    assert all(r["value"] > 0 for r in rows)
