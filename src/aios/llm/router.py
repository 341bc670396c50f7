"""Pick the LLM core for each syscall.

``sequential`` (the AIOS strategy name) takes the candidates in turn: all configured cores when the syscall
names none, else the cores matching its ``llms`` entries, in the order given.
"""

from __future__ import annotations

import itertools
from typing import Any, Sequence

from aios.errors import NotFound
from aios.llm.core import LLMCore


class Router:
    def __init__(self, cores: Sequence[LLMCore]) -> None:
        self.cores = list(cores)
        self._turn = itertools.count()

    def pick(self, llms: list[dict[str, Any]] | None) -> tuple[LLMCore, dict[str, Any]]:
        """The core to use and the ``llms`` entry that chose it ({} when the syscall named none)."""
        if not llms:
            candidates: list[tuple[LLMCore, dict[str, Any]]] = [(core, {}) for core in self.cores]
        else:
            candidates = [(core, entry) for entry in llms for core in self.cores if _matches(core, entry)]
        if not candidates:
            wanted = ", ".join(_label(e.get("name"), _backend_of(e)) for e in llms or [])
            have = ", ".join(_label(c.name, c.backend) for c in self.cores)
            raise NotFound(f"no configured model matches llms [{wanted}]; configured: {have}")
        return candidates[next(self._turn) % len(candidates)]


def _matches(core: LLMCore, entry: dict[str, Any]) -> bool:
    backend = _backend_of(entry)
    return entry.get("name") == core.name and backend in (None, core.backend)


def _backend_of(entry: dict[str, Any]) -> str | None:
    return entry.get("backend") or entry.get("provider")  # AIOS SDK versions use either key


def _label(name: Any, backend: str | None) -> str:
    return f"{name} ({backend})" if backend else str(name)
