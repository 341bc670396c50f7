"""The MCP SDK's side of a connection to an MCP server over stdio. Imported only once a server is configured: the
SDK takes half a second to import."""

from __future__ import annotations

import asyncio
import os
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator

from mcp import ClientSession, MCPError, StdioServerParameters
from mcp.client.stdio import stdio_client
from mcp.shared.jsonrpc_dispatcher import JSONRPCDispatcher
from mcp.types import CONNECTION_CLOSED

from aios.config import McpServerConfig


class _WatchedDispatcher(JSONRPCDispatcher):
    """The SDK's JSON-RPC dispatcher, setting ``closed`` once its receive loop ends — the server exited or closed
    its output. The session itself never says so: it only fails the calls made after."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.closed = asyncio.Event()

    async def run(self, *args: Any, **kwargs: Any) -> None:
        try:
            await super().run(*args, **kwargs)
        finally:
            self.closed.set()


@asynccontextmanager
async def connect(config: McpServerConfig) -> AsyncIterator[tuple[ClientSession, asyncio.Event]]:
    """The server's process started and a session open on it (not yet initialized), with the event set when its
    connection closes. Leaving stops the process the SDK's way: stdin closed, then SIGTERM, then SIGKILL, each
    step bounded, even when cancelled."""
    parameters = StdioServerParameters(command=config.command, args=list(config.args),
                                       env={**os.environ, **config.env} if config.env else None)
    async with stdio_client(parameters) as (read, write):
        dispatcher = _WatchedDispatcher(read, write)
        async with ClientSession(dispatcher=dispatcher) as session:
            yield session, dispatcher.closed


def closed_connection(exc: BaseException) -> bool:
    """``exc`` says the connection closed under a call (the server exited, or closed its output)."""
    return isinstance(exc, MCPError) and exc.code == CONNECTION_CLOSED


def error_answer(exc: BaseException) -> str | None:
    """The server's error answer to a request, when ``exc`` is one (None: ``exc`` is something else)."""
    return exc.message if isinstance(exc, MCPError) else None
