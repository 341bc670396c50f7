"""The tool manager's syscall handler: ``query_type: tool`` with ``tool_calls: [{name, parameters}]`` (the AIOS
body) runs every call, in order, as the calling agent, and replies with each call's result.

The tools come from every configured source (built-ins, tool folders, entry points, MCP servers), loaded when
the kernel starts. ``prepare`` refuses a call of an unknown tool or with parameters its schema does not take
before anything runs; a call that fails while running fails alone, and the reply says which and why.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Awaitable, Callable

from aios.access.manager import AccessManager
from aios.access.resources import Resource
from aios.config import Config
from aios.errors import BadRequest, Cancelled, KernelError, NotAvailable, NotFound
from aios.llm.handler import LLMResponse
from aios.llm.structured import distinct_calls
from aios.tools.builtin import builtin_tools, files
from aios.tools.entry_points import load_entry_point_tools
from aios.tools.folder import load_tool_folders
from aios.tools.mcp import McpServer
from aios.tools.registry import ToolRegistry
from aios.syscall import Syscall, SyscallKind, SyscallStatus
from aios.tools.runner import CallOutcome, ToolCall, ToolRunner
from aios.tools.tool import InvalidTool, Tool, ToolContext

log = logging.getLogger(__name__)

MAX_CALLS = 64  # calls in one tool syscall


@dataclass
class ToolResponse:
    """The AIOS tool reply. ``response_message``: the one call's result as text, or for several calls a JSON
    array of their results; ``tool_calls``: each call with its id, ``result``, ``error`` and ``status_code``."""

    response_class: str = "tool"
    response_message: str | None = None
    finished: bool = False
    error: str | None = None
    status_code: int = 200
    tool_calls: list[dict[str, Any]] | None = None


@dataclass
class ToolRequest:
    calls: list[ToolCall]
    refusals: list[KernelError | None] | None = None  # per call, once admitted: why it may not run (None: it may)


class ToolHandler:
    workers = 16  # tool syscalls in flight; each waits on its tools, not on the CPU

    def __init__(self, config: Config, call: Callable[..., Awaitable[Any]], access: AccessManager) -> None:
        self.config, self._call, self.access = config.tools, call, access
        self.registry = ToolRegistry()
        self.runner = ToolRunner(self.registry, self.config.default_timeout_s, self.config.max_threads)
        self.mcp_servers = [McpServer(server) for server in self.config.mcp_servers]
        try:
            if self.config.builtins:
                self.registry.add_all(builtin_tools())
            self.registry.add_all(load_tool_folders([Path(folder).expanduser() for folder in self.config.folders]))
            if self.config.entry_points:
                self.registry.add_all(load_entry_point_tools())
        except InvalidTool as exc:  # a configured tool that cannot load stops start-up, saying why
            raise NotAvailable(f"tools: {exc}") from None
        self._check_restricted()
        # The file tools whose storage operation a person approves: asked about as the tool call is admitted, as
        # any tool marked requires_confirmation is (inside the call, the wait would count against its timeout).
        self._asked_files = frozenset(files.confirmed(config.access.confirm.asking()))

    async def start(self) -> None:
        for server in self.mcp_servers:
            for tool in await server.start():
                self._add_served(tool)
        for name in self._restricted_of_servers():
            if name not in self.registry:
                log.warning("access.restricted_tools names %s, which its MCP server does not offer (now)", name)

    def _add_served(self, tool: Tool) -> None:
        """An MCP server's tool, unless another tool has its name: then it alone is skipped, with a warning — the
        server's other tools are offered, and the kernel starts."""
        try:
            self.registry.add(tool)
        except InvalidTool as exc:  # names both sources
            log.warning("skipping a tool: %s; name the MCP server differently to offer it", exc)

    def _check_restricted(self) -> None:
        """Every tool ``access.restricted_tools`` names must be one the kernel has: a misspelt name would restrict
        nothing, and leave the tool it meant open to every agent. (MCP servers' tools are known once they start.)"""
        for name in set(self.access.config.restricted_tools) - set(self._restricted_of_servers()):
            try:
                self.registry.get(name)
            except NotFound as exc:
                raise NotAvailable(f"access.restricted_tools: {exc}") from None

    def _restricted_of_servers(self) -> list[str]:
        servers = {server.config.name for server in self.mcp_servers}
        return [name for name in self.access.config.restricted_tools if name.split("/", 1)[0] in servers]

    async def close(self) -> None:
        for server in self.mcp_servers:
            await server.stop()
        self.runner.close()

    def prepare(self, calls: list[dict[str, Any]]) -> ToolRequest:
        if not calls:
            raise BadRequest("tool_calls is empty: give at least one {name, parameters}")
        if len(calls) > MAX_CALLS:
            raise BadRequest(f"tool request: tool_calls: List should have at most {MAX_CALLS} items, not {len(calls)}")
        return ToolRequest(self.runner.check(calls))

    async def admit(self, agent: str, request: ToolRequest) -> ToolRequest:
        """Which calls ``agent`` may make (a restricted tool needs a grant; an irreversible one, a person's
        approval when the config asks for one), before the syscall is queued: waiting for a person holds none of
        the workers. A refusal fails its call only."""
        return replace(request, refusals=[await self._refusal(call, agent) for call in request.calls])

    async def _refusal(self, call: ToolCall, agent: str) -> KernelError | None:
        try:
            await self.access.authorize(agent, "call", Resource("tool", call.tool.name))
            if self._asked(call):
                await self.access.confirm(agent, f"tool {call.tool.name}", call.parameters)
        except KernelError as exc:
            return exc
        return None

    def _asked(self, call: ToolCall) -> bool:
        return call.tool.requires_confirmation or call.tool.name in self._asked_files

    async def __call__(self, syscall: Syscall) -> ToolResponse:
        request: ToolRequest = syscall.payload
        if request.refusals is None:
            raise RuntimeError("a tool request ran without being admitted (Kernel.submit admits each)")
        return reply([await self._run(call, refusal, syscall.agent_name)
                      for call, refusal in zip(request.calls, request.refusals)])

    async def _run(self, call: ToolCall, refusal: KernelError | None, agent: str) -> CallOutcome:
        if refusal is not None:
            return CallOutcome(call.tool.name, call.parameters, call.id, error=str(refusal),
                               status_code=refusal.status_code)
        return await self.runner.run(call, ToolContext(agent, self._call, approved=self._asked(call)))

    def status(self) -> dict[str, Any]:
        return {"tools": len(self.registry), "running": {k: v for k, v in self.runner.running.items() if v},
                "overdue": {k: v for k, v in self.runner.overdue.items() if v},
                "mcp_servers": [server.describe() for server in self.mcp_servers]}


def reply(outcomes: list[CallOutcome]) -> ToolResponse:
    failed = [o for o in outcomes if o.error is not None]
    message = outcomes[0].text if len(outcomes) == 1 else json.dumps(
        [o.result if o.error is None else {"error": o.error} for o in outcomes], ensure_ascii=False)
    error = None
    if failed:
        error = f"{len(failed)} of {len(outcomes)} tool calls failed: " + "; ".join(
            f"{o.name}: {o.error}" for o in failed)
    return ToolResponse(response_message=message, finished=not failed, error=error,
                        status_code=failed[0].status_code if failed else 200,
                        tool_calls=[asdict(o) for o in outcomes])


async def run_model_calls(call: Callable[..., Awaitable[Syscall]], agent: str, reply: LLMResponse) -> LLMResponse:
    """``call_tool``: run the calls the model made, as one tool syscall of ``agent``, and give the reply their
    results — ``response_message`` as AIOS agents read it, ``tool_calls`` each with its result or error."""
    if reply.error is not None or not reply.tool_calls:
        return reply  # nothing to run: the model's error (or its prose under tool_choice auto) stands
    try:
        syscall = await call(SyscallKind.TOOL, agent, distinct_calls(reply.tool_calls))
    except KernelError as exc:  # refused before running: a tool this kernel lacks, parameters it does not take
        return replace(reply, error=str(exc), status_code=exc.status_code, finished=False)
    if syscall.status is not SyscallStatus.DONE:
        error = syscall.error if isinstance(syscall.error, KernelError) else Cancelled("the tool calls were cancelled")
        return replace(reply, error=str(error), status_code=error.status_code, finished=False)
    ran: ToolResponse = syscall.value
    return replace(reply, response_message=ran.response_message, tool_calls=ran.tool_calls, error=ran.error,
                   status_code=ran.status_code, finished=reply.finished and ran.finished)
