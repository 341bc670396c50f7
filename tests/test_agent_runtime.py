"""The agent runtime in this process, with real agent processes, where a test needs a setting of its own: one
place only (a run waiting for it can be cancelled), the kernel stopping with agents running, an interpreter that
does not exist, a server stopping while a poll waits for a run. These agents make no syscalls."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

from typing import Any

import httpx
import pytest

from aios.access.manager import AccessManager
from aios.agents import runtime as runtime_module
from aios.agents.runtime import AgentRuntime
from aios.agents.sandbox import abi_version
from aios.config import AccessConfig, AgentsConfig, load_config
from aios.errors import Conflict, NotFound, Unavailable
from aios.kernel import Kernel
from conftest import served_in_thread, wait_until
from storage_support import file_permissions_bind
from test_agents import AGENTS, _child_pid, _ends, _returner, runs_on_disk, writable_by_agents  # noqa: F401 (a fixture)


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
        await agents.cancel(waiting)
        assert waiting.status == "failed" and waiting.error == "cancelled" and waiting.pid is None
        await agents.close()
        assert hanging.status == "failed" and hanging.error == "the kernel stopped" and hanging.exit_code == -9
        await agents.access.close()

    asyncio.run(scenario())


def test_a_stopping_kernel_starts_no_more_runs_and_ends_those_waiting_for_a_place(tmp_path: Path) -> None:
    """Once the kernel begins to stop, a submission is refused (503), saying so, rather than started and waited
    for until its time limit; so is one whose package was still being read when the stop began (and it leaves no
    folder). A run that was waiting for a place ends as the kernel stopped, having never started: no exit code."""
    async def scenario() -> None:
        agents = runtime(tmp_path, max_concurrent=1)
        hanging = await agents.submit(str(AGENTS / "sleeper"), "", None)
        waiting = await agents.submit(str(AGENTS / "echo"), "later", None)
        reading, release = threading.Event(), threading.Event()
        prepare = agents._prepare

        def held(*args: Any) -> Any:
            reading.set()
            release.wait(30)
            return prepare(*args)

        agents._prepare = held  # type: ignore[method-assign]
        reading_late = asyncio.ensure_future(agents.submit(str(AGENTS / "echo"), "read late", None))
        await asyncio.to_thread(reading.wait, 30)
        closing = asyncio.ensure_future(agents.close())
        await asyncio.sleep(0)  # close() runs up to its wait for the runs' ends
        with pytest.raises(Unavailable, match="^the kernel is stopping: it starts no more agent runs$"):
            await agents.submit(str(AGENTS / "echo"), "new", None)
        release.set()
        with pytest.raises(Unavailable, match="^the kernel is stopping"):
            await reading_late
        await asyncio.wait_for(closing, 60)
        assert (hanging.status, hanging.error, hanging.exit_code) == ("failed", "the kernel stopped", -9)
        assert (waiting.status, waiting.error, waiting.exit_code, waiting.pid) == (
            "failed", "the kernel stopped", None, None)
        assert runs_on_disk(tmp_path) == [str(hanging.id), str(waiting.id)]
        await agents.access.close()

    asyncio.run(scenario())


KILLABLE_KERNEL = """
import asyncio, sys
from pathlib import Path
from aios.access.manager import AccessManager
from aios.agents.runtime import AgentRuntime
from aios.config import AccessConfig, AgentsConfig

async def main(data, agent, task):
    agents = AgentRuntime(AgentsConfig(), data, AccessManager(AccessConfig(), data))
    agents.kernel_url = "http://127.0.0.1:9"
    await agents.submit(agent, task, None)
    await asyncio.Event().wait()

asyncio.run(main(Path(sys.argv[1]), sys.argv[2], sys.argv[3]))
"""


@pytest.mark.skipif(sys.platform != "linux", reason="a process is told of its parent's death on Linux")
def test_an_agent_dies_with_a_kernel_killed_by_sigkill(tmp_path: Path, writable_by_agents: Path) -> None:
    """A kernel killed outright cannot end its runs; their processes, in sessions of their own, would run on
    with nobody to end them or read what they return. Each is killed with the kernel (confined, as by default)."""
    fifo = writable_by_agents / "pid.fifo"
    os.mkfifo(fifo)
    kernel = subprocess.Popen([sys.executable, "-c", KILLABLE_KERNEL, str(tmp_path), str(AGENTS / "sleeper"),
                               str(fifo)])
    left: list[int] = []
    try:
        child = _child_pid(fifo)  # the sleeper runs: the pid of the child it started
        left.append(child)
        agent = _parent_of(child)
        left.append(agent)
        kernel.kill()
        kernel.wait()
        assert _ends(agent)
    finally:
        kernel.kill()
        kernel.wait()
        for pid in left:  # the agent's own children are not killed with it: only the agent is told
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def _parent_of(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(status.split("\nPPid:")[1].split()[0])


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


def test_the_results_of_runs_that_ended_before_the_last_are_read_back_from_their_folders(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A result may be 16 MB of JSON, hundreds of MB as Python objects: the kernel keeps in memory the results of
    the runs that ended last, up to a bound, and reads an older one back from the status its run saved. Asking
    for it answers the same either way."""
    monkeypatch.setattr(runtime_module, "RESULTS_IN_MEMORY_BYTES", 250)  # one result of 202 bytes
    (tmp_path / "config.yaml").write_text("{}\n")
    kernel = Kernel(load_config(tmp_path / "config.yaml", env={"AIOS_DATA_DIR": str(tmp_path)}), [])
    agent = str(_returner(tmp_path))

    def ended(client: httpx.Client, task: str) -> dict[str, Any]:
        execution_id = client.post("/agents/submit", json={"agent_id": agent, "agent_config": {"task": task}}
                                   ).json()["execution_id"]
        return client.get(f"/agents/{execution_id}/status", params={"wait": 60}).json()

    with served_in_thread(kernel) as url, httpx.Client(base_url=url, timeout=120) as client:
        first, second = ended(client, "'1' * 200"), ended(client, "'2' * 200")  # one after the other
        again = client.get(f"/agents/{first['execution_id']}/status").json()
        in_memory = [kernel.agents.get(run["execution_id"], None).result for run in (first, second)]
    assert (first["result"], second["result"], again["result"]) == ("1" * 200, "2" * 200, "1" * 200)
    assert in_memory == [None, "2" * 200]  # the first left memory when the second ended


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
    comes while the kernel still waits for that output changes nothing and says so: the agent had ended."""
    monkeypatch.setattr(runtime_module, "OUTPUT_GRACE_S", 0.5)
    outputs_end = runtime_module._outputs_end
    pid_files: list[Path] = []  # in the run's folder, where a confined agent may write

    async def scenario() -> Any:
        exited = asyncio.Event()

        async def exited_then_outputs_end(kept: list[asyncio.Task[None]]) -> None:
            exited.set()
            await outputs_end(kept)

        monkeypatch.setattr(runtime_module, "_outputs_end", exited_then_outputs_end)
        agents = runtime(tmp_path)
        run = await agents.submit(str(AGENTS / "chatty"), json.dumps({"lines": 2, "daemon": "daemon.pid"}), None)
        pid_files.append(run.folder / "work" / "daemon.pid")  # in its cwd
        await exited.wait()
        with pytest.raises(Conflict, match=f"^agent execution {run.id} has already completed$"):
            await agents.cancel(run)
        await agents.access.close()
        return run

    try:
        run = asyncio.run(scenario())
        assert (run.status, run.result, run.exit_code) == ("completed", "said", 0)
        assert (run.folder / "stdout.log").read_text().endswith("line 000001 of what this agent has to say\nthe end\n")
    finally:
        for pid_file in pid_files:
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
        await agents.cancel(hanging)
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


def test_a_deleted_run_s_folder_goes_with_the_folders_its_agent_made_read_only(tmp_path: Path) -> None:
    """With agents.keep_runs 1, the run before the last is deleted: its agent had left a read-only folder in a
    read-only folder, and one nobody may read. They go too (as for an ordinary user, root's rights dropped); a
    folder of the kernel's that a link there leads to is left as it was."""
    kernels = tmp_path / "kernels"
    kernels.mkdir()
    (kernels / "keep").write_text("x")
    kernels.chmod(0o500)
    os_ = "__import__('os')"
    returns = (f"[{os_}.makedirs('locked/inner'), open('locked/inner/big', 'w').write('x'), "
               f"{os_}.chmod('locked/inner', 0o500), {os_}.chmod('locked', 0o500), {os_}.makedirs('sealed/in'), "
               f"{os_}.chmod('sealed', 0), {os_}.symlink({str(kernels)!r}, 'link')] and 'made'")

    async def scenario() -> Any:
        agents = runtime(tmp_path / "data", keep_runs=1)
        first = await agents.submit(str(_returner(tmp_path)), returns, None)
        await first.ended.wait()
        second = await agents.submit(str(AGENTS / "echo"), "next", None)
        await second.ended.wait()
        await asyncio.gather(*agents._tasks)  # the deletion, in a thread
        await agents.access.close()
        return first

    try:
        with file_permissions_bind():  # this thread and those it starts: the deletion's
            first = asyncio.run(scenario())
        assert first.result == "made", first.error
        assert runs_on_disk(tmp_path / "data") == ["2"]  # nothing half deleted is left
        assert (kernels / "keep").exists() and stat.S_IMODE(kernels.stat().st_mode) == 0o500
    finally:
        kernels.chmod(0o700)


def _ended(agents: AgentRuntime, agent: str, task: str) -> tuple[Any, dict[str, Any]]:
    """A run of ``agent`` once it ended (bounded: a run that never settles fails the test), and its saved status."""
    async def scenario() -> Any:
        run = await agents.submit(str(AGENTS / agent), task, None)
        await asyncio.wait_for(run.ended.wait(), 120)
        await agents.access.close()
        return run

    run = asyncio.run(scenario())
    return run, json.loads((run.folder / "status.json").read_text())


@pytest.mark.parametrize(("number", "error"), [
    (int(signal.SIGTERM), "the agent process was killed by SIGTERM"),
    (40, "the agent process was killed by signal 40"),  # real-time: no name of its own
], ids=["named", "real-time"])
def test_a_run_killed_by_a_signal_ends_saying_which(tmp_path: Path, number: int, error: str) -> None:
    run, saved = _ended(runtime(tmp_path), "quitter", f"signal {number}")
    assert (run.status, run.error, run.exit_code) == ("failed", error, -number)
    assert (saved["status"], saved["error"]) == ("failed", error)


def test_a_run_whose_end_cannot_be_told_still_ends_failed_and_saved(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(code: int | None) -> str:
        raise RuntimeError("no words for it")

    monkeypatch.setattr(runtime_module, "_exit_reason", broken)
    run, saved = _ended(runtime(tmp_path), "quitter", "go")
    said = "the kernel could not tell how the run ended (see its log)"
    assert (run.status, run.error, run.exit_code) == ("failed", said, 3)
    assert (saved["status"], saved["error"]) == ("failed", said)


@pytest.mark.parametrize("sandbox", ["auto", "off"])
def test_a_confined_agent_reads_and_writes_only_what_is_its_own(tmp_path: Path, sandbox: str) -> None:
    """Confined (the default, where the system has Landlock), an agent cannot read the kernel's data folder (the
    administrator's token lies there, and every agent's files), write outside its run folder, or read the
    kernel's environment; what it starts cannot either. It still reads the system, imports the SDK and writes
    its temporary files. With ``sandbox: off`` it can do all of that."""
    data = tmp_path / "data"
    secret = data / "access" / "secret.txt"
    secret.parent.mkdir(parents=True)
    secret.write_text("the administrator's token")
    outside = tmp_path / "outside.txt"
    # As the user's D-Bus, whose services start programs; in a short folder (a socket's path is 107 bytes at most).
    bus = Path(tempfile.mkdtemp(prefix="aios-bus-")) / "bus"
    session_bus = socket.socket(socket.AF_UNIX)
    session_bus.bind(str(bus))
    session_bus.listen()
    task = {"read": [str(secret), "/etc/passwd", f"/proc/{os.getpid()}/environ"],
            "write": [str(outside), "mine.txt"], "link": [[str(secret), "../planted.log"]],
            "run": [["cat", str(secret)]], "temp": True, "import": ["aios.sdk"], "signal": os.getpid(),
            "connect": str(bus)}
    try:
        run, _ = _ended(runtime(data, sandbox=sandbox), "prober", json.dumps(task))
    finally:
        session_bus.close()
        shutil.rmtree(bus.parent)
    assert run.status == "completed", run.error
    confined = sandbox == "auto" and abi_version() > 0
    denied = "PermissionError" if confined else "ok"
    assert run.result == {
        f"read {secret}": denied, "read /etc/passwd": "ok", f"read /proc/{os.getpid()}/environ": denied,
        f"write {outside}": denied, "write mine.txt": "ok", "link ../planted.log": denied,
        f"run cat {secret}": "exit 1" if confined else "ok", "temp": "ok", "import aios.sdk": "ok",
        # signals to processes outside (the kernel) are scoped from Landlock's ABI 6
        "signal": "PermissionError" if confined and abi_version() >= 6 else "ok", "connect": denied}
    assert (run.folder / "work" / "mine.txt").read_text() == "x"  # its own folder, its cwd
    unconfined = "this agent runs unconfined" in (run.folder / "stderr.log").read_text()
    assert unconfined == (sandbox == "auto" and not confined)


@pytest.mark.parametrize(("env", "expected"), [
    (None, {"PATH": "set", "LC_ALL": "set", "OPENAI_API_KEY": "unset", "MY_AGENT_SETTING": "unset"}),
    (["PATH", "MY_*"], {"PATH": "set", "LC_ALL": "unset", "OPENAI_API_KEY": "unset", "MY_AGENT_SETTING": "set"}),
    (["*"], {"PATH": "set", "LC_ALL": "set", "OPENAI_API_KEY": "set", "MY_AGENT_SETTING": "set"}),
], ids=["default", "named", "all"])
def test_an_agent_gets_only_the_environment_variables_agents_env_names(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, env: list[str] | None, expected: dict[str, str]) -> None:
    """A provider's key in the kernel's environment is not an agent's business (a hub agent is someone else's
    code); what programs need to run passes. The kernel's own variables never do; the agent's identity always."""
    for name, value in {"LC_ALL": "C.UTF-8", "OPENAI_API_KEY": "sk-the-users", "MY_AGENT_SETTING": "on",
                        "AIOS_ADMIN_TOKEN": "the administrator's"}.items():
        monkeypatch.setenv(name, value)
    names = [*expected, "AIOS_ADMIN_TOKEN", "AIOS_TOKEN", "AIOS_KERNEL_URL"]
    run, _ = _ended(runtime(tmp_path, **({} if env is None else {"env": env})), "prober", json.dumps({"env": names}))
    assert run.status == "completed", run.error
    assert run.result == {f"env {name}": state for name, state in
                          {**expected, "AIOS_ADMIN_TOKEN": "unset", "AIOS_TOKEN": "set", "AIOS_KERNEL_URL": "set"}.items()}


def test_a_result_the_agent_links_to_a_file_of_the_kernels_is_not_read(tmp_path: Path) -> None:
    """The agent's folder is its own to write, links included: a result.json that is a link to a file of the
    kernel's (one that happens to read as a result) is not followed. The run ended without a result of its own."""
    data = tmp_path / "data"
    secret = data / "access" / "secret.json"
    secret.parent.mkdir(parents=True)
    secret.write_text(json.dumps({"result": "the administrator's token"}))
    task = {"link": [[str(secret), "result.json"]], "exit": True}
    run, saved = _ended(runtime(data), "prober", json.dumps(task))
    assert (run.status, run.result, run.exit_code) == ("failed", None, 0)
    assert saved["result"] is None and "before returning a result" in run.error


def test_a_result_past_the_bound_is_not_read(tmp_path: Path) -> None:
    """A sparse result.json of a terabyte costs the agent nothing on disk, and would hold the kernel up reading it
    (and then its memory): no more than the bound is read, and the run fails saying why."""
    task = {"result_bytes": 1 << 40, "exit": True}
    run, saved = _ended(runtime(tmp_path), "prober", json.dumps(task))
    assert (run.status, run.result) == ("failed", None)
    assert run.error == saved["error"] == "the agent's result is more than the 16 MB of JSON a run may return"
