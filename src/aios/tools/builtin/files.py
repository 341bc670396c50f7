"""The agent's own files as tools (``aios/write_file``, ``aios/read_file``, ...): each call runs as a storage
syscall of the calling agent, inside its mount, exactly as the storage API would — its access checks and the
approval of irreversible operations (``access.confirm``) included."""

from __future__ import annotations

from typing import Any

from aios.storage.operate import FILE_TOOLS, file_operation
from aios.storage.requests import OPERATION_ALIASES
from aios.tools.tool import Tool, ToolContext

def _runner(operation: str):  # noqa: ANN202
    async def run(params: dict[str, Any], context: ToolContext) -> dict[str, Any]:
        return await file_operation(context.call, context.agent_name, operation, params, context.approved)

    return run


def tools() -> list[Tool]:
    return [Tool(name=f"aios/{spec['function']['name']}", description=spec["function"]["description"],
                 parameters=spec["function"]["parameters"], run=_runner(spec["function"]["name"]))
            for spec in FILE_TOOLS]


def confirmed(operations: frozenset[str] | list[str]) -> list[str]:
    """The file tools whose storage operation is one of ``operations`` (``access.confirm.operations``): a call
    of ``aios/delete_file`` is a storage ``delete``, asked about as one."""
    return [f"aios/{spec['function']['name']}" for spec in FILE_TOOLS
            if OPERATION_ALIASES.get(spec["function"]["name"]) in operations]
