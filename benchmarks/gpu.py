"""The engine on a GPU beside transformers `generate`, for the device machine (no model hub there: random weights
of the embedded model's architecture and of a ~1.7B one). Greedy, N generations of --tokens new tokens at once
(no end-of-sequence: every generation runs the full length). Prints a table and writes it into BENCHMARKS.md
(section "gpu"), naming the GPU. Meant to finish within 5 minutes on one H100/H200.

    python benchmarks/gpu.py                          engine (CUDA graphs and eager), static-batch generate,
                                                      compiled static-cache generate
    python benchmarks/gpu.py --check                  the engine's checks on this device (exit status 1 on a failure)
    python benchmarks/gpu.py --check --tokenizer DIR  the same, and grammar masks under CUDA graphs, with the
                                                      embedded model's tokenizer saved in DIR (the device machine
                                                      has no model: copy tokenizer*.json from the model cache)
    python benchmarks/gpu.py --profile                where a run of 128 generations spends its time: decode steps
                                                      against the rest (reading prompts); a decode step's host time
                                                      by part (the forward call, sampling, the engine's own work);
                                                      and one decode step's kernels
    python benchmarks/gpu.py --classes                KV in size classes against one class, at N = 128 within one
                                                      KV budget (--kv-budget-mb, 2048): speed, agents running at
                                                      once, KV peak and graph captures, with prompts all short and
                                                      with a few long ones beside them (section "gpu-classes")
    python benchmarks/gpu.py --compile ...            any of the above with the engine's decode step compiled by
                                                      torch.compile before its CUDA graphs capture it (element-wise
                                                      work fused into fewer kernels: does it help?); tables go to
                                                      sections of their own ("gpu-compile", "gpu-classes-compile")
    python benchmarks/gpu.py --device cpu --quick     the script itself, on a CPU (tests/test_bench_gpu.py runs
                                                      each mode so, with --check and --profile too)
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import threading
import time
import weakref
from pathlib import Path
from typing import Any, Callable

import torch
from torch.profiler import ProfilerActivity, profile
from transformers import LlamaConfig, LlamaForCausalLM

from aios.llm.core import Generation, GenerationRequest, SamplingParams
from aios.llm.hf.engine import Engine, EngineSettings
from aios.llm.hf.grammar import Grammars
from aios.llm.hf.graphs import decode_inputs
from aios.llm.hf.runner import Chunk, make_runner
from aios.llm.hf.sequence import Sequence
from report import write_section

VOCAB = 49152
ARCHITECTURES = {  # SmolLM2's shapes
    "135M (embedded)": dict(hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9,
                            num_key_value_heads=3, rope_theta=100000.0),
    "1.7B": dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=24, num_attention_heads=32,
                 num_key_value_heads=32, rope_theta=130000.0),
}
PROMPT_TOKENS = 32


class IdsTokenizer:
    """Random weights make no words: replies are spelled as their token ids."""

    def decode(self, ids: list[int], skip_special_tokens: bool = True) -> str:
        return " ".join(map(str, ids))


def random_model(shape: dict[str, Any], device: str, dtype: torch.dtype | None = None) -> Any:
    """bf16 on CUDA unless ``dtype`` says otherwise."""
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=VOCAB, max_position_embeddings=8192, tie_word_embeddings=True, **shape)
    dtype = dtype or (torch.bfloat16 if device != "cpu" else torch.float32)
    with torch.device(device):  # initialised where it runs: a 1.7B model takes seconds to initialise on a CPU
        model = LlamaForCausalLM(config)
    return model.to(dtype=dtype).eval()


def prompts(n: int, seed: int = 1) -> list[list[int]]:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(3, VOCAB, (n, PROMPT_TOKENS), generator=generator).tolist()


DECODE = ("graphs", "compiled", "eager")


def new_engine(model: Any, decode: str = "graphs", tokenizer: Any = None, **settings: Any) -> Engine:
    """An engine over ``model``, its decode steps in CUDA graphs where the device has them (``decode``
    ``graphs``), the same with the step compiled first (``compiled``, see :func:`compile_decode`), or eagerly
    (``eager``). Without a real ``tokenizer``, replies are spelled as token ids and never end early."""
    if decode not in DECODE:
        raise ValueError(f"decode: {decode!r} is not one of {', '.join(DECODE)}")
    eos = {tokenizer.eos_token_id} if tokenizer is not None else set()
    tokenizer = tokenizer or IdsTokenizer()
    runner = make_runner(model, "native")
    if getattr(runner, "graphs", None) is not None:
        if decode == "eager":
            runner.run_eagerly("turned off")
        elif decode == "compiled":
            compile_decode(runner)
    spill = Path(tempfile.mkdtemp(prefix="aios-gpu-"))
    engine = Engine(runner, tokenizer, eos, EngineSettings(**{"prefix_cache_mb": 0, **settings}), spill,
                    Grammars(tokenizer, VOCAB, eos))
    weakref.finalize(engine, shutil.rmtree, spill, ignore_errors=True)  # where preempted generations' KV went
    return engine


def compile_decode(runner: Any) -> None:
    """The runner's decode step (the one its CUDA graphs capture) under torch.compile: inductor fuses its
    element-wise work (norms, the rotary embedding, the gate, the attention's mask and softmax) into fewer
    kernels, which the graphs then replay. Compiled at the first capture of each shape (the warm-up run before
    the capture), later shapes with dynamic sizes. A run meets a few dozen shapes (batch sizes, capacities,
    size classes, a shared start or none), and dynamo's compiled entries for the step add up over every engine
    of the process: past its default limit of 8 it would quietly run the rest uncompiled, so the limit is
    raised and reaching it is an error (the capture fails, and the measurement with it, rather than report
    eager speeds as compiled)."""
    torch._dynamo.config.recompile_limit = 64
    torch._dynamo.config.fail_on_recompile_limit_hit = True
    runner.decode = torch.compile(runner.decode)


def warm_up(engine: Engine, batch: list[list[int]], tokens: int, decode: str) -> None:
    """Run ``batch`` once before it is timed: 4 tokens each, or with a compiled step the whole length (the
    shapes a run meets, as its KV grows, are compiled here and not inside the timing; a compile takes
    seconds where a capture takes milliseconds). Then the decode steps must still be in graphs: a capture
    (or a compile) that failed turns them eager, which must not be reported as graphs."""
    generate_with(engine, batch, tokens if decode == "compiled" else 4)
    if decode != "eager" and engine.runner.device.type == "cuda" and engine.runner.decode_mode != "cuda-graphs":
        raise RuntimeError(f"decode steps no longer run in CUDA graphs: {engine.runner.decode_mode}")


def generate_with(engine: Engine, batch: list[list[int]], tokens: int | list[int],
                  constraint: Callable[[], Any] | None = None, sampled: bool = False) -> list[str]:
    """Submit every prompt at once (the engine takes them in one step), for ``tokens`` new tokens each (or
    ``tokens[i]`` for prompt ``i``); each reply (its token ids, spelled out), once all are done. Greedy, unless
    ``sampled`` (temperature 0.8, top_p 0.9, prompt ``i`` seeded with ``i``). ``constraint`` makes each
    sequence's grammar constraint."""
    lengths = tokens if isinstance(tokens, list) else [tokens] * len(batch)
    replies = [""] * len(batch)
    left, all_done, lock = [len(batch)], threading.Event(), threading.Lock()

    def on_done(index: int) -> Callable[[Generation | BaseException], None]:
        def done(outcome: Generation | BaseException) -> None:
            replies[index] = outcome.text if isinstance(outcome, Generation) else f"failed: {outcome}"
            with lock:
                left[0] -= 1
                if left[0] == 0:
                    all_done.set()
        return done

    sequences = []
    for index, ids in enumerate(batch):
        sampling = SamplingParams(temperature=0.8 if sampled else 0, top_p=0.9, max_new_tokens=lengths[index])
        generator = torch.Generator().manual_seed(index) if sampled else None
        sequences.append(Sequence(GenerationRequest([], sampling), ids, on_done(index), generator=generator,
                                  constraint=constraint() if constraint else None))
    engine.submit_all(sequences)
    all_done.wait()
    return replies


def rate(run: Callable[[], Any], tokens: int, device: str) -> float:
    if device != "cpu":
        torch.cuda.synchronize()
    began = time.perf_counter()
    run()
    if device != "cpu":
        torch.cuda.synchronize()
    return tokens / (time.perf_counter() - began)


def generate_rate(model: Any, batch: list[list[int]], tokens: int, device: str, static: bool) -> float:
    ids = torch.tensor(batch, device=device)
    kwargs = dict(max_new_tokens=tokens, min_new_tokens=tokens, do_sample=False, pad_token_id=0)
    if static:
        kwargs["cache_implementation"] = "static"
    # Warm-up: a compiled model runs the very call it is timed on (another length would compile again, inside
    # the timing); a plain one only needs its first kernels loaded.
    warm_up = kwargs if static else {**kwargs, "max_new_tokens": 4, "min_new_tokens": 4}
    with torch.inference_mode():
        model.generate(ids, **warm_up)
        return rate(lambda: model.generate(ids, **kwargs), len(batch) * tokens, device)


def measure(args: argparse.Namespace, progress: Callable[[str], None]) -> None:
    """Runs every row of the table; ``progress`` gets the table so far after each (a run cut short keeps the
    rows it finished)."""
    lines = [f"## The engine on a GPU ({_device_name(args)}{', decode compiled' if args.compile else ''})", "",
             f"Random weights, bf16 on CUDA; {PROMPT_TOKENS}-token prompts, {args.tokens} new tokens each, greedy; "
             f"`{' '.join(['python', 'benchmarks/gpu.py', *sys.argv[1:]])}`. The engine decodes in CUDA graphs"
             f"{' (the step compiled by torch.compile)' if args.compile else ''}; 'eager' is the same engine with "
             "them turned off.", "",
             "| model | N | engine tok/s | eager tok/s | static generate tok/s | compiled static-cache generate "
             "tok/s | engine ÷ eager | engine ÷ static | engine ÷ compiled |", "|---|---|---|---|---|---|---|---|---|"]
    for name, shape in ARCHITECTURES.items():
        if args.quick and name != "135M (embedded)":
            continue
        for n in args.concurrency:
            batch = prompts(n)
            model = random_model(shape, args.device)
            static = generate_rate(model, batch, args.tokens, args.device, static=False)
            compiled = float("nan")
            if args.compiled:
                try:  # with a static cache on a GPU, generate compiles the forward pass itself (CUDA graphs)
                    compiled = generate_rate(model, batch, args.tokens, args.device, static=True)
                except Exception as exc:  # the other columns still count
                    print(f"compiled generate failed: {type(exc).__name__}: {exc}", flush=True)
            del model
            ours, eager = (engine_rate(shape, batch, args, decode) for decode in (args.decode, "eager"))
            lines.append(f"| {name} | {n} | {ours:.0f} | {eager:.0f} | {static:.0f} | {compiled:.0f} | "
                         f"{ours / eager:.2f} | {ours / static:.2f} | {ours / compiled:.2f} |")
            print(lines[-1], flush=True)
            progress("\n".join(lines))


def engine_rate(shape: dict[str, Any], batch: list[list[int]], args: argparse.Namespace, decode: str) -> float:
    # The KV budget fits the 1.7B model's 128 rows: the engine must not preempt here.
    engine = new_engine(random_model(shape, args.device), decode, max_batch=len(batch), kv_budget_mb=65536)
    warm_up(engine, batch, args.tokens, decode)
    ours = rate(lambda: generate_with(engine, batch, args.tokens), len(batch) * args.tokens, args.device)
    engine.stop()
    return ours


def after_each_step(engine: Engine, probe: Callable[[], None]) -> None:
    """Call ``probe`` after each of the engine's steps (on its thread, between steps)."""
    step = engine.step

    def stepped() -> None:
        step()
        probe()

    engine.step = stepped  # type: ignore[method-assign]


def long_and_short(n: int, long_tokens: int) -> list[list[int]]:
    """``n`` prompts: one in 32 (at least one) ``long_tokens`` long, the rest 32 tokens: agents reading a
    document beside agents chatting."""
    readers = max(1, n // 32)
    generator = torch.Generator().manual_seed(7)
    return torch.randint(3, VOCAB, (readers, long_tokens), generator=generator).tolist() + prompts(n - readers)


def measure_classes(args: argparse.Namespace, progress: Callable[[str], None]) -> None:
    """KV in size classes against one class, the largest --concurrency, the 135M architecture: generations of
    --tokens tokens from prompts all short, then from a few long prompts beside short ones. A step's graph covers
    its rows' classes together, so classes bring graphs of more shapes: their captures are counted and timed (in
    the timed run, after a warm-up of 4 tokens; with --compile after a whole run, and a capture's time then
    includes compiling), and the speed is shown without them too."""
    n, shape = args.concurrency[-1], ARCHITECTURES["135M (embedded)"]
    long_tokens = 256 if args.quick else 2000
    readers = max(1, n // 32)
    lines = [f"### Measured on {_device_name(args)}{', decode compiled' if args.compile else ''}", "",
             f"The 135M architecture, random weights, {n} generations of {args.tokens} tokens at once, greedy; "
             f"`{' '.join(['python', 'benchmarks/gpu.py', *sys.argv[1:]])}`. One class holds every row at the "
             f"longest row's length; size classes hold each about its own (powers of two). Both run within a KV "
             f"budget of {args.kv_budget_mb:,} MB (the engine preempts the longest generations to stay within it). "
             "Running: the most generations running at once; KV peak: the most the batch's KV took after a step. "
             "Captures: those in the timed run, and the seconds they took"
             f"{' (compiling included)' if args.compile else ''}.", "",
             "| prompts | KV | tok/s | tok/s less captures | running | KV peak MB | graph captures | capture s | "
             "÷ one class |", "|---|---|---|---|---|---|---|---|---|"]
    mixes = {f"{n} × {PROMPT_TOKENS} tokens": prompts(n),
             f"{readers} × {long_tokens:,} + {n - readers} × {PROMPT_TOKENS} tokens": long_and_short(n, long_tokens)}
    for name, batch in mixes.items():
        one_class = 0.0
        for classes in (False, True):
            engine = new_engine(random_model(shape, args.device), args.decode, max_batch=n,
                                kv_budget_mb=args.kv_budget_mb, kv_classes=classes)
            warm_up(engine, batch, args.tokens, args.decode)
            graphs = engine.runner.graphs
            captures, capture_s = (graphs.captures, graphs.capture_s) if graphs is not None else (0, 0.0)
            peak = [0, 0]  # KV bytes, generations running

            def measure_step(engine: Engine = engine, peak: list[int] = peak) -> None:
                peak[:] = max(peak[0], engine.kv.nbytes), max(peak[1], len(engine.running))

            after_each_step(engine, measure_step)
            began = time.perf_counter()
            ours = rate(lambda: generate_with(engine, batch, args.tokens), n * args.tokens, args.device)
            wall = time.perf_counter() - began
            if graphs is not None:
                captures, capture_s = graphs.captures - captures, graphs.capture_s - capture_s
            engine.stop()
            one_class = one_class or ours
            lines.append(f"| {name} | {'size classes' if classes else 'one class'} | {ours:.0f} | "
                         f"{n * args.tokens / (wall - capture_s):.0f} | {peak[1]} | {peak[0] / 2**20:.0f} | "
                         f"{captures} | {capture_s:.3f} | {ours / one_class:.2f} |")
            print(lines[-1], flush=True)
            progress("\n".join(lines))


def _device_name(args: argparse.Namespace) -> str:
    return torch.cuda.get_device_name() if args.device != "cpu" else "CPU"


def profile_steps(args: argparse.Namespace) -> None:
    """The engine's steps over a run of N generations (the largest --concurrency), timed apart: decode steps
    (CUDA graphs) and the rest (steps that read prompts, run eagerly); then the kernels of one decode step at N
    rows, run eagerly under the profiler (a graph replays the same kernels), by device time."""
    n, shape = args.concurrency[-1], ARCHITECTURES["135M (embedded)"]
    engine = new_engine(random_model(shape, args.device), args.decode, max_batch=n, kv_budget_mb=65536)
    batch = prompts(n)
    warm_up(engine, batch, args.tokens, args.decode)
    spent: dict[str, list[float]] = {"decode steps": [], "other steps": []}
    # Within decode steps, the host's time by part: the forward call (inputs copied in, the graph replay launched),
    # the sampling (which first waits for the GPU, then reads the tokens back), and the rest (the engine's own work).
    parts = {"forward call": 0.0, "sampling": 0.0}
    step, forward, sample = engine.step, engine.runner.forward, engine._sample
    decoding = False

    def timed(part: str, call: Callable[..., Any]) -> Callable[..., Any]:
        def run(*args: Any) -> Any:
            began = time.perf_counter()
            try:
                return call(*args)
            finally:
                if decoding:
                    parts[part] += time.perf_counter() - began
        return run

    def timed_step() -> None:
        nonlocal decoding
        decoding = len(engine.running) == n and all(s.output_ids for s in engine.running) and not len(engine.policy)
        began = time.perf_counter()
        step()  # ends with the sampled tokens read back: a step's time includes its GPU work
        spent["decode steps" if decoding else "other steps"].append(time.perf_counter() - began)

    engine.step = timed_step  # type: ignore[method-assign]
    engine.runner.forward = timed("forward call", forward)  # type: ignore[method-assign]
    engine._sample = timed("sampling", sample)  # type: ignore[method-assign]
    began = time.perf_counter()
    generate_with(engine, batch, args.tokens)
    total = time.perf_counter() - began
    runner = engine.runner
    engine.stop()
    print(f"N={n}, {args.tokens} tokens each: {total:.3f} s")
    for what, times in spent.items():
        print(f"  {what}: {len(times)}, {sum(times):.3f} s, {1000 * sum(times) / max(len(times), 1):.2f} ms each")
    steps = max(len(spent["decode steps"]), 1)
    rest = sum(spent["decode steps"]) - sum(parts.values())
    print("  a decode step, by part (ms each): " + ", ".join(
        f"{what} {1000 * spent_s / steps:.2f}" for what, spent_s in [*parts.items(), ("the engine's own work", rest)]))
    kv = engine.kv.cache(0)  # (one class on a GPU) it shrank as sequences left: make room for n rows again
    kv.reserve(n, PROMPT_TOKENS + args.tokens)
    chunks = [Chunk(row, [7], PROMPT_TOKENS + args.tokens // 2) for row in range(n)]
    inputs = decode_inputs([(chunks, n, kv.capacity)]).to(args.device)
    cuda = args.device != "cpu"
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with profile(activities=activities) as prof:
        for _ in range(5):
            runner.decode(inputs, [kv.segment(n)])
        if cuda:
            torch.cuda.synchronize()
    print(prof.key_averages().table(sort_by="cuda_time_total" if cuda else "cpu_time_total", row_limit=20))


def check(args: argparse.Namespace) -> bool:
    """In fp32 (bf16 rounding would make the comparisons about the kernels' last bits, not the engine): batched
    greedy replies equal the replies alone and the eager engine's; a generation preempted again and again (round
    robin, one slot, 4-token slices) gives the uninterrupted tokens; sampled replies (all rows of a step sampled
    at once) are the same for the same seeds, and not the greedy ones; two engines decoding (and capturing) at
    once each get those replies; decode steps replayed CUDA graphs; with
    ``--tokenizer``, grammar-constrained replies under graphs are whole JSON of their schema. The replies have
    different lengths, so the batch shrinks from 8 to 1 (graphs padded to 8, 4, 2 rows), and they outgrow the
    first KV capacity (graphs captured again). ``--quick`` (the script itself, on a CPU) makes the replies
    8 to 15 tokens long (they then stay within the first KV capacity) and the shared start 96 tokens."""
    shape, batch = ARCHITECTURES["135M (embedded)"], prompts(8, seed=2)
    tokens = [8 + i for i in range(8)] if args.quick else [40 + 4 * i for i in range(8)]
    model = lambda: random_model(shape, args.device, torch.float32)  # noqa: E731
    engine = new_engine(model(), args.decode, max_batch=8)
    alone = [generate_with(engine, [ids], n)[0] for ids, n in zip(batch, tokens)]
    together = generate_with(engine, batch, tokens)
    graphs = engine.runner.graphs
    engine.stop()
    eager_engine = new_engine(model(), "eager", max_batch=8)
    eager = generate_with(eager_engine, batch, tokens)
    eager_engine.stop()
    sampling = new_engine(model(), args.decode, max_batch=8)
    sampled = [generate_with(sampling, batch, tokens, sampled=True) for _ in range(2)]
    sampling.stop()
    slices = new_engine(model(), args.decode, max_batch=1, policy="rr", quantum_tokens=4)
    interleaved = generate_with(slices, batch[:2], tokens[:2])
    preemptions = slices.preemptions
    slices.stop()
    results = {"batched greedy == alone": together == alone,
               "CUDA graphs == eager": together == eager,
               f"preempted ({preemptions} times) == uninterrupted": interleaved == alone[:2] and preemptions > 0,
               "sampled replies the same in two runs for the same seeds, and not the greedy ones (top_p 0.9)":
                   sampled[0] == sampled[1] and sampled[0] != together}
    results.update(check_shared_start(model, tokens, args.decode, repeats=3 if args.quick else 10))
    results.update(check_classes(model, tokens, args.decode, long_tokens=96 if args.quick else 384))
    results.update(check_two_engines(model, batch, tokens, together, args.decode))
    if args.device != "cpu":
        results[f"decode steps replayed CUDA graphs ({graphs.captures if graphs else 0} captures, "
                f"{graphs.replays if graphs else 0} replays)"] = graphs is not None and graphs.replays > 0
    if args.tokenizer:
        results.update(check_grammar(args, model()))
    for what, ok in results.items():
        print(f"{'PASS' if ok else 'FAIL'}  {what}")
    return all(results.values())


def check_shared_start(model: Callable[[], Any], tokens: list[int], decode: str,
                       repeats: int) -> dict[str, bool]:
    """Agents whose prompts start with the same ``repeats`` × 32 tokens (stored once, as a SharedKV): their
    replies under CUDA graphs (``decode``) equal the eager engine's."""
    start = prompts(1, seed=4)[0] * repeats
    batch = [start + tail for tail in prompts(8, seed=5)]
    replies, shared = [], []
    for how in (decode, "eager"):
        engine = new_engine(model(), how, max_batch=8)
        replies.append(generate_with(engine, batch, tokens))
        shared.append(engine.shared_tokens)
        engine.stop()
    return {f"agents sharing a {len(start)}-token start: CUDA graphs == eager ({shared[0]} prompt tokens shared)":
            replies[0] == replies[1] and shared[0] > 0}


def check_two_engines(model: Callable[[], Any], batch: list[list[int]], tokens: list[int], expected: list[str],
                      decode: str) -> dict[str, bool]:
    """Two engines (two models served at once, a thread each) decoding, and capturing their graphs, at the same
    time: each gets the replies one engine alone gets (``expected``). Each engine captures on a stream of its
    own, one capture at a time in the process (``graphs.CudaCapture``)."""
    engines = [new_engine(model(), decode, max_batch=8) for _ in range(2)]
    replies: list[list[str]] = [[], []]
    threads = [threading.Thread(target=lambda i=i: replies.__setitem__(i, generate_with(engines[i], batch, tokens)))
               for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    captures = [engine.runner.graphs.captures if engine.runner.graphs is not None else 0 for engine in engines]
    for engine in engines:
        engine.stop()
    return {f"two engines decoding at once each get the replies of one alone ({captures} captures)":
            replies == [expected, expected]}


def check_classes(model: Callable[[], Any], tokens: list[int], decode: str, long_tokens: int) -> dict[str, bool]:
    """Agents of very different lengths, their KV in size classes (two long prompts beside six short ones, and
    rows moving up a class as they grow): their replies under CUDA graphs (``decode``), a step's graph over all
    its rows' classes, equal the eager engine's."""
    generator = torch.Generator().manual_seed(6)
    batch = torch.randint(3, VOCAB, (2, long_tokens), generator=generator).tolist() + prompts(6, seed=6)
    replies, graphs, classes = [], None, [0]
    for how in (decode, "eager"):
        engine = new_engine(model(), how, max_batch=8, kv_classes=True)
        if how != "eager":
            graphs = engine.runner.graphs
            after_each_step(engine, lambda kv=engine.kv: classes.__setitem__(0, max(classes[0], len(kv.caches))))
        replies.append(generate_with(engine, batch, tokens))
        engine.stop()
    captures = f"{graphs.captures} captures, {graphs.replays} replays, " if graphs is not None else ""
    return {f"agents of {long_tokens} and {PROMPT_TOKENS} tokens, KV in size classes: CUDA graphs == eager "
            f"({captures}up to {classes[0]} classes at once)": replies[0] == replies[1] and classes[0] >= 2}


def check_grammar(args: argparse.Namespace, model: Any) -> dict[str, bool]:
    from transformers import AutoTokenizer

    from aios.llm.structured import OutputSpec

    schema = {"type": "object", "properties": {"city": {"type": "string"}, "year": {"type": "integer"}},
              "required": ["city", "year"], "additionalProperties": False}
    tokenizer = AutoTokenizer.from_pretrained(args.tokenizer)
    engine = new_engine(model, args.decode, tokenizer=tokenizer, max_batch=8)
    replies = generate_with(engine, prompts(8, seed=3), 64, lambda: engine.grammars.constraint(OutputSpec(schema)))
    replays = engine.runner.graphs.replays if engine.runner.graphs is not None else 0
    engine.stop()
    whole = 0
    for reply in replies:
        try:
            value = json.loads(reply)
            whole += isinstance(value, dict) and set(value) == {"city", "year"} and type(value["year"]) is int
        except ValueError:
            print(f"not JSON: {reply!r}")
    ok = whole == len(replies) and (replays > 0 or args.device == "cpu")
    return {f"grammar-constrained replies under CUDA graphs are whole JSON of their schema ({whole} of "
            f"{len(replies)}, {replays} replays)": ok}


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 32, 128])
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--check", action="store_true")
    parser.add_argument("--tokenizer", help="with --check: a folder holding the embedded model's tokenizer")
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--classes", action="store_true", help="KV in size classes against one class")
    parser.add_argument("--kv-budget-mb", type=int, default=2048, help="--classes: the KV budget both layouts run in")
    parser.add_argument("--compile", action="store_true",
                        help="the engine's decode step compiled by torch.compile before its graphs capture it")
    parser.add_argument("--quick", action="store_true",
                        help="N = 1 and 4, 16 tokens, the small model only (with --check: replies of 8 to 15 tokens)")
    parser.add_argument("--no-compiled", dest="compiled", action="store_false",
                        help="skip the compiled static-cache generate (its compiles take minutes)")
    args = parser.parse_args(argv)
    args.decode = "compiled" if args.compile else "graphs"
    if args.quick:
        args.concurrency, args.tokens = [1, 4], 16
    return args


def main() -> None:
    args = parse()
    if args.check:
        sys.exit(0 if check(args) else 1)
    if args.profile:
        with torch.inference_mode():
            profile_steps(args)
        return
    report = Path(__file__).parents[1] / "BENCHMARKS.md"
    section = "gpu" + ("-classes" if args.classes else "") + ("-compile" if args.compile else "")
    with torch.inference_mode():
        # A smoke run shows that the script works, not how fast anything is: it writes nothing.
        (measure_classes if args.classes else measure)(
            args, (lambda markdown: None) if args.quick else (lambda markdown: write_section(report, section,
                                                                                             markdown)))


if __name__ == "__main__":
    main()
