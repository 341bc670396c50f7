"""The agent runtime in this process, with real agent processes, where a test needs a setting of its own: one
place only (a run waiting for it can be cancelled), the kernel stopping with agents running, an interpreter that
does not exist, a server stopping while a poll waits for a run. These agents make no syscalls."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import threading
from pathlib import Path

from typing import Any

import httpx
import pytest

from aios.access.manager import AccessManager
from aios.agents import runtime as runtime_module
from aios.agents.runtime import AgentRuntime
from aios.config import AccessConfig, AgentsConfig, load_config
from aios.errors import NotFound
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


def test_ended_runs_are_read_back_from_their_folders_after_a_restart_and_past_the_memory_bound(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A run's status is saved in its folder when it ends: the kernel keeps only the last ended runs in memory,
    and a new start of the kernel still answers for the runs of the one before. A run that an earlier kernel
    never ended (it was killed) reads as failed."""
    monkeypatch.setattr(runtime_module, "RUNS_IN_MEMORY", 2)

    async def first_start() -> list[int]:
        agents = runtime(tmp_path)
        runs = [await agents.submit(str(AGENTS / "echo"), f"task {n}", None) for n in range(3)]
        for run in runs:
            await run.ended.wait()
        assert sorted(agents._runs) == [runs[1].id, runs[2].id]  # the oldest ended run left memory
        kept = agents.get(runs[0].id, None)
        assert (kept.status, kept.result["task"], kept.task) == ("completed", "task 0", "task 0")
        await agents.access.close()
        return [run.id for run in runs]

    ids = asyncio.run(first_start())
    (tmp_path / "agents" / "runs" / str(ids[2]) / "status.json").unlink()  # as if its kernel had been killed

    async def second_start() -> list[tuple[str, Any, str | None]]:
        agents = runtime(tmp_path)
        statuses = [agents.get(i, None) for i in ids]
        with pytest.raises(NotFound, match="no agent execution 99"):
            agents.get(99, None)
        await agents.access.close()
        return [(e.status, (e.result or {}).get("task"), e.error) for e in statuses]

    assert asyncio.run(second_start()) == [("completed", "task 0", None), ("completed", "task 1", None),
                                           ("failed", None, "the kernel stopped while it ran")]


def test_a_run_keeps_the_start_and_the_end_of_an_output_longer_than_its_bound(tmp_path: Path) -> None:
    """An agent that prints 300 KB under a 16 KB bound: its log keeps the first 8 KB as they came and the last
    8 KB (with the last line), says how many bytes it dropped between, and the agent ran to its end."""
    lines = 7000
    said = "".join(f"line {n:06d} of what this agent has to say\n" for n in range(lines)) + "the end\n"

    async def scenario() -> Any:
        agents = runtime(tmp_path, max_log_mb=16 / 1024)
        run = await agents.submit(str(AGENTS / "chatty"), json.dumps({"lines": lines}), None)
        await run.ended.wait()
        await agents.access.close()
        return run

    run = asyncio.run(scenario())
    assert (run.status, run.result) == ("completed", "said")
    kept = (run.folder / "stdout.log").read_text()
    head, marker, tail = kept.partition("\n[aios: ")
    assert head == said[:8192]
    dropped = len(said) - 2 * 8192
    assert marker and tail.startswith(f"{dropped} bytes of output dropped here; a run keeps its first 8192 and "
                                      "last 8192 bytes (agents.max_log_mb)]\n")
    assert tail.endswith(said[-8192:]) and kept.endswith("the end\n")
    assert (run.folder / "stderr.log").read_text() == "an error line\n"  # under the bound: all of it


def test_a_daemon_that_holds_an_agents_output_open_does_not_hold_its_run(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The agent returns having started a process in a session of its own (which the kernel does not kill)
    that keeps its stdout and stderr open: the run still ends, completed, with its output kept. A cancel that
    comes while the kernel still waits for that output changes nothing: the agent had ended."""
    monkeypatch.setattr(runtime_module, "OUTPUT_GRACE_S", 0.5)
    pid_file = tmp_path / "daemon.pid"
    outputs_end = runtime_module._outputs_end

    async def scenario() -> Any:
        exited = asyncio.Event()

        async def exited_then_outputs_end(kept: list[asyncio.Task[None]]) -> None:
            exited.set()
            await outputs_end(kept)

        monkeypatch.setattr(runtime_module, "_outputs_end", exited_then_outputs_end)
        agents = runtime(tmp_path)
        run = await agents.submit(str(AGENTS / "chatty"), json.dumps({"lines": 2, "daemon": str(pid_file)}), None)
        await exited.wait()
        agents.cancel(run)
        await run.ended.wait()
        await agents.access.close()
        return run

    try:
        run = asyncio.run(scenario())
        assert (run.status, run.result, run.exit_code) == ("completed", "said", 0)
        assert (run.folder / "stdout.log").read_text().endswith("line 000001 of what this agent has to say\nthe end\n")
    finally:
        os.kill(int(pid_file.read_text()), signal.SIGKILL)


def test_the_folders_of_the_runs_that_ended_first_are_deleted_past_keep_runs(tmp_path: Path) -> None:
    """With agents.keep_runs 2: run 1 hangs while runs 2 and 3 end, then it is cancelled: it ended last, so it
    is run 2's folder that goes, and asking for run 2 says so. A kernel started with keep_runs 1 keeps only run 1,
    whose end is the newest."""
    async def first_start() -> list[Path]:
        agents = runtime(tmp_path, keep_runs=2)
        hanging = await agents.submit(str(AGENTS / "sleeper"), "", None)
        runs = [hanging]
        for n in (2, 3):
            runs.append(await agents.submit(str(AGENTS / "echo"), f"task {n}", None))
            await runs[-1].ended.wait()
        agents.cancel(hanging)
        await hanging.ended.wait()
        await asyncio.gather(*agents._tasks)  # the deletion, in a thread
        with pytest.raises(NotFound, match=r"agent execution 2 was deleted: the kernel keeps the folders of the 2 "
                                           r"runs that ended last \(agents.keep_runs\)"):
            agents.get(2, None)
        assert (agents.get(1, None).error, agents.get(3, None).result["task"]) == ("cancelled", "task 3")
        await agents.access.close()
        return [run.folder for run in runs]

    folders = asyncio.run(first_start())
    assert [folder.exists() for folder in folders] == [True, False, True]
    assert sorted(p.name for p in folders[0].parent.iterdir()) == ["1", "3"]  # nothing half deleted is left

    async def second_start() -> None:
        agents = runtime(tmp_path, keep_runs=1)
        with pytest.raises(NotFound, match="agent execution 3 was deleted: the kernel keeps the folders of the 1 run "
                                           "that ended last"):
            agents.get(3, None)
        assert agents.get(1, None).error == "cancelled"
        await agents.access.close()

    asyncio.run(second_start())
    assert [folder.exists() for folder in folders] == [True, False, False]
