"""Routing strategies: how the router chooses, among the cores a syscall may use, the one that serves it.

One strategy per ``llms.router.strategy``:

``sequential``    round-robin over the allowed cores, one turn counter per set of allowed cores (so a request
                  that names two models alternates between those two, whatever other requests do)
``least_loaded``  the core with the fewest syscalls routed to it and not yet ended (queued or running), then
                  the fewest tokens in its running batch (a local engine's KV in use; 0 for an API core)
``smart``         the cheapest core (``llms.models[].cost``) whose observed success rate on similar past
                  queries passes ``llms.router.smart_threshold``; learned from the kernel's own history, in memory
"""

from __future__ import annotations

import itertools
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Protocol

from aios.llm.core import LLMCore


@dataclass
class Candidate:
    """A core a syscall may use, with what the strategies weigh."""

    core: LLMCore
    entry: dict[str, Any]  # the syscall's ``llms`` entry that allowed it ({} when it named none)
    in_flight: int = 0  # syscalls routed to it that have not ended
    running_tokens: int = 0
    cost: float = 0.0


class RoutingStrategy(Protocol):
    name: str

    def choose(self, candidates: list[Candidate], kind: str) -> Candidate:
        """One of ``candidates`` (never empty) for a query of ``kind`` (see ``query_kind``)."""
        ...

    def record(self, model: str, kind: str, success: bool) -> None:
        """How a syscall of ``kind`` routed to ``model`` ended."""
        ...


class Sequential:
    name = "sequential"

    def __init__(self) -> None:
        self._turns: dict[tuple[str, ...], itertools.count[int]] = defaultdict(itertools.count)

    def choose(self, candidates: list[Candidate], kind: str) -> Candidate:
        turn = next(self._turns[tuple(c.core.name for c in candidates)])
        return candidates[turn % len(candidates)]

    def record(self, model: str, kind: str, success: bool) -> None:
        pass


class LeastLoaded:
    name = "least_loaded"

    def choose(self, candidates: list[Candidate], kind: str) -> Candidate:
        return min(candidates, key=lambda c: (c.in_flight, c.running_tokens))  # ties: the first allowed

    def record(self, model: str, kind: str, success: bool) -> None:
        pass


@dataclass
class _Record:
    successes: int = 0
    tries: int = 0


@dataclass
class Smart:
    """Cheapest first; a model is passed over for a kind of query once it has been tried ``min_samples`` times on
    that kind and succeeded less often than ``threshold``. When every allowed model is passed over, the one with
    the best observed rate serves. Success: the syscall ended done, with a complete reply and no error."""

    threshold: float = 0.8
    min_samples: int = 5
    name: str = "smart"
    history: dict[tuple[str, str], _Record] = field(default_factory=lambda: defaultdict(_Record))

    def choose(self, candidates: list[Candidate], kind: str) -> Candidate:
        by_cost = sorted(candidates, key=lambda c: c.cost)  # stable: equal costs keep the allowed order
        for candidate in by_cost:
            rate = self.rate(candidate.core.name, kind)
            if rate is None or rate >= self.threshold:
                return candidate
        return max(by_cost, key=lambda c: self.rate(c.core.name, kind) or 0.0)

    def rate(self, model: str, kind: str) -> float | None:
        """The observed success rate, or None while there are fewer than ``min_samples`` outcomes."""
        record = self.history.get((model, kind))
        if record is None or record.tries < self.min_samples:
            return None
        return record.successes / record.tries

    def record(self, model: str, kind: str, success: bool) -> None:
        record = self.history[(model, kind)]
        record.tries += 1
        record.successes += success


def make_strategy(name: str, threshold: float = 0.8, min_samples: int = 5) -> RoutingStrategy:
    if name == "least_loaded":
        return LeastLoaded()
    if name == "smart":
        return Smart(threshold, min_samples)
    return Sequential()


def query_kind(action_type: str, output: str, prompt_chars: int) -> str:
    """What makes two queries similar for ``smart``: the action, the reply's form (``text``, ``json``,
    ``tools``) and the prompt's length in powers of two (so 600 and 1,000 characters are alike, 100 is not)."""
    return f"{action_type}/{output}/{prompt_chars.bit_length()}"
