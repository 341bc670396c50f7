"""A syscall: one request of an agent to a kernel resource, and its life from queued to done.

Its result is delivered through an asyncio future, so a caller awaits it instead of polling. Each scheduling
slice (one stretch of running between being queued or suspended and finishing or being preempted) is recorded,
which is what the reply envelope's ``start_times`` / ``end_times`` / ``waiting_times`` / ``turnaround_times`` list.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Callable


class SyscallKind(str, Enum):
    LLM = "llm"
    MEMORY = "memory"
    STORAGE = "storage"
    TOOL = "tool"


class SyscallStatus(str, Enum):
    QUEUED = "queued"
    RUNNING = "running"
    SUSPENDED = "suspended"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def is_final(self) -> bool:
        return self in (SyscallStatus.DONE, SyscallStatus.FAILED, SyscallStatus.CANCELLED)


@dataclass
class Slice:
    """One stretch of running. ``ready`` is when the syscall last became runnable (queued or resumed)."""

    ready: float
    start: float
    end: float | None = None


@dataclass(eq=False)
class Syscall:
    kind: SyscallKind
    agent_name: str
    payload: Any
    priority: int = 0
    id: int = 0
    status: SyscallStatus = SyscallStatus.QUEUED
    created_at: float = field(default_factory=time.time)
    slices: list[Slice] = field(default_factory=list)
    value: Any = None  # the handler's result, once done
    error: BaseException | None = None
    ready_at: float = 0.0  # when it last became runnable: created, or suspended
    _future: asyncio.Future[Any] = field(init=False, repr=False)
    _ended: list[Callable[[], None]] = field(default_factory=list, repr=False)
    observer: Callable[["Syscall"], None] | None = field(default=None, repr=False)  # told of every change

    def __post_init__(self) -> None:
        self.ready_at = self.created_at
        self._future = asyncio.get_running_loop().create_future()

    # -- life cycle, driven by the scheduler -------------------------------------------------------------------

    def start_slice(self) -> None:
        if self.status.is_final or self.status is SyscallStatus.RUNNING:
            return
        self.status = SyscallStatus.RUNNING
        self.slices.append(Slice(ready=self.ready_at, start=time.time()))
        self._changed()

    def suspend(self) -> None:
        """End the current slice without finishing; the syscall waits to be resumed."""
        if self.status is not SyscallStatus.RUNNING:
            return
        self._end_slice()
        self.status = SyscallStatus.SUSPENDED
        self.ready_at = time.time()
        self._changed()

    def finish(self, result: Any) -> None:
        self._settle(SyscallStatus.DONE, result=result)

    def fail(self, error: BaseException) -> None:
        self._settle(SyscallStatus.FAILED, error=error)

    def cancel(self) -> None:
        self._settle(SyscallStatus.CANCELLED, error=asyncio.CancelledError(f"syscall {self.id} cancelled"))

    def _settle(self, status: SyscallStatus, result: Any = None, error: BaseException | None = None) -> None:
        if self.status.is_final:
            return
        self._end_slice()
        self.status, self.value, self.error = status, result, error
        if status is SyscallStatus.DONE:
            self._future.set_result(result)
        elif status is SyscallStatus.FAILED:
            self._future.set_exception(error)  # type: ignore[arg-type]
        else:
            self._future.cancel()
        for callback in self._ended:
            callback()
        self._changed()

    def _changed(self) -> None:
        if self.observer is not None:
            self.observer(self)

    def _end_slice(self) -> None:
        if self.slices and self.slices[-1].end is None:
            self.slices[-1].end = time.time()

    # -- what callers see ---------------------------------------------------------------------------------------

    async def wait(self) -> None:
        """Wait until the syscall ends, however it ends; cancelling the waiter leaves the syscall alone."""
        await asyncio.wait([self._future])
        if not self._future.cancelled():
            self._future.exception()  # the caller reads ``error``: the failure is seen, not to be logged as lost

    async def result(self) -> Any:
        """The handler's result; raises its error, or CancelledError when the syscall was cancelled."""
        return await asyncio.shield(self._future)

    def on_end(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` as the syscall ends, however it ends (at once if it has)."""
        if self.status.is_final:
            callback()
        else:
            self._ended.append(callback)

    @property
    def done(self) -> bool:
        return self.status.is_final

    @property
    def start_times(self) -> list[float]:
        return [s.start for s in self.slices]

    @property
    def end_times(self) -> list[float]:
        return [s.end for s in self.slices if s.end is not None]

    @property
    def waiting_times(self) -> list[float]:
        """Per slice: time spent runnable but not running before the slice began."""
        return [s.start - s.ready for s in self.slices]

    @property
    def turnaround_times(self) -> list[float]:
        """Per slice: time from the syscall's creation to the end of the slice."""
        return [s.end - self.created_at for s in self.slices if s.end is not None]
