"""The CPU decode-attention kernel: it attends as plain softmax attention does, writes each new token's key and
value where its row puts it and nothing else, computes a row the same whatever rows are beside it, and says why
where it cannot be built."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import torch

from aios.llm.hf import cbuild
from aios.llm.hf.attention_kernel import DecodeAttention, load
from aios.llm.hf.cbuild import KernelUnavailable
from aios.llm.hf.kv import SlotKV
from aios.llm.hf.runner import Chunk, _Singles

CAPACITY = 40


def step(head_dim: int, group: int, kv_heads: int, offsets: list[int], seed: int = 0) -> dict[str, torch.Tensor]:
    """A decode step's q/k/v as the runner has them (views of one fused projection, so tokens are strided), and
    a cache of five rows with random contents."""
    generator = torch.Generator().manual_seed(seed)
    heads, n = kv_heads * group, len(offsets)
    fused = torch.randn(n, (heads + 2 * kv_heads) * head_dim + 8, generator=generator)  # 8: unused columns
    q = fused[:, :heads * head_dim].view(n, heads, head_dim)
    k = fused[:, heads * head_dim:(heads + kv_heads) * head_dim].view(n, kv_heads, head_dim)
    v = fused[:, (heads + kv_heads) * head_dim:-8].view(n, kv_heads, head_dim)
    keys = torch.randn(5, kv_heads, CAPACITY, head_dim, generator=generator)
    values = torch.randn(5, kv_heads, CAPACITY, head_dim, generator=generator)
    return {"q": q, "k": k, "v": v, "keys": keys, "values": values}


def reference(data: dict[str, torch.Tensor], rows: list[int], offsets: list[int],
              group: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Softmax attention in float64 after writing each token's key and value: outputs, log-sum-exps, cache."""
    keys, values = data["keys"].double().clone(), data["values"].double().clone()
    outputs, lses = [], []
    for i, (row, offset) in enumerate(zip(rows, offsets)):
        keys[row, :, offset], values[row, :, offset] = data["k"][i].double(), data["v"][i].double()
        seen_keys = keys[row, :, :offset + 1].repeat_interleave(group, dim=0)  # [heads, span, dim]
        seen_values = values[row, :, :offset + 1].repeat_interleave(group, dim=0)
        scores = (seen_keys @ data["q"][i].double()[:, :, None])[..., 0] / data["q"].shape[-1] ** 0.5
        outputs.append((scores.softmax(-1)[:, None, :] @ seen_values)[:, 0].reshape(-1))
        lses.append(scores.logsumexp(-1))
    return torch.stack(outputs), torch.stack(lses), keys, values


def attend(kernel: DecodeAttention, data: dict[str, torch.Tensor], rows: list[int],
           offsets: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    n, heads, dim = data["q"].shape
    as_tensor = lambda values: torch.tensor(values, dtype=torch.long)  # noqa: E731
    tokens = torch.arange(n)
    batch = kernel.rows(tokens, as_tensor(rows), as_tensor(offsets), tokens, max(offsets) + 1)
    out, lse = torch.full((n, heads * dim), torch.nan), torch.full((n, heads), torch.nan)
    kernel(batch, data["q"], data["k"], data["v"], data["keys"], data["values"], out, lse)
    return out, lse


@pytest.mark.parametrize(("head_dim", "group", "kv_heads"), [(64, 3, 3), (64, 1, 2), (128, 4, 2), (32, 7, 1)])
def test_the_kernel_attends_as_softmax_attention_and_writes_only_the_new_keys_and_values(
        head_dim: int, group: int, kv_heads: int) -> None:
    # Rows out of order, one left out, one that sees only its new token (offset 0), one filling its row.
    rows, offsets = [3, 0, 4, 1], [17, 0, CAPACITY - 1, 5]
    data = step(head_dim, group, kv_heads, offsets)
    expected, expected_lse, expected_keys, expected_values = reference(data, rows, offsets, group)
    out, lse = attend(load(head_dim, group, torch.float32), data, rows, offsets)
    torch.testing.assert_close(out.double(), expected, atol=2e-5, rtol=1e-5)
    torch.testing.assert_close(lse.double(), expected_lse, atol=2e-5, rtol=1e-5)
    assert torch.equal(data["keys"].double(), expected_keys) and torch.equal(data["values"].double(), expected_values)


def test_a_rows_result_is_bitwise_the_same_alone_and_among_other_rows() -> None:
    kernel = load(64, 3, torch.float32)
    rows, offsets = [0, 1, 2, 3], [30, 7, 19, 38]
    data = step(64, 3, 3, offsets, seed=1)
    fresh = {name: tensor.clone() for name, tensor in data.items()}
    together, together_lse = attend(kernel, data, rows, offsets)
    for i in range(len(rows)):
        alone = {name: tensor[i:i + 1] if name in ("q", "k", "v") else tensor.clone() for name, tensor in fresh.items()}
        out, lse = attend(kernel, alone, rows[i:i + 1], offsets[i:i + 1])
        assert torch.equal(out[0], together[i]) and torch.equal(lse[0], together_lse[i])


@pytest.fixture
def fresh_build() -> Iterator[None]:
    """Compile again in this test (the compiled kernels are kept per process)."""
    cbuild.build.cache_clear()
    yield
    cbuild.build.cache_clear()


@pytest.mark.parametrize(("head_dim", "group", "dtype", "compiler", "why"), [
    (64, 3, torch.bfloat16, None, "it computes in float32, not bfloat16"),
    (72, 3, torch.float32, None, "head size 72 is not a multiple of 16"),
    (64, 17, torch.float32, None, "17 query heads per key head is more than 16"),
    (64, 3, torch.float32, "/nonexistent/cc",
     "cannot run the C compiler '/nonexistent/cc': No such file or directory (set CC to one)"),
    (64, 3, torch.float32, "false", "the C compiler 'false' failed: exit status 1"),
    (64, 3, torch.float32, "cc -fno-such-option", "the C compiler 'cc' failed: "),
])
def test_a_kernel_that_cannot_be_had_says_why(head_dim: int, group: int, dtype: torch.dtype, compiler: str | None,
                                              why: str, monkeypatch: pytest.MonkeyPatch, fresh_build: None) -> None:
    if compiler is not None:
        monkeypatch.setenv("CC", compiler)
    with pytest.raises(KernelUnavailable) as caught:
        load(head_dim, group, dtype)
    assert str(caught.value).startswith(why)
    if compiler == "cc -fno-such-option":
        assert "-fno-such-option" in str(caught.value)  # the compiler's own last line names the problem


def replaced(data: dict[str, torch.Tensor], name: str, tensor: torch.Tensor) -> dict[str, torch.Tensor]:
    return {**data, name: tensor}


@pytest.mark.parametrize(("change", "named"), [
    (lambda d: replaced(d, "q", d["q"].to(torch.bfloat16)), "q"),
    (lambda d: replaced(d, "k", d["k"].transpose(1, 2).contiguous().transpose(1, 2)), "k"),  # heads not rows
    (lambda d: replaced(d, "v", d["v"][:, :2]), "v"),  # fewer heads than the cache
    (lambda d: replaced(d, "keys", d["keys"][:, :, :20]), "keys/values"),  # a slice of the positions
    (lambda d: replaced(d, "values", d["values"].double()), "values"),
])
def test_tensors_laid_out_otherwise_are_refused_before_anything_is_written(change: Any, named: str) -> None:
    kernel = load(64, 3, torch.float32)
    data = change(step(64, 3, 3, [4, 9]))
    before = data["keys"].clone(), data["values"].clone()
    with pytest.raises(ValueError, match=f"unexpected layout of .*{named}"):
        attend(kernel, data, [0, 1], [4, 9])
    assert torch.equal(data["keys"], before[0]) and torch.equal(data["values"], before[1])


@pytest.mark.parametrize(("row", "offset"), [(2, 5), (0, 64), (-1, 5), (0, -1)])
def test_decode_tokens_outside_their_cache_are_refused_before_the_kernel_writes(row: int, offset: int) -> None:
    cache = SlotKV(1, 2, 3, 64, torch.float32, torch.device("cpu"), rows=2, capacity=64)
    with pytest.raises(IndexError, match="decode tokens outside their cache"):
        _Singles(cache, [(0, Chunk(row, [7], offset))], torch.device("cpu"), torch.float32,
                 load(64, 3, torch.float32))


def test_a_compiled_kernel_that_does_not_load_says_why(monkeypatch: pytest.MonkeyPatch, fresh_build: None) -> None:
    """E.g. a temp dir mounted noexec: the library builds but cannot be mapped; attention then stays in torch."""
    def refuse(path: str) -> None:
        raise OSError(f"{path}: failed to map segment from shared object")

    monkeypatch.setattr(cbuild.ctypes, "CDLL", refuse)
    with pytest.raises(KernelUnavailable, match="^the compiled kernel does not load: .*failed to map segment"):
        load(64, 3, torch.float32)


def test_the_kernel_runs_on_torchs_own_openmp_runtime(fresh_build: None) -> None:
    before = cbuild.openmp_runtimes()
    assert any("torch" in path for path in before)  # the Linux wheel's libgomp
    load(64, 3, torch.float32)
    assert cbuild.openmp_runtimes() == before


def test_a_kernel_that_would_bring_a_second_openmp_runtime_is_refused(monkeypatch: pytest.MonkeyPatch,
                                                                     fresh_build: None) -> None:
    """A torch built with another OpenMP (Intel's, LLVM's): two thread pools would contend for the cores."""
    seen = iter([{"/opt/torch/lib/libiomp5.so"}, {"/opt/torch/lib/libiomp5.so", "/usr/lib/libgomp.so.1"}])
    monkeypatch.setattr(cbuild, "openmp_runtimes", lambda: next(seen))
    with pytest.raises(KernelUnavailable, match=r"^it would bring a second OpenMP runtime \(/usr/lib/libgomp\.so\.1\) "
                                                r"beside torch's \(/opt/torch/lib/libiomp5\.so\)"):
        load(64, 3, torch.float32)
