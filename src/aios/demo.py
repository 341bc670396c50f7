"""``aios demo``: a kernel on the embedded model, six agents running at once through the SDK (chat, JSON, a
tool call, a tool the kernel runs, one keeping versioned files, one remembering across runs), and a report."""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass
from typing import Any, Callable

from rich.console import Console
from rich.table import Table

from aios.agents import archivist, calculator, chat, extractor, rememberer, weather
from aios.kernel import Kernel
from aios.sdk import AIOSError, LLMResponse, MemoryResponse, StorageResponse, ToolResponse
from aios.server import serve


@dataclass(frozen=True)
class DemoTask:
    agent: str
    task: str
    run: Callable[[str, str], Any]  # an LLMResponse, StorageResponse, ToolResponse or MemoryResponse


TASKS = [
    DemoTask(chat.AGENT_NAME, "What is the capital of France?", chat.run),
    DemoTask(extractor.AGENT_NAME, "I spent a wonderful week in Rome, the capital of Italy.", extractor.run),
    DemoTask(weather.AGENT_NAME, "What is the weather like in Paris right now?", weather.run),
    DemoTask(calculator.AGENT_NAME, "What is 12 times 7?", calculator.run),
    DemoTask(archivist.AGENT_NAME, "Where did I want to see cherry blossoms?", archivist.run),
    DemoTask(rememberer.AGENT_NAME, "What did I learn in earlier runs?", rememberer.run),
]


async def run_demo(kernel: Kernel, console: Console | None = None) -> int:
    """Serve ``kernel`` on a free loopback port, run the agents concurrently, print results; exit status."""
    console = console or Console()
    ready: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    shutdown = asyncio.Event()
    server = asyncio.create_task(serve(kernel, "127.0.0.1", 0, ready.set_result, shutdown))
    url = await ready
    console.print(f"kernel ready at {url}; running {len(TASKS)} agents concurrently…")
    started = time.time()
    replies = await asyncio.gather(*(asyncio.to_thread(t.run, t.task, url) for t in TASKS), return_exceptions=True)
    wall = time.time() - started
    shutdown.set()
    await server
    console.print(_report(replies))
    console.print(f"all agents done in {wall:.1f} s")
    return 1 if any(isinstance(r, BaseException) for r in replies) else 0


def _report(replies: list[LLMResponse | StorageResponse | ToolResponse | MemoryResponse | BaseException]) -> Table:
    table = Table(title="agents", show_lines=True)
    for column in ("agent", "task", "result", "waiting s", "turnaround s"):
        table.add_column(column, overflow="fold")
    for task, reply in zip(TASKS, replies):
        if isinstance(reply, BaseException):
            table.add_row(task.agent, task.task, f"[red]{_error(reply)}[/red]", "-", "-")
            continue
        timings = reply.timings
        table.add_row(task.agent, task.task, _result(reply), f"{timings.waiting:.2f}", f"{timings.turnaround:.2f}")
    return table


def _result(reply: LLMResponse | StorageResponse | ToolResponse | MemoryResponse) -> str:
    if isinstance(reply, StorageResponse):
        return reply.message or ""
    if isinstance(reply, ToolResponse):
        return "\n".join(f"ran {r.name}({json.dumps(r.parameters)}) = {json.dumps(r.result)}" for r in reply.results)
    if isinstance(reply, MemoryResponse):
        return reply.content or ""
    if reply.tool_calls:
        return "\n".join(f"call {c.name}({json.dumps(c.parameters)})" for c in reply.tool_calls)
    return reply.response_message or ""


def _error(exc: BaseException) -> str:
    return str(exc) if isinstance(exc, AIOSError) else f"{type(exc).__name__}: {exc}"
