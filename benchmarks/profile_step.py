"""Where a decode step's time goes: the engine's batched forward pass at several batch sizes, with the share
spent in matrix products and their achieved GFLOP/s. Prints a markdown table and writes it to
benchmarks/profile.md.

    .venv/bin/python benchmarks/profile_step.py [--batches 1 8 32] [--context 128]
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


def step_inputs(kv: SlotKV, batch: int, context: int) -> dict:
    lengths = torch.full((batch,), context)
    view = kv.decode_view(lengths)
    mask = (torch.arange(view.span).unsqueeze(0) <= lengths.unsqueeze(1)).view(batch, 1, 1, -1)
    return dict(input_ids=torch.ones(batch, 1, dtype=torch.long), position_ids=lengths.unsqueeze(1),
                attention_mask=mask, past_key_values=view, use_cache=True, logits_to_keep=1)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--context", type=int, default=128)
    parser.add_argument("--steps", type=int, default=10)
    args = parser.parse_args()
    model, _ = load_model(find_model(EMBEDDED_MODEL), load_config().data_dir, dtype=torch.float32, device_map="cpu")
    c = model.config
    flops_per_token = 2 * sum(p.numel() for n, p in model.named_parameters() if "embed" not in n or c.tie_word_embeddings)
    lines = [
        "# Decode-step profile",
        "",
        f"{platform.machine()}, torch {torch.__version__}, {torch.get_num_threads()} threads; embedded model, fp32, "
        f"context {args.context} tokens; `{' '.join(['.venv/bin/python', 'benchmarks/profile_step.py', *sys.argv[1:]])}`",
        "",
        "| batch | ms / step | tokens / s | matmul share | matmul GFLOP/s |",
        "|---|---|---|---|---|",
    ]
    for batch in args.batches:
        kv = SlotKV(c.num_hidden_layers, batch, c.num_key_value_heads, c.hidden_size // c.num_attention_heads,
                    torch.float32, torch.device("cpu"))
        kv.reserve(batch, args.context + 1)
        with torch.inference_mode():
            for _ in range(2):
                model(**step_inputs(kv, batch, args.context))
            began = time.perf_counter()
            for _ in range(args.steps):
                model(**step_inputs(kv, batch, args.context))
            per_step = (time.perf_counter() - began) / args.steps
            with profile(activities=[ProfilerActivity.CPU]) as prof:
                model(**step_inputs(kv, batch, args.context))
        total = sum(e.self_cpu_time_total for e in prof.key_averages())
        mm = sum(e.self_cpu_time_total for e in prof.key_averages() if e.key in ("aten::mm", "aten::addmm", "aten::bmm"))
        gflops = flops_per_token * batch / (mm / 1e6) / 1e9 if mm else float("nan")
        lines.append(f"| {batch} | {per_step * 1e3:.1f} | {batch / per_step:.1f} | {mm / total:.0%} | {gflops:.1f} |")
        print(lines[-1], flush=True)
    out = Path(__file__).with_name("profile.md")
    out.write_text("\n".join(lines) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
