"""Agents that share a long system prompt take a second turn: what the prefix cache gives them. Each agent's
first turn (all submitted at once) leaves its conversation in the cache; then every agent sends its next turn
(its conversation and a new question), all at once. Measured on the second turn: time to first token, the KV
memory the running batch holds, the prefix cache's size, and how many agents ran at once.

Runs this checkout's engine beside another checkout's (``--baseline``, e.g. a ``git worktree`` of an earlier
commit), each in a process of its own, in turns, and writes a table of both into BENCHMARKS.md.

    git worktree add /tmp/before <commit>
    .venv/bin/python benchmarks/next_turn.py --baseline /tmp/before [--agents 32] [--rounds 2]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
COLUMNS = ("ttft_p50", "ttft_max", "total", "computed", "kv_mb", "shared_kv", "running", "entries_first",
           "cache_mb_first", "cache_mb")


def measure(agents: int, system_tokens: int, tokens: int, budget_mb: int) -> dict[str, float]:
    """Both turns on the embedded model with the engine importable here; the second turn's figures."""
    from aios.config import EMBEDDED_MODEL, load_config
    from aios.llm.core import GenerationRequest, SamplingParams
    from aios.llm.hf import HfLocalBackend
    from aios.llm.hf.engine import EngineSettings
    from shared_prompt import system_prompt

    settings = EngineSettings(max_batch=agents, kv_budget_mb=budget_mb)  # the default prefix cache: 256 MB
    backend = HfLocalBackend(EMBEDDED_MODEL, data_dir=load_config().data_dir, settings=settings)
    system = system_prompt(backend, system_tokens)
    peak = {"kv_mb": 0.0, "shared_kv": 0.0, "running": 0.0}
    computed = [0]  # tokens through the model
    forward = backend.engine._forward

    def counted(chunks: list) -> object:  # on the engine's thread
        computed[0] += sum(len(chunk.ids) for chunk in chunks)
        return forward(chunks)

    backend.engine._forward = counted

    def look(_: str) -> None:  # on the engine's thread, between steps
        stats = backend.engine.stats()
        peak["kv_mb"] = max(peak["kv_mb"], stats["kv_cache_mb"] + stats["shared_kv_mb"])
        peak["shared_kv"] = max(peak["shared_kv"], stats["shared_kv"])
        peak["running"] = max(peak["running"], stats["running"])

    async def turn(conversations: list[list[dict[str, str]]], watch: bool) -> list:
        requests = [GenerationRequest(messages, SamplingParams(max_new_tokens=tokens)) for messages in conversations]
        for request in requests:
            request.on_text = look if watch else None
        return list(await asyncio.gather(*(backend.complete(r) for r in requests)))

    try:
        asyncio.run(turn([[{"role": "user", "content": "Warm up."}]] * 2, False))
        firsts = [[{"role": "system", "content": system}, {"role": "user", "content": f"Which port handles cargo {n}?"}]
                  for n in range(agents)]
        replies = asyncio.run(turn(firsts, False))
        cache_mb_first = backend.engine.prefixes.nbytes / 2**20
        entries_first = backend.engine.stats()["prefix_entries"]
        computed[0] = 0
        seconds = [messages + [{"role": "assistant", "content": reply.text},
                               {"role": "user", "content": "And when does it leave?"}]
                   for messages, reply in zip(firsts, replies)]
        began = time.perf_counter()
        done = asyncio.run(turn(seconds, True))
        total = time.perf_counter() - began
        ttft = [g.first_token_s for g in done]
        # A reply's first token comes from its prompt's last piece; each later one is a decode token.
        prompt_tokens = computed[0] - sum(g.completion_tokens - 1 for g in done)
        return {"ttft_p50": statistics.median(ttft), "ttft_max": max(ttft), "total": total, **peak,
                "computed": prompt_tokens, "entries_first": entries_first, "cache_mb_first": cache_mb_first,
                "cache_mb": backend.engine.prefixes.nbytes / 2**20}
    finally:
        backend.close()


def run_in(src: Path, args: argparse.Namespace) -> dict[str, float]:
    """One measurement in a fresh process importing the engine from ``src``."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(src), str(HERE)])}
    command = [sys.executable, __file__, "--measure", "--agents", str(args.agents), "--system-tokens",
               str(args.system_tokens), "--tokens", str(args.tokens), "--budget-mb", str(args.budget_mb)]
    out = subprocess.run(command, env=env, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--baseline", type=Path, help="another checkout of this repository to compare with")
    parser.add_argument("--agents", type=int, default=32)
    parser.add_argument("--system-tokens", type=int, default=1000)
    parser.add_argument("--tokens", type=int, default=16)
    parser.add_argument("--budget-mb", type=int, default=1024)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--measure", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(args.agents, args.system_tokens, args.tokens, args.budget_mb)))
        return
    engines = {"this checkout": HERE.parent / "src"}
    if args.baseline is not None:
        commit = subprocess.run(["git", "-C", str(args.baseline), "rev-parse", "--short", "HEAD"],
                                capture_output=True, text=True, check=True).stdout.strip()
        engines = {f"baseline ({commit})": args.baseline / "src", **engines}
    head = subprocess.run(["git", "-C", str(HERE), "rev-parse", "--short", "HEAD"], capture_output=True,
                          text=True).stdout.strip()
    changed = ["git", "-C", str(HERE), "status", "--porcelain", "--untracked-files=no", "--", "src", "benchmarks"]
    if subprocess.run(changed, capture_output=True, text=True).stdout.strip():
        head += " with uncommitted changes"
    load = os.getloadavg()[0]
    started = time.time()
    results: dict[str, list[dict[str, float]]] = {name: [] for name in engines}
    for _ in range(args.rounds):
        for name, src in engines.items():
            results[name].append(run_in(src, args))
            print(name, results[name][-1], flush=True)
    import torch

    lines = [
        "## Agents' next turns from the prefix cache",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} CPU cores, torch {torch.__version__}; load average "
        f"{load:.1f} as it began. `{' '.join(['.venv/bin/python', 'benchmarks/next_turn.py', *sys.argv[1:]])}` "
        f"at {head}, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime(started))} "
        f"({(time.time() - started) / 60:.1f} min).",
        "",
        f"{args.agents} agents with the same ~{args.system_tokens}-token system prompt each send a first turn "
        f"(their own question, {args.tokens} new tokens), all at once; then each sends its next turn (that "
        "conversation and a new question), all at once. Figures of the second turn, medians of "
        f"{args.rounds} rounds, the engines in turns, each in a process of its own: `max_batch` {args.agents}, "
        f"`kv_budget_mb` {args.budget_mb}, the default prefix cache (256 MB), `prefill_chunk` and `weights`.",
        "",
        "| engine | TTFT p50 s | TTFT max s | all replies s | prompt tokens computed | KV memory MB (rows and "
        "shared starts, most seen) | shared starts held at once (most) | agents running at once (most) | "
        "conversations in the prefix cache after turn 1 | prefix cache MB after turn 1 / 2 |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    medians = {name: {key: statistics.median(r[key] for r in runs) for key in COLUMNS}
               for name, runs in results.items()}
    for name, m in medians.items():
        lines.append(f"| {name} | {m['ttft_p50']:.2f} | {m['ttft_max']:.2f} | {m['total']:.2f} | "
                     f"{m['computed']:.0f} | {m['kv_mb']:.0f} | {m['shared_kv']:.0f} | {m['running']:.0f} | "
                     f"{m['entries_first']:.0f} | {m['cache_mb_first']:.0f} / {m['cache_mb']:.0f} |")
    if len(medians) == 2:
        before, now = medians.values()
        lines += ["", f"Against the baseline: {before['computed'] / now['computed']:.1f}× fewer prompt tokens "
                  f"computed, {now['entries_first']:.0f} against {before['entries_first']:.0f} conversations kept "
                  f"after the first turns in {now['cache_mb_first']:.0f} against {before['cache_mb_first']:.0f} MB, "
                  f"TTFT p50 {before['ttft_p50'] / now['ttft_p50']:.2f}× sooner, all replies "
                  f"{before['total'] / now['total']:.2f}× sooner."]
    markdown = "\n".join(lines)
    print(markdown)
    from report import write_section

    write_section(HERE.parent / "BENCHMARKS.md", "next-turn", markdown)


if __name__ == "__main__":
    main()
