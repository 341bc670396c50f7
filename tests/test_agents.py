"""Agents the kernel runs: real agent processes submitted over real HTTP to a real kernel (``/agents/*`` in
AIOS's shapes), the SDK functions and the ``aios run-agent`` / ``aios agents`` commands."""

from __future__ import annotations

import asyncio
import datetime
import decimal
import json
import os
import select
import shutil
import subprocess
import sys
import tarfile
import tempfile
import threading
import types
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pydantic
import pytest

from aios.access.manager import AccessManager
from aios.agents.runtime import AgentRuntime
from aios.agents.sandbox import abi_version
from aios.config import AccessConfig, AgentsConfig
from aios.errors import Forbidden, NotFound
from conftest import KernelProcess
from test_cli import aios

AGENTS = Path(__file__).parent / "fixtures" / "agents"


def submit(kernel: KernelProcess, agent_id: str | Path, task: str = "", **config: Any) -> int:
    reply = kernel.client.post("/agents/submit", json={"agent_id": str(agent_id), "agent_config": {"task": task, **config}})
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert body["status"] == "success" and body["message"] == f"Agent {agent_id} submitted for execution"
    return body["execution_id"]


def finished(kernel: KernelProcess, execution_id: int) -> dict[str, Any]:
    """The run's status once it ended: each request waits on the kernel until it does (no sleeping here)."""
    while True:
        status = kernel.client.get(f"/agents/{execution_id}/status", params={"wait": 60}).json()
        if status["status"] != "running":
            return status


def runs_on_disk(kernel_data: Path) -> list[str]:
    runs = kernel_data / "agents" / "runs"
    return sorted(p.name for p in runs.iterdir()) if runs.is_dir() else []


def test_an_agent_runs_in_its_own_process_with_its_identity_and_logs(kernel: KernelProcess) -> None:
    execution_id = submit(kernel, AGENTS / "echo", "hello")
    status = finished(kernel, execution_id)
    assert status["status"] == "completed" and status["execution_id"] == execution_id
    result = status["result"]
    assert result["task"] == "hello" and result["agent_name"] == "tests/echo"
    env = result["env"]
    assert env["AIOS_KERNEL_URL"] == kernel.url and env["AIOS_TOKEN"].startswith("aios_run_")
    assert env["CEREBRUM_KERNEL_URL"] == f"{kernel.url}/as/{env['AIOS_TOKEN']}"
    assert result["cwd"].endswith(f"agents/runs/{execution_id}/work")  # its own folder in its run's
    logs = kernel.client.get(f"/agents/{execution_id}/logs").json()
    assert logs["stdout"] == "stdout of tests/echo: hello\n" and logs["stderr"] == "stderr of tests/echo\n"
    listed = kernel.client.get("/agents/ps").json()
    assert listed["status"] == "success" and listed["count"] == len(listed["processes"])
    (process,) = [p for p in listed["processes"] if p["execution_id"] == execution_id]
    assert process["status"] == "completed" and process["exit_code"] == 0 and process["pid"] > 0
    assert process["agent_name"] == "tests/echo" and process["task"] == "hello"
    # the run token ended with the process: it identifies nobody now
    assert kernel.client.get("/tools", headers={"Authorization": f"Bearer {env['AIOS_TOKEN']}"}).status_code == 401


@pytest.mark.parametrize(("agent", "error", "exit_code", "in_stderr"), [
    ("crasher", "the agent's run() raised RuntimeError: boom: go", 1, "RuntimeError: boom: go"),
    ("quitter", "the agent process exited with code 3 before returning a result", 3, ""),
    ("broken", "the agent could not be loaded: ModuleNotFoundError: No module named 'a_module_nobody_installed'", 2,
     "ModuleNotFoundError"),
], ids=["crash", "exit-3", "import-error"])
def test_a_failing_agent_fails_alone_and_its_status_says_why(kernel: KernelProcess, agent: str, error: str,
                                                             exit_code: int, in_stderr: str) -> None:
    status = finished(kernel, submit(kernel, AGENTS / agent, "go"))
    assert status["status"] == "failed" and status["result"] is None
    assert status["error"] == error and status["exit_code"] == exit_code
    assert in_stderr in kernel.client.get(f"/agents/{status['execution_id']}/logs").json()["stderr"]
    assert kernel.client.get("/status").json()["status"] == "ok"  # the kernel is unharmed


def test_an_agent_past_its_time_limit_is_killed(kernel: KernelProcess) -> None:
    status = finished(kernel, submit(kernel, AGENTS / "sleeper", "", time_limit_s=2))
    assert status["status"] == "failed" and status["exit_code"] == -9
    assert status["error"] == "it ran past its time limit of 2 s and was killed"


def _child_pid(fifo: Path) -> int:
    """The pid the sleeper writes into the FIFO (opening it waits for the agent to open its end)."""
    box: list[str] = []
    reader = threading.Thread(target=lambda: box.append(fifo.read_text()), daemon=True)
    reader.start()
    reader.join(120)
    assert box, "the agent never wrote its child's pid"
    return int(box[0])


def _ends(pid: int) -> bool:
    """Whether process ``pid`` ends within a minute: its pidfd becomes readable when it does (no polling)."""
    try:
        handle = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    try:
        return bool(select.select([handle], [], [], 60)[0])
    finally:
        os.close(handle)


def test_status_says_what_confines_the_agents_processes(kernel: KernelProcess) -> None:
    version = abi_version()
    said = f"landlock (ABI {version})" if version else "none (this system has no Landlock)"
    assert kernel.client.get("/status").json()["agents"] == {"sandbox": said}


@pytest.fixture
def writable_by_agents(tmp_path: Path) -> Iterator[Path]:
    """A folder a confined agent may write in (see aios.agents.sandbox): in /dev/shm, where there is one."""
    shared = Path("/dev/shm")
    folder = Path(tempfile.mkdtemp(dir=shared)) if shared.is_dir() else tmp_path
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def test_cancel_kills_the_agent_and_its_children(kernel: KernelProcess, writable_by_agents: Path) -> None:
    fifo = writable_by_agents / "pid.fifo"
    os.mkfifo(fifo)
    execution_id = submit(kernel, AGENTS / "sleeper", str(fifo))
    child = _child_pid(fifo)
    assert kernel.client.get(f"/agents/{execution_id}/status").json()["status"] == "running"
    reply = kernel.client.post(f"/agents/{execution_id}/cancel")
    assert reply.status_code == 200 and reply.json()["status"] == "success"
    status = kernel.client.get(f"/agents/{execution_id}/status").json()
    assert status["status"] == "failed" and status["error"] == "cancelled" and status["exit_code"] == -9
    assert _ends(child)
    again = kernel.client.post(f"/agents/{execution_id}/cancel")
    assert again.status_code == 409 and again.json() == {"detail": f"agent execution {execution_id} has already failed"}


def test_twenty_agents_at_once_all_complete(kernel: KernelProcess) -> None:
    ids = [submit(kernel, AGENTS / ("asker" if n % 7 == 0 else "echo"), f"Say hello {n}") for n in range(20)]
    statuses = [finished(kernel, execution_id) for execution_id in ids]
    assert [s["status"] for s in statuses] == ["completed"] * 20, [s.get("error") for s in statuses]
    assert [s["result"]["task"] for n, s in enumerate(statuses) if n % 7] == [f"Say hello {n}" for n in range(20) if n % 7]
    assert all(isinstance(s["result"], str) and s["result"] for n, s in enumerate(statuses) if n % 7 == 0)
    processes = {p["execution_id"]: p for p in kernel.client.get("/agents/ps").json()["processes"]}
    assert len({processes[i]["pid"] for i in ids}) == 20  # twenty processes


def test_an_aios_sdk_agent_runs_unchanged_and_reads_the_kernel_s_refusals(kernel: KernelProcess) -> None:
    status = finished(kernel, submit(kernel, AGENTS / "aios_style", "What is the capital of France?"))
    assert status["status"] == "completed", status
    result = status["result"]
    assert result["agent_name"] == "tests/aios_style"
    assert result["answer"]["status_code"] == 200 and result["answer"]["response_message"]
    refused = result["refused"]  # HTTP 200 with the reason, so the AIOS SDK hands it over instead of raising
    assert refused["status_code"] == 404 and "no-such-model" in refused["error"]


def _pack(folder: Path, archive: Path, extra: tuple[str, Path] | None = None) -> Path:
    if archive.name.endswith(".zip"):
        with zipfile.ZipFile(archive, "w") as packed:
            for path in folder.iterdir():
                packed.write(path, f"{folder.name}/{path.name}")
            if extra:
                packed.writestr(extra[0], "print('escaped')")
    else:
        with tarfile.open(archive, "w:gz") as packed:
            packed.add(folder, folder.name)
            if extra:
                link = tarfile.TarInfo(extra[0])
                link.type, link.linkname = tarfile.SYMTYPE, str(extra[1])
                packed.addfile(link)
    return archive


@pytest.mark.parametrize("suffix", [".zip", ".tar.gz"])
def test_a_packed_agent_runs(kernel: KernelProcess, tmp_path: Path, suffix: str) -> None:
    archive = _pack(AGENTS / "echo", tmp_path / f"echo{suffix}")
    status = finished(kernel, submit(kernel, archive, "packed"))
    assert status["status"] == "completed" and status["result"]["task"] == "packed"


def test_an_agent_packed_from_inside_its_folder_runs(kernel: KernelProcess, tmp_path: Path) -> None:
    """The usual way to pack a folder, `tar -C echo -czf echo.tgz .`, names the members ./ and ./agent.py."""
    archive = tmp_path / "echo.tgz"
    subprocess.run(["tar", "-C", str(AGENTS / "echo"), "-czf", str(archive), "."], check=True)
    status = finished(kernel, submit(kernel, archive, "packed"))
    assert status["status"] == "completed" and status["result"]["task"] == "packed", status


@pytest.mark.parametrize(("suffix", "member", "problem"), [
    (".zip", "../evil.py", "member '../evil.py' is not a file inside the package (it climbs out with ..)"),
    (".zip", "/tmp/evil.py", "member '/tmp/evil.py' is not a file inside the package (it is an absolute path)"),
    (".tar.gz", "echo/passwd", "member 'echo/passwd' is a link or a special file"),
], ids=["zip-traversal", "zip-absolute", "tar-symlink"])
def test_a_malicious_archive_is_refused_before_anything_is_unpacked(kernel: KernelProcess, data_dir: Path,
                                                                    tmp_path: Path, suffix: str, member: str,
                                                                    problem: str) -> None:
    archive = _pack(AGENTS / "echo", tmp_path / f"evil{suffix}", (member, Path("/etc/passwd")))
    before = runs_on_disk(data_dir)
    reply = kernel.client.post("/agents/submit", json={"agent_id": str(archive), "agent_config": {"task": "x"}})
    assert reply.status_code == 400 and reply.json() == {"detail": f"{archive.name}: {problem}"}
    assert runs_on_disk(data_dir) == before and not Path("/tmp/evil.py").exists()


def _no_config(tmp_path: Path) -> str:
    (tmp_path / "empty").mkdir()
    return str(tmp_path / "empty")


def _with_config(tmp_path: Path, text: str) -> str:
    """The echo agent's folder with ``text`` for its config.json."""
    folder = tmp_path / "package"
    shutil.copytree(AGENTS / "echo", folder)
    (folder / "config.json").write_text(text)
    return str(folder)


def _echo_config(**changes: Any) -> str:
    return json.dumps({"name": "echo", "meta": {"author": "tests"}, "build": {"entry": "agent.py",
                                                                              "module": "EchoAgent"}, **changes})


def _empty(tmp_path: Path, name: str) -> str:
    """An archive of no members."""
    archive = tmp_path / name
    if name.endswith(".zip"):
        zipfile.ZipFile(archive, "w").close()
    else:
        tarfile.open(archive, "w").close()
    return str(archive)


BAD_SUBMISSIONS = [
    ("no-body", lambda t: None, 422, "body: Field required"),
    ("no-agent-id", lambda t: {"agent_config": {"task": "x"}}, 422, "body.agent_id: Field required"),
    ("empty-agent-id", lambda t: {"agent_id": "", "agent_config": {"task": "x"}}, 422,
     "body.agent_id: String should have at least 1 character"),
    ("no-task", lambda t: {"agent_id": "example/chat", "agent_config": {}}, 422, "body.agent_config.task: Field required"),
    ("task-not-text", lambda t: {"agent_id": "example/chat", "agent_config": {"task": 3}}, 422,
     "body.agent_config.task: Input should be a valid string"),
    ("zero-limit", lambda t: {"agent_id": "example/chat", "agent_config": {"task": "x", "time_limit_s": 0}}, 422,
     "body.agent_config.time_limit_s: Input should be greater than 0"),
    ("limit-as-text", lambda t: {"agent_id": "example/chat", "agent_config": {"task": "x", "time_limit_s": "5"}}, 422,
     "body.agent_config.time_limit_s: Input should be a valid number"),
    ("unknown-field", lambda t: {"agent_id": "example/chat", "agent_config": {"task": "x"}, "priority": 1}, 422,
     "body.priority: Extra inputs are not permitted"),
    ("unknown-hub-agent", lambda t: {"agent_id": "nobody/none", "agent_config": {"task": "x"}}, 404,
     "no agent nobody/none in the hub"),
    ("unknown-version", lambda t: {"agent_id": "example/chat/9.9", "agent_config": {"task": "x"}}, 404,
     "no agent example/chat in the hub"),
    ("not-an-id", lambda t: {"agent_id": "chat", "agent_config": {"task": "x"}}, 400,
     "agent_id 'chat' names no agent: give author/name[/version]"),
    ("missing-folder", lambda t: {"agent_id": "/no/such/agent", "agent_config": {"task": "x"}}, 404,
     "/no/such/agent: no agent folder or archive"),
    ("folder-without-config", lambda t: {"agent_id": _no_config(t), "agent_config": {"task": "x"}}, 400,
     "has no config.json"),
    ("config-nested-too-deeply", lambda t: {"agent_id": _with_config(t, "[" * 100_000 + "]" * 100_000),
                                            "agent_config": {"task": "x"}}, 400,
     "/package/config.json cannot be read as JSON: it is nested too deeply"),
    ("description-not-text", lambda t: {"agent_id": _with_config(t, json.dumps({
        "name": "echo", "description": ["ok", 1], "meta": {"author": "tests"},
        "build": {"entry": "agent.py", "module": "EchoAgent"}})), "agent_config": {"task": "x"}}, 400,
     "/package/config.json: 'description' must be a string or a list of strings, not [\"ok\", 1]"),
    # a name no reply can carry: every list of runs would fail to be sent
    ("name-not-unicode", lambda t: {"agent_id": _with_config(t, _echo_config(name="echo\ud800")),
                                    "agent_config": {"task": "x"}}, 400,
     "/package/config.json: name: not valid Unicode text (it holds a lone surrogate"),
    ("entry-name-too-long", lambda t: {"agent_id": _with_config(t, _echo_config(build={"entry": "a" * 300,
                                                                                       "module": "EchoAgent"})),
                                       "agent_config": {"task": "x"}}, 400, "cannot be a file: File name too long"),
    ("example-name-too-long", lambda t: {"agent_id": "example/" + "a" * 300, "agent_config": {"task": "x"}}, 404,
     "cannot name one"),
    ("path-name-too-long", lambda t: {"agent_id": "/" + "a" * 300, "agent_config": {"task": "x"}}, 400,
     "cannot name an agent folder or archive: File name too long"),
    ("unknown-user", lambda t: {"agent_id": "~nosuchuser_xyz/agent", "agent_config": {"task": "x"}}, 404,
     "~nosuchuser_xyz/agent: ~nosuchuser_xyz names no user's home folder on the kernel's machine"),
    ("empty-zip", lambda t: {"agent_id": _empty(t, "empty.zip"), "agent_config": {"task": "x"}}, 400,
     "empty.zip is empty: it holds no agent"),
    ("empty-tar", lambda t: {"agent_id": _empty(t, "empty.tar"), "agent_config": {"task": "x"}}, 400,
     "empty.tar is empty: it holds no agent"),
]


@pytest.mark.parametrize(("body", "code", "detail"), [b[1:] for b in BAD_SUBMISSIONS], ids=[b[0] for b in BAD_SUBMISSIONS])
def test_a_bad_submission_is_refused_naming_the_problem_and_starts_nothing(kernel: KernelProcess, data_dir: Path,
                                                                           tmp_path: Path, body: Any, code: int,
                                                                           detail: str) -> None:
    before, listed = runs_on_disk(data_dir), kernel.client.get("/agents/ps").json()["count"]
    reply = kernel.client.post("/agents/submit", json=body(tmp_path))
    assert reply.status_code == code, reply.text
    assert detail in detail_of(reply)
    assert runs_on_disk(data_dir) == before and kernel.client.get("/agents/ps").json()["count"] == listed


def detail_of(reply: httpx.Response) -> str:
    detail = reply.json()["detail"]
    if isinstance(detail, list):
        return "; ".join(f"{'.'.join(map(str, d['loc']))}: {d['msg']}" for d in detail)
    return detail


def test_a_refused_submission_takes_no_execution_id(kernel: KernelProcess, data_dir: Path, tmp_path: Path) -> None:
    """An unknown agent, a missing path and a folder that is no package are refused and leave nothing behind: the
    next run accepted gets the id after the last run's, and the id after that is no execution (not a deleted one),
    with the runs so far counted right."""
    first = submit(kernel, AGENTS / "echo", "before")
    assert finished(kernel, first)["status"] == "completed"
    before = runs_on_disk(data_dir)
    for agent_id, code in [("example/bogus", 404), ("/nonexistent", 404), (_no_config(tmp_path), 400)]:
        reply = kernel.client.post("/agents/submit", json={"agent_id": agent_id, "agent_config": {"task": "x"}})
        assert reply.status_code == code, reply.text
    assert runs_on_disk(data_dir) == before  # not even the folder a submission is prepared in
    second = submit(kernel, AGENTS / "echo", "after")
    assert second == first + 1 and finished(kernel, second)["status"] == "completed"
    for method, route in [("GET", "status"), ("GET", "logs"), ("POST", "cancel")]:
        reply = kernel.client.request(method, f"/agents/{second + 1}/{route}")
        assert reply.status_code == 404
        assert reply.json() == {"detail": f"no agent execution {second + 1} (runs so far: {second})"}


def _runtime(data: Path, **settings: Any) -> AgentRuntime:
    """The kernel's agent runtime on a data dir of its own, in this process (a restart is a new one)."""
    agents = AgentRuntime(AgentsConfig(**settings), data, AccessManager(AccessConfig(), data))
    agents.kernel_url = "http://127.0.0.1:9"  # nothing listens: these agents make no syscalls
    return agents


def test_execution_ids_go_to_accepted_runs_alone_when_submissions_race_and_after_a_restart(tmp_path: Path) -> None:
    """Four submissions at once on the kernel's event loop, each prepared in a thread: an unknown agent, one the
    caller may not submit (refused only once its package was read and its name known), and two that run. The two
    get ids 1 and 2, whichever was prepared first; id 3 is no execution; nothing is left of the refused ones. The
    next start of the kernel goes on from 3."""
    async def first_start() -> None:
        agents = _runtime(tmp_path)
        outcomes = await asyncio.gather(agents.submit(str(AGENTS / "echo"), "one", None),
                                        agents.submit("example/chat", "x", "alice"),
                                        agents.submit("nobody/none", "x", None),
                                        agents.submit(str(AGENTS / "echo"), "two", None), return_exceptions=True)
        one, forbidden, unknown, two = outcomes
        assert isinstance(forbidden, Forbidden) and isinstance(unknown, NotFound), outcomes
        assert sorted([one.id, two.id]) == [1, 2]
        for run in (one, two):
            await run.ended.wait()
        assert [one.result["task"], two.result["task"]] == ["one", "two"]
        assert [one.folder.name, two.folder.name] == [str(one.id), str(two.id)]
        with pytest.raises(NotFound, match=r"^no agent execution 3 \(runs so far: 2\)$"):
            agents.get(3, None)
        await agents.access.close()

    asyncio.run(first_start())
    assert runs_on_disk(tmp_path) == ["1", "2"]

    async def second_start() -> int:
        agents = _runtime(tmp_path)
        run = await agents.submit(str(AGENTS / "echo"), "three", None)
        await run.ended.wait()
        await agents.access.close()
        return run.id

    assert asyncio.run(second_start()) == 3


def test_a_submission_whose_caller_left_while_it_was_prepared_leaves_no_folder(tmp_path: Path) -> None:
    """The caller's request is cancelled (it hung up) while the package is read in a thread: the thread goes on,
    and once it is done its folder is removed; no id was taken, and the next run gets 1."""
    async def main() -> None:
        agents = _runtime(tmp_path)
        reading, release, prepared = threading.Event(), threading.Event(), threading.Event()
        prepare = agents._prepare

        def held(*args: Any) -> Any:
            reading.set()
            release.wait(30)
            try:
                return prepare(*args)
            finally:
                prepared.set()

        agents._prepare = held  # type: ignore[method-assign]
        submitting = asyncio.ensure_future(agents.submit(str(AGENTS / "echo"), "left", None))
        await asyncio.to_thread(reading.wait, 30)
        submitting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await submitting
        release.set()
        await asyncio.to_thread(prepared.wait, 30)  # the folder is whole now: only its removal can take it away
        await agents.close()  # waits for that removal
        await agents.access.close()
        assert list((tmp_path / "agents" / "runs").iterdir()) == []
        again = _runtime(tmp_path)
        run = await again.submit(str(AGENTS / "echo"), "next", None)
        await run.ended.wait()
        assert run.id == 1 and run.result["task"] == "next"
        await again.access.close()

    asyncio.run(main())


def test_an_execution_id_is_never_reused_after_a_restart_even_when_the_newest_run_s_folder_was_deleted(
        tmp_path: Path) -> None:
    """With agents.keep_runs 1, run 1 hangs while run 2 ends, then is cancelled: it ended last, so run 2's folder,
    the newest id's, is deleted. The next start of the kernel still says run 2 was deleted, and gives the next
    run id 3, not 2 again."""
    async def first_start() -> None:
        agents = _runtime(tmp_path, keep_runs=1)
        hanging = await agents.submit(str(AGENTS / "sleeper"), "", None)
        quick = await agents.submit(str(AGENTS / "echo"), "two", None)
        await quick.ended.wait()
        await agents.cancel(hanging)
        await asyncio.gather(*agents._tasks)  # the deletion, in a thread
        await agents.access.close()

    asyncio.run(first_start())
    assert runs_on_disk(tmp_path) == ["1"]

    async def second_start() -> int:
        agents = _runtime(tmp_path, keep_runs=1)
        with pytest.raises(NotFound, match="agent execution 2 was deleted"):
            agents.get(2, None)
        run = await agents.submit(str(AGENTS / "echo"), "three", None)
        await run.ended.wait()
        await agents.access.close()
        return run.id

    assert asyncio.run(second_start()) == 3


def _returner(tmp_path: Path) -> Path:
    """An agent whose run() returns the Python expression its task is."""
    folder = tmp_path / "returner"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({
        "name": "returner", "description": ["Returns its task, evaluated."],
        "meta": {"author": "tests", "version": "0.1.0", "license": "MIT"},
        "build": {"entry": "agent.py", "module": "Returner"}, "tools": []}))
    (folder / "agent.py").write_text("class Returner:\n"
                                     "    def __init__(self, agent_name):\n"
                                     "        self.agent_name = agent_name\n\n"
                                     "    def run(self, task_input):\n"
                                     "        return eval(task_input)\n")
    return folder


@pytest.mark.parametrize(("returns", "error"), [
    ("object()", "object of type object is not JSON serializable"),
    ("{'answer': [object()]}", "object of type object is not JSON serializable"),
    ("[float('nan')]", "out of range float values are not JSON compliant"),  # newer Pythons add ": nan"
    ("{('a', 'b'): 1}", "keys must be str, int, float, bool or None, not tuple"),
    ("[b'caf\\xe9'.decode('utf-8', 'surrogateescape')]", "it holds '\\udce9', a lone surrogate, which is not text"),
], ids=["object", "object-inside", "nan", "tuple-key", "lone-surrogate"])
def test_an_agent_whose_result_is_not_json_fails_saying_what_is_not(kernel: KernelProcess, tmp_path: Path,
                                                                      returns: str, error: str) -> None:
    status = finished(kernel, submit(kernel, _returner(tmp_path), returns))
    assert status["status"] == "failed" and status["result"] is None and status["exit_code"] == 1, status
    assert status["error"].startswith(f"the agent's run() returned a value that is not JSON: {error}")
    assert error in kernel.client.get(f"/agents/{status['execution_id']}/logs").json()["stderr"]


UNSENDABLE = [
    ("raised-surrogate", "(_ for _ in ()).throw(ValueError(b'/data/caf\\xe9.txt'.decode('utf-8', 'surrogateescape')))",
     "the agent's run() raised ValueError: /data/caf\\udce9.txt", 1),
    ("written-surrogate",
     r"""open('result.json', 'w').write('{"result": ["caf\\udce9"]}') and __import__('os')._exit(0)""",
     "the agent's result cannot be sent as JSON: it holds '\\udce9', a lone surrogate, which is not text", 0),
    ("written-nan", """open('result.json', 'w').write('{"result": [NaN]}') and __import__('os')._exit(0)""",
     "the agent's result cannot be sent as JSON: it holds NaN or an infinity, which JSON has no value for", 0),
]


@pytest.mark.parametrize(("returns", "error", "exit_code"), [u[1:] for u in UNSENDABLE], ids=[u[0] for u in UNSENDABLE])
def test_what_no_reply_can_carry_fails_the_run_and_every_reply_about_it_still_reads(
        kernel: KernelProcess, data_dir: Path, tmp_path: Path, returns: str, error: str, exit_code: int) -> None:
    """A lone surrogate (bytes decoded with surrogateescape, as paths are) in the message of what the agent
    raised, or in a result.json it wrote itself, or NaN there: the run fails saying what, with the surrogate
    written as its escape. Its status, the list of runs, and the status it saved (read back once the run left
    memory) can still be sent."""
    execution_id = submit(kernel, _returner(tmp_path), returns)
    status = finished(kernel, execution_id)
    assert (status["status"], status["result"], status["exit_code"]) == ("failed", None, exit_code), status
    assert status["error"].startswith(error), status
    assert kernel.client.get("/agents/ps").status_code == 200
    saved = json.loads((data_dir / "agents" / "runs" / str(execution_id) / "status.json").read_text())
    assert saved["error"] == status["error"]


def test_an_agent_that_leaves_a_thread_running_still_ends_with_its_result(kernel: KernelProcess,
                                                                          tmp_path: Path) -> None:
    """run() returns while a thread it started (not a daemon) goes on: the run ends then, completed, rather than
    being held until its time limit kills it, its result lost."""
    returns = "__import__('threading').Thread(target=__import__('time').sleep, args=(3600,)).start() or 'done'"
    status = finished(kernel, submit(kernel, _returner(tmp_path), returns, time_limit_s=20))
    assert (status["status"], status["result"]) == ("completed", "done"), status


def test_an_agent_s_result_comes_back_as_an_aios_kernel_sends_it(kernel: KernelProcess, tmp_path: Path) -> None:
    """What JSON has no type for is converted as AIOS's kernel (FastAPI) converts it, so its agents run unchanged."""
    returns = ("{'pair': (1, 2), 3: None, 'seen': {7}, 'when': __import__('datetime').date(2026, 11, 27), "
               "'price': __import__('decimal').Decimal('2.50'), 'point': __import__('types').SimpleNamespace(x=1)}")
    status = finished(kernel, submit(kernel, _returner(tmp_path), returns))
    assert status["status"] == "completed", status
    assert status["result"] == {"pair": [1, 2], "3": None, "seen": [7], "when": "2026-11-27", "price": 2.5,
                                "point": {"x": 1}}


PLAIN_RESULTS = [
    ({7}, [7]), (datetime.date(2026, 11, 27), "2026-11-27"), (datetime.timedelta(seconds=3), 3.0),
    (decimal.Decimal("2.50"), 2.5), (decimal.Decimal("3"), 3), (Path("/x"), "/x"), (b"hi", "hi"),
    (types.SimpleNamespace(x=1), {"x": 1}), (pydantic.SecretStr("sk-1"), "**********"),
]


@pytest.mark.parametrize(("value", "sent"), PLAIN_RESULTS, ids=[type(v).__name__ for v, _ in PLAIN_RESULTS])
def test_without_fastapi_an_agent_s_result_is_converted_alike(monkeypatch: pytest.MonkeyPatch, value: Any,
                                                               sent: Any) -> None:
    """Under an interpreter of its own (agents.python) that lacks FastAPI, the common cases convert as it would."""
    from aios.agents.launch import _as_json

    monkeypatch.setitem(sys.modules, "fastapi.encoders", None)  # import fails
    assert json.loads(_as_json({"v": value})) == {"result": {"v": sent}}


@pytest.mark.parametrize(("method", "path", "code", "detail"), [
    ("GET", "/agents/abc/status", 422, "path.execution_id: Input should be a valid integer"),
    ("GET", "/agents/999999/status", 404, "no agent execution 999999"),
    ("GET", f"/agents/{2**64}/status", 422, "path.execution_id: Input should be less than or equal to"),
    ("GET", "/agents/0/logs", 422, "path.execution_id: Input should be greater than or equal to 1"),
    ("GET", "/agents/1/status?wait=-1", 422, "query.wait: Input should be greater than or equal to 0"),
    ("GET", "/agents/1/status?wait=61", 422, "query.wait: Input should be less than or equal to 60"),
    ("POST", "/agents/999999/cancel", 404, "no agent execution 999999"),
    ("GET", "/agents/999999/logs", 404, "no agent execution 999999"),
    ("GET", "/agents/1/logs?tail_kb=0", 422, "query.tail_kb: Input should be greater than or equal to 1"),
])
def test_bad_agent_requests_are_refused_naming_the_problem(kernel: KernelProcess, method: str, path: str, code: int,
                                                           detail: str) -> None:
    reply = kernel.client.request(method, path)
    assert reply.status_code == code and detail in detail_of(reply), reply.text


# -- the SDK ------------------------------------------------------------------------------------------------------
def test_the_sdk_submits_follows_lists_and_reads_logs(kernel: KernelProcess) -> None:
    from aios.sdk import agent_logs, list_agents, submit_agent, wait_agent

    execution_id = submit_agent(str(AGENTS / "echo"), "from the sdk", kernel.url)
    status = wait_agent(execution_id, kernel.url)
    assert status.status == "completed" and status.result["task"] == "from the sdk" and status.exit_code is None
    assert agent_logs(execution_id, kernel.url).stdout == "stdout of tests/echo: from the sdk\n"
    (process,) = [p for p in list_agents(kernel.url) if p.execution_id == execution_id]
    assert process.agent_name == "tests/echo" and process.status == "completed" and process.exit_code == 0


@pytest.mark.parametrize(("call", "code", "message"), [
    (lambda url: __import__("aios.sdk").sdk.submit_agent("", "x", url), 422, "body.agent_id: String should have"),
    (lambda url: __import__("aios.sdk").sdk.submit_agent("example/chat", "x", url, time_limit_s=-1), 422,
     "body.agent_config.time_limit_s: Input should be greater than 0"),
    (lambda url: __import__("aios.sdk").sdk.submit_agent("nobody/none", "x", url), 404, "no agent nobody/none"),
    (lambda url: __import__("aios.sdk").sdk.agent_status(999999, url), 404, "no agent execution 999999"),
    (lambda url: __import__("aios.sdk").sdk.agent_status(1, url, wait=-1), 422, "query.wait"),
    (lambda url: __import__("aios.sdk").sdk.cancel_agent(999999, url), 404, "no agent execution 999999"),
    (lambda url: __import__("aios.sdk").sdk.agent_logs(999999, url), 404, "no agent execution 999999"),
    (lambda url: __import__("aios.sdk").sdk.agent_logs(1, url, tail_kb=0), 422, "query.tail_kb"),
    (lambda url: __import__("aios.sdk").sdk.list_agents("http://127.0.0.1:9"), 0, "cannot reach the kernel"),
], ids=["empty-id", "negative-limit", "unknown-agent", "unknown-status", "negative-wait", "unknown-cancel",
        "unknown-logs", "zero-tail", "no-kernel"])
def test_sdk_agent_functions_raise_naming_the_problem(kernel: KernelProcess, call: Any, code: int, message: str) -> None:
    from aios.sdk import AIOSError

    with pytest.raises(AIOSError) as caught:
        call(kernel.url)
    assert caught.value.status_code == code and message in caught.value.message


# -- the command line ---------------------------------------------------------------------------------------------
def test_run_agent_prints_the_result_and_agents_ps_logs_show_the_run(kernel: KernelProcess, data_dir: Path) -> None:
    ran = aios("run-agent", str(AGENTS / "echo"), "--task", "from the shell", "--url", kernel.url, data_dir=data_dir)
    assert ran.returncode == 0, ran.stderr
    assert '"task": "from the shell"' in ran.stdout
    execution_id = int(ran.stderr.split("execution ")[1].split()[0])
    ps = aios("agents", "ps", "--url", kernel.url, data_dir=data_dir)
    assert ps.returncode == 0 and any(line.split()[:3] == [str(execution_id), "tests/echo", "completed"]
                                      for line in ps.stdout.splitlines())
    logs = aios("agents", "logs", str(execution_id), "--url", kernel.url, data_dir=data_dir)
    assert logs.stdout == "stdout of tests/echo: from the shell\n" and logs.stderr == "stderr of tests/echo\n"


def test_run_agent_reports_a_failed_agent_and_exits_1(kernel: KernelProcess, data_dir: Path) -> None:
    ran = aios("run-agent", str(AGENTS / "crasher"), "--task", "now", "--url", kernel.url, data_dir=data_dir)
    assert ran.returncode == 1
    assert "failed: the agent's run() raised RuntimeError: boom: now" in ran.stderr and "Traceback" not in ran.stderr


@pytest.mark.parametrize(("args", "code", "message"), [
    (["run-agent", "example/chat"], 2, "--task"),
    (["run-agent", "example/chat", "--task", "x", "--time-limit", "0"], 2, "--time-limit"),
    (["run-agent", "nobody/none", "--task", "x"], 1, "[404] no agent nobody/none in the hub"),
    (["agents", "logs", "0"], 2, "execution_id"),
    (["agents", "logs", "1", "--tail-kb", "0"], 2, "--tail-kb"),
    (["agents", "logs", "999999"], 1, "[404] no agent execution 999999"),
    (["agents", "cancel", "999999"], 1, "[404] no agent execution 999999"),
    (["agents", "cancel", "one"], 2, "execution_id"),
], ids=["no-task", "zero-limit", "unknown-agent", "zero-id", "zero-tail", "unknown-logs", "unknown-cancel", "id-text"])
def test_agent_commands_reject_bad_flags_naming_them(kernel: KernelProcess, data_dir: Path, args: list[str],
                                                     code: int, message: str) -> None:
    url = [] if code == 2 else ["--url", kernel.url]
    result = aios(*args, *url, data_dir=data_dir)
    assert result.returncode == code and message in result.stderr, result.stderr
