"""MCP servers that misbehave, run for real as processes over stdio (tests/fixtures/faulty_mcp_server.py): one
that never answers ``initialize``, one that never answers ``tools/list``, one that crashes in a call, one whose
tool takes a name the kernel already has. None may hold the kernel's start or its exit, or leave its process
behind; a crashed one is reported down, its calls refused with 503 saying why, and it is restarted."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path
from typing import Any, Awaitable, Callable, TypeVar

import pytest

from aios.access.manager import AccessManager
from aios.config import Config, McpServerConfig
from aios.tools.handler import ToolHandler
from aios.tools.mcp import McpServer
from aios.tools.registry import ToolRegistry
from aios.tools.runner import CallOutcome, ToolRunner
from aios.tools.tool import ToolContext

SERVER = Path(__file__).resolve().parent / "fixtures" / "faulty_mcp_server.py"
BOUND_S = 30.0  # how long a test waits for anything before it fails: never reached when the kernel behaves
T = TypeVar("T")


async def _no_syscalls(*args: Any) -> None:
    raise AssertionError("MCP tools make no syscalls")


class Processes:
    """The process id each started server reports over a Unix socket: a test knows a server runs without polling."""

    def __init__(self, socket_path: Path) -> None:
        self.path, self._pids = socket_path, asyncio.Queue[int]()

    async def __aenter__(self) -> Processes:
        self._server = await asyncio.start_unix_server(self._reported, str(self.path))
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._server.close()

    async def _reported(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await self._pids.put(int(await reader.read()))
        writer.close()

    async def next_pid(self) -> int:
        return await bounded(self._pids.get())

    def config(self, fault: str | None = None, name: str = "faulty") -> McpServerConfig:
        return McpServerConfig(name=name, command=sys.executable, args=[str(SERVER)], timeout_s=10,
                               env={"MCP_REPORT": str(self.path), **({"MCP_FAULT": fault} if fault else {})})


async def bounded(waiting: Awaitable[T]) -> T:
    return await asyncio.wait_for(waiting, BOUND_S)


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


@pytest.fixture
def socket_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # A short path of its own: a Unix socket's path may have at most 107 bytes.
    return Path(tmp_path_factory.mktemp("mcp", numbered=True)) / "pids"


def run(test: Callable[[Processes], Awaitable[T]], socket_path: Path) -> T:
    async def main() -> T:
        async with Processes(socket_path) as processes:
            return await test(processes)

    return asyncio.run(main())


@pytest.mark.parametrize(("fault", "error"), [
    ("hang-initialize", "no answer to initialize within 5 s"),
    ("hang-list", "no answer to tools/list within 5 s"),
])
def test_a_server_that_does_not_answer_its_start_fails_it_in_time_and_its_process_ends(
        socket_path: Path, fault: str, error: str) -> None:
    async def test(processes: Processes) -> tuple[list[Any], dict[str, Any], int]:
        server = McpServer(processes.config(fault), start_timeout_s=5)  # starting Python, under load too
        tools = await bounded(server.start())
        await bounded(server.stop())
        return tools, server.describe(), await processes.next_pid()

    tools, described, pid = run(test, socket_path)
    assert tools == [] and (described["state"], described["error"]) == ("failed", error)
    assert gone(pid)


def test_stopping_a_server_hanging_in_initialize_ends_its_start_and_its_process(socket_path: Path) -> None:
    """The kernel stopping while a server hangs at start (the start timeout far off): its exit waits for
    neither, and the server's process is stopped."""
    async def test(processes: Processes) -> tuple[list[Any], str, int]:
        server = McpServer(processes.config("hang-initialize"), start_timeout_s=600)
        starting = asyncio.create_task(server.start())
        pid = await processes.next_pid()  # it runs, and will never answer
        await bounded(server.stop())
        return await bounded(starting), server.state, pid

    tools, state, pid = run(test, socket_path)
    assert (tools, state) == ([], "stopped")
    assert gone(pid)


def test_a_crashed_server_is_down_its_calls_refused_saying_why_until_it_is_restarted(socket_path: Path) -> None:
    async def test(processes: Processes) -> dict[str, Any]:
        server = McpServer(processes.config())
        registry = ToolRegistry()
        registry.add_all(await bounded(server.start()))
        runner = ToolRunner(registry, 30.0, max_threads=4)

        async def call(name: str, **parameters: Any) -> CallOutcome:
            (checked,) = runner.check([{"name": f"faulty/{name}", "parameters": parameters}])
            return await bounded(runner.run(checked, ToolContext("test/agent", _no_syscalls)))

        seen: dict[str, Any] = {"first_pid": await processes.next_pid(), "before": await call("ok", x=1),
                                "crash": await call("die")}
        await bounded(server.reached("down"))
        seen.update(down=server.describe(), while_down=await call("ok", x=2))
        await bounded(server.reached("up"))
        seen.update(second_pid=await processes.next_pid(), up=server.describe(), after=await call("ok", x=3))
        await bounded(server.stop())
        runner.close()
        return seen

    seen = run(test, socket_path)
    assert (seen["before"].status_code, seen["before"].result) == (200, "1")
    assert seen["crash"].status_code == 503 and seen["crash"].error.startswith(
        "MCP server faulty closed its connection: it exited or crashed")
    assert seen["down"]["state"] == "down" and seen["down"]["error"].startswith(
        "its connection closed: the server exited, or closed its output")
    assert seen["down"]["error"].endswith("; restarting it in 1 s")
    assert seen["while_down"].status_code == 503
    assert seen["while_down"].error == f"MCP server faulty is down: {seen['down']['error']}"
    assert gone(seen["first_pid"]) and seen["second_pid"] != seen["first_pid"]
    assert seen["up"] == {"name": "faulty", "command": sys.executable, "state": "up", "restarts": 1}
    assert (seen["after"].status_code, seen["after"].result) == (200, "3")


def test_a_server_tool_named_as_a_kernel_tool_is_skipped_and_the_kernel_starts(
        socket_path: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A server named ``aios`` offering ``calculator``: the built-in stays, the server's other tools are offered,
    and a warning names both."""
    async def test(processes: Processes) -> tuple[str, bool, bool]:
        config = Config.model_validate({"data_dir": str(tmp_path), "tools": {
            "entry_points": False, "mcp_servers": [processes.config(name="aios").model_dump()]}})
        access = AccessManager(config.access, tmp_path)
        handler = ToolHandler(config, _no_syscalls, access)
        try:
            await bounded(handler.start())
            return handler.registry.get("aios/calculator").source, "aios/ok" in handler.registry, \
                "aios/die" in handler.registry
        finally:
            await bounded(handler.close())
            await access.close()

    calculator_source, ok_offered, die_offered = run(test, socket_path)
    assert calculator_source == "builtin" and ok_offered and die_offered
    assert ("skipping a tool: two tools are named aios/calculator: from builtin and from MCP server aios; name the "
            "MCP server differently to offer it") in caplog.text
