"""Backend choice and argument checks: every bad input fails in Python, with a message naming what
was received."""
import pytest
import torch

import kernels
from kernels import ClassIndex, _dispatch, reference
from kernel_helpers import device, requires_triton

A = torch.randn(4, 3)
B = torch.randn(4, 3)
CODES = torch.randn(6, 3)
IDX = torch.tensor([0, 1, 2, 5])
INDEX = kernels.class_index(torch.tensor([0, 0, 1, 1, 1, 2]))
META = torch.empty(4, 3, device="meta")


def _index(**changes) -> ClassIndex:
    return INDEX._replace(**changes)


BAD_CALLS = {
    # slerp
    "slerp a not a tensor": (lambda: kernels.slerp([[1.0]], B, 0.5), TypeError, "a must be a torch.Tensor"),
    "slerp a 1-D": (lambda: kernels.slerp(A[0], B[0], 0.5), ValueError, "got shape (3,)"),
    "slerp a 3-D": (lambda: kernels.slerp(A[None], B[None], 0.5), ValueError, "got shape (1, 4, 3)"),
    "slerp integer a": (lambda: kernels.slerp(A.long(), B.long(), 0.5), TypeError, "torch.int64"),
    "slerp float64 a": (lambda: kernels.slerp(A.double(), B.double(), 0.5), TypeError, "float32, float16, bfloat16"),
    "slerp mismatched d": (lambda: kernels.slerp(A, B[:, :2], 0.5), ValueError, "(4, 3) and (4, 2)"),
    "slerp mismatched B": (lambda: kernels.slerp(A, B[:3], 0.5), ValueError, "(4, 3) and (3, 3)"),
    "slerp d = 0": (lambda: kernels.slerp(A[:, :0], B[:, :0], 0.5), ValueError, "d >= 1"),
    "slerp mismatched dtype": (lambda: kernels.slerp(A, B.half(), 0.5), TypeError, "same dtype"),
    "slerp mismatched device": (lambda: kernels.slerp(A, META, 0.5), ValueError, "meta"),
    "slerp t wrong length": (lambda: kernels.slerp(A, B, torch.rand(3)), ValueError, "shape (4,)"),
    "slerp t 2-D": (lambda: kernels.slerp(A, B, torch.rand(4, 1)), ValueError, "got shape (4, 1)"),
    "slerp integer t": (lambda: kernels.slerp(A, B, torch.ones(4, dtype=torch.int64)), TypeError, "torch.int64"),
    "slerp t string": (lambda: kernels.slerp(A, B, "0.5"), TypeError, "str"),
    "slerp t nan": (lambda: kernels.slerp(A, B, float("nan")), ValueError, "finite"),
    "slerp unknown backend": (lambda: kernels.slerp(A, B, 0.5, backend="cuda"), ValueError, "'auto', 'torch', 'triton'"),
    # slerp_gather
    "gather i out of range": (lambda: kernels.slerp_gather(CODES, IDX, IDX + 1, 0.5), ValueError, "[1, 6]"),
    "gather negative i": (lambda: kernels.slerp_gather(CODES, IDX - 1, IDX, 0.5), ValueError, "[-1, 4]"),
    "gather float i": (lambda: kernels.slerp_gather(CODES, IDX.float(), IDX, 0.5), TypeError, "int64, int32"),
    "gather 2-D i": (lambda: kernels.slerp_gather(CODES, IDX[None], IDX[None], 0.5), ValueError, "(1, 4)"),
    "gather mismatched j": (lambda: kernels.slerp_gather(CODES, IDX, IDX[:3], 0.5), ValueError, "length 4"),
    "gather codes 1-D": (lambda: kernels.slerp_gather(CODES[0], IDX, IDX, 0.5), ValueError, "(rows, d)"),
    "gather codes int": (lambda: kernels.slerp_gather(CODES.int(), IDX, IDX, 0.5), TypeError, "int32"),
    "gather i on another device": (lambda: kernels.slerp_gather(CODES, IDX.to("meta"), IDX, 0.5), ValueError, "meta"),
    # project_rows_
    "project idx out of range": (lambda: kernels.project_rows_(CODES.clone(), torch.tensor([6])), ValueError, "[0, 6)"),
    "project bool idx": (lambda: kernels.project_rows_(CODES.clone(), torch.tensor([True])), TypeError, "torch.bool"),
    "project codes 3-D": (lambda: kernels.project_rows_(CODES[None].clone(), IDX), ValueError, "(1, 6, 3)"),
    "project unknown backend": (lambda: kernels.project_rows_(CODES.clone(), IDX, backend=None), ValueError, "None"),
    # class_index
    "class_index float labels": (lambda: kernels.class_index(torch.rand(3)), TypeError, "torch.float32"),
    "class_index 2-D labels": (lambda: kernels.class_index(torch.zeros(2, 2, dtype=torch.int64)), ValueError, "(2, 2)"),
    "class_index negative label": (lambda: kernels.class_index(torch.tensor([0, -1])), ValueError, "-1"),
    "class_index too few classes": (lambda: kernels.class_index(torch.tensor([0, 3]), num_classes=3), ValueError, "3"),
    # sample_codes
    "sample empty t_values": (lambda: kernels.sample_codes(CODES, IDX, INDEX, []), ValueError, "empty"),
    "sample empty t_values tensor": (lambda: kernels.sample_codes(CODES, IDX, INDEX, torch.empty(0)), ValueError, "empty"),
    "sample t_values string": (lambda: kernels.sample_codes(CODES, IDX, INDEX, "0.1"), TypeError, "str"),
    "sample t_values int tensor": (lambda: kernels.sample_codes(CODES, IDX, INDEX, torch.tensor([1])), TypeError, "int64"),
    "sample t_values nan": (lambda: kernels.sample_codes(CODES, IDX, INDEX, [0.1, float("inf")]), ValueError, "inf"),
    "sample index not ClassIndex": (lambda: kernels.sample_codes(CODES, IDX, tuple(INDEX), [0.1]), TypeError, "ClassIndex"),
    "sample index for another table": (lambda: kernels.sample_codes(CODES[:5], IDX[:2], INDEX, [0.1]), ValueError, "(5,)"),
    "sample index int32": (lambda: kernels.sample_codes(CODES, IDX, _index(order=INDEX.order.int()), [0.1]), TypeError, "int64"),
    "sample empty class": (
        lambda: kernels.sample_codes(CODES, IDX, _index(offsets=torch.tensor([0, 2, 2, 6])), [0.1]),
        ValueError, "empty class",
    ),
    "sample label outside index": (
        lambda: kernels.sample_codes(CODES, IDX, _index(offsets=torch.tensor([0, 2, 6])), [0.1]), ValueError, "[0, 2)",
    ),
    "sample idx out of range": (lambda: kernels.sample_codes(CODES, IDX + 1, INDEX, [0.1]), ValueError, "[1, 6]"),
    "sample negative noise_dim": (lambda: kernels.sample_codes(CODES, IDX, INDEX, [0.1], noise_dim=-1), ValueError, "-1"),
    "sample float noise_dim": (lambda: kernels.sample_codes(CODES, IDX, INDEX, [0.1], noise_dim=2.0), TypeError, "float"),
    "sample negative sigma": (lambda: kernels.sample_codes(CODES, IDX, INDEX, [0.1], sigma=-1.0), ValueError, "-1.0"),
    "sample negative seed": (lambda: kernels.sample_codes(CODES, IDX, INDEX, [0.1], seed=-3), ValueError, "-3"),
    "sample huge seed": (lambda: kernels.sample_codes(CODES, IDX, INDEX, [0.1], seed=2**64), ValueError, "2**63"),
    "sample codes on meta": (lambda: kernels.sample_codes(CODES.to("meta"), IDX, INDEX, [0.1]), ValueError, "meta"),
    # sample_codes_explicit
    "explicit partners out of range": (
        lambda: kernels.sample_codes_explicit(CODES, IDX, IDX + 1, 0.5), ValueError, "partners must index rows"
    ),
    "explicit eps wrong rows": (
        lambda: kernels.sample_codes_explicit(CODES, IDX, IDX, 0.5, torch.randn(3, 2)), ValueError, "(3, 2)"
    ),
    "explicit eps integer": (
        lambda: kernels.sample_codes_explicit(CODES, IDX, IDX, 0.5, torch.ones(4, 2, dtype=torch.int64)), TypeError, "int64"
    ),
}


@pytest.mark.parametrize("call, error, fragment", BAD_CALLS.values(), ids=list(BAD_CALLS))
def test_bad_input_is_refused_with_a_clear_message(call, error, fragment):
    with pytest.raises(error) as info:
        call()
    assert fragment in str(info.value)


@requires_triton
def test_triton_refuses_inputs_that_require_grad():
    dev = device()
    a, b = A.to(dev).clone().requires_grad_(), B.to(dev)
    with pytest.raises(RuntimeError, match="does not support autograd"):
        kernels.slerp(a, b, 0.5, backend="triton")
    index = ClassIndex(*(x.to(dev) for x in INDEX))
    with pytest.raises(RuntimeError, match="does not support autograd"):
        kernels.sample_codes(CODES.to(dev).clone().requires_grad_(), IDX.to(dev), index, [0.1], backend="triton")
    with torch.no_grad():  # no graph is recorded: allowed
        kernels.slerp(a, b, 0.5, backend="triton")


def test_auto_uses_the_reference_for_cpu_and_for_autograd():
    a = A.clone().requires_grad_()
    out = kernels.slerp(a, B, 0.5)  # CPU → reference, which is differentiable
    out.sum().backward()
    assert a.grad is not None and torch.isfinite(a.grad).all()
    assert _dispatch._resolve("auto", torch.device("cpu"), 3, ()) == "torch"
    assert _dispatch._resolve("auto", torch.device("cuda"), 3, (a,)) == "torch"
    assert _dispatch._resolve("auto", torch.device("cuda"), _dispatch.MAX_D + 1, ()) == "torch"


@requires_triton
def test_triton_on_cpu_without_the_interpreter_says_how_to_fix_it(monkeypatch):
    monkeypatch.setattr(_dispatch, "_interpreting", lambda: False)
    with pytest.raises(RuntimeError, match="TRITON_INTERPRET=1"):
        kernels.slerp(A, B, 0.5, backend="triton")


@requires_triton
def test_triton_refuses_rows_longer_than_max_d():
    from kernels.triton_common import MAX_D

    assert MAX_D == _dispatch.MAX_D
    big = torch.randn(1, MAX_D + 1)
    with pytest.raises(ValueError, match=f"at most d = {MAX_D}"):
        kernels.slerp(big, big, 0.5, backend="triton")
    with pytest.raises(ValueError, match=f"at most {MAX_D} noise columns"):
        kernels.sample_codes(CODES, IDX, INDEX, [0.1], noise_dim=MAX_D + 1, backend="triton")


def test_check_indices_false_skips_the_read_back(monkeypatch):
    def boom(*args, **kwargs):
        raise AssertionError("indices were read back")

    monkeypatch.setattr(_dispatch, "_check_in_range", boom)
    monkeypatch.setattr(_dispatch, "_check_classes_of", boom)
    kernels.slerp_gather(CODES, IDX, IDX, 0.5, check_indices=False)
    kernels.project_rows_(CODES.clone(), IDX, check_indices=False)
    kernels.sample_codes(CODES, IDX, INDEX, [0.1], check_indices=False)
    kernels.sample_codes_explicit(CODES, IDX, IDX, 0.5, check_indices=False)


def test_reference_module_is_importable_without_triton():
    # The package and its reference import no triton module (glico's CPU users may lack triton).
    import os
    import pathlib
    import subprocess
    import sys

    code = (
        "import sys, kernels; kernels.slerp(__import__('torch').randn(2, 3), __import__('torch').randn(2, 3), 0.5);"
        "sys.exit(int(any(m == 'triton' or m.startswith('triton.') for m in sys.modules)))"
    )
    root = str(pathlib.Path(kernels.__file__).resolve().parents[1])
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([root, os.environ.get("PYTHONPATH", "")]))
    assert subprocess.run([sys.executable, "-c", code], check=False, env=env).returncode == 0
    assert reference.EPS > 0


@requires_triton
def test_registered_ops_match_the_direct_launches():
    # Eager calls launch the kernels directly; torch.compile and other tracers call the
    # torch.library ops. Both paths run the same launcher.
    from kernels import triton_project, triton_sample, triton_slerp

    dev = device()
    ops = torch.ops.glico_kernels
    a, b, codes, idx = A.to(dev), B.to(dev), CODES.to(dev), IDX.to(dev)
    t = torch.rand(4, device=dev)
    assert torch.equal(ops.slerp(a, b, t, 0.0), triton_slerp.slerp_direct(a, b, t, 0.0))
    assert torch.equal(ops.slerp_gather(codes, idx, idx.flip(0), None, 0.3),
                       triton_slerp.slerp_gather_direct(codes, idx, idx.flip(0), None, 0.3))
    index = ClassIndex(*(x.to(dev) for x in INDEX))
    tset = torch.tensor([0.1, 0.2], device=dev)
    for x, y in zip(ops.sample_codes(codes, idx, *index, tset, 3, 1.0, 5),
                    triton_sample.sample_codes_direct(codes, idx, *index, tset, 3, 1.0, 5)):
        assert torch.equal(x, y)
    eps = torch.randn(4, 2, device=dev)
    assert torch.equal(ops.sample_codes_explicit(codes, idx, idx.flip(0), None, 0.4, eps),
                       triton_sample.sample_codes_explicit_direct(codes, idx, idx.flip(0), None, 0.4, eps))
    via_op, direct = codes.clone(), codes.clone()
    ops.project_rows_(via_op, idx)
    triton_project.project_rows_direct(direct, idx)
    assert torch.equal(via_op, direct)
    rows_ = idx.unique()  # adam_rows_ needs distinct rows
    grad = torch.randn(rows_.shape[0], codes.shape[1], device=dev)
    via_op = [codes.clone(), torch.zeros_like(codes), torch.zeros_like(codes)]
    direct = [x.clone() for x in via_op]
    ops.adam_rows_(*via_op, rows_, grad, 0.01, 0.9, 0.999, 1e-8, True)
    triton_project.adam_rows_direct(*direct, rows_, grad, 0.01, 0.9, 0.999, 1e-8, True)
    assert all(torch.equal(x, y) for x, y in zip(via_op, direct)) and not torch.equal(via_op[0], codes)


@requires_triton
def test_host_integer_helpers_match_triton_and_the_definition():
    import triton

    from kernels.triton_common import cdiv, next_pow2

    for n in list(range(0, 70)) + [1023, 1024, 1025, (1 << 20) + 1]:
        p = next_pow2(n)
        assert p == max(1, triton.next_power_of_2(n)) and p >= max(n, 1) and p & (p - 1) == 0 and (p == 1 or p // 2 < n)
        for block in (1, 2, 64, 1024):
            assert cdiv(n, block) == triton.cdiv(n, block) == -(-n // block)
