"""Serving benchmark: N agents, each holding a multi-turn conversation with the embedded model.

Compares, in one run on one machine:
  (a) one request at a time through transformers ``generate`` (how the AIOS HF backend serves),
  (b) transformers' own continuous batching, ``generate_batch``, each turn's prompts together,
  (c) this kernel's engine under ``fifo`` and ``rr``, with prefix reuse on and off,
and a mixed workload (short requests arriving while long generations hold every slot) under fifo and rr;
and what one long prompt's prefill costs everyone else (a short chat's latency and a running stream's longest
pause while a ~4,000-token prompt is admitted). Writes BENCHMARKS.md and benchmarks/serving.png. Greedy, CPU.

    .venv/bin/python benchmarks/serving.py [--agents 1 4 16 32] [--turns 3] [--tokens 24]
    .venv/bin/python benchmarks/serving.py --long-prefill-only [--prompt-tokens 4000]   (a few minutes)
"""

from __future__ import annotations

import argparse
import importlib.util
import asyncio
import os
import platform
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import GenerationConfig, StoppingCriteria, StoppingCriteriaList

from aios.config import EMBEDDED_MODEL, load_config
from aios.llm.core import GenerationRequest, SamplingParams
from aios.llm.hf import HfLocalBackend
from aios.llm.hf.engine import EngineSettings
from aios.llm.hf.loader import find_model, load_model

from report import write_section  # benchmarks/, the script's own folder

ROOT = Path(__file__).resolve().parents[1]
TOPICS = ["the ocean", "volcanoes", "honey bees", "the moon", "bread", "chess", "rainforests", "trains",
          "glaciers", "owls", "coffee", "bridges", "deserts", "whales", "clocks", "mushrooms"]
FOLLOW_UPS = ["Tell me one more fact about it.", "Why does that matter?", "Summarise that in one sentence.",
              "Give an example."]


@dataclass
class Record:
    turn: int
    ttft: float  # arrival → first token
    latency: float  # arrival → last token
    waiting: float  # arrival → start of work on it
    tokens: int


@dataclass
class Result:
    name: str
    agents: int
    wall: float
    records: list[Record]

    @property
    def tokens_per_s(self) -> float:
        return sum(r.tokens for r in self.records) / self.wall

    def pct(self, field: str, q: float, from_turn: int = 0) -> float:
        values = sorted(getattr(r, field) for r in self.records if r.turn >= from_turn)
        return values[min(len(values) - 1, int(round(q * (len(values) - 1))))] if values else float("nan")


def first_question(agent: int) -> str:
    return f"Tell me about {TOPICS[agent % len(TOPICS)]} (conversation {agent})."


def turn_messages(history: list[dict], turn: int, agent: int) -> list[dict]:
    question = first_question(agent) if turn == 0 else FOLLOW_UPS[(turn - 1) % len(FOLLOW_UPS)]
    return history + [{"role": "user", "content": question}]


# -- (a) one request at a time -----------------------------------------------------------------------------

class _FirstToken(StoppingCriteria):
    def __init__(self) -> None:
        self.at: float | None = None

    def __call__(self, input_ids, scores, **kwargs):  # noqa: ANN001, ANN204
        self.at = self.at or time.perf_counter()
        return torch.zeros(input_ids.shape[0], dtype=torch.bool)


def run_sequential(backend: HfLocalBackend, model: Any, agents: int, turns: int, tokens: int) -> Result:
    tok = backend.tokenizer
    histories: list[list[dict]] = [[] for _ in range(agents)]
    records, start = [], time.perf_counter()
    for turn in range(turns):
        arrival = time.perf_counter()  # every agent's turn-t request arrives together
        for agent in range(agents):
            messages = turn_messages(histories[agent], turn, agent)
            ids = backend.render(messages, None)["input_ids"]
            first, began = _FirstToken(), time.perf_counter()
            with torch.inference_mode():
                out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=tokens,
                                     do_sample=False, stopping_criteria=StoppingCriteriaList([first]),
                                     pad_token_id=tok.eos_token_id)
            new = out[0, ids.shape[1]:]
            done = time.perf_counter()
            records.append(Record(turn, first.at - arrival, done - arrival, began - arrival, len(new)))
            histories[agent] = messages + [{"role": "assistant", "content": tok.decode(new, skip_special_tokens=True)}]
    return Result("(a) generate, one at a time", agents, time.perf_counter() - start, records)


# -- (b) transformers generate_batch ------------------------------------------------------------------------

def run_generate_batch(backend: HfLocalBackend, model: Any, agents: int, turns: int, tokens: int) -> Result:
    tok = backend.tokenizer
    config = GenerationConfig(max_new_tokens=tokens, do_sample=False, eos_token_id=tok.eos_token_id,
                              pad_token_id=tok.eos_token_id)
    histories: list[list[dict]] = [[] for _ in range(agents)]
    records, start = [], time.perf_counter()
    for turn in range(turns):
        messages = [turn_messages(histories[a], turn, a) for a in range(agents)]
        inputs = [backend.render(m, None)["input_ids"][0].tolist() for m in messages]
        with torch.inference_mode():
            outputs = model.generate_batch(inputs, generation_config=config, record_timestamps=True,
                                           progress_bar=False, warmup=False)
        for agent, output in enumerate(outputs.values()):
            stamps = output.timestamps or [output.lifespan[1]]
            records.append(Record(turn, stamps[0] - output.created_time, stamps[-1] - output.created_time,
                                  max(0.0, output.lifespan[0] - output.created_time), len(output.generated_tokens)))
            reply = tok.decode(output.generated_tokens, skip_special_tokens=True)
            histories[agent] = messages[agent] + [{"role": "assistant", "content": reply}]
    return Result("(b) transformers generate_batch", agents, time.perf_counter() - start, records)


# -- (c) this engine --------------------------------------------------------------------------------------

async def _agent(backend: HfLocalBackend, agent: int, turns: int, tokens: int, records: list[Record]) -> None:
    history: list[dict] = []
    for turn in range(turns):
        messages = turn_messages(history, turn, agent)
        began = time.perf_counter()
        generation = await backend.complete(GenerationRequest(messages, SamplingParams(temperature=0,
                                                                                        max_new_tokens=tokens)))
        records.append(Record(turn, generation.first_token_s, time.perf_counter() - began, generation.waited_s,
                              generation.completion_tokens))
        history = messages + [{"role": "assistant", "content": generation.text}]


def run_engine(data_dir: Path, policy: str, prefix: bool, agents: int, turns: int, tokens: int,
               max_batch: int) -> Result:
    settings = EngineSettings(max_batch=max_batch, policy=policy, quantum_tokens=8,
                              prefix_cache_mb=256 if prefix else 0)
    backend = HfLocalBackend(EMBEDDED_MODEL, data_dir=data_dir, settings=settings)
    try:
        records: list[Record] = []
        start = time.perf_counter()

        async def main() -> None:
            await asyncio.gather(*(_agent(backend, a, turns, tokens, records) for a in range(agents)))

        asyncio.run(main())
        name = f"(c) engine {policy}, prefix reuse {'on' if prefix else 'off'}"
        return Result(name, agents, time.perf_counter() - start, records)
    finally:
        backend.close()


def run_mixed(data_dir: Path, policy: str, slots: int, long_tokens: int, shorts: int) -> list[float]:
    """``slots`` long generations fill the batch; short requests arrive one per second. Short latencies."""
    settings = EngineSettings(max_batch=slots, policy=policy, quantum_tokens=8)
    backend = HfLocalBackend(EMBEDDED_MODEL, data_dir=data_dir, settings=settings)
    try:
        async def main() -> list[float]:
            longs = [asyncio.create_task(backend.complete(GenerationRequest(
                [{"role": "user", "content": f"Write a long essay about {TOPICS[i]}."}],
                SamplingParams(temperature=0, max_new_tokens=long_tokens)))) for i in range(slots)]
            latencies = []

            async def short(i: int) -> None:
                await asyncio.sleep(1.0 + i)
                began = time.perf_counter()
                await backend.complete(GenerationRequest([{"role": "user", "content": f"What is {i} + {i}?"}],
                                                         SamplingParams(temperature=0, max_new_tokens=16)))
                latencies.append(time.perf_counter() - began)

            await asyncio.gather(*(short(i) for i in range(shorts)), *longs)
            return latencies

        return asyncio.run(main())
    finally:
        backend.close()


@dataclass
class LongPrefill:
    prompt_tokens: int
    short_alone: list[float]  # a 4-token chat's latency with the engine otherwise idle
    short_during: list[float]  # the same chat, sent as the long prompt's prefill begins
    gap_typical: list[float]  # a running stream's median pause between tokens, before the long prompt
    gap_during: list[float]  # its longest pause while the long prompt is admitted


def run_long_prefill(data_dir: Path, prompt_tokens: int, repeats: int) -> LongPrefill:
    """Other agents' latency while one long prompt is prefilled (prefix reuse off: each repeat prefills all)."""
    backend = HfLocalBackend(EMBEDDED_MODEL, data_dir=data_dir,
                             settings=EngineSettings(max_batch=8, prefix_cache_mb=0))
    short = lambda: GenerationRequest([{"role": "user", "content": "Say hi."}],  # noqa: E731
                                      SamplingParams(temperature=0, max_new_tokens=4))
    words = " ".join(f"item{i}" for i in range(prompt_tokens))
    text = backend.tokenizer.decode(backend.tokenizer(words)["input_ids"][:prompt_tokens])
    result = LongPrefill(prompt_tokens, [], [], [], [])
    try:
        async def timed(request: GenerationRequest) -> float:
            began = time.perf_counter()
            await backend.complete(request)
            return time.perf_counter() - began

        async def once() -> None:
            result.short_alone.append(await timed(short()))
            stamps: list[float] = []
            stream = GenerationRequest([{"role": "user", "content": "Write a long story about a river."}],
                                       SamplingParams(temperature=0, max_new_tokens=400))
            stream.on_text = lambda _: stamps.append(time.perf_counter())
            streaming = asyncio.create_task(backend.complete(stream))
            while len(stamps) < 20:  # the stream is well under way
                await asyncio.sleep(0.05)
            before = len(stamps)
            long = GenerationRequest([{"role": "user", "content": f"Summarise: {text}"}],
                                     SamplingParams(temperature=0, max_new_tokens=1))
            admitted, loop = asyncio.Event(), asyncio.get_running_loop()
            long.on_running = lambda running: running and loop.call_soon_threadsafe(admitted.set)
            prefill = asyncio.create_task(backend.complete(long))
            await admitted.wait()
            result.short_during.append(await timed(short()))
            await prefill
            gaps = [b - a for a, b in zip(stamps, stamps[1:])]
            result.gap_typical.append(statistics.median(gaps[: before - 1]))
            result.gap_during.append(max(gaps[before - 1:]))
            stream.cancelled.set()
            backend.engine.poke()
            await streaming

        for _ in range(repeats):
            asyncio.run(once())
        return result
    finally:
        backend.close()


def long_prefill_report(result: LongPrefill, seconds: float) -> str:
    med = statistics.median
    return "\n".join([
        "## A long prompt's prefill: what it costs everyone else",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} CPU cores, torch {torch.__version__} "
        f"({torch.get_num_threads()} threads), Python {platform.python_version()}. "
        f"`{' '.join(['.venv/bin/python', 'benchmarks/serving.py', *sys.argv[1:]])}` ({seconds / 60:.1f} min): "
        f"a {result.prompt_tokens}-token prompt is admitted while a story streams; a 4-token chat is sent as its "
        f"prefill begins. Medians of {len(result.short_alone)} repeats (prefix reuse off).",
        "",
        "| | engine idle | during the long prefill | × |",
        "|---|---|---|---|",
        f"| 4-token chat, latency s | {med(result.short_alone):.2f} | {med(result.short_during):.2f} | "
        f"{med(result.short_during) / med(result.short_alone):.0f} |",
        f"| running stream, pause between tokens s | {med(result.gap_typical):.2f} (typical) | "
        f"{med(result.gap_during):.2f} (longest) | {med(result.gap_during) / med(result.gap_typical):.0f} |",
        "",
        "The long prompt is read `prefill_chunk` (512) tokens per step, in the same forward passes as the "
        "stream's decode tokens, and prompts with less left to read go first: the stream pauses for one chunk at "
        "a time, the chat is read before the long prompt's next chunk and then decodes a token per step beside it. "
        "(Read whole in one step, as before chunking: 10.05 s for the chat and a 9.87 s pause.)",
    ])


# -- report -------------------------------------------------------------------------------------------------

def p95(values: list[float]) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(0.95 * (len(values) - 1))))]


def report(results: list[Result], mixed: dict[str, list[float]], args: argparse.Namespace, seconds: float) -> str:
    lines = [
        "## Serving: N agents, multi-turn conversations, embedded model",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} CPU cores, torch {torch.__version__} "
        f"({torch.get_num_threads()} threads), Python {platform.python_version()}; "
        f"{args.turns} turns per agent, up to {args.tokens} new tokens per turn, greedy; engine max_batch "
        f"{args.max_batch}, rr quantum 8 tokens. All figures from one run of "
        f"`{' '.join(['.venv/bin/python', 'benchmarks/serving.py', *sys.argv[1:]])}` ({seconds / 60:.1f} min).",
        "",
        "| N | configuration | decode tok/s | × (a) | × (b) | TTFT p50 / p95 s | TTFT p50, turn ≥ 3 | latency p50 / p95 s | waiting p50 / p95 s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for n in args.agents:
        group = [r for r in results if r.agents == n]
        base_a = next(r.tokens_per_s for r in group if r.name.startswith("(a)"))
        base_b = next(r.tokens_per_s for r in group if r.name.startswith("(b)"))
        for r in group:
            lines.append(
                f"| {n} | {r.name} | {r.tokens_per_s:.1f} | {r.tokens_per_s / base_a:.2f} | "
                f"{r.tokens_per_s / base_b:.2f} | {r.pct('ttft', .5):.2f} / {r.pct('ttft', .95):.2f} | "
                f"{r.pct('ttft', .5, from_turn=2):.2f} | "
                f"{r.pct('latency', .5):.2f} / {r.pct('latency', .95):.2f} | "
                f"{r.pct('waiting', .5):.2f} / {r.pct('waiting', .95):.2f} |")
    fifo, rr = p95(mixed["fifo"]), p95(mixed["rr"])
    lines += [
        "",
        "## Mixed workload: short requests while long generations hold every slot",
        "",
        f"{args.max_batch_mixed} long generations ({args.long_tokens} tokens) fill a batch of {args.max_batch_mixed}; "
        f"{args.shorts} short requests (16 tokens) arrive one per second.",
        "",
        "| policy | short p50 s | short p95 s |",
        "|---|---|---|",
        f"| fifo | {statistics.median(mixed['fifo']):.2f} | {fifo:.2f} |",
        f"| rr | {statistics.median(mixed['rr']):.2f} | {rr:.2f} |",
        "",
        f"rr / fifo short-request p95: {rr / fifo:.2f}",
        "",
        "![tokens per second by number of agents](benchmarks/serving.png)",
        "",
        "Where a decode step's time goes: [benchmarks/profile.md](benchmarks/profile.md) "
        "(`.venv/bin/python benchmarks/profile_step.py`).",
        "",
    ]
    return "\n".join(lines)


def plot(results: list[Result], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    for name in dict.fromkeys(r.name for r in results):
        series = [r for r in results if r.name == name]
        ax.plot([r.agents for r in series], [r.tokens_per_s for r in series], marker="o", label=name)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("concurrent agents (N)")
    ax.set_ylabel("aggregate decode tokens / s")
    ax.set_title("Embedded model (SmolLM2-135M), CPU")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--agents", type=int, nargs="+", default=[1, 4, 16, 32])
    parser.add_argument("--turns", type=int, default=3)
    parser.add_argument("--tokens", type=int, default=24)
    parser.add_argument("--max-batch", type=int, default=32)
    parser.add_argument("--max-batch-mixed", type=int, default=4)
    parser.add_argument("--long-tokens", type=int, default=160)
    parser.add_argument("--shorts", type=int, default=8)
    parser.add_argument("--prompt-tokens", type=int, default=4000, help="the long prompt's length")
    parser.add_argument("--long-prefill-only", action="store_true", help="measure only the long prompt's cost")
    parser.add_argument("--out", type=Path, default=ROOT / "BENCHMARKS.md")
    parser.add_argument("--plot", type=Path, default=ROOT / "benchmarks" / "serving.png")
    args = parser.parse_args()
    if not args.long_prefill_only and importlib.util.find_spec("matplotlib") is None:  # now, not after 20 min
        parser.error("matplotlib is missing: run `make bench`, which installs the bench extra")
    data_dir = load_config().data_dir
    began = time.perf_counter()
    long_prefill = run_long_prefill(data_dir, args.prompt_tokens, repeats=3)
    write_section(args.out, "serving-long-prefill", long_prefill_report(long_prefill, time.perf_counter() - began))
    print(f"long prefill: chat {statistics.median(long_prefill.short_during):.2f} s during vs "
          f"{statistics.median(long_prefill.short_alone):.2f} s alone; wrote {args.out}", flush=True)
    if args.long_prefill_only:
        return
    began = time.perf_counter()
    # The baselines run transformers' own generate on a model of their own: the backend's engine holds the
    # weights in its runner's layout, and its transformers module no longer runs.
    baseline = HfLocalBackend(EMBEDDED_MODEL, data_dir=data_dir)
    model, _ = load_model(find_model(EMBEDDED_MODEL), data_dir, dtype=torch.float32, device_map="cpu")
    results: list[Result] = []
    for n in args.agents:
        runs = [lambda: run_sequential(baseline, model, n, args.turns, args.tokens),
                lambda: run_generate_batch(baseline, model, n, args.turns, args.tokens)]
        runs += [lambda p=p, x=x: run_engine(data_dir, p, x, n, args.turns, args.tokens, args.max_batch)
                 for p in ("fifo", "rr") for x in (True, False)]
        for run in runs:
            result = run()
            results.append(result)
            print(f"N={n:<3} {result.name:<40} {result.tokens_per_s:7.1f} tok/s  "
                  f"TTFT p95 {result.pct('ttft', .95):6.2f} s  latency p95 {result.pct('latency', .95):6.2f} s",
                  flush=True)
    baseline.close()
    mixed = {p: run_mixed(data_dir, p, args.max_batch_mixed, args.long_tokens, args.shorts) for p in ("fifo", "rr")}
    print(f"mixed: short p95 fifo {p95(mixed['fifo']):.2f} s, rr {p95(mixed['rr']):.2f} s", flush=True)
    write_section(args.out, "serving", report(results, mixed, args, time.perf_counter() - began))
    plot(results, args.plot)
    print(f"wrote {args.out} and {args.plot}")


if __name__ == "__main__":
    main()
