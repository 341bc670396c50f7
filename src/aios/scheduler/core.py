"""The scheduler: one queue per resource kind, worker tasks that pop by policy and run handlers.

Workers are asyncio tasks, not threads: a handler that needs a thread (a model's forward passes) hands off to
its own executor and awaits it. Every syscall ends done, failed or cancelled, however its handler ends, and a
failing handler fails only its own syscall.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable

from aios.scheduler.policy import Policy
from aios.syscall import Syscall, SyscallKind

log = logging.getLogger(__name__)

Handler = Callable[[Syscall], Awaitable[Any]]


@dataclass
class _Queue:
    policy: Policy[Syscall]
    handler: Handler
    workers: int
    handler_times_slices: bool
    ready: asyncio.Condition = field(default_factory=asyncio.Condition)
    running: dict[int, asyncio.Task[Any]] = field(default_factory=dict)


class Scheduler:
    """Runs syscalls on per-kind handlers, ``workers`` at a time per kind, in the order the policy gives."""

    def __init__(self) -> None:
        self._queues: dict[SyscallKind, _Queue] = {}
        self._ids = itertools.count(1)
        self._worker_tasks: list[asyncio.Task[None]] = []

    def add_queue(self, kind: SyscallKind, policy: Policy[Syscall], handler: Handler, workers: int = 1,
                  handler_times_slices: bool = False) -> None:
        """Serve ``kind`` with ``handler``, ``workers`` syscalls at a time. A handler that runs syscalls on a
        resource with its own scheduling (an LLM engine) starts and suspends their slices itself."""
        self._queues[kind] = _Queue(policy, handler, workers, handler_times_slices)

    def serves(self, kind: SyscallKind) -> bool:
        return kind in self._queues

    async def start(self) -> None:
        for kind, queue in self._queues.items():
            for n in range(queue.workers):
                task = asyncio.create_task(self._work(queue), name=f"{kind.value}-worker-{n}")
                self._worker_tasks.append(task)

    def add_workers(self, kind: SyscallKind, workers: int) -> None:
        """Serve ``kind`` with ``workers`` more (a model added while serving brings its own share)."""
        queue = self._queues[kind]
        queue.workers += workers
        if self._worker_tasks:  # started: the new workers start now, else with the others
            for n in range(workers):
                self._worker_tasks.append(asyncio.create_task(self._work(queue), name=f"{kind.value}-worker+{n}"))

    async def stop(self) -> None:
        """Cancel running and queued syscalls, then the workers."""
        for queue in self._queues.values():
            for task in queue.running.values():
                task.cancel()
            while len(queue.policy):
                queue.policy.pop().cancel()
        for task in self._worker_tasks:
            task.cancel()
        await asyncio.gather(*self._worker_tasks, return_exceptions=True)
        self._worker_tasks.clear()

    async def submit(self, syscall: Syscall) -> Syscall:
        queue = self._queues[syscall.kind]
        syscall.id = next(self._ids)
        async with queue.ready:
            queue.policy.push(syscall)
            queue.ready.notify()
        return syscall

    def cancel(self, syscall: Syscall) -> None:
        """Cancel a syscall wherever it is: a queued one leaves the queue, a running one is interrupted."""
        queue = self._queues[syscall.kind]
        task = queue.running.get(syscall.id)
        if task is not None:
            task.cancel()
            return
        if syscall in queue.policy:
            queue.policy.remove(syscall)
        syscall.cancel()

    def stats(self) -> dict[str, dict[str, Any]]:
        return {
            kind.value: {"policy": q.policy.name, "queued": len(q.policy), "running": len(q.running)}
            for kind, q in self._queues.items()
        }

    async def _work(self, queue: _Queue) -> None:
        while True:
            async with queue.ready:
                await queue.ready.wait_for(lambda: len(queue.policy) > 0)
                syscall = queue.policy.pop()
            if not syscall.done:  # cancelled while queued
                await self._run(queue, syscall)

    async def _run(self, queue: _Queue, syscall: Syscall) -> None:
        if not queue.handler_times_slices:
            syscall.start_slice()
        task = asyncio.create_task(queue.handler(syscall))
        queue.running[syscall.id] = task
        try:
            result = await asyncio.shield(task)
        except asyncio.CancelledError:
            # The syscall's task was cancelled, or this worker is (the scheduler is stopping).
            task.cancel()
            syscall.cancel()
            if asyncio.current_task().cancelling():  # type: ignore[union-attr]
                raise
        except Exception as exc:  # a failing handler fails its own syscall only
            log.debug("syscall %s failed: %r", syscall.id, exc)
            syscall.fail(exc)
        else:
            syscall.finish(result)
        finally:
            queue.running.pop(syscall.id, None)
