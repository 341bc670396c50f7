"""The engine's own host work in a decode step of N rows: everything a step does but the model's forward pass,
which is stubbed (it returns logits at once). On a GPU a decode step replays a CUDA graph, and this work is what
the host adds to each step's GPU time (the last H200 run: ~4.95 ms a step at 128 rows, ~2.2 of it kernels). The
KV layout is a GPU's (one size class), the step's graph inputs are built as on a GPU (`decode_inputs`), and no
GPU is needed. Torch runs on one thread: the stubbed logits are a small CPU tensor, and waking OpenMP's workers for
them (which a GPU's host never does) would be most of what is measured. Prints a table and writes it into
BENCHMARKS.md (section "step-host").

    .venv/bin/python benchmarks/step_host.py [--rows 32 128 256] [--tokens 128]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable

import torch

from aios.llm.hf.graphs import DecodeGraphs, decode_inputs
from gpu import generate_with, new_engine, prompts, random_model
from report import write_section

TINY = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=1, num_attention_heads=1, num_key_value_heads=1)
PARTS = ("_fit_memory", "_place", "_forward", "_sample", "_take")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, nargs="+", default=[32, 128, 256])
    parser.add_argument("--tokens", type=int, default=128)
    args = parser.parse_args()
    torch.set_num_threads(1)
    lines = ["## The engine's host work per decode step", "",
             f"Machine: {platform.machine()}, {os.cpu_count()} CPU cores, torch {torch.__version__}; load average "
             f"{os.getloadavg()[0]:.1f} at the start; "
             f"`{' '.join(['.venv/bin/python', 'benchmarks/step_host.py', *sys.argv[1:]])}`. N generations of "
             f"{args.tokens} tokens at once, the forward pass stubbed, a GPU's KV layout, one torch thread; a decode "
             "step's host time and its parts (ms each, medians of its steps; the forward call is building the graph's "
             "inputs); and the time the engine took to admit the N prompts, which arrived together (ms).", "",
             "| rows | ms / step | µs / row | " + " | ".join(p.strip("_").replace("_", " ") for p in PARTS)
             + " | admitting all |", "|---|---|---|" + "---|" * len(PARTS) + "---|"]
    for rows in args.rows:
        step, parts, admitting = measure(rows, args.tokens)
        lines.append(f"| {rows} | {step * 1e3:.3f} | {step * 1e6 / rows:.1f} | "
                     + " | ".join(f"{parts[p] * 1e3:.3f}" for p in PARTS) + f" | {admitting * 1e3:.2f} |")
        print(lines[-1], flush=True)
    markdown = "\n".join(lines)
    print(markdown)
    write_section(Path(__file__).parents[1] / "BENCHMARKS.md", "step-host", markdown)


def measure(rows: int, tokens: int) -> tuple[float, dict[str, float], float]:
    """The median decode step's host time at ``rows`` rows, the median of each of its ``PARTS`` (a step's time
    in it, over its calls), and the time taken to admit the ``rows`` prompts. Medians: a few steps that
    reallocate the KV (its capacity doubling) would weigh on a mean as if each step spent a share of them."""
    # A GPU's layout: one size class.
    engine = new_engine(random_model(TINY, "cpu"), max_batch=rows, kv_budget_mb=65536, kv_classes=False)
    runner = engine.runner
    prompt_forward = runner.forward

    def forward(chunks: list[Any], kv: Any = None) -> torch.Tensor:
        if not DecodeGraphs.takes(chunks):  # steps that read prompts run for real: they fill the KV
            return prompt_forward(chunks, kv)
        decode_inputs([(chunks, rows, engine.kv.cache(0).capacity)])
        return torch.zeros(len(chunks), 256)

    runner.forward = forward  # type: ignore[method-assign]
    batch = prompts(rows)
    generate_with(engine, batch, 4)  # warm-up
    decoding, steps, parts = [False], [], dict.fromkeys(PARTS, 0.0)
    by_step: dict[str, list[float]] = {name: [] for name in PARTS}
    for name in PARTS:
        setattr(engine, name, _timed(getattr(engine, name), name, parts, decoding))
    admitting, parts["admitting"] = [False], 0.0  # the step that finds all the prompts waiting
    engine._admit_waiting = _timed(engine._admit_waiting, "admitting", parts, admitting)  # type: ignore[method-assign]
    step = engine.step

    def timed_step() -> None:
        decoding[0] = len(engine.running) == rows and all(s.output_ids for s in engine.running)
        admitting[0] = len(engine.policy) == rows
        parts.update(dict.fromkeys(PARTS, 0.0))
        began = time.perf_counter()
        step()
        if decoding[0]:
            steps.append(time.perf_counter() - began)
            for name in PARTS:
                by_step[name].append(parts[name])

    engine.step = timed_step  # type: ignore[method-assign]
    generate_with(engine, batch, tokens)
    engine.stop()
    return (statistics.median(steps), {name: statistics.median(spent) for name, spent in by_step.items()},
            parts["admitting"])


def _timed(call: Callable[..., Any], name: str, parts: dict[str, float], decoding: list[bool]) -> Callable[..., Any]:
    def run(*args: Any) -> Any:
        began = time.perf_counter()
        try:
            return call(*args)
        finally:
            if decoding[0]:
                parts[name] += time.perf_counter() - began
    return run


if __name__ == "__main__":
    main()
