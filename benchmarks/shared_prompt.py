"""Agents that share a long system prompt, arriving together: time to first token, decode speed, KV memory and
how many run at once within one KV budget, for three engines over the same model:

- the default: the shared start is read once and stored once (a SharedKV all the agents attend to);
- the shared start read once but copied into every agent's row (``SHARE_ONCE`` raised past the prompt);
- every agent reading it itself (the engine's two sharing steps replaced with no-ops).

Writes its section of BENCHMARKS.md.

    .venv/bin/python benchmarks/shared_prompt.py [--agents 32] [--system-tokens 1000] [--tokens 32] [--budget-mb 1024]
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
from aios.llm.hf import engine as engine_module
from aios.llm.hf.engine import EngineSettings
from report import write_section

ENGINES = ("stored once (default)", "copied into each row", "each agent reads it itself")


def system_prompt(backend: HfLocalBackend, tokens: int) -> str:
    rules, text = 0, "You are an assistant of a shipping company."
    while len(backend.tokenizer(text)["input_ids"]) < tokens:
        rules += 1
        text += f" Rule {rules}: name the port, give the date, and never guess a number you were not given."
    return text


async def run(backend: HfLocalBackend, system: str, agents: int, tokens: int) -> dict[str, float]:
    """All agents submitted at once; what they saw, and what the engine held at its fullest."""
    peak = {"kv_mb": 0.0, "running": 0.0}

    def look(_: str) -> None:  # on the engine's thread, between steps: its stats are consistent here
        stats = backend.engine.stats()
        peak["kv_mb"] = max(peak["kv_mb"], stats["kv_cache_mb"] + stats["shared_kv_mb"])
        peak["running"] = max(peak["running"], stats["running"])

    requests = []
    for n in range(agents):
        request = GenerationRequest([{"role": "system", "content": system},
                                     {"role": "user", "content": f"Which port handles cargo {n}?"}],
                                    SamplingParams(max_new_tokens=tokens))
        request.on_text = look
        requests.append(request)
    began = time.perf_counter()
    done = await asyncio.gather(*(backend.complete(r) for r in requests))
    total = time.perf_counter() - began
    ttft = [g.first_token_s for g in done]
    return {"p50": statistics.median(ttft), "max": max(ttft), "total": total,
            "tok_s": sum(g.completion_tokens for g in done) / total, **peak,
            "shared": backend.engine.stats()["shared_prompt_tokens"]}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--agents", type=int, default=32)
    parser.add_argument("--system-tokens", type=int, default=1000)
    parser.add_argument("--tokens", type=int, default=32)
    parser.add_argument("--budget-mb", type=int, default=1024)
    args = parser.parse_args()
    data_dir = load_config().data_dir
    settings = EngineSettings(max_batch=args.agents, prefix_cache_mb=0, kv_budget_mb=args.budget_mb)
    results = {}
    share_once = engine_module.SHARE_ONCE
    for name in ENGINES:
        backend = HfLocalBackend(EMBEDDED_MODEL, data_dir=data_dir, settings=settings)
        engine_module.SHARE_ONCE = share_once if name == ENGINES[0] else 1 << 30
        if name == ENGINES[2]:
            backend.engine._share_prefix = lambda sequence: None  # type: ignore[method-assign]
            backend.engine._read_by_another = lambda sequence, reading: False  # type: ignore[method-assign]
        system = system_prompt(backend, args.system_tokens)
        asyncio.run(run(backend, "Warm up.", 2, 2))
        results[name] = asyncio.run(run(backend, system, args.agents, args.tokens))
        print(name, results[name], flush=True)
        backend.close()
    engine_module.SHARE_ONCE = share_once
    lines = [
        "## Agents sharing a system prompt",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} CPU cores, torch {torch.__version__}; {args.agents} "
        f"agents submitted at once with the same ~{args.system_tokens}-token system prompt and their own "
        f"question, {args.tokens} new tokens each, `max_batch` {args.agents}, `kv_budget_mb` {args.budget_mb}, "
        "prefix cache off, default `prefill_chunk` and `weights`; "
        f"`{' '.join(['.venv/bin/python', 'benchmarks/shared_prompt.py', *sys.argv[1:]])}`.",
        "",
        "| shared start | TTFT p50 s | TTFT max s | all replies s | tokens / s | KV memory MB (most seen at a token) | "
        "most agents running at once | prompt tokens taken from another |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, r in results.items():
        lines.append(f"| {name} | {r['p50']:.2f} | {r['max']:.2f} | {r['total']:.2f} | {r['tok_s']:.1f} | "
                     f"{r['kv_mb']:.0f} | {r['running']:.0f} | {r['shared']:.0f} |")
    once, copied, alone = (results[name] for name in ENGINES)
    lines += ["", f"Stored once against copied into each row: KV memory {copied['kv_mb'] / once['kv_mb']:.1f}× "
              f"smaller, {once['running']:.0f} against {copied['running']:.0f} agents running at once in the same "
              f"budget, {once['tok_s'] / copied['tok_s']:.1f}× the tokens/s. Against every agent reading it: TTFT "
              f"p50 {alone['p50'] / once['p50']:.1f}× sooner."]
    markdown = "\n".join(lines)
    print(markdown)
    write_section(Path(__file__).parents[1] / "BENCHMARKS.md", "shared-prompt", markdown)


if __name__ == "__main__":
    main()
