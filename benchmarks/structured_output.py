"""Structured-output evaluation: prompt-only (the seed's fold-and-decode) versus grammar-constrained decoding on
the embedded model, over the cases in benchmarks/structured_cases.json (tool calls over 1-8 tools, JSON schemas).

Reports, per mode: the share of replies that parse and validate (prompt-only on its first try, and after the
kernel's one retry), the share of tool cases that call the expected tool, and the decode throughput of a batch
of 16 structured requests with and without constraints (same prompts, greedy, side by side). Also the grammar
compile time for a typical tool schema, cold and cached. Greedy decoding; every request goes through the
kernel's LLM handler, as an agent's would.

    .venv/bin/python benchmarks/structured_output.py        # ~10 min on 2 CPU cores; writes BENCHMARKS.md
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import time
from pathlib import Path
from typing import Any

import torch

from aios.config import EMBEDDED_MODEL, load_config
from aios.kernel import Kernel
from aios.llm.core import GenerationRequest
from aios.llm.handler import LLMQuery
from aios.llm.hf import HfLocalBackend
from aios.llm.hf.grammar import Grammars
from aios.llm.structured import json_spec, retry_message, tool_call_spec
from aios.syscall import SyscallKind

from report import write_section  # benchmarks/, the script's own folder

ROOT = Path(__file__).resolve().parents[1]
CASES = Path(__file__).with_name("structured_cases.json")
MAX_NEW_TOKENS = 256
RETRY_START = retry_message(json_spec(None), "")["content"][:24]  # "That reply was not valid"


class Counting:
    """A backend that notes which queries the kernel retried (a retry ends with the refused reply and the message
    saying why, after the query's own last message) and counts the tokens generated."""

    def __init__(self, core: HfLocalBackend) -> None:
        self.core, self.tokens, self.retried = core, 0, set()
        self.name, self.backend, self.constrains = core.name, core.backend, core.constrains

    async def complete(self, request: GenerationRequest) -> Any:
        if is_retry(request):
            self.retried.add(request.messages[-3]["content"])
        generation = await self.core.complete(request)
        self.tokens += generation.completion_tokens
        return generation


def is_retry(request: GenerationRequest) -> bool:
    return len(request.messages) >= 3 and str(request.messages[-1]["content"]).startswith(RETRY_START)


def query_of(case: dict[str, Any]) -> LLMQuery:
    if case["kind"] == "tool_call":
        return LLMQuery(case["messages"], action_type="chat_with_tool_call_output", tools=case["tools"],
                        temperature=0, max_new_tokens=MAX_NEW_TOKENS)
    return LLMQuery(case["messages"], action_type="chat_with_json_output", response_format=case["response_format"],
                    temperature=0, max_new_tokens=MAX_NEW_TOKENS)


async def evaluate(config: Any, core: HfLocalBackend, cases: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every case through the kernel at once (the engine batches them; greedy answers do not depend on batching)."""
    counting = Counting(core)
    kernel = Kernel(config, [counting])  # type: ignore[list-item]
    await kernel.start()
    try:
        queries = [query_of(case) for case in cases]
        syscalls = await asyncio.gather(*(kernel.call(SyscallKind.LLM, "bench/structured", q) for q in queries))
    finally:
        await kernel.stop(close_cores=False)  # the cores serve the next kernel too
    return [outcome(case, syscall.value, case["messages"][-1]["content"] in counting.retried)
            for case, syscall in zip(cases, syscalls)]


def outcome(case: dict[str, Any], response: Any, retried: bool) -> dict[str, Any]:
    valid = response.status_code == 200
    right_tool = None
    if case["kind"] == "tool_call":
        right_tool = valid and bool(response.tool_calls) and response.tool_calls[0]["name"] == case["expected_tool"]
    return {"id": case["id"], "kind": case["kind"], "valid": valid, "first_try": valid and not retried,
            "right_tool": right_tool, "error": response.error}


async def batch_throughput(config: Any, core: HfLocalBackend, cases: list[dict[str, Any]]) -> float:
    """Decode tokens/s of the cases sent together (one batch), through the kernel."""
    counting = Counting(core)
    kernel = Kernel(config, [counting])  # type: ignore[list-item]
    await kernel.start()
    try:
        start = time.perf_counter()
        await asyncio.gather(*(kernel.call(SyscallKind.LLM, "bench/batch", query_of(c)) for c in cases))
        return counting.tokens / (time.perf_counter() - start)
    finally:
        await kernel.stop(close_cores=False)  # the cores serve the next kernel too


class StepClock:
    """Times the engine's decode steps by batch size, and grammar masking within them (wraps the two methods;
    benchmark only)."""

    def __init__(self, core: HfLocalBackend) -> None:
        self.steps: list[tuple[int, float]] = []
        self.mask_s = 0.0
        engine = core.engine
        decode, mask = engine._decode, engine.grammars.mask

        def timed_decode() -> None:
            start, rows = time.perf_counter(), len(engine.running)
            decode()
            self.steps.append((rows, time.perf_counter() - start))

        def timed_mask(*args: Any) -> None:
            start = time.perf_counter()
            mask(*args)
            self.mask_s += time.perf_counter() - start

        engine._decode, engine.grammars.mask = timed_decode, timed_mask

    def tokens_per_s(self, rows: int) -> float:
        """Decode tokens/s over the steps that ran exactly ``rows`` sequences."""
        times = [t for n, t in self.steps if n == rows]
        return rows * len(times) / sum(times) if times else float("nan")

    @property
    def mask_share(self) -> float:
        return self.mask_s / sum(t for _, t in self.steps)


def compile_times(core: HfLocalBackend, cases: list[dict[str, Any]]) -> tuple[float, float]:
    """Cold and cached compile (ms) of the tool-call grammar of the case with the most tools, after the
    one-time tokenizer setup."""
    case = max((c for c in cases if c["kind"] == "tool_call"), key=lambda c: len(c["tools"]))
    spec = tool_call_spec(case["tools"], "required")
    grammars = Grammars(core.tokenizer, core.model.config.vocab_size, core.engine.eos_ids)
    grammars.constraint(json_spec(None))  # builds the tokenizer wrapper
    times = []
    for _ in range(2):
        start = time.perf_counter()
        grammars.constraint(spec)
        times.append((time.perf_counter() - start) * 1000)
    return times[0], times[1]


def _cost(ratio: float) -> str:
    return f"a cost of {100 * (1 - ratio):.0f}%" if ratio < 1 else "no cost measurable at this noise level"


def rate(rows: list[dict[str, Any]], key: str) -> str:
    hits = sum(1 for r in rows if r[key])
    return f"{hits}/{len(rows)} ({100 * hits / len(rows):.0f}%)" if rows else "-"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "BENCHMARKS.md")
    parser.add_argument("--limit", type=int, default=0, help="only the first N cases (a quick look)")
    args = parser.parse_args()
    cases = json.loads(CASES.read_text())
    cases = cases[: args.limit] if args.limit else cases
    config = load_config()
    began = time.perf_counter()
    cores = {mode: HfLocalBackend(EMBEDDED_MODEL, data_dir=config.data_dir, structured_output=mode)
             for mode in ("prompt", "grammar")}
    results = {}
    for mode, core in cores.items():
        print(f"{mode}: {len(cases)} cases", flush=True)
        results[mode] = asyncio.run(evaluate(config, core, cases))
    batch = [c for c in cases if c["kind"] == "tool_call"][:8] + [c for c in cases if c["kind"] == "json"][:8]
    speed: dict[str, list[float]] = {mode: [] for mode in cores}
    clocks = {mode: StepClock(core) for mode, core in cores.items()}
    for _ in range(2):  # alternate, so that neither mode always runs on a warmer machine
        for mode, core in cores.items():
            speed[mode].append(asyncio.run(batch_throughput(config, core, batch)))
    cold_ms, cached_ms = compile_times(cores["grammar"], cases)
    for core in cores.values():
        core.close()
    minutes = (time.perf_counter() - began) / 60
    print(write_report(args.out, cases, results, speed, clocks, cold_ms, cached_ms, minutes))


def write_report(out: Path, cases: list[dict[str, Any]], results: dict[str, list[dict[str, Any]]],
                 speed: dict[str, list[float]], clocks: dict[str, StepClock], cold_ms: float, cached_ms: float,
                 minutes: float) -> str:
    tools = sum(1 for c in cases if c["kind"] == "tool_call")
    lines = [
        "## Structured output: prompt-only vs grammar-constrained decoding",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} CPU cores, torch {torch.__version__} "
        f"({torch.get_num_threads()} threads), Python {platform.python_version()}; embedded model, greedy, "
        f"max_new_tokens {MAX_NEW_TOKENS}; {len(cases)} cases ({tools} tool-call cases over 1-8 tools, "
        f"{len(cases) - tools} JSON cases) from benchmarks/structured_cases.json, each through the kernel's LLM "
        f"handler. All figures from one run of `.venv/bin/python benchmarks/structured_output.py` "
        f"({minutes:.1f} min).",
        "",
        "| mode | valid, first try | valid, after the one retry | tool cases: valid | right tool | "
        "JSON cases: valid |",
        "|---|---|---|---|---|---|",
    ]
    for mode, rows in results.items():
        tool_rows = [r for r in rows if r["kind"] == "tool_call"]
        json_rows = [r for r in rows if r["kind"] == "json"]
        label = "prompt-only (seed fold-and-decode)" if mode == "prompt" else "grammar-constrained"
        lines.append(f"| {label} | {rate(rows, 'first_try')} | {rate(rows, 'valid')} | {rate(tool_rows, 'valid')} | "
                     f"{rate(tool_rows, 'right_tool')} | {rate(json_rows, 'valid')} |")
    prompt_tps, grammar_tps = (sum(v) / len(v) for v in speed.values())
    full_prompt, full_grammar = clocks["prompt"].tokens_per_s(16), clocks["grammar"].tokens_per_s(16)
    lines += [
        "",
        "Throughput with constraints, batch of 16 structured requests sent together (8 tool-call and 8 JSON cases), "
        "two alternating runs per mode:",
        "",
        f"- decode steps that ran all 16 sequences: prompt-only {full_prompt:.1f} tokens/s, constrained "
        f"{full_grammar:.1f} — constrained / prompt-only = {full_grammar / full_prompt:.2f} "
        f"({_cost(full_grammar / full_prompt)}); computing and applying the token masks took "
        f"{100 * clocks['grammar'].mask_share:.1f}% of the constrained decode steps' time.",
        f"- whole batch, first request in to last reply out: prompt-only {prompt_tps:.1f} tokens/s, constrained "
        f"{grammar_tps:.1f} (runs: {', '.join(f'{v:.1f}' for v in speed['prompt'])} and "
        f"{', '.join(f'{v:.1f}' for v in speed['grammar'])}). The modes write different replies (prompt-only: "
        f"mostly prose that runs to the token limit, keeping the batch full; constrained: replies of every "
        f"length, so the batch empties out towards the end), so this figure mixes the constraint's cost with "
        f"batch occupancy; the per-step figure above is the cost itself.",
        "",
        f"Grammar compile for the largest tool set ({max(len(c['tools']) for c in cases if c['kind'] == 'tool_call')} "
        f"tools): {cold_ms:.1f} ms cold, {cached_ms:.2f} ms cached.",
        "",
        "Invalid replies:",
        "",
    ]
    for mode, rows in results.items():
        for row in rows:
            if not row["valid"]:
                lines.append(f"- {mode} `{row['id']}`: {(row['error'] or '')[:160]}")
    markdown = "\n".join(lines)
    write_section(out, "structured-output", markdown)
    return markdown


if __name__ == "__main__":
    main()
