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
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import inspect
import json
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable

from jsonschema.exceptions import best_match

from aios.errors import BadRequest, KernelError
from aios.llm.prompting import new_call_id
from aios.tools.registry import ToolRegistry
from aios.tools.tool import Tool, ToolContext, ToolError

log = logging.getLogger(__name__)


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
        self._threads = ThreadPoolExecutor(max_workers=max_threads, thread_name_prefix="tool")
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
                raise BadRequest(f"tool call {index} ({tool.name}): parameter {where}: {error.message}")
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
                    outcome.result = await asyncio.wait_for(self._invoke(call, context), timeout)
                finally:
                    self.running[call.tool.name] -= 1
        except TimeoutError:
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
        self._threads.shutdown(wait=False, cancel_futures=True)


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
        json.dumps(value, allow_nan=False)  # NaN and infinities are not JSON: no client could read them
    except (TypeError, ValueError) as exc:
        return str(exc)
    return None
