"""What a streamed reply's text costs the engine per step: decoding every streaming reply whole after each token
(as the engine did) against keeping each one's text as its tokens come (`IncrementalText`), with the embedded
model's tokenizer, for N replies growing one token a step. Prints a table and writes it into BENCHMARKS.md
(section "stream-text").

    .venv/bin/python benchmarks/stream_text.py [--replies 32] [--tokens 1024]
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path
from typing import Callable

from aios.config import EMBEDDED_MODEL, load_config
from aios.llm.hf.detokenize import IncrementalText
from aios.llm.hf.loader import find_model, load_model
from report import write_section

TEXT = ("The harbour opened at dawn. Ships came in with grain, timber and wool; the market filled by noon, and "
        "traders argued over prices in three languages — Deutsch, français, 日本語 — until the bell rang. ")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--replies", type=int, default=32)
    parser.add_argument("--tokens", type=int, default=1024)
    args = parser.parse_args()
    _, tokenizer = load_model(find_model(EMBEDDED_MODEL), load_config().data_dir, device_map="cpu")
    ids = tokenizer(TEXT * (args.tokens // 20), add_special_tokens=False)["input_ids"][:args.tokens]
    marks = [n for n in (128, 256, 512, 1024, 2048, 4096) if n <= args.tokens]
    whole = per_step(lambda: lambda out: tokenizer.decode(out, skip_special_tokens=True), ids, args.replies)
    kept = per_step(lambda: IncrementalText(tokenizer).of, ids, args.replies)
    lines = ["## A streamed reply's text, per step", "",
             f"Machine: {platform.machine()}, {os.cpu_count()} CPU cores; load average {os.getloadavg()[0]:.1f} at the "
             f"end; `{' '.join(['.venv/bin/python', 'benchmarks/stream_text.py', *sys.argv[1:]])}`. "
             f"{args.replies} streaming replies, each one token longer every step; the milliseconds a step spends "
             "on their text when the replies are n tokens long, and over all their tokens.", "",
             "| text of each reply | " + " | ".join(f"ms / step at {n} tokens" for n in marks)
             + f" | s over {len(ids)} tokens |",
             "|---|" + "---|" * (len(marks) + 1)]
    for name, times in (("decoded whole every step (before)", whole), ("kept as tokens come", kept)):
        lines.append(f"| {name} | " + " | ".join(f"{times[n - 1] * 1e3:.2f}" for n in marks)
                     + f" | {sum(times):.2f} |")
    markdown = "\n".join(lines)
    print(markdown)
    write_section(Path(__file__).parents[1] / "BENCHMARKS.md", "stream-text", markdown)


def per_step(make: Callable[[], Callable[[list[int]], str]], ids: list[int], replies: int) -> list[float]:
    """Seconds each step spends on the text of ``replies`` replies (``make()`` makes one's text), when they are
    1 to ``len(ids)`` tokens long. Each reply grows in a list of its own, as a sequence's output does."""
    texts = [make() for _ in range(replies)]
    outputs: list[list[int]] = [[] for _ in range(replies)]
    times = []
    for token in ids:
        began = time.perf_counter()
        for text, output in zip(texts, outputs):
            output.append(token)
            text(output)
        times.append(time.perf_counter() - began)
    return times


if __name__ == "__main__":
    main()
