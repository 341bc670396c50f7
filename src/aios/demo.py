"""``aios demo``: a kernel on the embedded model, and the six example agents submitted to it at once through
``/agents/submit``, each in a process of its own (chat, JSON, a tool call, a tool the kernel runs, one keeping
versioned files, one remembering across runs), and a report of what each returned."""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from rich.console import Console
from rich.table import Table

from aios.kernel import Kernel
from aios.sdk import AgentStatus, submit_agent, wait_agent
from aios.server import serve


@dataclass(frozen=True)
class DemoTask:
    agent: str  # an agent_id: the example packages in src/aios/agents/
    task: str


TASKS = [
    DemoTask("example/chat", "What is the capital of France?"),
    DemoTask("example/extractor", "I spent a wonderful week in Rome, the capital of Italy."),
    DemoTask("example/weather", "What is the weather like in Paris right now?"),
    DemoTask("example/calculator", "What is 12 times 7?"),
    DemoTask("example/archivist", "Where did I want to see cherry blossoms?"),
    DemoTask("example/rememberer", "What did I learn in earlier runs?"),
]


def run_task(task: DemoTask, url: str) -> AgentStatus:
    return wait_agent(submit_agent(task.agent, task.task, url), url)


async def run_demo(kernel: Kernel, console: Console | None = None) -> int:
    """Serve ``kernel`` on a free loopback port, run the agents concurrently, print results; exit status."""
    console = console or Console()
    ready: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    shutdown = asyncio.Event()
    server = asyncio.create_task(serve(kernel, "127.0.0.1", 0, ready.set_result, shutdown))
    url = await ready
    console.print(f"kernel ready at {url}; running {len(TASKS)} agents concurrently…")
    started = time.time()
    # Threads of the demo's own for its blocking clients: the kernel in this process needs the loop's default
    # executor for its own work (reading packages) while they wait.
    loop = asyncio.get_running_loop()
    with ThreadPoolExecutor(max_workers=len(TASKS), thread_name_prefix="demo") as clients:
        replies = await asyncio.gather(*(loop.run_in_executor(clients, run_task, t, url) for t in TASKS),
                                       return_exceptions=True)
    wall = time.time() - started
    shutdown.set()
    await server
    console.print(_report(replies))
    console.print(f"all agents done in {wall:.1f} s")
    return 0 if all(isinstance(r, AgentStatus) and r.status == "completed" for r in replies) else 1


def _report(replies: list[AgentStatus | BaseException]) -> Table:
    table = Table(title="agents", show_lines=True)
    for column in ("agent", "task", "result", "waiting s", "turnaround s"):
        table.add_column(column, overflow="fold")
    for task, reply in zip(TASKS, replies):
        if isinstance(reply, BaseException) or reply.status != "completed":
            error = f"{type(reply).__name__}: {reply}" if isinstance(reply, BaseException) else reply.error
            table.add_row(task.agent, task.task, f"[red]{error}[/red]", "-", "-")
            continue
        result = reply.result
        table.add_row(task.agent, task.task, result["result"], f"{result['waiting_s']:.2f}",
                      f"{result['turnaround_s']:.2f}")
    return table
