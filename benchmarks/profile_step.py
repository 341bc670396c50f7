"""Where a decode step's time goes: the engine's batched forward pass (its Llama-family runner) at several batch
sizes, with the share spent in matrix products and their achieved GFLOP/s. Prints a markdown table and writes it
to benchmarks/profile.md.

    .venv/bin/python benchmarks/profile_step.py [--batches 1 8 32] [--context 128] [--weights native]
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

from aios.config import EMBEDDED_MODEL, load_config
from aios.llm.hf.kv import SlotKV
from aios.llm.hf.loader import find_model, load_model
from aios.llm.hf.runner import Chunk, LlamaRunner

MATMULS = ("aten::mm", "aten::addmm", "aten::bmm", "aten::_weight_int8pack_mm", "aten::_weight_int4pack_mm_for_cpu",
           "mkldnn::_linear_pointwise")


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
    lines = [
        "# Decode-step profile",
        "",
        f"{platform.machine()}, torch {torch.__version__}, {torch.get_num_threads()} threads; embedded model, "
        f"the engine's runner, weights {args.weights}, "
        f"context {args.context} tokens; `{' '.join(['.venv/bin/python', 'benchmarks/profile_step.py', *sys.argv[1:]])}`",
        "",
        "| batch | ms / step | tokens / s | matmul share | matmul GFLOP/s |",
        "|---|---|---|---|---|",
    ]
    for batch in args.batches:
        kv = SlotKV(c.num_hidden_layers, batch, runner.kv_heads, runner.head_dim, torch.float32, torch.device("cpu"))
        kv.reserve(batch, args.context + 1)
        chunks = [Chunk(row, [1], args.context) for row in range(batch)]  # one decode token per row
        with torch.inference_mode():
            for _ in range(2):
                runner.forward(chunks, kv)
            began = time.perf_counter()
            for _ in range(args.steps):
                runner.forward(chunks, kv)
            per_step = (time.perf_counter() - began) / args.steps
            with profile(activities=[ProfilerActivity.CPU]) as prof:
                runner.forward(chunks, kv)
        total = sum(e.self_cpu_time_total for e in prof.key_averages())
        mm = sum(e.self_cpu_time_total for e in prof.key_averages() if e.key in MATMULS)
        gflops = flops_per_token * batch / (mm / 1e6) / 1e9 if mm else float("nan")
        lines.append(f"| {batch} | {per_step * 1e3:.1f} | {batch / per_step:.1f} | {mm / total:.0%} | {gflops:.1f} |")
        print(lines[-1], flush=True)
    out = Path(__file__).with_name("profile.md")
    out.write_text("\n".join(lines) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
