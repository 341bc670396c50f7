"""Memory benchmark: add and search latency (p50 / p95) at 10k and 100k memories of one agent, on SQLite and on
PostgreSQL (a local pgserver), side by side, and search recall@5 on the labelled set at each size. Writes its
section of BENCHMARKS.md.

    .venv/bin/python benchmarks/memory.py [--sizes 10000 100000] [--pool 4000] [--ops 200]

What is measured: memory syscalls through a kernel (no model; the scheduler, the handler, the embedding model and
the store), as an agent's /query would run them minus HTTP. An add embeds its note and writes note, vector and
words in one committed transaction; a search embeds the query, ranks by vector and by words, fuses, and counts
the retrieval. Times are wall clock; CPU time (this process, all threads) is reported beside it, since wall time
on a shared machine includes waiting for a core.

How the stores are filled: embedding 100k texts on 2 cores would take most of an hour, so ``--pool`` distinct
memories are embedded once, and the store is filled with copies of them, each text tagged with its copy number
and each vector perturbed (Gaussian noise, then unit length again: cosine ~0.95 to the original). The 40
labelled targets of tests/memory_corpus.py are stored with their true vectors, so recall@5 at each size is the
labelled questions' recall among that many near-duplicate distractors.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any, Callable

import numpy as np

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # threads sleep at once, as on a shared machine; torch loads after this
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from aios.config import load_config  # noqa: E402
from aios.embeddings import Embedder  # noqa: E402
from aios.kernel import Kernel  # noqa: E402
from aios.memory.notes import Note  # noqa: E402
from aios.memory.requests import MemoryRequest  # noqa: E402
from aios.syscall import SyscallKind  # noqa: E402
from memory_corpus import TARGETS, distractors  # noqa: E402  (the tests' labelled set)
from local_postgres import start_postgres  # noqa: E402  (benchmarks/, the script's own folder)
from report import write_section  # noqa: E402

AGENT = "bench/agent"
BATCH = 1000  # notes per transaction while filling
NOISE = 0.016  # per dimension: |noise| ~ 0.31, cosine to the original ~0.95


def perturbed(vector: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    moved = vector + rng.normal(0.0, NOISE, vector.shape).astype(np.float32)
    return moved / np.linalg.norm(moved)


def fill(store: Any, start: int, stop: int, pool: list[str], vectors: np.ndarray, rng: np.random.Generator) -> None:
    """Notes ``start`` .. ``stop - 1``: copies of the pool (blocking; runs on the memory I/O thread)."""
    for first in range(start, stop, BATCH):
        with store.transaction():
            for i in range(first, min(stop, first + BATCH)):
                j, copy = i % len(pool), i // len(pool)
                now = time.time()
                note = Note(str(uuid.uuid4()), AGENT, f"{pool[j]} (copy {copy})", created=now, updated=now,
                            last_accessed=now)
                store.insert(note, perturbed(vectors[j], rng))


def targets_in(store: Any, vectors: np.ndarray) -> None:
    with store.transaction():
        for (text, _), vector in zip(TARGETS, vectors):
            now = time.time()
            store.insert(Note(str(uuid.uuid4()), AGENT, text, created=now, updated=now, last_accessed=now), vector)


async def timed(kernel: Kernel, request: MemoryRequest) -> tuple[float, float, Any]:
    wall, cpu = time.perf_counter(), time.process_time()
    syscall = await kernel.call(SyscallKind.MEMORY, AGENT, request)
    assert syscall.value.success, syscall.error
    return (time.perf_counter() - wall) * 1000, (time.process_time() - cpu) * 1000, syscall.value


def pct(values: list[float], q: int) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


async def measure(kernel: Kernel, ops: int, size: int, pool: list[str]) -> dict[str, float]:
    questions = [question for _, question in TARGETS]
    await timed(kernel, MemoryRequest("retrieve_memory", {"content": "warm up", "k": 5}))
    hits, search_wall, search_cpu = 0, [], []
    for n in range(ops):
        wall, cpu, reply = await timed(kernel, MemoryRequest("retrieve_memory", {"content": questions[n % 40], "k": 5}))
        search_wall.append(wall)
        search_cpu.append(cpu)
        if n < len(TARGETS):  # each labelled question once
            hits += TARGETS[n][0] in [r["content"] for r in reply.search_results]
    add_wall, add_cpu = [], []
    for n in range(ops):
        # New text (not a labelled question, which would then answer itself at the next size).
        wall, cpu, _ = await timed(kernel, MemoryRequest("add_memory", {
            "content": f"Added at {size:,}, number {n}: {pool[(7 * n) % len(pool)]}", "metadata": {}}))
        add_wall.append(wall)
        add_cpu.append(cpu)
    return {"search_p50": pct(search_wall, 50), "search_p95": pct(search_wall, 95),
            "search_cpu_p50": pct(search_cpu, 50), "search_cpu_p95": pct(search_cpu, 95),
            "add_p50": pct(add_wall, 50), "add_p95": pct(add_wall, 95), "add_cpu_p50": pct(add_cpu, 50),
            "recall": hits / min(ops, len(TARGETS))}


async def bench(backend: str, dsn: str | None, embedder: Embedder, pool: list[str], vectors: np.ndarray,
                target_vectors: np.ndarray, sizes: list[int], ops: int) -> dict[str, Any]:
    data = Path(tempfile.mkdtemp(prefix=f"memory-bench-{backend}-"))
    memory = f"memory: {{backend: postgres, dsn: '{dsn}'}}" if dsn else "memory: {}"
    (data / "config.yaml").write_text(memory + "\n")
    kernel = Kernel(load_config(data / "config.yaml", env={"AIOS_DATA_DIR": str(data)}), [], embedder=embedder)
    await kernel.start()
    rng, results, stored = np.random.default_rng(5), {}, 0
    await kernel.memory.run_io(targets_in, kernel.memory.store, target_vectors)
    stored += len(TARGETS)
    for size in sizes:
        start = time.perf_counter()
        await kernel.memory.run_io(fill, kernel.memory.store, stored, size, pool, vectors, rng)
        results[f"fill_{size}"] = (size - stored) / (time.perf_counter() - start)
        stored = size
        results[size] = await measure(kernel, ops, size, pool)
        stored += ops  # the adds
        print(f"{backend} at {size:,}: {results[size]}", flush=True)
    await kernel.stop()
    return results


def machine() -> str:
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor() or platform.machine())
    return f"{model}, {os.cpu_count()} CPUs, Python {platform.python_version()}"


def markdown(results: dict[str, dict[str, Any]], sizes: list[int], args: argparse.Namespace, loads: tuple[str, str],
             note: str) -> str:
    kinds = list(results)
    rows: list[tuple[str, Callable[[dict[str, Any]], str]]] = []
    for size in sizes:
        def cell(key: str, form: str = "{:.1f}", size: int = size) -> Callable[[dict[str, Any]], str]:
            return lambda r: form.format(r[size][key]) if size in r else "—"
        rows += [(f"search p50 / p95 at {size:,} (ms)", lambda r, c=cell: f"{c('search_p50')(r)} / {c('search_p95')(r)}"),
                 (f"search CPU p50 / p95 at {size:,} (ms)",
                  lambda r, c=cell: f"{c('search_cpu_p50')(r)} / {c('search_cpu_p95')(r)}"),
                 (f"add p50 / p95 at {size:,} (ms)", lambda r, c=cell: f"{c('add_p50')(r)} / {c('add_p95')(r)}"),
                 (f"recall@5 of the 40 labelled questions at {size:,}", cell("recall", "{:.3f}")),
                 (f"fill rate up to {size:,} (notes/s, batches of {BATCH})",
                  lambda r, s=size: f"{r[f'fill_{s}']:.0f}" if f"fill_{s}" in r else "—")]
    table = ["| | " + " | ".join(kinds) + " |", "|---|" + "---|" * len(kinds)]
    table += [f"| {label} | " + " | ".join(value(results[k]) for k in kinds) + " |" for label, value in rows]
    biggest = max(sizes)
    p95 = results.get("sqlite", {}).get(biggest, {}).get("search_p95")
    verdict = (f"Target: search p95 < 50 ms at 100k on SQLite — {'met' if p95 < 50 else 'missed'} ({p95:.1f} ms "
               f"wall; CPU p95 {results['sqlite'][biggest]['search_cpu_p95']:.1f} ms)."
               if p95 is not None and biggest >= 100_000 else "")
    return "\n".join([
        "## Memory: add and search, SQLite and PostgreSQL", "",
        f"`{args.command}` on {machine()}, {time.strftime('%Y-%m-%d')}; load average {loads[0]} at the start, "
        f"{loads[1]} at the end. One agent's memories; {args.ops} searches (k = 5, the labelled questions in turn) "
        f"and {args.ops} adds at each size, one at a time, through the kernel's syscall path (scheduler, handler, "
        "embedding model, store; no HTTP). Stores filled with copies of "
        f"{args.pool:,} distinct embedded memories, vectors perturbed (cosine ~0.95), plus the 40 labelled targets "
        "with their true vectors. SQLite: one WAL file, full sync on commit, sqlite-vec (exact scan of the agent's "
        "partition) and FTS5. PostgreSQL: a local pgserver (pgvector 0.6, exact scan) on a Unix socket.", "",
        *table, "", verdict, note]).strip()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--pool", type=int, default=4000)
    parser.add_argument("--ops", type=int, default=200, help="searches and adds at each size (at least 40)")
    parser.add_argument("--note", default="", help="a line to add under the table (e.g. what else was running)")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "BENCHMARKS.md")
    args = parser.parse_args()
    args.command = "python benchmarks/memory.py" + "".join(
        f" --{k} {' '.join(map(str, v)) if isinstance(v, list) else v}"
        for k, v, default in (("sizes", args.sizes, [10_000, 100_000]), ("pool", args.pool, 4000),
                              ("ops", args.ops, 200)) if v != default)
    load_start = " ".join(f"{x:.1f}" for x in os.getloadavg())
    embedder = Embedder()
    pool = distractors(args.pool)
    start = time.perf_counter()
    vectors, target_vectors = embedder.embed(pool), embedder.embed([text for text, _ in TARGETS])
    print(f"embedded {len(pool)} memories in {time.perf_counter() - start:.0f} s", flush=True)
    results = {"sqlite": await bench("sqlite", None, embedder, pool, vectors, target_vectors, args.sizes, args.ops)}
    postgres, server, problem = start_postgres("memory-bench-pg-")
    if postgres is not None:
        results["postgres"] = await bench("postgres", postgres(), embedder, pool, vectors, target_vectors,
                                          args.sizes, args.ops)
        server.cleanup()
    embedder.close()
    loads = (load_start, " ".join(f"{x:.1f}" for x in os.getloadavg()))
    note = " ".join(part for part in (args.note, f"PostgreSQL could not start: {problem}" if problem else "") if part)
    text = markdown(results, args.sizes, args, loads, note)
    print(text)
    write_section(args.out, "memory", text)


if __name__ == "__main__":
    asyncio.run(main())
