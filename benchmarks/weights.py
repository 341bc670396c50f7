"""Weight formats of the engine's runner side by side: how many greedy replies each changes against native, the
time of one decode step at several batch sizes and of reading one prompt (rounds interleaved across formats,
best of each kept). Native weights run twice: held as the exact GGUF blocks they are and multiplied by the block
kernel (the default on a CPU with a C compiler, for the embedded model), and as fp32 packed for MKL's GEMM (what
the runner does without that kernel, or for weights that are not blocks). Prints a markdown table and writes it into BENCHMARKS.md (section "weights").

    .venv/bin/python benchmarks/weights.py [--batches 1 8 16 32] [--tokens 48] [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from contextlib import nullcontext
from pathlib import Path
from unittest import mock

import torch

from aios.config import EMBEDDED_MODEL, load_config
from aios.llm.hf.kv import SlotKV
from aios.llm.hf import runner as runner_module
from aios.llm.hf.loader import find_model, load_model
from aios.llm.hf.runner import Chunk, LlamaRunner
from report import write_section

MKL = "native, fp32 packed for MKL"
FORMATS = ("native", MKL, "bf16", "int8", "int4")
PROMPT_TOKENS = 512  # the prompt read in one step (the CPU's prefill_chunk)
PROMPTS = ["What is the capital of France?", "Write a haiku about the sea.", "List three uses of Python.",
           "Explain photosynthesis briefly.", "Who wrote Hamlet?", "Give me a recipe for pancakes.",
           "What is 17 times 23?", "Describe a cat in one sentence."]
CONTEXT = 128  # cached tokens per row in the timed decode steps


def new_kv(runner: LlamaRunner, rows: int, positions: int) -> SlotKV:
    kv = SlotKV(runner.config.num_hidden_layers, rows, runner.kv_heads, runner.head_dim, runner.dtype,
                runner.device)
    kv.reserve(rows, positions)
    return kv


def greedy(runner: LlamaRunner, prompts: list[list[int]], tokens: int) -> list[list[int]]:
    """``tokens`` greedy tokens for every prompt, all decoded in one batch."""
    kv = new_kv(runner, len(prompts), max(map(len, prompts)) + tokens + 1)
    replies = [[t] for t in runner.forward([Chunk(r, p, 0) for r, p in enumerate(prompts)], kv).argmax(-1).tolist()]
    for _ in range(tokens - 1):
        chunks = [Chunk(r, [reply[-1]], len(prompts[r]) + len(reply) - 1) for r, reply in enumerate(replies)]
        for reply, token in zip(replies, runner.forward(chunks, kv).argmax(-1).tolist()):
            reply.append(token)
    return replies


def first_difference(a: list[int], b: list[int]) -> int | None:
    return next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), None)


def step_ms(runner: LlamaRunner, kv: SlotKV, chunks: list[Chunk], steps: int = 5) -> float:
    runner.forward(chunks, kv)
    began = time.perf_counter()
    for _ in range(steps):
        runner.forward(chunks, kv)
    return (time.perf_counter() - began) / steps * 1e3


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8, 16, 32])
    parser.add_argument("--tokens", type=int, default=48)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    source, data_dir = find_model(EMBEDDED_MODEL), load_config().data_dir
    runners = {}
    for fmt in FORMATS:
        model, tokenizer = load_model(source, data_dir, dtype=torch.float32, device_map="cpu")
        no_blocks = mock.patch.object(runner_module, "_block_kernel", lambda *_: (None, "torch"))
        with no_blocks if fmt == MKL else nullcontext():
            runners[fmt] = LlamaRunner(model, "native" if fmt == MKL else fmt)
    prompts = [tokenizer.apply_chat_template([{"role": "user", "content": p}], add_generation_prompt=True,
                                             tokenize=True, return_dict=True)["input_ids"] for p in PROMPTS]
    began = time.perf_counter()
    with torch.inference_mode():
        replies = {fmt: greedy(runner, prompts, args.tokens) for fmt, runner in runners.items()}
        best: dict[tuple[str, int | str], float] = {}
        steps = {batch: (new_kv(runners["native"], batch, CONTEXT + 1),
                         [Chunk(row, [5], CONTEXT) for row in range(batch)]) for batch in args.batches}
        steps["prompt"] = (new_kv(runners["native"], 1, PROMPT_TOKENS),
                           [Chunk(0, [5 + i % 1000 for i in range(PROMPT_TOKENS)], 0)])
        for what, (kv, chunks) in steps.items():
            for _ in range(args.rounds):
                for fmt, runner in runners.items():
                    ms = step_ms(runner, kv, chunks, steps=2 if what == "prompt" else 5)
                    best[fmt, what] = min(ms, best.get((fmt, what), ms))
    lines = [
        "## Weight formats of the engine's runner",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} CPU cores, torch {torch.__version__} "
        f"({torch.get_num_threads()} threads), load average {os.getloadavg()[0]:.1f} at the end; "
        f"`{' '.join(['.venv/bin/python', 'benchmarks/weights.py', *sys.argv[1:]])}` "
        f"({time.perf_counter() - began:.0f} s). Greedy replies: {len(PROMPTS)} prompts, {args.tokens} tokens, "
        f"decoded in one batch; decode steps: {CONTEXT} cached tokens per row, best of {args.rounds} interleaved "
        "rounds.",
        "",
        "| weights | replies changed vs native (first changed token) | "
        + " | ".join(f"ms / step at {b} (× native)" for b in args.batches)
        + f" | ms to read a {PROMPT_TOKENS}-token prompt (× native) |",
        "|---|---|" + "---|" * (len(args.batches) + 1),
    ]
    for fmt in FORMATS:
        changed = [first_difference(a, b) for a, b in zip(replies[fmt], replies["native"])]
        where = ", ".join(str(i + 1) for i in changed if i is not None)
        cells = [f"{best[fmt, b]:.1f} ({best['native', b] / best[fmt, b]:.2f}×)" for b in [*args.batches, "prompt"]]
        count = sum(i is not None for i in changed)
        lines.append(f"| {fmt} | {count} of {len(PROMPTS)}{f' ({where})' if where else ''} | {' | '.join(cells)} |")
    markdown = "\n".join(lines)
    print(markdown)
    write_section(Path(__file__).parents[1] / "BENCHMARKS.md", "weights", markdown)


if __name__ == "__main__":
    main()
