"""Tools every kernel has, all offline: a calculator, clocks and time zones, unit conversion, text statistics,
and the agent's own files (the storage operations as tools)."""

from __future__ import annotations

from aios.tools.builtin import calculator, clock, files, text, units
from aios.tools.tool import Tool


def builtin_tools() -> list[Tool]:
    return [calculator.TOOL, *clock.TOOLS, units.TOOL, text.TOOL, *files.tools()]
