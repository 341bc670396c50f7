"""The scheduler feed: what the scheduler is doing, as snapshots for watchers (the web UI's scheduler view).

Event-driven and shared: every syscall tells the feed when it changes (queued, a slice starts or ends, it ends),
which marks the feed dirty; one producer task turns the changes into one snapshot — at most ``max_rate`` a
second, however many watchers and changes there are — and wakes every watcher with it. Nothing is built while
nobody watches. The feed keeps the live syscalls and the last ``keep`` ended ones, these as their descriptions
(an ended syscall's payload holds its model, which a removed model's memory must not wait on).
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from typing import Any, AsyncIterator, Callable

from aios.syscall import Syscall, SyscallStatus

KEEP_ENDED = 200  # ended syscalls kept for the timeline
MAX_RATE = 5.0  # snapshots a second, at most


class SchedulerFeed:
    def __init__(self, state: Callable[[], dict[str, Any]], keep: int = KEEP_ENDED, max_rate: float = MAX_RATE) -> None:
        """``state``: the kernel-wide part of a snapshot (models and queues), read when one is built."""
        self._state, self._keep, self._interval = state, keep, 1.0 / max_rate
        self._syscalls: OrderedDict[int, Syscall | dict[str, Any]] = OrderedDict()  # ended: described
        self._ended: OrderedDict[int, None] = OrderedDict()
        self._dirty = asyncio.Event()
        self._published = asyncio.Condition()
        self._snapshot: dict[str, Any] | None = None
        self._version = 0
        self._watchers = 0
        self._closed = False
        self._producer: asyncio.Task[None] | None = None

    def changed(self, syscall: Syscall) -> None:
        """A syscall was queued, started or ended a slice, or ended (called on the event loop)."""
        self._syscalls[syscall.id] = _described(syscall) if syscall.done else syscall  # ended: it changes no more
        if syscall.done:
            self._ended[syscall.id] = None
            while len(self._ended) > self._keep:
                oldest, _ = self._ended.popitem(last=False)
                self._syscalls.pop(oldest, None)
        self._dirty.set()

    def start(self) -> None:
        self._producer = asyncio.create_task(self._produce(), name="scheduler-feed")

    async def close(self) -> None:
        """End every watch (an open event stream would otherwise hold the server's shutdown) and the producer."""
        self._closed = True
        async with self._published:
            self._published.notify_all()
        if self._producer is not None:
            self._producer.cancel()
            await asyncio.gather(self._producer, return_exceptions=True)

    async def watch(self) -> AsyncIterator[dict[str, Any]]:
        """Snapshots as they are published, the current one first; a slow watcher skips to the newest."""
        self._watchers += 1
        self._dirty.set()  # a snapshot for the newcomer, even if nothing changes
        seen = self._version
        try:
            while True:
                async with self._published:
                    await self._published.wait_for(lambda: self._closed or self._version > seen)
                if self._closed:
                    return
                seen = self._version
                yield self._snapshot  # type: ignore[misc]
        finally:
            self._watchers -= 1

    async def _produce(self) -> None:
        while True:
            await self._dirty.wait()
            self._dirty.clear()
            if self._watchers:
                async with self._published:
                    self._snapshot, self._version = self.snapshot(), self._version + 1
                    self._published.notify_all()
                # Changes that come meanwhile are gathered into the next snapshot: a bounded rate, not a poll.
                await asyncio.sleep(self._interval)

    def snapshot(self) -> dict[str, Any]:
        return {"time": time.time(), **self._state(), "syscalls": [s if isinstance(s, dict) else _described(s)
                                                                         for s in self._syscalls.values()]}


def _described(syscall: Syscall) -> dict[str, Any]:
    core = getattr(syscall.payload, "core", None)  # an LLM syscall's model, once routed
    return {
        "id": syscall.id,
        "kind": syscall.kind.value,
        "agent": syscall.agent_name,
        "status": syscall.status.value,
        "model": getattr(core, "name", None),
        "priority": syscall.priority,
        "created": syscall.created_at,
        "slices": [[s.start, s.end] for s in syscall.slices],
        "preemptions": _preemptions(syscall),
    }


def _preemptions(syscall: Syscall) -> int:
    """Slices that ended without the syscall ending: every one but a last that ran to the end."""
    suspended = syscall.status is SyscallStatus.SUSPENDED
    return max(len(syscall.slices) - (0 if suspended else 1), 0)
