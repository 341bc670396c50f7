"""Agents that share a long system prompt: time to first token when they arrive together, with the engine
copying the shared start from the row that read it, against every agent reading it itself (the sharing turned
off on one engine by replacing its two steps with no-ops). Writes its section of BENCHMARKS.md.

    .venv/bin/python benchmarks/shared_prompt.py [--agents 32] [--system-tokens 1000]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

from aios.config import EMBEDDED_MODEL, load_config
from aios.llm.core import GenerationRequest, SamplingParams
from aios.llm.hf import HfLocalBackend
from aios.llm.hf.engine import EngineSettings
from report import write_section


def system_prompt(backend: HfLocalBackend, tokens: int) -> str:
    rules, text = 0, "You are an assistant of a shipping company."
    while len(backend.tokenizer(text)["input_ids"]) < tokens:
        rules += 1
        text += f" Rule {rules}: name the port, give the date, and never guess a number you were not given."
    return text


async def first_tokens(backend: HfLocalBackend, system: str, agents: int) -> list[float]:
    """Seconds from submission to each agent's first token, all agents submitted at once."""
    requests = [GenerationRequest([{"role": "system", "content": system},
                                   {"role": "user", "content": f"Which port handles cargo {n}?"}],
                                  SamplingParams(max_new_tokens=1)) for n in range(agents)]
    done = await asyncio.gather(*(backend.complete(r) for r in requests))
    return [g.first_token_s for g in done]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--agents", type=int, default=32)
    parser.add_argument("--system-tokens", type=int, default=1000)
    args = parser.parse_args()
    data_dir = load_config().data_dir
    settings = EngineSettings(max_batch=args.agents, prefix_cache_mb=0)
    rows = []
    for sharing in (True, False):
        backend = HfLocalBackend(EMBEDDED_MODEL, data_dir=data_dir, settings=settings)
        if not sharing:
            backend.engine._share_prefix = lambda sequence: None  # type: ignore[method-assign]
            backend.engine._read_by_another = lambda sequence, reading: False  # type: ignore[method-assign]
        system = system_prompt(backend, args.system_tokens)
        asyncio.run(first_tokens(backend, "Warm up.", 2))
        began = time.perf_counter()
        ttft = asyncio.run(first_tokens(backend, system, args.agents))
        rows.append((sharing, statistics.median(ttft), max(ttft), time.perf_counter() - began,
                     backend.engine.stats()["shared_prompt_tokens"]))
        backend.close()
    lines = [
        "## Agents sharing a system prompt",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} CPU cores, torch {torch.__version__}; {args.agents} "
        f"agents submitted at once with the same ~{args.system_tokens}-token system prompt and their own "
        "question, one new token each, prefix cache off, default `prefill_chunk`; "
        f"`{' '.join(['.venv/bin/python', 'benchmarks/shared_prompt.py', *sys.argv[1:]])}`.",
        "",
        "| engine | TTFT p50 s | TTFT max s | all first tokens s | prompt tokens copied from another row |",
        "|---|---|---|---|---|",
    ]
    for sharing, p50, worst, total, shared in rows:
        name = "shares the start (default)" if sharing else "each agent reads it itself"
        lines.append(f"| {name} | {p50:.2f} | {worst:.2f} | {total:.2f} | {shared} |")
    lines += ["", f"Time to first token, p50: {rows[1][1] / rows[0][1]:.1f}× faster when shared. Each row still "
              "holds its own copy of the shared KV (the cache is one dense row per sequence, not paged)."]
    markdown = "\n".join(lines)
    print(markdown)
    write_section(Path(__file__).parents[1] / "BENCHMARKS.md", "shared-prompt", markdown)


if __name__ == "__main__":
    main()
