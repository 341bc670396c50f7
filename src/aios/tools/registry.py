"""The tools a kernel offers, by name; loaded at start-up from every configured source."""

from __future__ import annotations

import difflib
import logging
from typing import Iterable

from aios.errors import NotFound
from aios.tools.tool import InvalidTool, Tool

log = logging.getLogger(__name__)


class ToolRegistry:
    def __init__(self) -> None:
        self._tools: dict[str, Tool] = {}

    def add(self, tool: Tool) -> None:
        """Register ``tool``; a second tool of the same name is refused, naming both sources."""
        existing = self._tools.get(tool.name)
        if existing is not None:
            raise InvalidTool(f"two tools are named {tool.name}: from {existing.source} and from {tool.source}")
        self._tools[tool.name] = tool

    def add_all(self, tools: Iterable[Tool]) -> None:
        for tool in tools:
            self.add(tool)

    def get(self, name: str) -> Tool:
        tool = self._tools.get(name)
        if tool is None:
            close = _close_names(name, self._tools)
            hint = f"; did you mean {', '.join(close)}?" if close else "; GET /tools lists them"
            raise NotFound(f"this kernel has no tool named {name!r}{hint}")
        return tool

    def __contains__(self, name: object) -> bool:
        return name in self._tools

    def __iter__(self):  # noqa: ANN204
        return iter(sorted(self._tools.values(), key=lambda t: t.name))

    def __len__(self) -> int:
        return len(self._tools)


def _close_names(name: str, names: Iterable[str]) -> list[str]:
    """Up to three of ``names`` like ``name``, compared by what follows their namespace: the ``aios/`` that every
    built-in shares would make any two of them look alike (``aios/calculater`` like ``aios/create_dir``)."""
    by_short: dict[str, list[str]] = {}
    for full in names:
        by_short.setdefault(full.rsplit("/", 1)[-1], []).append(full)
    namespace = name.rsplit("/", 1)[0] if "/" in name else None
    close = difflib.get_close_matches(name.rsplit("/", 1)[-1], by_short, n=3)
    # Among tools of one short name, the asked namespace's first.
    return [full for short in close
            for full in sorted(by_short[short], key=lambda f: f.rsplit("/", 1)[0] != namespace)][:3]
