"""Storage (LSFS) benchmark: versions written per second, and retrieve latency (p50 / p95) at 1k and 10k files,
on SQLite and on PostgreSQL (a local pgserver), side by side. Writes its section of BENCHMARKS.md.

    .venv/bin/python benchmarks/storage.py [--files 10000] [--queries 100]

Files are short generated notes (one chunk each) on 40 topics. Each store indexes the same texts with the real
embedding model; vectors are computed once and reused for the second store, so only the first pays for them.
A retrieve is measured end to end as the handler runs it: embed the query, check the index is current, rank.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from aios.embeddings import Embedder  # noqa: E402
from aios.storage.index import Indexer  # noqa: E402
from local_postgres import start_postgres  # noqa: E402  (benchmarks/, the script's own folder)
from report import write_section  # noqa: E402
from storage_support import make_fs, open_store  # noqa: E402  (the tests' helpers: a file system on a store)

AGENT = "bench/agent"
TOPICS = ["astronomy", "baking", "banking", "basketball", "beekeeping", "chess", "climbing", "coffee", "cycling",
          "databases", "dentistry", "diving", "drumming", "economics", "fishing", "gardening", "geology", "guitar",
          "hiking", "insurance", "jazz", "knitting", "linguistics", "marathons", "medicine", "mycology", "opera",
          "origami", "painting", "photography", "poetry", "pottery", "robotics", "sailing", "skiing", "surfing",
          "taxes", "tennis", "volcanoes", "wine"]
WORDS = ("notes plan ideas checklist summary review draft outline questions results schedule budget list guide "
         "tips steps lessons mistakes progress goals").split()


def note(i: int, rng: random.Random) -> tuple[str, str]:
    topic = TOPICS[i % len(TOPICS)]
    words = " ".join(rng.choice(WORDS) for _ in range(12))
    return f"{topic}/note_{i:05d}.txt", f"Note {i} about {topic}: {words}. More on {topic} and {rng.choice(TOPICS)}."


class CachedEmbedder:
    """The real model, with every chunk's vector kept: the second store reuses the first store's vectors.
    Queries (no path line, unlike a chunk's text) are always embedded, since that is part of a retrieve."""

    def __init__(self, model: Embedder) -> None:
        self.model, self.cache = model, {}

    async def aembed(self, texts: Sequence[str]) -> np.ndarray:
        if not any("\n" in text for text in texts):
            return await self.model.aembed(texts)
        missing = [t for t in dict.fromkeys(texts) if t not in self.cache]
        if missing:
            for text, vector in zip(missing, await self.model.aembed(missing)):
                self.cache[text] = vector
        return np.stack([self.cache[t] for t in texts]) if texts else np.zeros((0, 384), np.float32)


async def run_here(function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    return function(*args, **kwargs)


def writes_per_second(fs: Any, count: int) -> float:
    start = time.perf_counter()
    for i in range(count):
        fs.write(AGENT, f"writes/file_{i % 50}.txt", f"version {i}: " + "x" * 1000)
    return count / (time.perf_counter() - start)


async def latencies(indexer: Indexer, root: Any, queries: list[str]) -> list[float]:
    await indexer.search(root, "warm up", 5, None)
    times = []
    for query in queries:
        start = time.perf_counter()
        await indexer.search(root, query, 5, None)
        times.append((time.perf_counter() - start) * 1000)
    return times


def pct(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]


async def bench_store(kind: str, postgres: Callable[[], str] | None, embedder: CachedEmbedder, files: int,
                      queries: list[str]) -> dict[str, Any]:
    data = Path(tempfile.mkdtemp(prefix=f"lsfs-bench-{kind}-"))
    store = open_store(kind, data, postgres)
    fs = make_fs(store, data, clock=time.time)
    result: dict[str, Any] = {"writes_per_s": writes_per_second(fs, 500)}
    indexer, root, rng = Indexer(fs, run_here, embedder), fs.root_of(AGENT), random.Random(7)
    written = 0
    for size in (1000, files):
        for i in range(written, size):
            fs.write(AGENT, *note(i, rng))
        written = size
        start = time.perf_counter()
        await indexer.refresh(root.id)
        result[f"index_s_{size}"] = time.perf_counter() - start
        times = await latencies(indexer, root, queries)
        result[f"p50_{size}"], result[f"p95_{size}"] = pct(times, 50), pct(times, 95)
        print(f"{kind}: {size} files, retrieve p50 {result[f'p50_{size}']:.1f} ms, p95 {result[f'p95_{size}']:.1f} ms",
              flush=True)
    store.close()
    return result


def markdown(results: dict[str, dict[str, Any]], files: int, queries: int, command: str, note_text: str) -> str:
    rows = [("versions written per second (1 KB, fsync'd)", "writes_per_s", "{:.0f}"),
            ("index 1,000 files (s)", "index_s_1000", "{:.1f}"), ("retrieve p50 at 1,000 files (ms)", "p50_1000", "{:.1f}"),
            ("retrieve p95 at 1,000 files (ms)", "p95_1000", "{:.1f}"),
            (f"index {files - 1000:,} more files (s)", f"index_s_{files}", "{:.1f}"),
            (f"retrieve p50 at {files:,} files (ms)", f"p50_{files}", "{:.1f}"),
            (f"retrieve p95 at {files:,} files (ms)", f"p95_{files}", "{:.1f}")]
    kinds = list(results)
    table = ["| | " + " | ".join(kinds) + " |", "|---|" + "---|" * len(kinds)]
    for label, key, form in rows:
        table.append(f"| {label} | " + " | ".join(form.format(results[k][key]) if key in results[k] else "—"
                                                   for k in kinds) + " |")
    p95 = results.get("sqlite", {}).get(f"p95_{files}")
    verdict = (f"Target: retrieve p95 < 100 ms at 10k files on SQLite — {'met' if p95 < 100 else 'missed'} "
               f"({p95:.1f} ms)." if p95 is not None and files >= 10000 else "")
    machine = f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}"
    return "\n".join([
        "## Storage (LSFS): writes and retrieval, SQLite and PostgreSQL", "",
        f"`{command}` on {machine}, {time.strftime('%Y-%m-%d')}. {files:,} one-chunk notes on {len(TOPICS)} topics, "
        f"{queries} queries, top 5; vectors from the embedded all-MiniLM-L6-v2 (the first store embeds, the second "
        "reuses the vectors, so its index time is the store's own). A retrieve includes embedding the query. "
        "PostgreSQL is a local pgserver (16, pgvector 0.6) on a Unix socket; its vector search is exact.", "",
        *table, "", verdict, note_text]).strip()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--files", type=int, default=10000)
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "BENCHMARKS.md")
    args = parser.parse_args()
    rng = random.Random(11)
    queries = [f"{rng.choice(WORDS)} about {rng.choice(TOPICS)}" for _ in range(args.queries)]
    model = Embedder()
    embedder = CachedEmbedder(model)
    results = {"sqlite": await bench_store("sqlite", None, embedder, args.files, queries)}
    postgres, server, problem = start_postgres("lsfs-bench-pg-")
    if postgres is not None:
        results["postgres"] = await bench_store("postgres", postgres, embedder, args.files, queries)
        server.cleanup()
    model.close()
    command = "python benchmarks/storage.py" + ("" if args.files == 10000 else f" --files {args.files}")
    text = markdown(results, args.files, args.queries, command,
                    f"PostgreSQL could not start: {problem}" if problem else "")
    print(text)
    write_section(args.out, "storage", text)


if __name__ == "__main__":
    asyncio.run(main())
