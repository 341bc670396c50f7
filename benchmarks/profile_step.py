"""Where a decode step's time goes: the engine's batched forward pass (its Llama-family runner) at several batch
sizes, with the share spent in matrix products and their achieved GFLOP/s, and what the step costs beside the
model's arithmetic: the same step timed with the projections' products, then also attention, answered by
zeros of their shapes (what is left is the norms, the rotary embedding, the residual adds, the activations and
each operation's dispatch). Beside it, the step with decode attention in torch instead of the C kernel (the
runner's fallback), interleaved. With native weights, also what a step must read (the weights as the runner holds
them: exact blocks or fp32; and the rows' KV) and how long that takes at the machine's memory read bandwidth (a sum over 512 MB, best of 5): the floor a step
cannot go under without reading fewer bytes. Prints a markdown table and writes it to benchmarks/profile.md.

    .venv/bin/python benchmarks/profile_step.py [--batches 1 8 32] [--context 128] [--weights native]
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any
from unittest import mock

import torch
from torch.profiler import ProfilerActivity, profile, record_function

from aios.config import EMBEDDED_MODEL, load_config
from aios.llm.hf.attention_kernel import DecodeAttention
from aios.llm.hf.blocks import BlockProducts
from aios.llm.hf.elementwise import KernelElementwise
from aios.llm.hf.kv import SlotKV
from aios.llm.hf.loader import find_model, load_model
from aios.llm.hf.runner import Chunk, LlamaRunner, _Plan
from aios.llm.hf.weights import Linear

BLOCKS = "blocks::block_matmul"  # the block kernel's calls, which the profiler sees only as this label
KERNELS = ((BlockProducts, "__call__", BLOCKS), (DecodeAttention, "__call__", "attention::decode_attention"),
           *((KernelElementwise, name, f"elementwise::{name}") for name in ("add_norm", "rotate", "gate")))
MATMULS = ("aten::mm", "aten::addmm", "aten::bmm", "aten::_weight_int8pack_mm", "aten::_weight_int4pack_mm_for_cpu",
           "mkldnn::_linear_pointwise", "mkl::_mkl_linear", BLOCKS)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--context", type=int, default=128)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--weights", choices=["native", "bf16", "int8", "int4"], default="native")
    args = parser.parse_args()
    model, _ = load_model(find_model(EMBEDDED_MODEL), load_config().data_dir, dtype=torch.float32, device_map="cpu")
    c = model.config
    flops_per_token = 2 * sum(p.numel() for n, p in model.named_parameters() if "embed" not in n or c.tie_word_embeddings)
    runner = LlamaRunner(model, args.weights)
    bandwidth = read_bytes_per_s()
    lines = [
        "# Decode-step profile",
        "",
        f"{platform.machine()}, torch {torch.__version__}, {torch.get_num_threads()} threads; embedded model, "
        f"the engine's runner, weights {args.weights}, "
        f"context {args.context} tokens; memory read at {bandwidth / 1e9:.1f} GB/s; "
        f"`{' '.join(['.venv/bin/python', 'benchmarks/profile_step.py', *sys.argv[1:]])}`",
        "",
        "| batch | ms / step | tokens / s | ms / step, attention in torch | matmul share | matmul GFLOP/s | "
        "ms / step without the projections' products | and without attention | MB a step reads (weights, KV) "
        "| their read time, ms |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for batch in args.batches:
        kv = SlotKV(c.num_hidden_layers, batch, runner.kv_heads, runner.head_dim, torch.float32, torch.device("cpu"))
        kv.reserve(batch, args.context + 1)
        chunks = [Chunk(row, [1], args.context) for row in range(batch)]  # one decode token per row
        with torch.inference_mode():
            per_step, in_torch = interleaved(runner, chunks, kv, args.steps)
            without_products = step_s(runner, chunks, kv, args.steps, skipped=((Linear, "__call__", _no_product),))
            without_attention = step_s(runner, chunks, kv, args.steps, skipped=(
                (Linear, "__call__", _no_product), (_Plan, "attend", _no_attention)))
            with profile(activities=[ProfilerActivity.CPU]) as prof, labelled_kernels():
                runner.forward(chunks, kv)
        total = sum(e.self_cpu_time_total for e in prof.key_averages())
        mm = sum(e.self_cpu_time_total for e in prof.key_averages() if e.key in MATMULS)
        gflops = flops_per_token * batch / (mm / 1e6) / 1e9 if mm else float("nan")
        kv_bytes = 2 * c.num_hidden_layers * batch * runner.kv_heads * (args.context + 1) * runner.head_dim * 4
        read = f"{(held_bytes(runner) + kv_bytes) / 1e6:.0f}" if args.weights == "native" else "–"
        floor = f"{(held_bytes(runner) + kv_bytes) / bandwidth * 1e3:.1f}" if args.weights == "native" else "–"
        lines.append(f"| {batch} | {per_step * 1e3:.1f} | {batch / per_step:.1f} | {in_torch * 1e3:.1f} | "
                     f"{mm / total:.0%} | {gflops:.1f} | "
                     f"{without_products * 1e3:.1f} | {without_attention * 1e3:.1f} | {read} | {floor} |")
        print(lines[-1], flush=True)
    out = Path(__file__).with_name("profile.md")
    out.write_text("\n".join(lines) + "\n")
    print(f"wrote {out}")


def read_bytes_per_s() -> float:
    """The machine's memory read bandwidth with this process's threads: a sum over 512 MB, best of 5."""
    data = torch.ones(128 * 2**20)
    best = float("inf")
    for _ in range(5):
        began = time.perf_counter()
        data.sum()
        best = min(best, time.perf_counter() - began)
    return data.numel() * data.element_size() / best


def step_s(runner: LlamaRunner, chunks: list[Chunk], kv: SlotKV, steps: int,
           skipped: tuple[tuple[type, str, object], ...] = ()) -> float:
    """Seconds per forward pass (the median of ``steps``), with ``skipped`` methods replaced."""
    with ExitStack() as patches:
        for owner, name, stand_in in skipped:
            patches.enter_context(mock.patch.object(owner, name, stand_in))
        for _ in range(2):
            runner.forward(chunks, kv)
        times = []
        for _ in range(steps):
            began = time.perf_counter()
            runner.forward(chunks, kv)
            times.append(time.perf_counter() - began)
    return sorted(times)[len(times) // 2]


def interleaved(runner: LlamaRunner, chunks: list[Chunk], kv: SlotKV, steps: int) -> tuple[float, float]:
    """:func:`step_s` as the runner is and with its decode attention in torch, in turns (medians)."""
    kernel, as_is, in_torch = runner.kernel, [], []
    try:
        for _ in range(steps):
            as_is.append(step_s(runner, chunks, kv, 1))
            runner.kernel = None
            in_torch.append(step_s(runner, chunks, kv, 1))
            runner.kernel = kernel
    finally:
        runner.kernel = kernel
    return sorted(as_is)[steps // 2], sorted(in_torch)[steps // 2]


def held_bytes(runner: LlamaRunner) -> int:
    """Bytes of native weights a decode step reads: exact blocks where the runner holds them so, else fp32."""
    total = 0
    for linear in runner.linears:
        if linear.blocks is not None:
            total += linear.blocks.q.nbytes + linear.blocks.scales.nbytes
        else:
            total += linear.out_features * linear.in_features * 4
    return total


@contextmanager
def labelled_kernels() -> Iterator[None]:
    """The C kernels' calls under their labels in the profile (a ctypes call is not a torch op, and without a
    label its time would be missing from the profile's total)."""
    with ExitStack() as patches:
        for owner, name, label in KERNELS:
            patches.enter_context(mock.patch.object(owner, name, _labelled(getattr(owner, name), label)))
        yield


def _labelled(method: Callable[..., Any], label: str) -> Callable[..., Any]:
    def labelled(*args: Any) -> Any:
        with record_function(label):
            return method(*args)

    return labelled


def _no_product(linear: Linear, x: torch.Tensor) -> torch.Tensor:
    return x.new_zeros(len(x), linear.out_features)


def _no_attention(plan: _Plan, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, layer: int) -> torch.Tensor:
    return q.new_zeros(plan.tokens, q.shape[1] * q.shape[2])


if __name__ == "__main__":
    main()
