"""Agents of very different lengths in one batch: a few read long documents, and once they run the others ask a
short question each. How many run at once within one KV budget (beside the documents, and over the whole run),
the KV memory they take, the chats' time to first token and the tokens per second; and, with no documents,
what the same engine does when every row is short (the cost of the size classes, if any).

Runs this checkout's engine beside another checkout's (``--baseline``, e.g. a ``git worktree`` of an earlier
commit), each in a process of its own, in turns, and writes a table of both into BENCHMARKS.md.

    git worktree add /tmp/before <commit>
    .venv/bin/python benchmarks/mixed_lengths.py --baseline /tmp/before [--agents 32] [--long 4] [--rounds 2]
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import time

from beside import HERE, Watch, in_turns, medians, parser, provenance, this_commit

DOCUMENT_LINE = "On day {n} the port logged {ships} ships, {tons} tons of grain and {crates} crates of wool. "


def measure(agents: int, long: int, document_tokens: int, tokens: int, budget_mb: int) -> dict[str, float]:
    """``long`` agents summarize a document; once all of them run, the others ask a short question each."""
    from aios.config import EMBEDDED_MODEL, load_config
    from aios.llm.core import GenerationRequest, SamplingParams
    from aios.llm.hf import HfLocalBackend
    from aios.llm.hf.engine import EngineSettings

    settings = EngineSettings(max_batch=agents, kv_budget_mb=budget_mb, prefix_cache_mb=0)
    backend = HfLocalBackend(EMBEDDED_MODEL, data_dir=load_config().data_dir, settings=settings)

    def document(port: int) -> str:
        """A port's log: each agent's own (with one document, the engine would read and store it once)."""
        text, n = f"The log of port {port}.\n", 0
        while len(backend.tokenizer(text)["input_ids"]) < document_tokens:
            n += 1
            text += DOCUMENT_LINE.format(n=n, ships=(n + port) * 3 % 17, tons=(n + port) * 41 % 900,
                                         crates=(n * port) * 7 % 60)
        return text

    reading = [0]  # documents in the batch, counted on the engine's thread

    def ask(question: str) -> GenerationRequest:
        return GenerationRequest([{"role": "user", "content": question}], SamplingParams(max_new_tokens=tokens))

    async def run() -> tuple[list, list]:
        loop = asyncio.get_running_loop()
        documents = [ask(f"{document(port)}\nSummarize it.") for port in range(long)]
        all_in = asyncio.Event()

        def running(now: bool) -> None:
            reading[0] += 1 if now else -1
            if reading[0] == long:
                loop.call_soon_threadsafe(all_in.set)

        for request in documents:
            request.on_running = running
        summaries = [asyncio.create_task(backend.complete(r)) for r in documents]
        if long:
            await all_in.wait()
        chats = await asyncio.gather(*(backend.complete(ask(f"Which port should ship cargo {n} to Oslo?"))
                                       for n in range(agents - long)))
        return list(chats), list(await asyncio.gather(*summaries))

    try:
        asyncio.run(backend.complete(ask("Warm up.")))
        watch = Watch(backend.engine, {"kv_mb": lambda stats: stats["kv_cache_mb"],
                                       "running": lambda stats: stats["running"],
                                       "beside": lambda stats: stats["running"] if reading[0] else None})
        began = time.perf_counter()
        chats, summaries = asyncio.run(run())
        total = time.perf_counter() - began
        ttft = [g.first_token_s for g in chats]
        return {"total": total, "tok_s": sum(g.completion_tokens for g in chats + summaries) / total,
                "chat_ttft_p50": statistics.median(ttft), "chat_ttft_max": max(ttft), **watch.most,
                "running_mean": watch.mean("running"), "beside_mean": watch.mean("beside"),
                "preemptions": backend.engine.stats()["preemptions"]}
    finally:
        backend.close()


def main() -> None:
    options = parser(tokens=32)
    options.add_argument("--long", type=int, default=4, help="agents reading a long document")
    options.add_argument("--document-tokens", type=int, default=1800)
    args = options.parse_args()
    if args.measure:
        print(json.dumps(measure(args.agents, args.long, args.document_tokens, args.tokens, args.budget_mb)))
        return
    head, load, started = this_commit(), os.getloadavg()[0], time.time()
    workloads = {f"{args.long} documents": args.long, "chats only": 0}
    results = {workload: in_turns(__file__, ["--agents", str(args.agents), "--long", str(long),
                                             "--document-tokens", str(args.document_tokens), "--tokens",
                                             str(args.tokens), "--budget-mb", str(args.budget_mb)],
                                  args.baseline, args.rounds)
               for workload, long in workloads.items()}
    lines = [
        "## Agents of very different lengths in one KV budget",
        "",
        provenance(started, load, head),
        "",
        f"{args.agents} agents, {args.tokens} new tokens each: {args.long} of them summarize a "
        f"~{args.document_tokens}-token document; once those run, the others ask a one-line question each, all "
        f"at once; then the same with chats only. `max_batch` {args.agents}, `kv_budget_mb` {args.budget_mb}, "
        f"prefix cache off, default `prefill_chunk` and `weights`; medians of {args.rounds} rounds, the engines in "
        "turns, each in a process of its own.",
        "",
        "| workload | engine | all replies s | tokens / s | chats' TTFT p50 / max s | KV memory MB (most seen) | "
        "agents running at once (most / mean over steps) | mean beside the documents | preemptions |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for workload, by_engine in results.items():
        for name, m in medians(by_engine).items():
            beside = f"{m['beside_mean']:.1f}" if workload != "chats only" else "–"
            lines.append(f"| {workload} | {name} | {m['total']:.2f} | {m['tok_s']:.1f} | {m['chat_ttft_p50']:.2f} / "
                         f"{m['chat_ttft_max']:.2f} | {m['kv_mb']:.0f} | {m['running']:.0f} / "
                         f"{m['running_mean']:.1f} | {beside} | {m['preemptions']:.0f} |")
    markdown = "\n".join(lines)
    print(markdown)
    from report import write_section

    write_section(HERE.parent / "BENCHMARKS.md", "mixed-lengths", markdown)


if __name__ == "__main__":
    main()
