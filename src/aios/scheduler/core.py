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
from aios.syscall import Syscall, SyscallKind, SyscallStatus

log = logging.getLogger(__name__)

Handler = Callable[[Syscall], Awaitable[Any]]


@dataclass
class _Queue:
    policy: Policy[Syscall]
    handler: Handler
    workers: int
    handler_times_slices: bool
    ready: asyncio.Condition = field(default_factory=asyncio.Condition)
    running: dict[Syscall, asyncio.Task[Any]] = field(default_factory=dict)  # handed to the handler, not ended
    tasks: set[asyncio.Task[None]] = field(default_factory=set)  # its workers; more than ``workers`` while some leave
    idle: set[asyncio.Task[None]] = field(default_factory=set)  # those waiting for a syscall


class Scheduler:
    """Runs syscalls on per-kind handlers, ``workers`` at a time per kind, in the order the policy gives."""

    def __init__(self) -> None:
        self._queues: dict[SyscallKind, _Queue] = {}
        self._ids = itertools.count(1)
        self._started = False

    def add_queue(self, kind: SyscallKind, policy: Policy[Syscall], handler: Handler, workers: int = 1,
                  handler_times_slices: bool = False) -> None:
        """Serve ``kind`` with ``handler``, ``workers`` syscalls at a time. A handler that runs syscalls on a
        resource with its own scheduling (an LLM engine) starts and suspends their slices itself."""
        self._queues[kind] = _Queue(policy, handler, workers, handler_times_slices)

    def serves(self, kind: SyscallKind) -> bool:
        return kind in self._queues

    async def start(self) -> None:
        self._started = True
        for kind, queue in self._queues.items():
            self._start_workers(kind, queue, queue.workers)

    def add_workers(self, kind: SyscallKind, workers: int) -> None:
        """Serve ``kind`` with ``workers`` more (a model added while serving brings its own share)."""
        queue = self._queues[kind]
        queue.workers += workers
        if self._started:  # else they start with the others
            self._start_workers(kind, queue, workers)

    async def remove_workers(self, kind: SyscallKind, workers: int) -> None:
        """Serve ``kind`` with ``workers`` fewer (a model removed takes its share back): idle workers have left
        when this returns; where too few were idle, busy ones leave as their syscalls end."""
        queue = self._queues[kind]
        queue.workers -= workers
        leaving = list(queue.idle)[:workers]
        for task in leaving:  # cancelled while they wait: they hold no syscall
            queue.idle.discard(task)
            queue.tasks.discard(task)
            task.cancel()
        await asyncio.gather(*leaving, return_exceptions=True)
        async with queue.ready:
            queue.ready.notify(len(queue.policy))  # a wake-up one of them had been given goes to one that stays

    def _start_workers(self, kind: SyscallKind, queue: _Queue, workers: int) -> None:
        for _ in range(workers):
            queue.tasks.add(asyncio.create_task(self._work(queue), name=f"{kind.value}-worker"))

    async def stop(self) -> None:
        """Cancel running and queued syscalls, then the workers."""
        workers = [task for queue in self._queues.values() for task in queue.tasks]
        for queue in self._queues.values():
            for task in queue.running.values():
                task.cancel()
            while len(queue.policy):
                queue.policy.pop().cancel()
            queue.tasks.clear()
        for task in workers:
            task.cancel()
        await asyncio.gather(*workers, return_exceptions=True)
        self._started = False

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
        task = queue.running.get(syscall)
        if task is not None:
            task.cancel()
            return
        if syscall in queue.policy:
            queue.policy.remove(syscall)
        syscall.cancel()

    def stats(self) -> dict[str, dict[str, Any]]:
        """Per kind: syscalls running now, and those waiting (in the queue, or, where the handler hands them on
        to a resource that schedules them itself, an LLM engine, waiting or suspended there)."""
        stats = {}
        for kind, q in self._queues.items():
            running = sum(syscall.status is SyscallStatus.RUNNING for syscall in q.running)
            stats[kind.value] = {"policy": q.policy.name, "queued": len(q.policy) + len(q.running) - running,
                                 "running": running}
        return stats

    async def _work(self, queue: _Queue) -> None:
        worker = asyncio.current_task()
        assert worker is not None, "workers are tasks"
        while len(queue.tasks) <= queue.workers:  # else workers were taken back while this one was busy: it leaves
            # No name holds the syscall here while the worker waits for the next: an ended one would keep its
            # payload alive (an LLM syscall's model, after the model is removed).
            await self._run(queue, await self._next(queue, worker))
        queue.tasks.discard(worker)

    async def _next(self, queue: _Queue, worker: asyncio.Task[None]) -> Syscall:
        async with queue.ready:
            queue.idle.add(worker)
            try:
                await queue.ready.wait_for(lambda: len(queue.policy) > 0)
            finally:
                queue.idle.discard(worker)
            return queue.policy.pop()

    async def _run(self, queue: _Queue, syscall: Syscall) -> None:
        if syscall.done:  # cancelled while queued
            return
        if not queue.handler_times_slices:
            syscall.start_slice()
        task = asyncio.create_task(queue.handler(syscall))
        queue.running[syscall] = task
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
            queue.running.pop(syscall, None)
