"""Tools served by MCP servers over stdio, through the official ``mcp`` SDK.

Each configured server is started when the kernel starts and kept running; its tools are listed once and
exposed as ``<server>/<tool>`` with their own input schemas. A session lives in a task of its own (the SDK's
transport must be closed by the task that opened it); calls come from any task on the kernel's loop.

Starting (the process, ``initialize``, ``tools/list``) must finish within the start timeout, and ``stop`` cancels
whatever the server is doing: a server that never answers holds neither the kernel's start nor its exit, and its
process is stopped either way. A server whose connection breaks once it was up (it crashed, or exited) is down:
its tools' calls fail at once with 503 saying why, and it is restarted — at once after a run of a minute or more,
else after a delay doubling from 1 s to a minute, so that a server that keeps crashing does not spin. A server
that could not start at all is not retried: it offered no tools.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from typing import Any

import anyio

from aios.config import McpServerConfig
from aios.errors import Unavailable
from aios.tools.tool import EMPTY_PARAMETERS, InvalidTool, Tool, ToolContext, ToolError

log = logging.getLogger(__name__)

START_TIMEOUT_S = 30.0
# Stopping waits this long for the SDK's own shutdown of the process (bounded: about 6.5 s at most).
STOP_TIMEOUT_S = 15.0
STABLE_S = 60.0  # a server up this long before its connection broke is restarted at once
RESTART_DELAY_S = 1.0  # else the first delay, doubled on each quick failure in a row
MAX_RESTART_DELAY_S = 60.0


class McpServer:
    """One configured MCP server. ``state``: ``starting``, ``up``, ``down`` (its connection broke; it is being
    restarted), ``failed`` (it never started) or ``stopped``."""

    def __init__(self, config: McpServerConfig, start_timeout_s: float = START_TIMEOUT_S) -> None:
        self.config, self.start_timeout_s = config, start_timeout_s
        self.session: Any = None
        self.state = "starting"
        self.error: str | None = None
        self.restarts = 0
        self._listed: list[Any] | None = None  # the tools it offered when it first started
        self._first_run = asyncio.Event()  # set once the server first came up, or failed to
        self._changed = asyncio.Event()  # set (and replaced) on each change of state
        self._scope: anyio.CancelScope | None = None  # what the server is doing now, which stop() cancels
        self._stopping = False
        self._quick_failures = 0
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> list[Tool]:
        """Start the server and list its tools; on failure the error is kept (and logged) and no tools come."""
        self._task = asyncio.create_task(self._serve(), name=f"mcp-{self.config.name}")
        await self._first_run.wait()
        if self._listed is None:
            log.error("MCP server %s (%s): %s", self.config.name, self.config.command, self.error)
            return []
        tools = []
        for listed_tool in self._listed:
            try:
                tools.append(self._tool(listed_tool))
            except InvalidTool as exc:  # one odd tool does not cost the server's others
                log.warning("MCP server %s: skipping a tool: %s", self.config.name, exc)
        return tools

    async def reached(self, *states: str) -> None:
        """Wait until the server is in one of ``states`` (for whoever must know it is back up, or down)."""
        while self.state not in states:
            await self._changed.wait()

    async def _serve(self) -> None:
        """Run the server until stop(), restarting it whenever its connection breaks (never when its first start
        failed: it offered no tools)."""
        try:
            await self._restarting()
        finally:  # however it ends (abandoned by stop(), too), no start() waits on it any longer
            self._first_run.set()

    async def _restarting(self) -> None:
        while not self._stopping:
            began = time.monotonic()
            try:
                reason = await self._run()
            except Exception as exc:  # it would not start, or its session failed
                reason = _why(exc)
            self._first_run.set()
            if self._stopping or self._listed is None:
                self.error = None if self._stopping else reason
                self._set("stopped" if self._stopping else "failed")
                return
            delay = self._restart_delay(time.monotonic() - began)
            self.error = f"{reason}; restarting it in {delay:g} s"
            self._set("down")
            log.warning("MCP server %s is down: %s", self.config.name, self.error)
            with anyio.CancelScope() as self._scope:
                await anyio.sleep(delay)
            if self._stopping:  # stopped while it waited to restart
                self.error = None
                self._set("stopped")
                return
            self.restarts += 1
            self._set("starting")

    async def _run(self) -> str:
        """One run of the server's process: started, initialized (and the first time, its tools listed) within the
        start timeout, then serving calls until its connection closes or stop() cancels it. Returns why it ended."""
        from aios.tools import mcp_client  # the SDK, imported only when a server is configured

        step = "starting its process"
        with anyio.CancelScope(deadline=anyio.current_time() + self.start_timeout_s) as self._scope:
            async with mcp_client.connect(self.config) as (session, closed):
                step = "initialize"
                await session.initialize()
                if self._listed is None:
                    step = "tools/list"
                    self._listed = (await session.list_tools()).tools
                self._scope.deadline = math.inf
                self.session, self.error = session, None
                self._set("up")
                self._first_run.set()
                try:
                    await closed.wait()
                finally:
                    self.session = None
        if self._scope.cancelled_caught and not self._stopping:
            return f"no answer to {step} within {self.start_timeout_s:g} s"
        return "its connection closed: the server exited, or closed its output (the kernel's log has its stderr)"

    def _restart_delay(self, ran_s: float) -> float:
        """Seconds before the next start: none after a run of STABLE_S or more, else doubling with each quick
        failure in a row."""
        self._quick_failures = 0 if ran_s >= STABLE_S else self._quick_failures + 1
        if not self._quick_failures:
            return 0.0
        return min(MAX_RESTART_DELAY_S, RESTART_DELAY_S * 2 ** (self._quick_failures - 1))

    def _set(self, state: str) -> None:
        self.state = state
        self._changed.set()
        self._changed = asyncio.Event()

    def _tool(self, listed: Any) -> Tool:
        name = listed.name

        async def run(params: dict[str, Any], context: ToolContext) -> Any:
            from aios.tools import mcp_client

            session = self.session
            if session is None:
                raise Unavailable(self._unavailable())
            try:
                result = await session.call_tool(name, params)
            except Exception as exc:
                raise self._call_failed(exc, mcp_client) from None
            text = "\n".join(getattr(part, "text", "") for part in result.content if getattr(part, "text", None))
            if result.is_error:
                raise ToolError(text or f"MCP tool {name} failed")
            return result.structured_content if result.structured_content is not None and not text else text

        return Tool(name=f"{self.config.name}/{name}", description=listed.description or "",
                    parameters=listed.input_schema or EMPTY_PARAMETERS, run=run,
                    timeout_s=self.config.timeout_s, source=f"MCP server {self.config.name}")

    def _unavailable(self) -> str:
        if self.state == "starting":
            return (f"MCP server {self.config.name} is restarting (restart {self.restarts}) after its connection "
                    "broke; try again shortly")
        return f"MCP server {self.config.name} is {self.state}" + (f": {self.error}" if self.error else "")

    def _call_failed(self, exc: Exception, client: Any) -> Exception:
        """The error a call's failure is reported as: the connection closed under it (503), the server answered
        with an error (422), or something else went wrong (as is, a 500 naming it)."""
        if client.closed_connection(exc):
            return Unavailable(f"MCP server {self.config.name} closed its connection: it exited or crashed (the "
                               "kernel's log has its stderr); the kernel restarts it")
        answer = client.error_answer(exc)
        if answer is not None:
            return ToolError(f"MCP server {self.config.name} answered with an error: {answer}")
        return exc

    async def stop(self) -> None:
        """Stop the server, whatever it is doing (even hanging in ``initialize``); its process is stopped by the
        SDK's shutdown. A server that outlasts STOP_TIMEOUT_S is abandoned, so that the kernel can exit."""
        self._stopping = True
        if self._scope is not None:
            self._scope.cancel()
        if self._task is None:
            return
        done, _ = await asyncio.wait({self._task}, timeout=STOP_TIMEOUT_S)
        if not done:
            log.warning("MCP server %s did not stop within %g s; abandoning it", self.config.name, STOP_TIMEOUT_S)
            self._task.cancel()

    def describe(self) -> dict[str, Any]:
        return {"name": self.config.name, "command": self.config.command, "state": self.state,
                **({"error": self.error} if self.error else {}),
                **({"restarts": self.restarts} if self.restarts else {})}


def _why(exc: BaseException) -> str:
    """What went wrong, from an exception out of the SDK (its task groups wrap an error in a group of one)."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return f"{type(exc).__name__}: {exc}"
