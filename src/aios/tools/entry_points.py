"""Tools that installed Python packages offer under the entry-point group ``aios.tools``.

An entry point names a :class:`~aios.tools.tool.Tool`, a list of them, or a function without arguments that
returns either::

    [project.entry-points."aios.tools"]
    weather = "my_package.tools:weather_tool"
"""

from __future__ import annotations

from dataclasses import replace
from importlib.metadata import entry_points

from aios.tools.tool import InvalidTool, Tool

GROUP = "aios.tools"


def load_entry_point_tools() -> list[Tool]:
    tools: list[Tool] = []
    for point in entry_points(group=GROUP):
        try:
            value = point.load()
            if callable(value) and not isinstance(value, Tool):
                value = value()
        except Exception as exc:
            raise InvalidTool(f"entry point {point.name} ({point.value}) failed to load: "
                              f"{type(exc).__name__}: {exc}") from None
        found = value if isinstance(value, list) else [value]
        if not all(isinstance(tool, Tool) for tool in found):
            raise InvalidTool(f"entry point {point.name} ({point.value}) must give a Tool or a list of Tools")
        source = f"entry point {point.name} of {point.dist.name if point.dist else 'an unknown package'}"
        tools += [replace(tool, source=source) for tool in found]
    return tools
