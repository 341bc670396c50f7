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

import asyncio
import json
import os
import statistics
import time

from beside import HERE, Watch, in_turns, medians, parser, provenance, this_commit


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
    computed = [0]  # tokens through the model
    forward = backend.engine._forward

    def counted(chunks: list) -> object:  # on the engine's thread
        computed[0] += sum(len(chunk.ids) for chunk in chunks)
        return forward(chunks)

    backend.engine._forward = counted

    async def turn(conversations: list[list[dict[str, str]]]) -> list:
        requests = [GenerationRequest(messages, SamplingParams(max_new_tokens=tokens)) for messages in conversations]
        return list(await asyncio.gather(*(backend.complete(r) for r in requests)))

    try:
        asyncio.run(turn([[{"role": "user", "content": "Warm up."}]] * 2))
        firsts = [[{"role": "system", "content": system}, {"role": "user", "content": f"Which port handles cargo {n}?"}]
                  for n in range(agents)]
        replies = asyncio.run(turn(firsts))
        cache_mb_first = backend.engine.prefixes.nbytes / 2**20
        entries_first = backend.engine.stats()["prefix_entries"]
        computed[0] = 0
        seconds = [messages + [{"role": "assistant", "content": reply.text},
                               {"role": "user", "content": "And when does it leave?"}]
                   for messages, reply in zip(firsts, replies)]
        watch = Watch(backend.engine, {"kv_mb": lambda stats: stats["kv_cache_mb"] + stats["shared_kv_mb"],
                                       "shared_kv": lambda stats: stats["shared_kv"],
                                       "running": lambda stats: stats["running"]})
        began = time.perf_counter()
        done = asyncio.run(turn(seconds))
        total = time.perf_counter() - began
        ttft = [g.first_token_s for g in done]
        # A reply's first token comes from its prompt's last piece; each later one is a decode token.
        prompt_tokens = computed[0] - sum(g.completion_tokens - 1 for g in done)
        return {"ttft_p50": statistics.median(ttft), "ttft_max": max(ttft), "total": total, **watch.most,
                "computed": prompt_tokens, "entries_first": entries_first, "cache_mb_first": cache_mb_first,
                "cache_mb": backend.engine.prefixes.nbytes / 2**20}
    finally:
        backend.close()


def main() -> None:
    options = parser(tokens=16)
    options.add_argument("--system-tokens", type=int, default=1000)
    args = options.parse_args()
    if args.measure:
        print(json.dumps(measure(args.agents, args.system_tokens, args.tokens, args.budget_mb)))
        return
    argv = ["--agents", str(args.agents), "--system-tokens", str(args.system_tokens), "--tokens", str(args.tokens),
            "--budget-mb", str(args.budget_mb)]
    head, load, started = this_commit(), os.getloadavg()[0], time.time()
    results = in_turns(__file__, argv, args.baseline, args.rounds)
    lines = [
        "## Agents' next turns from the prefix cache",
        "",
        provenance(started, load, head),
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
    by_engine = medians(results)
    for name, m in by_engine.items():
        lines.append(f"| {name} | {m['ttft_p50']:.2f} | {m['ttft_max']:.2f} | {m['total']:.2f} | "
                     f"{m['computed']:.0f} | {m['kv_mb']:.0f} | {m['shared_kv']:.0f} | {m['running']:.0f} | "
                     f"{m['entries_first']:.0f} | {m['cache_mb_first']:.0f} / {m['cache_mb']:.0f} |")
    if len(by_engine) == 2:
        before, now = by_engine.values()
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
