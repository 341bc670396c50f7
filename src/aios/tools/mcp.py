"""Tools served by MCP servers over stdio, through the official ``mcp`` SDK.

Each configured server is started when the kernel starts and kept running; its tools are listed once and
exposed as ``<server>/<tool>`` with their own input schemas. A session lives in a task of its own (the SDK's
transport must be closed by the task that opened it); calls come from any task on the kernel's loop.
"""

from __future__ import annotations

import asyncio
import logging
import os
from contextlib import AsyncExitStack
from typing import Any

from aios.config import McpServerConfig
from aios.tools.tool import EMPTY_PARAMETERS, InvalidTool, Tool, ToolContext, ToolError

log = logging.getLogger(__name__)

START_TIMEOUT_S = 30.0


class McpServer:
    def __init__(self, config: McpServerConfig) -> None:
        self.config = config
        self.session: Any = None
        self.error: str | None = None
        self._ready = asyncio.Event()
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @property
    def state(self) -> str:
        return "up" if self.session is not None else "failed" if self.error else "starting"

    async def start(self) -> list[Tool]:
        """Start the server and list its tools; on failure the error is kept (and logged) and no tools come."""
        self._task = asyncio.create_task(self._serve(), name=f"mcp-{self.config.name}")
        try:
            await asyncio.wait_for(self._ready.wait(), START_TIMEOUT_S)
        except TimeoutError:
            self.error = f"did not start within {START_TIMEOUT_S:g} s"
        if self.session is None:
            log.error("MCP server %s (%s): %s", self.config.name, self.config.command, self.error)
            return []
        try:
            listed = await self.session.list_tools()
        except Exception as exc:
            self.error = f"listing its tools failed: {type(exc).__name__}: {exc}"
            log.error("MCP server %s: %s", self.config.name, self.error)
            return []
        tools = []
        for listed_tool in listed.tools:
            try:
                tools.append(self._tool(listed_tool))
            except InvalidTool as exc:  # one odd tool does not cost the server's others
                log.warning("MCP server %s: skipping a tool: %s", self.config.name, exc)
        return tools

    async def _serve(self) -> None:
        from mcp import ClientSession, StdioServerParameters
        from mcp.client.stdio import stdio_client

        parameters = StdioServerParameters(command=self.config.command, args=list(self.config.args),
                                           env={**os.environ, **self.config.env} if self.config.env else None)
        try:
            async with AsyncExitStack() as stack:
                read, write = await stack.enter_async_context(stdio_client(parameters))
                session = await stack.enter_async_context(ClientSession(read, write))
                await session.initialize()
                self.session = session
                self._ready.set()
                await self._stop.wait()
        except Exception as exc:  # the server would not start, or its connection broke
            self.error = f"{type(exc).__name__}: {exc}"
        finally:
            self.session = None
            self._ready.set()

    def _tool(self, listed: Any) -> Tool:
        name = listed.name

        async def run(params: dict[str, Any], context: ToolContext) -> Any:
            if self.session is None:
                raise ToolError(f"MCP server {self.config.name} is not running ({self.error or 'stopped'})")
            result = await self.session.call_tool(name, params)
            text = "\n".join(getattr(part, "text", "") for part in result.content if getattr(part, "text", None))
            if result.is_error:
                raise ToolError(text or f"MCP tool {name} failed")
            return result.structured_content if result.structured_content is not None and not text else text

        return Tool(name=f"{self.config.name}/{name}", description=listed.description or "",
                    parameters=listed.input_schema or EMPTY_PARAMETERS, run=run,
                    timeout_s=self.config.timeout_s, source=f"MCP server {self.config.name}")

    async def stop(self) -> None:
        self._stop.set()
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)

    def describe(self) -> dict[str, Any]:
        return {"name": self.config.name, "command": self.config.command, "state": self.state,
                **({"error": self.error} if self.error else {})}
