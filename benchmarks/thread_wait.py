"""How torch's threads wait between operations, and what it does to decoding: `aios serve` with three settings,
on a quiet machine and on one whose every core also runs a busy loop (other work on the same machine).

torch's OpenMP workers (libgomp) wait for the next parallel operation spinning, then sleep. A decode step is about
a thousand such operations, each a few microseconds to a few milliseconds apart: sleeping at once costs each one a
wake-up, spinning long holds a core that other work wants. The settings, in the kernel's environment:

- ``OMP_WAIT_POLICY=PASSIVE``: sleep at once (what `aios` set until it spun briefly);
- nothing set: `aios` sets ``GOMP_SPINCOUNT`` to ``aios.torch_threads.SPIN_COUNT`` (the default);
- ``GOMP_SPINCOUNT=300000``: libgomp's own default (about 3 ms), what torch does outside `aios`.

Each round sends N streamed chat completions at once to one kernel (greedy, 128 new tokens); the kernels take
turns, so a change in the machine's speed hits all three alike. Writes its section of BENCHMARKS.md.

    .venv/bin/python benchmarks/thread_wait.py [--concurrency 1 16] [--rounds 2] [--threads 2]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack, contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator

import httpx

from aios.config import load_config
from aios.torch_threads import SPIN_COUNT
from peers import Server, cpu_model, kernel_server, run_round, running  # benchmarks/, the script's own folder
from report import write_section

ROOT = Path(__file__).resolve().parents[1]
SETTINGS = {
    "sleep at once (`OMP_WAIT_POLICY=PASSIVE`)": {"OMP_WAIT_POLICY": "PASSIVE"},
    f"spin {SPIN_COUNT:,} times (the default)": {},
    "libgomp's default spin (`GOMP_SPINCOUNT=300000`)": {"GOMP_SPINCOUNT": "300000"},
}
STATES = ("quiet", "busy")


def kernels(concurrency: int, threads: int, folder: Path) -> dict[str, Server]:
    """One kernel per setting, each with a data dir of its own (a storage database is one kernel's), the converted
    model shared by hard links."""
    models = load_config().data_dir / "models"
    servers = {}
    for index, (name, environ) in enumerate(SETTINGS.items()):
        home = folder / f"kernel-{index}"
        shutil.copytree(models, home / "data" / "models", copy_function=os.link,
                        ignore=shutil.ignore_patterns(".converting-*", "*.lock"))
        server = kernel_server(concurrency, threads, "native", home)
        server.env.update({**environ, "AIOS_DATA_DIR": str(home / "data")})
        servers[name] = server
    return servers


@contextmanager
def busy_cores() -> Iterator[None]:
    """A busy loop on every core, as other work on the machine would be, until the block ends."""
    loops = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(os.cpu_count() or 1)]
    try:
        yield
    finally:
        for loop in loops:
            loop.kill()
            loop.wait()


async def measure(servers: dict[str, Server], concurrency: int, rounds: int) -> dict[str, list[float]]:
    rates: dict[str, list[float]] = {name: [] for name in servers}
    async with httpx.AsyncClient(timeout=httpx.Timeout(900.0, connect=10.0)) as client:
        for _ in range(rounds):
            for name, server in servers.items():
                result = await run_round(client, server, concurrency, 128)
                rates[name].append(result.tokens_per_s)
                print(f"N={concurrency:<3} {name:<50} {result.tokens_per_s:7.1f} tok/s", flush=True)
    return rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2, help="torch threads of each kernel")
    parser.add_argument("--out", type=Path, default=ROOT / "BENCHMARKS.md")
    args = parser.parse_args()
    for variable in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT"):  # the kernels get only their setting's
        os.environ.pop(variable, None)
    began, load = time.perf_counter(), os.getloadavg()[0]
    results: dict[tuple[str, int], dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="aios-thread-wait-") as folder:
        for n in args.concurrency:
            servers = kernels(n, args.threads, Path(folder) / f"n{n}")
            with ExitStack() as stack:
                for index, server in enumerate(servers.values()):
                    stack.enter_context(running(server, Path(folder) / f"kernel-{n}-{index}.log"))
                asyncio.run(measure(servers, n, 1))  # warm-up: first requests, caches
                for state in STATES:
                    with busy_cores() if state == "busy" else ExitStack():
                        rates = asyncio.run(measure(servers, n, args.rounds))
                    results[state, n] = {name: statistics.median(r) for name, r in rates.items()}
    print(write(results, args, time.perf_counter() - began, load))


def write(results: dict[tuple[str, int], dict[str, float]], args: argparse.Namespace, seconds: float,
          load: float) -> str:
    default = f"spin {SPIN_COUNT:,} times (the default)"
    columns = [(state, n) for state in STATES for n in args.concurrency]
    command = " ".join([".venv/bin/python", "benchmarks/thread_wait.py", *sys.argv[1:]])
    when = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        "## How torch's threads wait: decoding on a quiet and on a busy machine",
        "",
        f"Machine: {cpu_model()}, {os.cpu_count()} CPU cores; {args.threads} torch threads for each kernel; load "
        f"average {load:.1f} as it began. `{command}` on {when} ({seconds / 60:.1f} min).",
        "",
        "Each round sends N streamed chat completions at once to one `aios serve` (greedy, 128 new tokens; "
        f"default settings, max_batch raised to N); the three kernels take turns, {args.rounds} rounds each, medians. "
        "Busy: a busy loop on every core beside the kernels. tokens/s, and in brackets the ratio to the default.",
        "",
        "| how the threads wait | " + " | ".join(f"{state}, N = {n}" for state, n in columns) + " |",
        "|---|" + "---|" * len(columns),
    ]
    for name in SETTINGS:
        cells = [f"{results[c][name]:.1f} ({results[c][name] / results[c][default]:.2f}×)" for c in columns]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    markdown = "\n".join(lines)
    write_section(args.out, "thread-wait", markdown)
    return markdown


if __name__ == "__main__":
    main()
