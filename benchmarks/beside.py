"""Shared helper for benchmark scripts that compare this checkout's engine with another checkout's (a ``git
worktree`` of an earlier commit, say): each measurement runs in a fresh process that imports the engine from one
checkout's ``src``, the checkouts in turns, and prints its figures as one JSON line."""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable

HERE = Path(__file__).resolve().parent


def parser(tokens: int) -> argparse.ArgumentParser:
    """The options every comparison takes (``--measure`` runs one measurement, in the process ``in_turns``
    starts)."""
    made = argparse.ArgumentParser()
    made.add_argument("--baseline", type=Path, help="another checkout of this repository to compare with")
    made.add_argument("--agents", type=int, default=32)
    made.add_argument("--tokens", type=int, default=tokens, help="new tokens per reply")
    made.add_argument("--budget-mb", type=int, default=1024, help="the engine's kv_budget_mb")
    made.add_argument("--rounds", type=int, default=2)
    made.add_argument("--measure", action="store_true", help=argparse.SUPPRESS)
    return made


def engines(baseline: Path | None) -> dict[str, Path]:
    """The checkouts to measure, by the name their table row gets: the baseline first, if any."""
    found = {"this checkout": HERE.parent / "src"}
    if baseline is not None:
        found = {f"baseline ({commit_of(baseline)})": baseline / "src", **found}
    return found


def commit_of(checkout: Path) -> str:
    return subprocess.run(["git", "-C", str(checkout), "rev-parse", "--short", "HEAD"], capture_output=True,
                          text=True, check=True).stdout.strip()


def this_commit() -> str:
    """This checkout's commit, marked when its source or benchmarks differ from it."""
    head = commit_of(HERE)
    changed = ["git", "-C", str(HERE), "status", "--porcelain", "--untracked-files=no", "--", "src", "benchmarks"]
    if subprocess.run(changed, capture_output=True, text=True).stdout.strip():
        head += " with uncommitted changes"
    return head


def in_turns(script: str, argv: list[str], baseline: Path | None, rounds: int) -> dict[str, list[dict[str, float]]]:
    """``rounds`` measurements of each checkout: ``script --measure argv`` in a fresh process each."""
    results: dict[str, list[dict[str, float]]] = {name: [] for name in engines(baseline)}
    for _ in range(rounds):
        for name, src in engines(baseline).items():
            env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(src), str(HERE)])}
            out = subprocess.run([sys.executable, script, "--measure", *argv], env=env, check=True,
                                 capture_output=True, text=True).stdout
            results[name].append(json.loads(out.strip().splitlines()[-1]))
            print(name, results[name][-1], flush=True)
    return results


def medians(results: dict[str, list[dict[str, float]]]) -> dict[str, dict[str, float]]:
    return {name: {key: statistics.median(run[key] for run in runs) for key in runs[0]}
            for name, runs in results.items()}


def provenance(began: float, load: float, head: str) -> str:
    """The machine, the command, the commit and the time a comparison was run: its table's first line."""
    import platform
    import time

    import torch

    command = " ".join([".venv/bin/python", f"benchmarks/{Path(sys.argv[0]).name}", *sys.argv[1:]])
    return (f"Machine: {platform.machine()}, {os.cpu_count()} CPU cores, torch {torch.__version__}; load average "
            f"{load:.1f} as it began. `{command}` at {head}, "
            f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime(began))} ({(time.time() - began) / 60:.1f} min).")


class Watch:
    """An engine's stats read after each of its steps from now on (its ``step`` is wrapped, so they are read on
    the engine's thread, between steps): the most each field reached, and its mean over the steps at which it
    had a value (a field may return None)."""

    def __init__(self, engine: Any, fields: dict[str, Callable[[dict[str, Any]], float | None]]) -> None:
        self.most = {name: 0.0 for name in fields}
        self.total = {name: 0.0 for name in fields}
        self.steps = {name: 0 for name in fields}
        step = engine.step

        def watched() -> None:
            step()
            stats = engine.stats()
            for name, field in fields.items():
                value = field(stats)
                if value is not None:
                    self.most[name] = max(self.most[name], value)
                    self.total[name] += value
                    self.steps[name] += 1

        engine.step = watched

    def mean(self, name: str) -> float:
        return self.total[name] / max(self.steps[name], 1)
