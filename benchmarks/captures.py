"""How many CUDA graph captures a run needs, its KV in one size class (a GPU's default) and in size classes. A
graph's shape is each class's capacity and rows, and a graph is captured again whenever a class's buffers are
replaced, so the count depends on how the rows and their buffers change, not on the device: this runs on a CPU,
with a stand-in for capture (``graphs.Rerun``: a replay runs the step again), the 1-layer random model of
``step_host.py``, and ``gpu.py --classes``'s prompts (all short, and a few long ones beside them). As there, the
captures are counted in the run after a warm-up of 4 tokens each; a GPU's own run (``gpu.py --classes``) says
what they cost there. Then agents arriving one after another, as a server meets them (``--arrivals``): the
captures over a whole run. Prints the tables and writes them into BENCHMARKS.md (section "kv-captures").

    .venv/bin/python benchmarks/captures.py [--agents 128] [--tokens 128] [--prefill 4096 512] [--arrivals 200]
"""

from __future__ import annotations

import argparse
import random
import sys
import threading
from pathlib import Path

import torch

from aios.llm.core import GenerationRequest, SamplingParams
from aios.llm.hf.graphs import DecodeGraphs, Rerun
from aios.llm.hf.sequence import Sequence
from gpu import PROMPT_TOKENS, VOCAB, after_each_step, generate_with, long_and_short, new_engine, prompts, random_model
from report import write_section
from step_host import TINY

LONG_TOKENS = 2000
EVERY, BATCH = 3, 32  # arrivals: one agent every EVERY steps, at most BATCH running


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--agents", type=_positive, default=128)
    parser.add_argument("--tokens", type=_positive, default=128, help="new tokens per generation")
    parser.add_argument("--prefill", type=_positive, nargs="+", default=[4096, 512],
                        help="prompt tokens read per step (a GPU's default, a CPU's)")
    parser.add_argument("--long-tokens", type=_positive, default=LONG_TOKENS, help="the long prompts' length")
    parser.add_argument("--arrivals", type=_positive, default=200, help="agents arriving one after another")
    parser.add_argument("--out", type=Path, default=Path(__file__).parents[1] / "BENCHMARKS.md")
    args = parser.parse_args(argv)
    n, readers = args.agents, max(1, args.agents // 32)
    command = " ".join([".venv/bin/python", "benchmarks/captures.py", *(sys.argv[1:] if argv is None else argv)])
    lines = ["### Captures a run needs: one KV class against size classes", "",
             f"`{command}` (no GPU needed). {n} generations of {args.tokens} tokens at once, the 1-layer random "
             "model of `step_host.py`; the captures of the run after a warm-up of 4 tokens each.", "",
             "| prompts | prompt tokens read per step | one class | size classes |", "|---|---|---|---|"]
    mixes = {f"{n} × {PROMPT_TOKENS} tokens": prompts(n),
             f"{readers} × {args.long_tokens:,} + {n - readers} × {PROMPT_TOKENS} tokens":
                 long_and_short(n, args.long_tokens)}
    for name, batch in mixes.items():
        for prefill in args.prefill:
            counts = [captures(batch, args.tokens, prefill, classes) for classes in (False, True)]
            lines.append(f"| {name} | {prefill:,} | {counts[0]} | {counts[1]} |")
            print(lines[-1], flush=True)
    lines += ["", f"Agents arriving one every {EVERY} steps, as a server meets them rather than all at once: "
              f"{args.arrivals} agents, at most {BATCH} running, 3 in 4 prompts of 20–120 tokens and 1 in 4 of "
              "200–1,500, replies of 16–256 tokens (seeded); the captures over the decode steps of the whole run.", "",
              "| KV | decode steps | captures | captures per 100 decode steps |", "|---|---|---|---|"]
    for classes in (False, True):
        captured, steps = arrivals_captures(args.arrivals, classes)
        lines.append(f"| {'size classes' if classes else 'one class'} | {steps} | {captured} | "
                     f"{100 * captured / steps:.1f} |")
        print(lines[-1], flush=True)
    write_section(args.out, "kv-captures", "\n".join(lines))


def captures(batch: list[list[int]], tokens: int, prefill: int, classes: bool) -> int:
    """The captures of a run of ``batch`` (after a warm-up of 4 tokens each), its decode steps in graphs."""
    engine = new_engine(random_model(TINY, "cpu"), max_batch=len(batch), kv_budget_mb=65536, prefill_chunk=prefill,
                        kv_classes=classes)
    runner = engine.runner
    runner.graphs, runner.decode_mode = DecodeGraphs(runner, Rerun()), "cuda-graphs"
    try:
        generate_with(engine, batch, 4)
        before = runner.graphs.captures
        generate_with(engine, batch, tokens)
        if runner.graphs is None:  # a step failed under the stand-in: the count would be a partial one
            raise RuntimeError(f"decode steps left the graphs: {runner.decode_mode}")
        return runner.graphs.captures - before
    finally:
        engine.stop()


def arrivals_captures(agents: int, classes: bool) -> tuple[int, int]:
    """Captures and decode steps of a run in which ``agents`` arrive one every ``EVERY`` steps (see ``main``)."""
    rng = random.Random(5)
    jobs = [([rng.randrange(3, VOCAB) for _ in range(rng.randint(200, 1500) if rng.random() < 0.25
                                                     else rng.randint(20, 120))], rng.randint(16, 256))
            for _ in range(agents)]
    engine = new_engine(random_model(TINY, "cpu"), max_batch=BATCH, kv_budget_mb=65536, prefill_chunk=4096,
                        kv_classes=classes)
    runner = engine.runner
    graphs = runner.graphs = DecodeGraphs(runner, Rerun())
    runner.decode_mode = "cuda-graphs"
    left, all_done, steps = [agents], threading.Event(), [0]

    def done(outcome: object) -> None:
        left[0] -= 1  # on the engine's thread
        if not left[0]:
            all_done.set()

    def arrive() -> None:
        ids, tokens = jobs.pop()
        engine.submit(Sequence(GenerationRequest([], SamplingParams(temperature=0, max_new_tokens=tokens)), ids, done))

    def after_step() -> None:
        steps[0] += 1
        if jobs and steps[0] % EVERY == 0:
            arrive()

    after_each_step(engine, after_step)
    try:
        arrive()
        all_done.wait()
        if runner.graphs is None:
            raise RuntimeError(f"decode steps left the graphs: {runner.decode_mode}")
        return graphs.captures, graphs.replays
    finally:
        engine.stop()


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not a positive number")
    return value


if __name__ == "__main__":
    torch.set_num_threads(1)  # a tiny model: more threads only wait on each other (counts are the same)
    main()
