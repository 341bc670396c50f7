"""The agent runtime: each submitted agent runs in an OS process of its own (asyncio subprocesses, no thread per
agent), in its own process group, under a wall-clock limit.

A run gets a folder ``<data_dir>/agents/runs/<execution_id>/`` with its request, its stdout and stderr
(``stdout.log``, ``stderr.log``, each bounded by ``agents.max_log_mb``: see :mod:`aios.agents.output`), the
agent's own folder ``work/`` (its cwd, the one place a confined agent may write, where its ``result.json``
goes) and, once it has ended, its status (``status.json``). The kernel keeps the last ``RUNS_IN_MEMORY`` ended
runs in memory, and the results of those that ended last up to ``RESULTS_IN_MEMORY_BYTES``; an older one, or one
of an earlier start of the kernel, is read back from its folder. The folders of the last ``agents.keep_runs``
ended runs are kept; older ones are deleted.

Its environment points ``AIOS_KERNEL_URL`` and ``CEREBRUM_KERNEL_URL`` at this kernel and binds its syscalls
to its identity, ``author/name`` from its config.json: a token held only while it runs (``AIOS_TOKEN``, and the
``/as/<token>`` URL form for agents of the AIOS SDK, which cannot add headers). A crash, an ``exit()``, an
import error or the limit ends only that run, and its status says which.
"""

from __future__ import annotations

import asyncio
import fnmatch
import json
import logging
import os
import signal
import stat
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aios
from aios.access.manager import ADMIN, AccessManager
from aios.agents import launch, sandbox
from aios.agents.folders import RunFolders, remove
from aios.agents.hub import Hub
from aios.agents.output import keep_output
from aios.agents.package import AgentPackage, is_path, resolve_agent
from aios.config import AgentsConfig
from aios.errors import Conflict, Forbidden, NotFound, Unavailable

log = logging.getLogger(__name__)

RUNNING, COMPLETED, FAILED = "running", "completed", "failed"
LOG_TAIL_BYTES = 64 * 1024
OUTPUT_GRACE_S = 5.0  # for the agent's output to reach its logs once its process has ended
RUNS_IN_MEMORY = 1000  # ended runs kept in memory (their tasks and results can be large)
MAX_RESULT_BYTES = 16 << 20  # a run's result, as JSON: read on the event loop, kept in memory, sent whole
# Of ended runs' results, as JSON, all told: as Python objects they take many times that (16 MB of [[], [], ...] is
# some 300 MB), so a thousand large ones would not fit. Past it, the oldest are read back from their folders.
RESULTS_IN_MEMORY_BYTES = 8 << 20
STOPPED_UNSEEN = "the kernel stopped while it ran"  # a run whose folder has no status: the kernel did not end it
KERNEL_STOPPED = "the kernel stopped"


@dataclass
class Execution:
    id: int
    agent_id: str
    agent_name: str
    task: str
    folder: Path
    submitted_by: str | None
    time_limit_s: float
    status: str = RUNNING
    result: Any = None
    error: str | None = None
    exit_code: int | None = None
    pid: int | None = None
    submitted_at: float = field(default_factory=time.time)
    started_at: float | None = None
    ended_at: float | None = None
    ended: asyncio.Event = field(default_factory=asyncio.Event)
    stop_reason: str | None = None  # set when the kernel ends it (limit, cancel, shutdown)
    runner: asyncio.Task[None] | None = None
    launching: bool = False  # past waiting for a slot
    result_bytes: int = 0  # its result's size as JSON
    result_saved: bool = False  # its result left memory: its status.json has it (see AgentRuntime.result)

    def saved(self) -> dict[str, Any]:
        """What ``status.json`` keeps of an ended run."""
        return {**self.describe(), "result": self.result, "submitted_by": self.submitted_by}

    @classmethod
    def ended_in(cls, folder: Path, earlier_kernel: bool) -> Execution | None:
        """An ended run, read back from its folder (``None`` if the folder holds none). A run of an earlier start
        of the kernel without a status ended with that kernel (it stopped without ending it)."""
        request, saved = _read_json(folder / "request.json"), _read_json(folder / "status.json")
        if not request or not (saved or earlier_kernel):
            return None
        saved = saved or {
            "id": int(folder.name), "agent_id": request.get("agent_id", request.get("agent_name")),
            "agent_name": request.get("agent_name"), "task": request.get("task", ""), "status": FAILED,
            "error": STOPPED_UNSEEN, "submitted_by": request.get("submitted_by"), "time_limit_s": 0.0}
        fields = {name: saved.get(name) for name in ("agent_id", "agent_name", "task", "submitted_by", "status",
                                                      "result", "error", "exit_code", "pid", "started_at",
                                                      "ended_at")}
        execution = cls(id=int(saved["id"]), folder=folder, time_limit_s=float(saved.get("time_limit_s") or 0.0),
                        submitted_at=float(saved.get("submitted_at") or 0.0), **fields)
        execution.ended.set()
        return execution

    def describe(self) -> dict[str, Any]:
        return {"id": self.id, "execution_id": self.id, "agent_id": self.agent_id, "agent_name": self.agent_name,
                "task": self.task, "status": self.status, "pid": self.pid, "exit_code": self.exit_code,
                "error": self.error, "submitted_at": self.submitted_at, "started_at": self.started_at,
                "ended_at": self.ended_at, "time_limit_s": self.time_limit_s}


class AgentRuntime:
    def __init__(self, config: AgentsConfig, data_dir: Path, access: AccessManager) -> None:
        self.config, self.access = config, access
        # What confines the runs' processes, for /status (its stderr tells a run that went unconfined).
        self.confinement = "off (agents.sandbox)" if config.sandbox == "off" else sandbox.describe()
        self._sandbox = _sandbox_of(config, data_dir)
        self.hub = Hub(data_dir / "hub", int(config.hub_max_package_mb * 2**20))
        self.kernel_url: str | None = None  # set once the server is bound
        self._runs: dict[int, Execution] = {}
        self._tasks: set[asyncio.Future[Any]] = set()
        self._slots = asyncio.Semaphore(config.max_concurrent)
        self.folders = RunFolders(data_dir / "agents" / "runs", config.keep_runs)
        self._first_id = self.folders.next_id  # runs before it are an earlier start's
        self._closing = False  # set by close(): no run starts after it
        self._held_results: dict[int, int] = {}  # ended runs whose results are in memory, by end: their sizes

    async def submit(self, agent_id: str, task: str, caller: str | None, time_limit_s: float | None = None) -> Execution:
        """Start ``agent_id`` on ``task``; raises at once when it cannot run (unknown, invalid, not allowed)."""
        if self.kernel_url is None:
            raise Unavailable("the kernel is not serving HTTP yet, so an agent could not reach it")
        self._refuse_if_closing()
        if is_path(agent_id) and caller not in (None, ADMIN):
            raise Forbidden("only the administrator may run an agent from a path on the kernel's machine")
        # Prepared under a name of its own: a refused submission takes no id (see aios.agents.folders).
        prepared = self.folders.preparing()
        preparing = asyncio.ensure_future(asyncio.to_thread(self._prepare, prepared, agent_id, task, caller))
        try:
            package = await asyncio.shield(preparing)
        except asyncio.CancelledError:  # the caller left; the thread goes on, and its folder goes when it is done
            self._track(asyncio.ensure_future(self._discard(prepared, preparing)))
            raise
        name = package.config.full_name
        try:
            if name == ADMIN:  # it would run with the administrator's rights
                raise Forbidden(f"{ADMIN!r} is the administrator's identity: no agent of that name runs")
            if caller not in (None, ADMIN, name):
                raise Forbidden(f"agent {name} runs as itself: submitting it needs its token or the "
                                f"administrator's, not {caller!r}'s")
            await self.access.check_claim(caller, name)  # it would run with the rights of an agent with a token
            self._refuse_if_closing()  # close() may have begun while the package was read: it ended the runs it saw
            execution_id = self.folders.take(prepared)  # no await from here until the run is in self._runs
        except BaseException:
            await asyncio.to_thread(remove, prepared)
            raise
        folder = self.folders.folder(execution_id)
        limit = min(time_limit_s or self.config.time_limit_s, self.config.time_limit_s)
        execution = Execution(execution_id, agent_id, name, task, folder, caller, limit)
        self._runs[execution_id] = execution
        execution.runner = asyncio.create_task(self._run(execution))
        self._track(execution.runner)
        # Settled when its task ends however it ends: cancelled while waiting for a place, even before it began.
        execution.runner.add_done_callback(lambda _: self._settle(execution))
        return execution

    def _refuse_if_closing(self) -> None:
        """A run accepted now would not be ended by ``close``, which would then wait for it until its time limit."""
        if self._closing:
            raise Unavailable("the kernel is stopping: it starts no more agent runs")

    async def _discard(self, prepared: Path, preparing: asyncio.Future[AgentPackage]) -> None:
        """Remove the folder of a submission whose caller left while it was prepared, once it is."""
        try:
            await preparing
        except asyncio.CancelledError:
            raise
        except BaseException:  # noqa: BLE001 - a refusal nobody waits for any more: its folder is gone already
            return
        await asyncio.to_thread(remove, prepared)

    def _track(self, task: asyncio.Future[Any]) -> None:
        """Keep ``task`` until it ends; ``close`` waits for it."""
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _prepare(self, folder: Path, agent_id: str, task: str, caller: str | None) -> AgentPackage:
        """A folder for the run with its request (blocking: packages are read, archives unpacked); removed if
        the submission is refused here. The folder is renamed once the run is accepted, so a package unpacked in
        it is named in the request relative to it."""
        folder.mkdir(parents=True)
        try:
            (folder / launch.WORK / "tmp").mkdir(parents=True)  # its cwd and TMPDIR
            package = resolve_agent(agent_id, self.hub, folder / "package", self.hub.max_bytes)
            where = package.folder.resolve()
            if where.is_relative_to(folder.resolve()):
                where = where.relative_to(folder.resolve())
            (folder / "request.json").write_text(json.dumps({
                "folder": str(where), "entry": package.config.entry, "module": package.config.module,
                "agent_name": package.config.full_name, "task": task, "agent_id": agent_id,
                "submitted_by": caller, "sandbox": self._sandbox, "kernel_pid": os.getpid()}))
        except BaseException:
            remove(folder)
            raise
        return package

    def get(self, execution_id: int, caller: str | None, tokened: frozenset[str] = frozenset()) -> Execution:
        """A run that ``caller`` may see (None: a request without a token; ``tokened``: the agents with tokens,
        whose runs it may not see)."""
        execution = self._runs.get(execution_id)
        if execution is None and execution_id > 0:
            execution = Execution.ended_in(self.folders.folder(execution_id), execution_id < self._first_id)
        if execution is None and self.folders.deleted(execution_id):
            raise self._deleted(execution_id)
        if execution is None or not _sees(caller, execution, tokened):
            raise NotFound(f"no agent execution {execution_id} (runs so far: {self.folders.next_id - 1})")
        return execution

    def _deleted(self, execution_id: int) -> NotFound:
        keep = self.config.keep_runs
        return NotFound(f"agent execution {execution_id} was deleted: the kernel keeps the folders of the "
                        f"{keep} run{'s' if keep != 1 else ''} that ended last (agents.keep_runs)")

    async def result(self, execution: Execution) -> Any:
        """The run's result: from memory, or (one that left it, see ``RESULTS_IN_MEMORY_BYTES``) from the status
        the run saved."""
        if not execution.result_saved:
            return execution.result
        saved = await asyncio.to_thread(_read_json, execution.folder / "status.json")
        if "result" not in saved:  # the folder was deleted since the run was found (agents.keep_runs)
            raise self._deleted(execution.id)
        return saved["result"]

    def visible(self, caller: str | None, tokened: frozenset[str] = frozenset()) -> list[Execution]:
        return [e for e in sorted(self._runs.values(), key=lambda e: e.id) if _sees(caller, e, tokened)]

    async def wait(self, execution: Execution, timeout_s: float) -> None:
        """Until the run ends or ``timeout_s`` passes, whichever is first."""
        try:
            await asyncio.wait_for(execution.ended.wait(), timeout_s)
        except TimeoutError:
            pass

    async def cancel(self, execution: Execution) -> None:
        """Kill the run and wait for its end; Conflict, saying how it ended, when it had ended by itself (its
        process may have exited with its output still coming in)."""
        stopped = execution.status == RUNNING and self._stop(execution, "cancelled")
        await execution.ended.wait()  # the process group is killed: this is quick
        if not stopped:
            raise Conflict(f"agent execution {execution.id} has already {execution.status}")

    def logs(self, execution: Execution, tail_bytes: int = LOG_TAIL_BYTES) -> dict[str, str]:
        return {stream: _tail(execution.folder / f"{stream}.log", tail_bytes) for stream in ("stdout", "stderr")}

    async def close(self) -> None:
        """End every run, those waiting for a place too, and refuse new ones (the kernel is stopping)."""
        self._closing = True
        for execution in self._runs.values():
            if execution.status == RUNNING:
                self._stop(execution, KERNEL_STOPPED)
        while self._tasks:  # runs that end now start their folders' deletions: those too
            await asyncio.gather(*self._tasks, return_exceptions=True)

    # -- one run ---------------------------------------------------------------------------------------------
    async def _run(self, execution: Execution) -> None:
        async with self._slots:  # waiting here for a place, a run can be cancelled like a task
            await self._process(execution)

    async def _process(self, execution: Execution) -> None:
        execution.launching = True
        token = self.access.issue_run_token(execution.agent_name)
        folder = execution.folder
        try:
            # Pipes of our own, not asyncio's: its process.wait() would wait for them to close too, which a daemon
            # the agent started may never do.
            (out, out_end), (err, err_end) = os.pipe(), os.pipe()
            try:
                process = await asyncio.create_subprocess_exec(
                    self.config.python or sys.executable, launch.__file__, str(folder),
                    stdin=asyncio.subprocess.DEVNULL, stdout=out_end, stderr=err_end,
                    env=self._environment(token, folder / launch.WORK), cwd=folder / launch.WORK,
                    start_new_session=True)
            except BaseException:
                os.close(out)
                os.close(err)
                raise
            finally:
                os.close(out_end)
                os.close(err_end)
            execution.pid, execution.started_at = process.pid, time.time()
            limit = max(1, int(self.config.max_log_mb * 2**20))
            # Files now, so that the pipes close with them even if the tasks never start.
            kept = [asyncio.create_task(keep_output(open(out, "rb", buffering=0), folder / "stdout.log", limit)),
                    asyncio.create_task(keep_output(open(err, "rb", buffering=0), folder / "stderr.log", limit))]
            if execution.stop_reason is not None:  # cancelled while it was starting
                _kill_group(process.pid)
            try:
                execution.exit_code = await asyncio.wait_for(process.wait(), execution.time_limit_s)
            except TimeoutError:
                execution.stop_reason = f"it ran past its time limit of {execution.time_limit_s:g} s and was killed"
            finally:
                _kill_group(process.pid)  # past its limit, cancelled, the kernel stopping; or children it left
                execution.exit_code = await process.wait()
                await _outputs_end(kept)
        except (OSError, ValueError) as exc:  # ValueError: an interpreter path with a NUL in it
            execution.stop_reason = f"the agent process could not start: {exc}"
        finally:
            self.access.revoke_run_token(token)

    def _environment(self, token: str, work: Path) -> dict[str, str]:
        """The variables of the kernel's environment that ``agents.env`` lets through (never the kernel's own),
        with the agent's identity; confined, its temporary files, caches and settings (what the AIOS SDK and
        Hugging Face libraries keep in the home folder) go into its own folder, the one it may write."""
        url = self.kernel_url
        assert url is not None
        env = {key: value for key, value in os.environ.items() if not key.startswith(("AIOS_", "CEREBRUM_"))
               and any(fnmatch.fnmatchcase(key, pattern) for pattern in self.config.env)}
        env |= {"AIOS_KERNEL_URL": url, "AIOS_TOKEN": token, "CEREBRUM_KERNEL_URL": f"{url}/as/{token}",
                "PYTHONUNBUFFERED": "1"}
        if self.config.sandbox != "off":
            env |= {"TMPDIR": str(work / "tmp"), "XDG_CACHE_HOME": str(work / ".cache"),
                    "XDG_CONFIG_HOME": str(work / ".config"), "XDG_DATA_HOME": str(work / ".local" / "share")}
        return env

    def _stop(self, execution: Execution, reason: str) -> bool:
        """End the run for ``reason``; False when it had ended by itself (only its output is still coming in)."""
        if execution.exit_code is not None:
            return False
        execution.stop_reason = reason
        if not execution.launching and execution.runner is not None:
            execution.runner.cancel()  # still waiting for a slot
        elif execution.pid is not None and execution.exit_code is None:
            _kill_group(execution.pid)
        return True

    def _settle(self, execution: Execution) -> None:
        execution.ended_at = time.time()
        try:
            _conclude(execution)
        except Exception:  # noqa: BLE001 - however that fails, the run must end for whoever waits on it
            log.exception("could not tell how agent execution %d ended", execution.id)
            execution.status, execution.error = FAILED, "the kernel could not tell how the run ended (see its log)"
        try:
            saved = _write_json(execution.folder / "status.json", execution.saved())
        finally:
            execution.ended.set()
        log.info("agent %s (execution %d) %s", execution.agent_name, execution.id, execution.status)
        if saved and execution.status == COMPLETED:
            self._hold_result(execution)
        self._forget_ended()
        for execution_id, folder in self.folders.ended(execution.id):
            self._forget(execution_id)
            self._track(asyncio.create_task(asyncio.to_thread(remove, folder)))

    def _hold_result(self, execution: Execution) -> None:
        """Keep the results of the runs that ended last in memory, up to ``RESULTS_IN_MEMORY_BYTES`` of JSON; older
        ones are read back from the status their runs saved when asked for (see ``result``)."""
        held = self._held_results
        held[execution.id] = execution.result_bytes
        total = sum(held.values())
        while total > RESULTS_IN_MEMORY_BYTES:
            oldest = next(iter(held))
            total -= held.pop(oldest)
            leaving = self._runs.get(oldest)
            if leaving is not None:
                leaving.result, leaving.result_saved = None, True

    def _forget_ended(self) -> None:
        """Keep the last ``RUNS_IN_MEMORY`` ended runs in memory; older ones are read from their folders."""
        ended = [e for e in self._runs.values() if e.status != RUNNING]
        for execution in ended[:max(0, len(ended) - RUNS_IN_MEMORY)]:
            self._forget(execution.id)

    def _forget(self, execution_id: int) -> None:
        self._runs.pop(execution_id, None)
        self._held_results.pop(execution_id, None)


def _sandbox_of(config: AgentsConfig, data_dir: Path) -> dict[str, Any] | None:
    """How a run's process is confined (launch.py does it; see aios.agents.sandbox): besides its package and
    its run folder, it may read this kernel's code (the SDK of agents written for this project); the data
    folder stays hidden."""
    if config.sandbox == "off":
        return None
    return {"read": [str(Path(aios.__file__).resolve().parent.parent)], "hidden": str(data_dir.resolve()),
            "required": config.sandbox == "required"}


def _sees(caller: str | None, execution: Execution, tokened: frozenset[str]) -> bool:
    """Without a token, every run but those of the agents in ``tokened`` (run or submitted by one: an agent with a
    token keeps its runs to itself); with one, an agent its own and the administrator all."""
    if caller is None:
        return not tokened.intersection((execution.agent_name, execution.submitted_by))
    return caller == ADMIN or caller in (execution.submitted_by, execution.agent_name)


async def _outputs_end(kept: list[asyncio.Task[None]]) -> None:
    """Until the agent's output is in its logs. A process that left the agent's group (a daemon it started) may
    hold the pipes open: after ``OUTPUT_GRACE_S`` the copying stops, with what it holds written."""
    _, pending = await asyncio.wait(kept, timeout=OUTPUT_GRACE_S)
    for task in pending:
        task.cancel()
    for outcome in await asyncio.gather(*kept, return_exceptions=True):
        if isinstance(outcome, Exception):
            log.error("keeping an agent's output failed", exc_info=outcome)


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)  # the agent's children too: it leads a session of its own
    except ProcessLookupError:
        pass


def _conclude(execution: Execution) -> None:
    """Its status from how its process ended and what it handed back. What the agent wrote is checked: it is kept,
    saved and sent in every reply about the run, so a value no reply can carry would break them all, for good."""
    outcome = _read_json(execution.folder / launch.RESULT, follow=False)  # the agent's to write: no link of its
    if execution.stop_reason is None and execution.exit_code == 0 and "result" in outcome:
        try:
            execution.result_bytes = _sent_size(outcome["result"])
        except ValueError as exc:
            outcome = {"error": f"the agent's result cannot be sent as JSON: {exc}"}
        else:
            execution.status, execution.result = COMPLETED, outcome["result"]
            return
    execution.status = FAILED
    error = outcome.get("error") if isinstance(outcome.get("error"), str) else None  # launch.py writes text
    execution.error = _text(execution.stop_reason or error or _exit_reason(execution.exit_code))


def _sent_size(value: Any) -> int:
    """The size of ``value`` as JSON in a reply; ValueError, saying why, for what Python's reader takes beyond
    JSON: NaN and infinities, or a string with a lone surrogate (JSON's ``\\udce9``, as ``json.dumps`` writes a
    path decoded with surrogateescape), which is not UTF-8 text. Checked by encoding it as a reply does (in C: a
    result may be 16 MB)."""
    try:
        return len(json.dumps(value, ensure_ascii=False, allow_nan=False).encode("utf-8"))
    except UnicodeEncodeError as exc:  # (a ValueError too)
        raise ValueError(f"it holds {exc.object[exc.start:exc.end]!r}, a lone surrogate, which is not text (bytes "
                         "decoded with surrogateescape, as os.fsdecode does? decode them with errors='replace')"
                         ) from None
    except RecursionError:
        raise ValueError("it is nested too deeply") from None
    except ValueError:
        raise ValueError("it holds NaN or an infinity, which JSON has no value for") from None


def _text(text: str) -> str:
    """``text`` as UTF-8 can carry it: a lone surrogate (from bytes decoded with surrogateescape, in an exception's
    message say) written as its escape, ``\\udce9``."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _exit_reason(code: int | None) -> str:
    if code is not None and code < 0:
        return f"the agent process was killed by {_signal_name(-code)}"
    return f"the agent process exited with code {code} before returning a result"


def _signal_name(number: int) -> str:
    """SIGSEGV; a signal with no name of its own (a real-time one past SIGRTMIN) by its number."""
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def _read_json(path: Path, follow: bool = True) -> dict[str, Any]:
    """The object in a JSON file ({} if it holds none). ``follow=False`` for a file the agent wrote: a link it
    put there (to a file of the kernel's) is not followed, only a plain file is read (a FIFO would hold the kernel
    up), and no more than ``MAX_RESULT_BYTES`` of it (a sparse file of terabytes costs the agent nothing)."""
    try:
        fd = os.open(path, os.O_RDONLY | (0 if follow else os.O_NOFOLLOW | os.O_NONBLOCK))
        with open(fd, "rb") as file:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                return {}
            text = file.read() if follow else file.read(MAX_RESULT_BYTES + 1)
    except OSError:
        return {}
    if not follow and len(text) > MAX_RESULT_BYTES:  # (read no further: the file may be growing still)
        return {"error": f"the agent's result is more than the {MAX_RESULT_BYTES >> 20} MB of JSON a run may return"}
    try:
        outcome = json.loads(text)
    except ValueError:
        return {}
    return outcome if isinstance(outcome, dict) else {}


def _write_json(path: Path, value: dict[str, Any]) -> bool:
    """Written whole or not at all (a crash mid-write leaves the old file or none); whether it was."""
    partial = path.with_name(path.name + ".partial")
    try:
        partial.write_text(json.dumps(value, default=str), encoding="utf-8")
        partial.replace(path)
    except OSError as exc:  # e.g. the disk is full: the run's status stays in memory
        log.warning("could not save the status of %s: %s", path.parent, exc)
        return False
    return True


def _tail(path: Path, limit: int) -> str:
    try:
        with path.open("rb") as stream:
            stream.seek(max(0, stream.seek(0, os.SEEK_END) - limit))
            return stream.read().decode("utf-8", errors="replace")
    except OSError:
        return ""
