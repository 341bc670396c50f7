"""Native weights held as exact GGUF blocks: found only where they give back every weight, looked up bit for bit,
multiplied as fp32 does (within rounding), and a row's product the same whatever rows and threads are beside it."""

from __future__ import annotations

import platform
import re
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import torch

from aios.llm.hf import cbuild
from aios.llm.hf.blocks import BlockProducts, exact_blocks
from aios.llm.hf.cbuild import KernelUnavailable
from aios.llm.hf.runner import _block_kernel
from aios.llm.hf.weights import Linear, mkl_packs


def q4_1(outputs: int, inputs: int, seed: int = 0) -> torch.Tensor:
    """Weights as a Q4_1 file dequantizes them: 4-bit q from a block's minimum (0) to its maximum (15), one
    float16 scale d and minimum m per block of 32 inputs, ``q * d + m``."""
    generator = torch.Generator().manual_seed(seed)
    q = torch.randint(0, 16, (outputs, inputs // 32, 32), generator=generator)
    q[..., 3], q[..., 7] = 0, 15
    d = (torch.rand(outputs, inputs // 32, generator=generator) * 0.02 + 1e-3).half().float()
    m = (-torch.rand(outputs, inputs // 32, generator=generator) * 0.1).half().float()
    return (q * d[..., None] + m[..., None]).reshape(outputs, inputs)


def q8_0(outputs: int, inputs: int, seed: int = 0) -> torch.Tensor:
    """Weights as a Q8_0 file dequantizes them: q in -127..127 (the block's largest magnitude at ±127) times one
    float16 d per block of 32 inputs."""
    generator = torch.Generator().manual_seed(seed)
    q = torch.randint(-127, 128, (outputs, inputs // 32, 32), generator=generator)
    q[::2, :, 5], q[1::2, :, 9] = 127, -127
    d = (torch.rand(outputs, inputs // 32, generator=generator) * 0.01 + 1e-4).half().float()
    return (q * d[..., None]).reshape(outputs, inputs)


@pytest.fixture(scope="module")
def products() -> BlockProducts:
    try:
        return BlockProducts()
    except KernelUnavailable as exc:  # a CPU with neither AVX-512 nor AVX2 (e.g. ARM): its tests cannot run here
        pytest.skip(str(exc))


@pytest.fixture
def threads() -> Iterator[int]:
    before = torch.get_num_threads()
    yield before
    torch.set_num_threads(before)


@pytest.mark.parametrize(("weight", "kind"), [
    (q4_1(64, 96), "q4_1"),
    (q4_1(4160, 64), "q4_1"),  # more outputs than one search takes at once
    (q8_0(96, 64), "q8_0"),
    (q4_1(32, 32) * 0 + 0.25, "q4_1"),  # a constant block: d = 0
])
def test_weights_that_are_gguf_blocks_are_held_so_and_give_back_every_weight(weight: torch.Tensor,
                                                                            kind: str) -> None:
    blocks = exact_blocks(weight)
    assert blocks is not None and blocks.kind == kind
    everything = torch.arange(len(weight))
    assert torch.equal(blocks.rows(everything), weight)
    ids = torch.tensor([len(weight) - 1, 0, 16, 15, 31, 0])  # both halves of a byte, repeats, any order
    assert torch.equal(blocks.rows(ids), weight[ids])
    assert blocks.rows(ids[:0]).shape == (0, weight.shape[1])
    assert blocks.q.nbytes + blocks.scales.nbytes < weight.nbytes / (2.5 if kind == "q4_1" else 1.5)


def one_weight_moved(weight: torch.Tensor) -> torch.Tensor:
    moved = weight.clone()
    moved[5, 17] = torch.nextafter(moved[5, 17], torch.tensor(1.0))  # one ulp: no longer q * d + m
    return moved


@pytest.mark.parametrize("weight", [
    torch.randn(64, 64),
    one_weight_moved(q4_1(64, 64)),
    one_weight_moved(q8_0(64, 64)),
    q4_1(64, 96)[:48],        # outputs not a multiple of 32
    q4_1(64, 96)[:, :80],     # inputs not a multiple of 32
    q4_1(64, 96).double(),
    q4_1(64, 64).to(torch.bfloat16),
    torch.full((32, 32), float("nan")),
    torch.full((32, 32), float("inf")),
    q4_1(64, 64) * 1e7,  # d beyond float16's range
    torch.full((32, 64), -0.0),  # q * d + m gives +0.0 for it
    torch.zeros(0, 64),
    torch.zeros(32, 0),
])
def test_weights_that_are_not_exactly_blocks_stay_as_they_are(weight: torch.Tensor, products: BlockProducts) -> None:
    assert exact_blocks(weight) is None
    if weight.dtype == torch.float32 and weight.isfinite().all():
        linear = Linear(weight, "native", block_kernel=products)
        assert linear.blocks is None and (linear.mkl is not None) == mkl_packs(weight)  # held as before


@pytest.mark.parametrize("weight", [q4_1(64, 96), q8_0(96, 64)])
def test_the_kernel_restores_every_weight_bit_for_bit(weight: torch.Tensor, products: BlockProducts) -> None:
    """Rows of the identity pick single weights out: with one row at a time and all rows at once (the kernel's
    two ways through), each product is exactly a weight."""
    blocks, identity = exact_blocks(weight), torch.eye(weight.shape[1])
    assert torch.equal(products(identity, blocks), weight.T)
    assert all(torch.equal(products(identity[i:i + 1], blocks)[0], weight[:, i]) for i in range(weight.shape[1]))


@pytest.mark.parametrize("weight", [q4_1(96, 64), q4_1(576, 1536), q8_0(192, 576)])
def test_block_products_are_the_fp32_products_within_rounding(weight: torch.Tensor, products: BlockProducts) -> None:
    blocks = exact_blocks(weight)
    x = torch.randn(40, weight.shape[1], generator=torch.Generator().manual_seed(1))
    exact = x.double() @ weight.double().T
    y = products(x, blocks)
    assert y.dtype == torch.float32 and y.shape == (40, len(weight))
    # Summed per block of 32 inputs: closer to the exact product than MKL's fp32 one.
    assert (y.double() - exact).abs().max() <= (x @ weight.T).double().sub(exact).abs().max() * 1.5


def test_a_rows_product_is_the_same_whatever_rows_and_threads_are_beside_it(products: BlockProducts,
                                                                           threads: int) -> None:
    blocks = exact_blocks(q4_1(192, 576))
    x = torch.randn(300, 576, generator=torch.Generator().manual_seed(2))  # a prompt's worth of rows
    whole = products(x, blocks)
    for count in (1, 2, 5, 11, 12, 13, 24, 31, 33, 48, 49, 64):  # one pass, passes over L1, the panel in L2
        assert torch.equal(products(x[:count], blocks), whole[:count]), f"the first {count} rows changed"
    assert torch.equal(products(x[150:151], blocks), whole[150:151])
    torch.set_num_threads(1)
    assert torch.equal(products(x[:7], blocks), whole[:7])
    torch.set_num_threads(3)  # panels split unevenly, a larger scratch
    assert torch.equal(products(x[:7], blocks), whole[:7]) and torch.equal(products(x[:40], blocks), whole[:40])


# Compilers that target less than this CPU (x86 only): AVX2 and FMA but no AVX-512 (most desktop CPUs), and
# neither.
AVX2, NEITHER = (["cc -mno-avx512f"], ["cc -mno-avx512f -mno-avx2"]) if platform.machine() in ("x86_64", "AMD64") \
    else ([], [])


@contextmanager
def compiled_by(compiler: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Kernels built in this block by ``compiler`` (the compiled ones are kept per process)."""
    monkeypatch.setenv("CC", compiler)
    cbuild.build.cache_clear()
    try:
        yield
    finally:
        cbuild.build.cache_clear()


@pytest.mark.parametrize("compiler", AVX2)
def test_the_avx2_build_gives_the_same_bits_as_this_cpus(compiler: str, products: BlockProducts,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    with compiled_by(compiler, monkeypatch):
        avx2 = BlockProducts()
    for weight in (q4_1(96, 576), q8_0(64, 96)):
        blocks = exact_blocks(weight)
        x = torch.randn(100, weight.shape[1], generator=torch.Generator().manual_seed(3))
        # One pass; passes over a block in L1 (2 rows each); the panel in L2, 6 rows a pass over half of it, the
        # last pass 1, 5 or 4 rows.
        for count in (1, 2, 3, 7, 8, 9, 30, 49, 53, 100):
            assert torch.equal(avx2(x[:count], blocks), products(x[:count], blocks)), f"{count} rows differ"
        assert torch.equal(avx2(torch.eye(weight.shape[1]), blocks), weight.T)  # every weight restored exactly


@pytest.mark.parametrize("compiler", NEITHER)
def test_without_avx2_the_kernel_is_refused_and_native_weights_stay_fp32_saying_why(
        compiler: str, monkeypatch: pytest.MonkeyPatch) -> None:
    with compiled_by(compiler, monkeypatch):
        with pytest.raises(KernelUnavailable, match="^the block kernel needs AVX-512, or AVX2 with FMA, which the "
                                                    "C compiler's target lacks"):
            BlockProducts()
        kernel, why = _block_kernel("native", torch.device("cpu"), torch.float32)
    assert kernel is None and why.startswith("torch (the block kernel needs AVX-512")
    weight = q4_1(64, 64)
    linear = Linear(weight, "native", block_kernel=kernel)
    assert linear.blocks is None and (linear.mkl is not None) == mkl_packs(weight)  # fp32, as before


def test_strided_activations_are_multiplied_as_contiguous_ones(products: BlockProducts) -> None:
    blocks = exact_blocks(q4_1(64, 64))
    wide = torch.randn(6, 128)
    assert torch.equal(products(wide[:, ::2], blocks), products(wide[:, ::2].contiguous(), blocks))
    assert products(wide[:0, :64], blocks).shape == (0, 64)


@pytest.mark.parametrize(("x", "named"), [
    (torch.randn(3, 96), "not float32 [3, 96] on cpu"),
    (torch.randn(3, 64).double(), "not float64 [3, 64] on cpu"),
    (torch.randn(64), "not float32 [64] on cpu"),
    (torch.randn(2, 3, 64), "not float32 [2, 3, 64] on cpu"),
])
def test_activations_of_another_shape_or_dtype_are_refused_naming_them(x: torch.Tensor, named: str,
                                                                       products: BlockProducts) -> None:
    with pytest.raises(ValueError, match=re.escape(f"block products take fp32 [rows, 64] CPU activations, {named}")):
        products(x, exact_blocks(q4_1(32, 64)))


def test_a_native_linear_in_blocks_adds_its_bias_and_looks_rows_up(products: BlockProducts) -> None:
    weight, bias, x = q8_0(64, 96), torch.randn(64), torch.randn(4, 96)
    linear = Linear(weight, "native", bias=bias, lookup=True, block_kernel=products)
    assert linear.blocks is not None and linear.mkl is None and linear.native_t is None and linear.row_invariant
    torch.testing.assert_close(linear(x), x @ weight.T + bias, rtol=1e-5, atol=1e-5)
    assert torch.equal(linear.weight_rows(torch.tensor([9, 63])), weight[[9, 63]])
    assert Linear(weight, "int8", block_kernel=products).blocks is None  # another format: its own kernel
