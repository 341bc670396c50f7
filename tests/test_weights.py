"""The weight formats of the engine's runner: native packed for MKL and int4, which compute each row the same way
whatever rows are beside it; bf16 prepacked for oneDNN; int4 gives a Q4_1 file its own 4-bit values back."""

from __future__ import annotations

import pytest
import torch

from aios.llm.hf.weights import FormatError, Linear, int4_groups, onednn_bf16


def q4_1_weight(outputs: int, inputs: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(q, d, m, weight)`` as a Q4_1 file holds them: per group of 32 inputs a float16 scale d and minimum m,
    and 4-bit q with the group's minimum at 0 and its maximum at 15; ``weight = q * d + m``."""
    generator = torch.Generator().manual_seed(0)
    q = torch.randint(0, 16, (outputs, inputs // 32, 32), generator=generator)
    q[..., 0], q[..., 1] = 0, 15
    d = (torch.rand(outputs, inputs // 32, generator=generator) * 0.02 + 1e-3).half().float()
    m = (-torch.rand(outputs, inputs // 32, generator=generator) * 0.1).half().float()
    return q, d, m, (q * d[..., None] + m[..., None]).reshape(outputs, inputs)


def test_bf16_weights_are_prepacked_for_onednn_where_the_cpu_has_bfloat16_kernels() -> None:
    weight, x = torch.randn(96, 64), torch.randn(3, 64)
    linear = Linear(weight, "bf16", bias=torch.ones(96))
    assert (linear.packed is not None) == onednn_bf16()
    y = linear(x)
    assert y.dtype == torch.float32 and y.shape == (3, 96)
    # bf16 keeps about three significant digits: the product is the fp32 one to within that.
    assert torch.allclose(y, x @ weight.T + 1, rtol=0.02, atol=0.1)


def test_int4_gives_weights_from_a_q4_1_file_their_own_4_bit_values() -> None:
    q, d, m, weight = q4_1_weight(64, 96)
    got_q, scale, low = int4_groups(weight)
    assert torch.equal(got_q.reshape(q.shape), q.int())
    assert torch.allclose(scale, d, rtol=1e-6, atol=0) and torch.equal(low, m)


@pytest.mark.parametrize(("weights", "rtol", "atol"), [
    ("native", 1e-5, 1e-4),  # packed for MKL's GEMM on this CPU
    ("int4", 0.02, 0.05),    # bf16 activations, the weights exact
])
def test_a_row_is_computed_the_same_whatever_rows_are_beside_it(weights: str, rtol: float, atol: float) -> None:
    # MKL multiplies tiny matrices (128 inputs, 96 outputs) by one row another way: a model's are larger.
    *_, weight = q4_1_weight(256, 256)
    linear = Linear(weight, weights, bias=torch.ones(256))  # type: ignore[arg-type]
    x = torch.randn(300, 256)  # a prompt's worth of rows
    whole = linear(x)
    assert whole.dtype == torch.float32 and whole.shape == (300, 256)
    assert torch.allclose(whole, x @ weight.T + 1, rtol=rtol, atol=atol)
    for rows in (1, 2, 5, 8, 16, 17, 31, 33, 64):
        assert torch.equal(linear(x[:rows]), whole[:rows]), f"the first {rows} rows changed"
    assert torch.equal(linear(x[150:151]), whole[150:151])


@pytest.mark.parametrize(("shape", "sizes"), [
    ((100, 64), "this projection has 64 inputs and 100 outputs"),   # outputs not a multiple of 16
    ((96, 48), "this projection has 48 inputs and 96 outputs"),     # inputs not a multiple of 32
    ((8, 32), "this projection has 32 inputs and 8 outputs"),
])
def test_int4_refuses_a_projection_it_cannot_hold_and_says_why(shape: tuple[int, int], sizes: str) -> None:
    with pytest.raises(FormatError, match=f"int4 weights need inputs in multiples of 32 and outputs in multiples "
                                          f"of 16; {sizes}"):
        Linear(torch.randn(*shape), "int4")


def test_native_weights_multiply_as_the_model_does_and_give_up_their_rows_to_a_tied_embedding() -> None:
    weight, bias, x = torch.randn(96, 64), torch.randn(96), torch.randn(5, 64)
    assert Linear(weight, "native").mkl is not None  # this CPU's torch has MKL: packed
    linear = Linear(weight, "native", bias=bias, lookup=True)
    assert linear.mkl is None and torch.allclose(linear(x), x @ weight.T + bias, rtol=1e-5, atol=1e-5)
    ids = torch.tensor([3, 0, 95, 3])
    rows = linear.weight_rows(ids)  # how a tied embedding looks tokens up
    assert torch.equal(rows, weight[ids]) and rows.is_contiguous()


def test_a_tied_output_layer_gives_each_row_the_same_logits_alone_as_among_others() -> None:
    """A tied output layer stays a plain matrix (the embedding looks its rows up), and plain ``x @ W`` takes
    another kernel for one row, and on AMD's EPYC for the rows past a group of four: its rows go in the groups
    measured on it, so a reply's logits are bitwise the same whatever it is batched with."""
    numbers = torch.Generator().manual_seed(3)
    linear = Linear(torch.randn(49152, 576, generator=numbers) * 0.05, "native", lookup=True)
    assert linear.row_invariant and linear.rows_in_groups in (1, 2, 4, 8)
    x = torch.randn(24, 576, generator=numbers)
    among_all = linear(x)
    assert [rows for rows in range(1, 24) if not torch.equal(linear(x[:rows]), among_all[:rows])] == []


def test_native_weights_stay_plain_where_mkl_cannot_pack_them(monkeypatch: pytest.MonkeyPatch,
                                                              caplog: pytest.LogCaptureFixture) -> None:
    def no_address_space(weight: torch.Tensor, rows: int) -> torch.Tensor:
        raise RuntimeError("DefaultCPUAllocator: can't allocate memory")

    monkeypatch.setattr(torch.ops.mkl, "_mkl_reorder_linear_weight", no_address_space)
    weight, x = torch.randn(96, 64), torch.randn(5, 64)
    linear = Linear(weight, "native")
    assert linear.mkl is None and linear.native_t is not None
    assert torch.allclose(linear(x), x @ weight.T, rtol=1e-5, atol=1e-5)
    assert "native weights stay unpacked: MKL's packing failed (DefaultCPUAllocator" in caplog.text
