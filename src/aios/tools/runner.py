"""Running tool calls: parameters checked against the tool's schema before anything runs, each call within the
tool's timeout and concurrency limit, blocking tools on threads of their own so the kernel never stalls, and a
failing or hanging call failing alone — its limit is always given back.

A plain-function tool that times out cannot be stopped (Python threads cannot be killed): its thread is left to
finish and its result is dropped, while the call has already failed and its concurrency slot is free again.
Such a call still holds one of the shared threads. So the calls of one tool hold at most three quarters of the
threads, running or past their timeout, and a tool that hangs every call leaves the rest to the other tools;
while it has calls past their timeout and no thread left of its share, its new calls fail at once. Once the
tools with calls past their timeout hold half of the threads together, none of them takes new calls until one
of those calls ends. That limits what several hanging tools take; it cannot prevent it: a tool whose calls have
not yet timed out is not known to hang.

The threads are daemon threads of the runner's own: a thread left running past its call's timeout must never keep
the kernel from exiting (``ThreadPoolExecutor`` joins its threads when the interpreter exits).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import inspect
import json
import logging
import queue
import threading
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Callable

from jsonschema.exceptions import ValidationError, best_match

from aios.errors import BadRequest, KernelError
from aios.llm.prompting import new_call_id
from aios.tools.registry import ToolRegistry
from aios.tools.tool import Tool, ToolContext, ToolError

log = logging.getLogger(__name__)

SHOWN_CHARACTERS = 60  # of a parameter's value, in an error


@dataclass
class ToolCall:
    tool: Tool
    parameters: dict[str, Any]
    id: str = field(default_factory=new_call_id)


@dataclass
class CallOutcome:
    name: str
    parameters: dict[str, Any]
    id: str
    result: Any = None
    error: str | None = None
    status_code: int = 200

    @property
    def text(self) -> str:
        """The result as an agent reads it: text stays text, anything else is JSON."""
        if self.error is not None:
            return f"error: {self.error}"
        return self.result if isinstance(self.result, str) else json.dumps(self.result, ensure_ascii=False)


class ToolRunner:
    def __init__(self, registry: ToolRegistry, default_timeout_s: float, max_threads: int) -> None:
        self.registry, self.default_timeout_s = registry, default_timeout_s
        self._threads = _DaemonThreads(max_threads)
        self._limits: dict[str, asyncio.Semaphore] = {}
        self.running: dict[str, int] = {}  # calls in progress per tool, for status pages and tests
        self.overdue: dict[str, int] = {}  # per tool, calls ended (timed out, caller gone) whose threads still run
        self.max_threads = max_threads
        self.share = max(1, max_threads - max_threads // 4)  # threads one tool's calls may hold
        self._shares: dict[str, asyncio.Semaphore] = {}
        self.held: dict[str, int] = {}  # threads each tool's calls hold, running or past their timeout

    def check(self, calls: list[dict[str, Any]]) -> list[ToolCall]:
        """Each ``{name, parameters, id?}`` resolved to its tool and checked against its schema; raises a
        KernelError naming the call and the field before anything runs."""
        checked = []
        for index, call in enumerate(calls):
            tool = self.registry.get(call["name"])
            parameters = call.get("parameters") or {}
            error = best_match(tool.validator.iter_errors(parameters))
            if error is not None:
                where = "/".join(str(p) for p in error.absolute_path) or "(the parameters object)"
                raise BadRequest(f"tool call {index} ({tool.name}): parameter {where}: {_shortened(error)}")
            checked.append(ToolCall(tool, parameters, call.get("id") or new_call_id()))
        return checked

    async def run(self, call: ToolCall, context: ToolContext) -> CallOutcome:
        outcome = CallOutcome(call.tool.name, call.parameters, call.id)
        timeout = call.tool.timeout_s or self.default_timeout_s
        limit = self._limit(call.tool)
        refusal = self._refusal(call.tool.name)
        if refusal is not None:
            outcome.status_code, outcome.error = 503, refusal
            return outcome
        try:
            async with limit:
                self.running[call.tool.name] = self.running.get(call.tool.name, 0) + 1
                try:
                    outcome.result = await self._within(timeout, call, context)
                finally:
                    self.running[call.tool.name] -= 1
        except _PastTimeout:
            outcome.error, outcome.status_code = f"timed out after {timeout:g} s", 504
        except ToolError as exc:
            outcome.error, outcome.status_code = str(exc), 422
        except KernelError as exc:  # a syscall the tool made was refused
            outcome.error, outcome.status_code = str(exc), exc.status_code
        except Exception as exc:  # the tool's own bug: its call fails, nothing else
            log.warning("tool %s failed: %s", call.tool.name, exc, exc_info=True)
            outcome.error, outcome.status_code = f"the tool failed: {type(exc).__name__}: {exc}", 500
        problem = _json_problem(outcome.result) if outcome.error is None else None
        if problem is not None:
            outcome.result, outcome.error, outcome.status_code = None, f"the tool's result is not JSON: {problem}", 500
        return outcome

    async def _within(self, timeout: float, call: ToolCall, context: ToolContext) -> Any:
        """The call's result, or _PastTimeout once ``timeout`` has run out; a TimeoutError the tool raised itself
        (a socket's, say) stays the tool's own failure."""
        try:
            async with asyncio.timeout(timeout) as deadline:
                return await self._invoke(call, context)
        except TimeoutError:
            if deadline.expired():
                raise _PastTimeout from None
            raise

    def _refusal(self, name: str) -> str | None:
        """Why a call of tool ``name`` is refused at once (None: it is not): the tool has calls past their timeout,
        and it holds all of its share of the threads, or the tools with such calls hold half of them."""
        overdue = self.overdue.get(name, 0)
        if not overdue:
            return None
        if self._share(name).locked():
            return (f"tool {name} holds all the threads it may ({self.share}), {overdue} of them with calls past "
                    "their timeout, which cannot be stopped; it takes no more calls until one of them ends")
        stuck = sum(self.held[tool] for tool, count in self.overdue.items() if count)
        if 2 * stuck >= self.max_threads:
            calls = f"{overdue} call{'s' if overdue != 1 else ''}"
            return (f"tool {name} has {calls} past their timeout, which cannot be stopped, and the tools with such "
                    f"calls hold {stuck} of the {self.max_threads} threads, where they may hold {self.max_threads // 2}"
                    "; it takes no more calls until one of them ends")
        return None

    async def _invoke(self, call: ToolCall, context: ToolContext) -> Any:
        if inspect.iscoroutinefunction(call.tool.run):
            return await call.tool.run(call.parameters, context)
        name, share = call.tool.name, self._share(call.tool.name)
        await share.acquire()  # a thread of the tool's share, given back when the call's thread ends
        self.held[name] = self.held.get(name, 0) + 1
        try:
            running = self._threads.submit(functools.partial(call.tool.run, call.parameters, context))
        except BaseException:  # the kernel is stopping
            self._thread_ended(name)
            raise
        _when_done(running, functools.partial(self._thread_ended, name))
        try:
            return await asyncio.wrap_future(running)
        except asyncio.CancelledError:  # its timeout (or the caller gone): a call that has not started never will
            if not running.cancel():
                self.overdue[call.tool.name] = self.overdue.get(call.tool.name, 0) + 1
                _when_done(running, functools.partial(self._overdue_ended, call.tool.name))
            raise

    def _overdue_ended(self, name: str) -> None:
        self.overdue[name] -= 1

    def _thread_ended(self, name: str) -> None:
        self.held[name] -= 1
        self._shares[name].release()

    def _share(self, name: str) -> asyncio.Semaphore:
        if name not in self._shares:
            self._shares[name] = asyncio.Semaphore(self.share)
        return self._shares[name]

    def _limit(self, tool: Tool) -> asyncio.Semaphore | _NoLimit:
        if tool.max_concurrency is None:
            return _NO_LIMIT
        if tool.name not in self._limits:
            self._limits[tool.name] = asyncio.Semaphore(tool.max_concurrency)
        return self._limits[tool.name]

    def close(self) -> None:
        self._threads.close()


def _shortened(error: ValidationError) -> str:
    """The schema's complaint, without a long value in full: a text past its maxLength is not repeated back."""
    shown = repr(error.instance)
    if len(shown) <= SHOWN_CHARACTERS or not error.message.startswith(shown):
        return error.message
    size = f" ({len(error.instance)} characters)" if isinstance(error.instance, str) else ""
    return f"{shown[:SHOWN_CHARACTERS]}...{size}{error.message[len(shown):]}"


class _PastTimeout(Exception):
    """The kernel's timeout for a call ran out."""


class _DaemonThreads:
    """At most ``max_threads`` daemon threads running submitted functions, started as the work needs them. Unlike
    ``ThreadPoolExecutor``'s, they are not joined when the interpreter exits: a tool hung past its timeout is left
    behind, rather than keeping the process alive."""

    def __init__(self, max_threads: int) -> None:
        self.max_threads = max_threads
        self._work: queue.SimpleQueue[tuple[Future[Any], Callable[[], Any]] | None] = queue.SimpleQueue()
        self._idle = threading.Semaphore(0)  # threads waiting for work
        self._lock = threading.Lock()
        self._started = 0
        self._closed = False

    def submit(self, function: Callable[[], Any]) -> Future[Any]:
        future: Future[Any] = Future()
        with self._lock:
            if self._closed:
                raise RuntimeError("the tool threads are closed: the kernel is stopping")
            self._work.put((future, function))
            if not self._idle.acquire(blocking=False) and self._started < self.max_threads:
                self._started += 1
                threading.Thread(target=self._serve, name=f"tool_{self._started}", daemon=True).start()
        return future

    def _serve(self) -> None:
        while (work := self._work.get()) is not None:
            future, function = work
            if future.set_running_or_notify_cancel():  # False: cancelled while it waited
                try:
                    future.set_result(function())
                except BaseException as exc:  # the tool's, whatever it is, goes to its caller
                    future.set_exception(exc)
            del work, future, function  # the result is its caller's, not kept alive by an idle thread
            self._idle.release()

    def close(self) -> None:
        """Calls that have not started never will; each thread ends once its call (if any) has."""
        with self._lock:
            self._closed = True
            while True:
                try:
                    work = self._work.get_nowait()
                except queue.Empty:
                    break
                if work is not None:
                    work[0].cancel()
            for _ in range(self._started):
                self._work.put(None)


def _when_done(running: concurrent.futures.Future[Any], callback: Callable[[], None]) -> None:
    """``callback`` on this event loop once the call's thread has ended (never, once the kernel has stopped)."""
    loop = asyncio.get_running_loop()

    def ended(_: concurrent.futures.Future[Any]) -> None:
        try:
            loop.call_soon_threadsafe(callback)
        except RuntimeError:  # the loop has closed: nothing is counted any more
            pass

    running.add_done_callback(ended)


class _NoLimit:
    async def __aenter__(self) -> None:
        return None

    async def __aexit__(self, *exc: object) -> None:
        return None


_NO_LIMIT = _NoLimit()


def _json_problem(value: Any) -> str | None:
    try:
        # NaN and infinities are not JSON, and a lone surrogate is not UTF-8 text: no client could read them.
        json.dumps(value, allow_nan=False, ensure_ascii=False).encode()
    except UnicodeEncodeError as exc:
        return (f"it holds {exc.object[exc.start:exc.end]!r}, a lone surrogate, which is not text (bytes decoded "
                "with surrogateescape, as os.fsdecode does? decode them with errors='replace')")
    except (TypeError, ValueError) as exc:
        return str(exc)
    return None
