"""Pick the LLM core for each syscall, and keep count of what each core is serving.

The candidates are all cores when the syscall names no model, else the cores matching its ``llms`` entries, in
the order given, less those that are down while any of them is up; the strategy (``llms.router.strategy``, see
``routing``) chooses among them. With ``llms.router.sticky`` an agent keeps the core it was last given while that
core stays allowed, so its prefix cache stays warm. Every routed syscall is counted against its core until it
ends: that count is the load ``least_loaded`` weighs, and what a removed core waits on before it closes (its
in-flight syscalls finish).
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Sequence

from aios.errors import Forbidden, NotFound
from aios.llm.core import LLMCore
from aios.llm.routing import Candidate, RoutingStrategy, Sequential
from aios.syscall import Syscall, SyscallStatus

MAX_STICKY_AGENTS = 10_000  # agents remembered for stickiness; the least recently routed are forgotten


@dataclass(frozen=True)
class Route:
    core: LLMCore
    entry: dict[str, Any]  # the ``llms`` entry that allowed the core ({} when the syscall named none)
    kind: str  # the query's kind, for the strategy's history


class Router:
    def __init__(self, cores: Sequence[LLMCore], strategy: RoutingStrategy | None = None, sticky: bool = False,
                 costs: dict[str, float] | None = None) -> None:
        self.cores = list(cores)
        self.strategy = strategy or Sequential()
        self.sticky = sticky
        self.costs = dict(costs or {})
        # Only cores serving something have an entry (the last syscall to end removes it): a removed core is not
        # kept alive, with its weights, by a count of 0.
        self._in_flight: dict[LLMCore, int] = {}
        self._drained: dict[LLMCore, asyncio.Event] = {}
        self._agents: OrderedDict[str, str] = OrderedDict()
        # The models chosen for the whole kernel (``POST /user/select/llms``): a syscall naming none is routed
        # among them, and one naming others is refused.
        self.selected: list[dict[str, Any]] = []

    def pick(self, llms: list[dict[str, Any]] | None, agent: str = "", kind: str = "") -> Route:
        """The core to use for a syscall of ``agent``; raises NotFound when no core matches ``llms``."""
        llms = self._within_selection(llms)
        if not llms:
            allowed: list[tuple[LLMCore, dict[str, Any]]] = [(core, {}) for core in self.cores]
        else:
            allowed = [(core, entry) for entry in llms for core in self.cores if _matches(core, entry)]
        if not allowed:
            wanted = ", ".join(_label(e.get("name"), _backend_of(e)) for e in llms or [])
            have = ", ".join(_label(c.name, c.backend) for c in self.cores)
            raise NotFound(f"no configured model matches llms [{wanted}]; configured: {have}")
        # A model that is down refuses at once, so it would look idle to least_loaded and take every request:
        # it is passed over while an allowed model is up. When all are down, it is routed to and says why.
        allowed = [(core, entry) for core, entry in allowed if not getattr(core, "down", None)] or allowed
        candidates = [self._candidate(core, entry) for core, entry in allowed]
        chosen = self._kept(agent, candidates) or self.strategy.choose(candidates, kind)
        if self.sticky and agent:
            self._agents[agent] = chosen.core.name
            self._agents.move_to_end(agent)
            if len(self._agents) > MAX_STICKY_AGENTS:
                self._agents.popitem(last=False)
        return Route(chosen.core, chosen.entry, kind)

    def select(self, llms: list[dict[str, Any]]) -> None:
        """Route only among ``llms`` from now on ([] lifts the selection); each must name a served model."""
        missing = [entry for entry in llms if not any(_matches(core, entry) for core in self.cores)]
        if missing:
            raise NotFound(f"no served model matches {', '.join(_label(e.get('name'), _backend_of(e)) for e in missing)}"
                           f"; served: {', '.join(_label(c.name, c.backend) for c in self.cores)}")
        self.selected = llms

    def is_selected(self, core: LLMCore) -> bool:
        """Whether the selection names ``core``."""
        return any(_matches(core, entry) for entry in self.selected)

    def _within_selection(self, llms: list[dict[str, Any]] | None) -> list[dict[str, Any]] | None:
        if not self.selected:
            return llms
        if not llms:
            return self.selected
        outside = [e for e in llms if not any(_same(e, chosen) for chosen in self.selected)]
        if outside:
            raise Forbidden(f"llms names {', '.join(_label(e.get('name'), _backend_of(e)) for e in outside)}, not "
                            f"among the models selected for this kernel "
                            f"({', '.join(_label(e.get('name'), _backend_of(e)) for e in self.selected)})")
        return llms

    def _kept(self, agent: str, candidates: list[Candidate]) -> Candidate | None:
        if not self.sticky or agent not in self._agents:
            return None
        return next((c for c in candidates if c.core.name == self._agents[agent]), None)

    def _candidate(self, core: LLMCore, entry: dict[str, Any]) -> Candidate:
        running = getattr(core, "running_tokens", None)
        return Candidate(core, entry, self.in_flight(core), running() if running else 0, self.costs.get(core.name, 0.0))

    # -- what each core serves --------------------------------------------------------------------------------

    def track(self, route: Route, syscall: Syscall) -> None:
        """Count ``syscall`` against its core until it ends, then tell the strategy how it went."""
        self._in_flight[route.core] = self.in_flight(route.core) + 1
        syscall.on_end(lambda: self._ended(route, syscall))

    def _ended(self, route: Route, syscall: Syscall) -> None:
        self._in_flight[route.core] -= 1
        reply = syscall.value
        success = (syscall.status is SyscallStatus.DONE and getattr(reply, "error", None) is None
                   and bool(getattr(reply, "finished", False)))
        self.strategy.record(route.core.name, route.kind, success)
        if self._in_flight[route.core] == 0:
            del self._in_flight[route.core]
            drained = self._drained.pop(route.core, None)
            if drained is not None:
                drained.set()

    def in_flight(self, core: LLMCore) -> int:
        return self._in_flight.get(core, 0)

    # -- cores added and removed while serving ----------------------------------------------------------------

    def named(self, name: str) -> LLMCore | None:
        return next((core for core in self.cores if core.name == name), None)

    def add(self, core: LLMCore, cost: float = 0.0) -> None:
        self.cores.append(core)
        self.costs[core.name] = cost

    def replace(self, old: LLMCore, new: LLMCore, cost: float = 0.0) -> None:
        """Route to ``new`` where ``old`` was (same place in the order); ``old`` gets nothing new."""
        self.cores[self.cores.index(old)] = new
        self.costs[new.name] = cost

    def remove(self, core: LLMCore) -> None:
        """Route nothing more to ``core``; what it is serving goes on (``drain`` waits for it)."""
        self.cores.remove(core)
        self.costs.pop(core.name, None)

    async def drain(self, core: LLMCore) -> None:
        """Wait until every syscall routed to ``core`` has ended."""
        if self.in_flight(core) == 0:
            return
        drained = self._drained.setdefault(core, asyncio.Event())
        await drained.wait()


def _matches(core: LLMCore, entry: dict[str, Any]) -> bool:
    backend = _backend_of(entry)
    return entry.get("name") == core.name and backend in (None, core.backend)


def _same(entry: dict[str, Any], chosen: dict[str, Any]) -> bool:
    wanted, allowed = _backend_of(entry), _backend_of(chosen)
    return entry.get("name") == chosen.get("name") and (wanted is None or allowed is None or wanted == allowed)


def _backend_of(entry: dict[str, Any]) -> str | None:
    return entry.get("backend") or entry.get("provider")  # AIOS SDK versions use either key


def _label(name: Any, backend: str | None) -> str:
    return f"{name} ({backend})" if backend else str(name)
