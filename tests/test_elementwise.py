"""The element-wise work of a layer in C (residual add and RMS norm, rotary embedding, SwiGLU's gate): the results
torch gives within rounding, each row the same alone and among others (a decode step's few rows on one thread, a
prompt's many split over threads, rows at any alignment), inputs refused where the kernel would read them wrongly,
and torch where it cannot be built."""

from __future__ import annotations

import re

import pytest
import torch

from aios.llm.hf import cbuild
from aios.llm.hf.elementwise import Elementwise, KernelElementwise, load

EPS = 1e-5


@pytest.fixture(scope="module")
def kernel() -> KernelElementwise:
    return KernelElementwise(EPS)


def randn(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


# Hidden sizes: the embedded model's; one whose rows are not 64-byte aligned and leave a remainder past the vectors.
@pytest.mark.parametrize("hidden", [576, 72])
@pytest.mark.parametrize("rows", [1, 5, 100])  # 100: split over threads
def test_add_norm_adds_in_place_and_normalizes_as_torch_does(kernel: KernelElementwise, hidden: int,
                                                             rows: int) -> None:
    x, y, weight = randn(rows, hidden), randn(rows, hidden, seed=1), randn(hidden, seed=2)
    expected_sum, expected = Elementwise(EPS).add_norm(x, y, weight)
    y_before = y.clone()
    total, normed = kernel.add_norm(x, y, weight)
    assert total.data_ptr() == x.data_ptr() and torch.equal(y, y_before)  # x updated in place, y left alone
    torch.testing.assert_close(total, expected_sum, rtol=0, atol=0)
    torch.testing.assert_close(normed, expected, rtol=1e-5, atol=1e-5)
    alone_sum, alone = kernel.add_norm(expected_sum.clone(), None, weight)  # nothing to add
    assert torch.equal(alone_sum, expected_sum) and torch.equal(alone, normed)


@pytest.mark.parametrize(("head_dim", "heads"), [(64, 12), (40, 3)])  # 40: halves of 20, past one vector
@pytest.mark.parametrize("rows", [1, 7, 80])
def test_rotation_turns_queries_and_keys_as_torch_does_and_leaves_the_values(kernel: KernelElementwise,
                                                                             head_dim: int, heads: int,
                                                                             rows: int) -> None:
    qkv = randn(rows, (heads + 2) * head_dim)  # two more heads: the values, left as they are
    angles = randn(rows, head_dim // 2, seed=3).repeat(1, 2)
    cos, sin = angles.cos(), angles.sin()
    expected = Elementwise(EPS).rotate(qkv, heads, head_dim, cos, sin)
    values = qkv[:, heads * head_dim:].clone()
    turned = kernel.rotate(qkv, heads, head_dim, cos, sin)
    assert turned.shape == (rows, heads, head_dim) and turned.data_ptr() == qkv.data_ptr()
    torch.testing.assert_close(turned, expected, rtol=1e-5, atol=1e-6)
    assert torch.equal(qkv[:, heads * head_dim:], values)


@pytest.mark.parametrize("width", [1536, 40])
@pytest.mark.parametrize("rows", [1, 3, 70])
def test_the_gate_is_silu_of_the_gate_times_up(kernel: KernelElementwise, width: int, rows: int) -> None:
    gate_up = randn(rows, 2 * width) * 4
    torch.testing.assert_close(kernel.gate(gate_up), Elementwise(EPS).gate(gate_up), rtol=2e-6, atol=1e-6)


def test_each_row_is_computed_the_same_alone_and_among_others(kernel: KernelElementwise) -> None:
    """Rows of 75 floats (and heads of 26) start at many alignments, the last elements past the vectors; 100 rows
    go over threads, one row alone stays on this one, in a buffer of its own."""
    rows, hidden, heads, head_dim = 100, 75, 4, 26
    x, y, weight = randn(rows, hidden), randn(rows, hidden, seed=1), randn(hidden, seed=2)
    qkv, angles = randn(rows, (heads + 1) * head_dim, seed=4), randn(rows, head_dim, seed=5)
    gate_up = randn(rows, 2 * hidden, seed=6)
    _, normed = kernel.add_norm(x.clone(), y, weight)
    turned = kernel.rotate(qkv.clone(), heads, head_dim, angles.cos(), angles.sin())
    gated = kernel.gate(gate_up)
    for i in (0, 1, 37, 98, 99):
        one = slice(i, i + 1)
        assert torch.equal(kernel.add_norm(x[one].clone(), y[one].clone(), weight)[1], normed[one])
        assert torch.equal(kernel.rotate(qkv[one].clone(), heads, head_dim, angles[one].cos(), angles[one].sin()),
                           turned[one])
        assert torch.equal(kernel.gate(gate_up[one].clone()), gated[one])


def test_strided_inputs_are_read_as_contiguous_ones(kernel: KernelElementwise) -> None:
    wide = randn(6, 1152)
    x, y, weight = wide[:, ::2], randn(6, 576, seed=1), randn(576, seed=2)
    total, normed = kernel.add_norm(x, y, weight)
    assert torch.equal(total, x + y)
    assert torch.equal(normed, kernel.add_norm(x.contiguous(), y, weight)[1])
    assert torch.equal(kernel.gate(wide[:, :64]), kernel.gate(wide[:, :64].contiguous()))


@pytest.mark.parametrize(("call", "named"), [
    (lambda k: k.add_norm(torch.zeros(2, 8, dtype=torch.float64), None, torch.ones(8)), "not float64 [2, 8]"),
    (lambda k: k.add_norm(torch.zeros(2, 8), torch.zeros(3, 8), torch.ones(8)), "fp32 [2, 8] CPU tensors, not float32 [3, 8]"),
    (lambda k: k.add_norm(torch.zeros(2, 8), None, torch.ones(9)), "fp32 [8] CPU tensors, not float32 [9]"),
    (lambda k: k.add_norm(torch.zeros(8), None, torch.ones(8)), "the norm takes [tokens, hidden] rows, not [8]"),
    (lambda k: k.rotate(torch.zeros(2, 32), 3, 16, torch.ones(2, 16), torch.ones(2, 16)),
     "3 heads of 16 needs an even head size and [tokens, at least 48] rows, not [2, 32]"),
    (lambda k: k.rotate(torch.zeros(2, 64), 3, 15, torch.ones(2, 15), torch.ones(2, 15)), "3 heads of 15 needs"),
    (lambda k: k.rotate(torch.zeros(64), 3, 16, torch.ones(2, 16), torch.ones(2, 16)), "rows, not [64]"),
    (lambda k: k.rotate(torch.zeros(2, 64), 3, 16, torch.ones(1, 16), torch.ones(2, 16)),
     "fp32 [2, 16] CPU tensors, not float32 [1, 16]"),
    (lambda k: k.gate(torch.zeros(2, 7)), "fp32 [2, 6] CPU tensors, not float32 [2, 7]"),
    (lambda k: k.gate(torch.zeros(2, 8, dtype=torch.bfloat16)), "not bfloat16 [2, 8]"),
])
def test_inputs_the_kernel_would_misread_are_refused_naming_them(kernel: KernelElementwise, call: object,
                                                                 named: str) -> None:
    with pytest.raises(ValueError, match=re.escape(named)):
        call(kernel)  # type: ignore[operator]


def test_torch_does_the_work_off_a_cpu_or_fp32_and_without_a_compiler(monkeypatch: pytest.MonkeyPatch) -> None:
    assert load(EPS, torch.device("cpu"), torch.bfloat16)[1] == "torch"
    assert load(EPS, torch.device("cuda"), torch.float32)[1] == "torch"
    ops, status = load(EPS, torch.device("cpu"), torch.float32)
    assert isinstance(ops, KernelElementwise) and status == "c-kernel"
    monkeypatch.setenv("CC", "/nonexistent/cc")
    cbuild.build.cache_clear()
    try:
        ops, status = load(EPS, torch.device("cpu"), torch.float32)
    finally:
        cbuild.build.cache_clear()
    assert type(ops) is Elementwise
    assert status == "torch (cannot run the C compiler '/nonexistent/cc': No such file or directory (set CC to one))"
