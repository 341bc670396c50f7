"""Tools in the AIOS/Cerebrum folder layout, loaded unchanged:

    my_tool/
      config.json   {"name": "weather", "description": "...", "meta": {"author": "me", "version": "0.1.0",
                     "license": "MIT"}, "build": {"entry": "tool.py", "module": "Weather"}}
      tool.py       class Weather: run(self, params) -> str | dict (or async def run, awaited on the event loop);
                    get_tool_call_format(self) -> OpenAI tool

The tool is named ``<meta.author>/<name>``; its parameters schema comes from ``get_tool_call_format()``. Beside
Cerebrum's keys, ``config.json`` may set ``timeout_s``, ``max_concurrency`` and ``requires_confirmation``.
A tool written against the AIOS SDK (``from cerebrum.tool.base import BaseTool``) needs that package importable.
"""

from __future__ import annotations

import importlib.util
import inspect
import sys
from pathlib import Path
from typing import Any

from aios.packages import parse_config, read_config
from aios.tools.tool import EMPTY_PARAMETERS, InvalidTool, Tool, ToolContext


def load_tool_folder(folder: Path) -> Tool:
    """The tool in ``folder``; raises InvalidTool saying what is missing or wrong."""
    config = parse_config(read_config(folder, InvalidTool), f"{folder}/config.json", InvalidTool)
    instance = _instantiate(folder, folder / config.entry, config.module, config.full_name)
    function = _call_format(instance, folder).get("function", {})
    description = config.description if "description" in config.raw else function.get("description", "")
    return Tool(
        name=config.full_name,
        description=str(description),
        parameters=function.get("parameters") or EMPTY_PARAMETERS,
        run=_runs(instance),
        timeout_s=config.raw.get("timeout_s"), max_concurrency=config.raw.get("max_concurrency"),
        requires_confirmation=config.raw.get("requires_confirmation", False),
        source=f"folder {folder}",
    )


def _instantiate(folder: Path, entry: Path, class_name: str, tool_name: str) -> Any:
    if not entry.resolve().is_relative_to(folder.resolve()) or not entry.is_file():
        raise InvalidTool(f"tool {tool_name}: entry file {entry} is not a file inside {folder}")
    module_name = f"aios_tool_{tool_name.replace('/', '__').replace('-', '_').replace('.', '_')}"
    spec = importlib.util.spec_from_file_location(module_name, entry)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(folder))  # the entry file may import its siblings, as under Cerebrum
    try:
        spec.loader.exec_module(module)
        cls = getattr(module, class_name)
        return cls()
    except ModuleNotFoundError as exc:
        hint = " (an AIOS SDK tool: install the AIOS SDK, cerebrum, beside the kernel)" if exc.name and \
            exc.name.startswith("cerebrum") else ""
        raise InvalidTool(f"tool {tool_name}: {entry.name} imports {exc.name!r}, which is not installed{hint}") from None
    except AttributeError:
        raise InvalidTool(f"tool {tool_name}: {entry.name} has no class {class_name!r} (build.module)") from None
    except Exception as exc:
        raise InvalidTool(f"tool {tool_name}: loading {entry.name} failed: {type(exc).__name__}: {exc}") from None
    finally:
        sys.path.remove(str(folder))


def _call_format(instance: Any, folder: Path) -> dict[str, Any]:
    describe = getattr(instance, "get_tool_call_format", None)
    if describe is None:
        return {}
    try:
        call_format = describe()
    except Exception as exc:
        raise InvalidTool(f"{folder}: get_tool_call_format() failed: {type(exc).__name__}: {exc}") from None
    if not isinstance(call_format, dict):
        raise InvalidTool(f"{folder}: get_tool_call_format() must return an OpenAI function tool (a dict)")
    return call_format


def _runs(instance: Any):  # noqa: ANN202
    """The tool's ``run(params)`` as the kernel calls it (with the keyword AIOS's tool manager calls it with); an
    ``async def run`` stays a coroutine function, so that it is awaited on the event loop."""
    method = getattr(instance, "run", None)
    if not callable(method):
        raise InvalidTool(f"{type(instance).__name__} has no run(params) method")
    if inspect.iscoroutinefunction(method):
        async def run_async(params: dict[str, Any], context: ToolContext) -> Any:
            return await method(params=params)

        return run_async

    def run(params: dict[str, Any], context: ToolContext) -> Any:
        return method(params=params)

    return run


def load_tool_folders(folders: list[Path]) -> list[Tool]:
    """Each configured folder is a tool folder, or holds tool folders (one level down)."""
    tools = []
    for folder in folders:
        if (folder / "config.json").is_file():
            tools.append(load_tool_folder(folder))
        elif folder.is_dir():
            tools += [load_tool_folder(sub) for sub in sorted(folder.iterdir()) if (sub / "config.json").is_file()]
        else:
            raise InvalidTool(f"tools.folders: {folder} is not a directory")
    return tools
