"""Triton on a real GPU: numerics at sizes the interpreter cannot afford, 64-bit offsets, the
torch.library registration (opcheck, torch.compile) and the ``auto`` choice. Skipped without CUDA."""
import pytest
import torch

import kernels
from kernels import reference
from tolerances import tol

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]
DTYPES = [torch.float32, torch.float16, torch.bfloat16]


def _rand(*shape, dtype=torch.float32, seed=0):
    g = torch.Generator(device="cuda").manual_seed(seed)
    return torch.randn(*shape, generator=g, device="cuda").to(dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("d", [1, 7, 64, 128, 130, 512, 1000])
def test_slerp_and_gather_match_reference(dtype, d):
    batch = 5000
    a, b = _rand(batch, d, dtype=dtype), _rand(batch, d, dtype=dtype, seed=1)
    b[:50] = a[:50]  # identical
    b[50:100] = -a[50:100]  # antipodal
    t = torch.rand(batch, device="cuda")
    torch.testing.assert_close(kernels.slerp(a, b, t, backend="triton"), reference.slerp(a, b, t), **tol(dtype))
    codes = _rand(3000, d, dtype=dtype, seed=2)
    i, j = torch.randint(0, 3000, (2, batch), device="cuda")
    torch.testing.assert_close(
        kernels.slerp_gather(codes, i, j, 0.3, backend="triton"), reference.slerp_gather(codes, i, j, 0.3), **tol(dtype)
    )


@pytest.mark.parametrize("dtype", DTYPES)
def test_project_and_sampler_match_reference(dtype):
    codes = _rand(100_000, 128, dtype=dtype) * 2
    idx = torch.randint(0, 100_000, (4096,), device="cuda")
    want = codes.clone()
    reference.project_rows_(want, idx)
    kernels.project_rows_(codes, idx, backend="triton")
    torch.testing.assert_close(codes, want, **tol(dtype))

    index = kernels.class_index(torch.randint(0, 10, (100_000,), device="cuda"))
    s = kernels.sample_codes(codes, idx, index, [0.1, 0.2, 0.3, 0.4], noise_dim=16, seed=5, backend="triton")
    assert torch.equal(index.labels[s.partners], index.labels[idx]) and not (s.partners == idx).any()
    want = reference.sample_codes_explicit(codes, idx, s.partners, s.t, s.inputs[:, 128:])
    torch.testing.assert_close(s.inputs, want, **tol(dtype))
    eps = _rand(4096, 16)
    torch.testing.assert_close(
        kernels.sample_codes_explicit(codes, idx, s.partners, s.t, eps, backend="triton"),
        reference.sample_codes_explicit(codes, idx, s.partners, s.t, eps),
        **tol(dtype),
    )


def test_rows_beyond_two_to_the_31_elements():
    # A bfloat16 table of more than 2**31 elements: offsets must be 64-bit.
    n, d = 16_777_300, 128
    assert n * d > 2**31
    codes = torch.empty(n, d, dtype=torch.bfloat16, device="cuda")
    last = torch.tensor([n - 1, n - 2, 0], device="cuda")
    codes[last] = _rand(3, d, dtype=torch.bfloat16)
    got = kernels.slerp_gather(codes, last, last.flip(0), 0.4, backend="triton")
    torch.testing.assert_close(got, reference.slerp(codes[last], codes[last.flip(0)], 0.4), **tol(torch.bfloat16))
    kernels.project_rows_(codes, last[:1], backend="triton")
    torch.testing.assert_close(codes[n - 1].float().norm(), torch.tensor(1.0, device="cuda"), **tol(torch.bfloat16))
    del codes
    torch.cuda.empty_cache()


def test_eager_calls_skip_the_dispatcher_but_tracers_see_the_ops():
    from kernels import _dispatch

    a = _rand(8, 16)
    assert _dispatch._direct(a, None)
    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode() as mode:
        fake = mode.from_tensor(a)
        assert not _dispatch._direct(fake)
        out = kernels.slerp(fake, fake, 0.5, backend="triton")
        assert out.shape == (8, 16)


def test_auto_picks_triton_on_cuda_and_reference_for_autograd():
    a, b = _rand(64, 128), _rand(64, 128, seed=1)
    assert torch.equal(kernels.slerp(a, b, 0.3), kernels.slerp(a, b, 0.3, backend="triton"))
    a.requires_grad_()
    out = kernels.slerp(a, b, 0.3)
    assert out.grad_fn is not None
    out.sum().backward()
    assert torch.isfinite(a.grad).all()


def test_opcheck_of_registered_ops():
    import kernels.triton_project  # noqa: F401  (the ops register when their module is imported)
    import kernels.triton_sample  # noqa: F401
    import kernels.triton_slerp  # noqa: F401

    a, b = _rand(33, 20), _rand(33, 20, seed=1)
    t = torch.rand(33, device="cuda")
    i = torch.randint(0, 33, (17,), device="cuda")
    index = kernels.class_index(torch.randint(0, 3, (33,), device="cuda"))
    tset = torch.tensor([0.1, 0.2], device="cuda")
    ops = torch.ops.glico_kernels
    torch.library.opcheck(ops.slerp, (a, b, t, 0.0))
    torch.library.opcheck(ops.slerp, (a, b, None, 0.3))
    torch.library.opcheck(ops.slerp_gather, (a, i, i.flip(0), None, 0.5))
    torch.library.opcheck(ops.project_rows_, (a.clone(), i))
    torch.library.opcheck(ops.sample_codes, (a, i, index.order, index.offsets, index.labels, tset, 4, 1.0, 3))
    torch.library.opcheck(ops.sample_codes_explicit, (a, i, i.flip(0), None, 0.2, _rand(17, 4)))
    rows = torch.randperm(33, device="cuda")[:17]
    torch.library.opcheck(ops.adam_rows_, (a.clone(), torch.zeros_like(a), torch.zeros_like(a), rows, _rand(17, 20),
                                           0.01, 0.9, 0.999, 1e-8, True))


def test_torch_compile_of_the_fused_codes_update():
    table, m, v = _rand(300, 64), torch.zeros(300, 64, device="cuda"), torch.zeros(300, 64, device="cuda")
    rows, grad = torch.randperm(300, device="cuda")[:128], _rand(128, 64, seed=2)
    want = [x.clone() for x in (table, m, v)]
    kernels.adam_rows_(*want, rows, grad, step=4, lr=0.01, check_indices=False)

    def update(table, m, v, rows, grad):
        kernels.adam_rows_(table, m, v, rows, grad, step=4, lr=0.01, backend="triton", check_indices=False)

    torch.compile(update, fullgraph=True)(table, m, v, rows, grad)
    for got, ref in zip((table, m, v), want):
        torch.testing.assert_close(got, ref)


def test_torch_compile_fullgraph_calls_the_kernels():
    codes = _rand(500, 128)
    i, j = torch.randint(0, 500, (2, 256), device="cuda")
    index = kernels.class_index(torch.randint(0, 5, (500,), device="cuda"))
    tset = torch.tensor([0.1, 0.2, 0.3, 0.4], device="cuda")

    def step(codes, i, j):
        z = kernels.slerp_gather(codes, i, j, 0.25, backend="triton", check_indices=False)
        s = kernels.sample_codes(codes, i, index, tset, noise_dim=8, seed=1, backend="triton", check_indices=False)
        return z * 2, s.inputs

    compiled = torch.compile(step, fullgraph=True)
    for got, want in zip(compiled(codes, i, j), step(codes, i, j)):
        torch.testing.assert_close(got, want)
