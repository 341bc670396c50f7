"""The engine on a GPU beside transformers `generate`, for the device machine (no model hub there: random weights
of the embedded model's architecture and of a ~1.7B one). Greedy, N generations of --tokens new tokens at once
(no end-of-sequence: every generation runs the full length). Prints a table and writes it into BENCHMARKS.md
(section "gpu"), naming the GPU. Meant to finish within 5 minutes on one H100/H200.

    python benchmarks/gpu.py                          engine, static-batch generate, compiled static-cache generate
    python benchmarks/gpu.py --check                  the engine's checks on this device (exit status 1 on a failure)
    python benchmarks/gpu.py --device cpu --quick     the script itself, on a CPU
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from aios.llm.core import Generation, GenerationRequest, SamplingParams
from aios.llm.hf.engine import Engine, EngineSettings
from aios.llm.hf.grammar import Grammars
from aios.llm.hf.runner import make_runner
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


def random_model(shape: dict[str, Any], device: str) -> Any:
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=VOCAB, max_position_embeddings=8192, tie_word_embeddings=True, **shape)
    dtype = torch.bfloat16 if device != "cpu" else torch.float32
    return LlamaForCausalLM(config).to(device=device, dtype=dtype).eval()


def prompts(n: int, seed: int = 1) -> list[list[int]]:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(3, VOCAB, (n, PROMPT_TOKENS), generator=generator).tolist()


def new_engine(model: Any, **settings: Any) -> Engine:
    tokenizer = IdsTokenizer()
    spill = Path(tempfile.mkdtemp(prefix="aios-gpu-"))
    return Engine(make_runner(model, "native"), tokenizer, set(), EngineSettings(**{"prefix_cache_mb": 0, **settings}),
                  spill, Grammars(tokenizer, VOCAB, set()))


def generate_with(engine: Engine, batch: list[list[int]], tokens: int) -> list[str]:
    """Submit every prompt at once; each reply (its token ids, spelled out), once all are done."""
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

    for index, ids in enumerate(batch):
        request = GenerationRequest([], SamplingParams(temperature=0, max_new_tokens=tokens))
        engine.submit(Sequence(request, ids, on_done(index)))
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
    with torch.inference_mode():
        model.generate(ids, **{**kwargs, "max_new_tokens": 4, "min_new_tokens": 4})  # warm-up (compiles)
        return rate(lambda: model.generate(ids, **kwargs), len(batch) * tokens, device)


def measure(args: argparse.Namespace) -> str:
    gpu = torch.cuda.get_device_name() if args.device != "cpu" else "CPU"
    lines = [f"## The engine on a GPU ({gpu})", "",
             f"Random weights, bf16 on CUDA; {PROMPT_TOKENS}-token prompts, {args.tokens} new tokens each, greedy; "
             f"`{' '.join(['python', 'benchmarks/gpu.py', *sys.argv[1:]])}`.", "",
             "| model | N | engine tok/s | static generate tok/s | compiled static-cache generate tok/s | "
             "engine ÷ static | engine ÷ compiled |", "|---|---|---|---|---|---|---|"]
    for name, shape in ARCHITECTURES.items():
        if args.quick and name != "135M (embedded)":
            continue
        for n in args.concurrency:
            batch = prompts(n)
            model = random_model(shape, args.device)
            static = generate_rate(model, batch, args.tokens, args.device, static=False)
            compiled = float("nan")
            if args.compiled:
                model.forward = torch.compile(model.forward, mode="reduce-overhead", fullgraph=True)
                compiled = generate_rate(model, batch, args.tokens, args.device, static=True)
            engine = new_engine(random_model(shape, args.device), max_batch=n)
            generate_with(engine, batch[:2], 4)  # warm-up
            ours = rate(lambda: generate_with(engine, batch, args.tokens), n * args.tokens, args.device)
            engine.stop()
            lines.append(f"| {name} | {n} | {ours:.0f} | {static:.0f} | {compiled:.0f} | {ours / static:.2f} | "
                         f"{ours / compiled:.2f} |")
            print(lines[-1], flush=True)
    return "\n".join(lines)


def check(args: argparse.Namespace) -> bool:
    """Batched greedy replies equal the replies alone; a generation preempted again and again (round robin, one
    slot, 4-token slices) gives the uninterrupted tokens."""
    shape, batch, tokens = ARCHITECTURES["135M (embedded)"], prompts(8, seed=2), 24
    engine = new_engine(random_model(shape, args.device), max_batch=8)
    alone = [generate_with(engine, [ids], tokens)[0] for ids in batch]
    together = generate_with(engine, batch, tokens)
    engine.stop()
    slices = new_engine(random_model(shape, args.device), max_batch=1, policy="rr", quantum_tokens=4)
    interleaved = generate_with(slices, batch[:2], tokens)
    preemptions = slices.preemptions
    slices.stop()
    results = {"batched greedy == alone": together == alone,
               f"preempted ({preemptions} times) == uninterrupted": interleaved == alone[:2] and preemptions > 0}
    for what, ok in results.items():
        print(f"{'PASS' if ok else 'FAIL'}  {what}")
    return all(results.values())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 32, 128])
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--check", action="store_true")
    parser.add_argument("--quick", action="store_true", help="N = 1 and 4, 16 tokens, the small model only")
    parser.add_argument("--no-compiled", dest="compiled", action="store_false",
                        help="skip the compiled static-cache generate (its compiles take minutes)")
    args = parser.parse_args()
    if args.quick:
        args.concurrency, args.tokens = [1, 4], 16
    if args.check:
        sys.exit(0 if check(args) else 1)
    with torch.inference_mode():
        markdown = measure(args)
    if not args.quick:  # a smoke run shows that the script works, not how fast anything is
        write_section(Path(__file__).parents[1] / "BENCHMARKS.md", "gpu", markdown)


if __name__ == "__main__":
    main()
