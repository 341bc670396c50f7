"""The agent runtime in this process, with real agent processes, where a test needs a setting of its own: one
place only (a run waiting for it can be cancelled), the kernel stopping with agents running, an interpreter that
does not exist, a server stopping while a poll waits for a run. These agents make no syscalls."""

from __future__ import annotations

import asyncio
import sys
import threading
from pathlib import Path

import httpx

from aios.access.manager import AccessManager
from aios.agents.runtime import AgentRuntime
from aios.config import AccessConfig, AgentsConfig, load_config
from aios.kernel import Kernel
from conftest import served_in_thread, wait_until
from test_agents import AGENTS


def runtime(tmp_path: Path, **settings: object) -> AgentRuntime:
    agents = AgentRuntime(AgentsConfig(**settings), tmp_path, AccessManager(AccessConfig(), tmp_path))
    agents.kernel_url = "http://127.0.0.1:9"  # nothing listens: these agents make no syscalls
    return agents


def test_a_run_waiting_for_a_place_can_be_cancelled_and_the_kernel_stopping_ends_the_rest(tmp_path: Path) -> None:
    async def scenario() -> None:
        agents = runtime(tmp_path, max_concurrent=1)
        hanging = await agents.submit(str(AGENTS / "sleeper"), "", None)
        waiting = await agents.submit(str(AGENTS / "echo"), "later", None)
        assert waiting.status == "running" and waiting.pid is None  # no place yet
        agents.cancel(waiting)
        await waiting.ended.wait()
        assert waiting.status == "failed" and waiting.error == "cancelled" and waiting.pid is None
        await agents.close()
        assert hanging.status == "failed" and hanging.error == "the kernel stopped" and hanging.exit_code == -9
        await agents.access.close()

    asyncio.run(scenario())


def test_the_configured_interpreter_runs_the_agents(tmp_path: Path) -> None:
    async def scenario() -> tuple[str, str | None, str, str | None]:
        agents = runtime(tmp_path / "own", python=sys.executable)
        done = await agents.submit(str(AGENTS / "echo"), "hi", None)
        await done.ended.wait()
        missing = runtime(tmp_path / "missing", python=str(tmp_path / "no-python"))
        failed = await missing.submit(str(AGENTS / "echo"), "hi", None)
        await failed.ended.wait()
        await agents.access.close()
        await missing.access.close()
        return done.status, done.error, failed.status, failed.error

    done, no_error, failed, error = asyncio.run(scenario())
    assert done == "completed" and no_error is None
    assert failed == "failed" and error is not None and error.startswith("the agent process could not start: ")
    assert "no-python" in error


def test_a_long_poll_for_a_run_answers_when_the_kernel_stops(tmp_path: Path) -> None:
    """The server waits for every open request before it stops: `GET /agents/{id}/status?wait=60` on a run that
    never ends must not hold the kernel's exit. The poll answers with the run ended by the stop (a poll held to
    its minute would answer "running")."""
    (tmp_path / "config.yaml").write_text("{}\n")
    kernel = Kernel(load_config(tmp_path / "config.yaml", env={"AIOS_DATA_DIR": str(tmp_path)}), [])
    reply: list[httpx.Response | Exception] = []

    def poll(url: str, execution_id: int) -> None:
        try:
            reply.append(httpx.get(f"{url}/agents/{execution_id}/status", params={"wait": 60}, timeout=120))
        except Exception as exc:  # shown by the assertion below
            reply.append(exc)

    with served_in_thread(kernel) as url:
        submitted = httpx.post(f"{url}/agents/submit", json={"agent_id": str(AGENTS / "sleeper"),
                                                             "agent_config": {"task": ""}}, timeout=60)
        execution = kernel.agents.get(submitted.json()["execution_id"], None)
        polling = threading.Thread(target=poll, args=(url, execution.id))
        polling.start()
        # The poll is held by the kernel once it waits on the run's end (asyncio keeps an event's waiters).
        wait_until(lambda: execution.ended._waiters)
    polling.join(120)
    (answer,) = reply
    assert isinstance(answer, httpx.Response) and answer.status_code == 200, answer
    assert answer.json() == {"status": "failed", "result": None, "execution_id": execution.id,
                             "error": "the kernel stopped", "exit_code": -9}
