"""The scheduler and syscall life cycle, with real asyncio handlers (no model needed)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from aios.scheduler import FifoPolicy, Scheduler, make_policy
from aios.syscall import Syscall, SyscallKind, SyscallStatus


def run(coro: Any) -> Any:
    return asyncio.run(coro)


async def _scheduler(handler: Any, workers: int = 1) -> Scheduler:
    scheduler = Scheduler()
    scheduler.add_queue(SyscallKind.LLM, FifoPolicy(), handler, workers)
    await scheduler.start()
    return scheduler


def test_fifo_runs_syscalls_in_arrival_order() -> None:
    async def main() -> list[str]:
        order: list[str] = []

        async def handler(syscall: Syscall) -> str:
            order.append(syscall.payload)
            await asyncio.sleep(0)  # yield, so a wrong policy would get the chance to reorder
            return syscall.payload.upper()

        scheduler = await _scheduler(handler)
        calls = [await scheduler.submit(Syscall(SyscallKind.LLM, "a", f"job{i}")) for i in range(6)]
        results = [await c.result() for c in calls]
        await scheduler.stop()
        assert results == [f"JOB{i}" for i in range(6)]
        return order

    assert run(main()) == [f"job{i}" for i in range(6)]


def test_a_failing_syscall_fails_alone_and_the_next_one_is_served() -> None:
    async def main() -> None:
        async def handler(syscall: Syscall) -> str:
            if syscall.payload == "boom":
                raise RuntimeError("handler exploded")
            return "ok"

        scheduler = await _scheduler(handler)
        bad = await scheduler.submit(Syscall(SyscallKind.LLM, "a", "boom"))
        good = await scheduler.submit(Syscall(SyscallKind.LLM, "b", "fine"))
        with pytest.raises(RuntimeError, match="handler exploded"):
            await bad.result()
        assert await good.result() == "ok"
        assert bad.status is SyscallStatus.FAILED and str(bad.error) == "handler exploded"
        assert good.status is SyscallStatus.DONE
        await scheduler.stop()

    run(main())


def test_cancelling_a_queued_syscall_means_it_never_runs() -> None:
    async def main() -> None:
        release = asyncio.Event()
        ran: list[str] = []

        async def handler(syscall: Syscall) -> None:
            ran.append(syscall.payload)
            await release.wait()

        scheduler = await _scheduler(handler)
        first = await scheduler.submit(Syscall(SyscallKind.LLM, "a", "first"))
        queued = await scheduler.submit(Syscall(SyscallKind.LLM, "b", "queued"))
        scheduler.cancel(queued)
        release.set()
        await first.result()
        await queued.wait()
        assert queued.status is SyscallStatus.CANCELLED
        assert ran == ["first"] and queued.slices == []
        with pytest.raises(asyncio.CancelledError):
            await queued.result()
        await scheduler.stop()

    run(main())


def test_cancelling_a_running_syscall_interrupts_its_handler_and_frees_the_worker() -> None:
    async def main() -> None:
        interrupted = asyncio.Event()

        async def handler(syscall: Syscall) -> str:
            if syscall.payload == "long":
                try:
                    await asyncio.Event().wait()  # would never finish
                except asyncio.CancelledError:
                    interrupted.set()
                    raise
            return "next served"

        scheduler = await _scheduler(handler)
        long = await scheduler.submit(Syscall(SyscallKind.LLM, "a", "long"))
        after = await scheduler.submit(Syscall(SyscallKind.LLM, "b", "short"))
        await asyncio.sleep(0.01)
        scheduler.cancel(long)
        assert await after.result() == "next served"
        assert interrupted.is_set() and long.status is SyscallStatus.CANCELLED
        assert scheduler.stats()["llm"] == {"policy": "fifo", "queued": 0, "running": 0}
        await scheduler.stop()

    run(main())


def test_stopping_the_scheduler_ends_every_syscall_cancelled() -> None:
    async def main() -> None:
        async def handler(syscall: Syscall) -> None:
            await asyncio.Event().wait()

        scheduler = await _scheduler(handler)
        calls = [await scheduler.submit(Syscall(SyscallKind.LLM, "a", i)) for i in range(3)]
        await asyncio.sleep(0.01)
        await scheduler.stop()
        assert [c.status for c in calls] == [SyscallStatus.CANCELLED] * 3

    run(main())


def test_timings_record_one_slice_with_waiting_inside_turnaround() -> None:
    async def main() -> None:
        async def handler(syscall: Syscall) -> None:
            await asyncio.sleep(0.02)

        scheduler = await _scheduler(handler)
        first = await scheduler.submit(Syscall(SyscallKind.LLM, "a", 1))
        second = await scheduler.submit(Syscall(SyscallKind.LLM, "b", 2))
        await second.result()
        for call in (first, second):
            assert len(call.start_times) == len(call.end_times) == len(call.waiting_times) == 1
            assert call.start_times[0] <= call.end_times[0]
            assert 0 <= call.waiting_times[0] <= call.turnaround_times[0]
        # The second waited for the first to finish.
        assert second.waiting_times[0] >= first.end_times[0] - first.start_times[0] - 1e-3
        await scheduler.stop()

    run(main())


def test_a_preempted_syscall_records_a_slice_per_run() -> None:
    async def main() -> None:
        syscall = Syscall(SyscallKind.LLM, "a", None)
        syscall.start_slice()
        syscall.suspend()
        assert syscall.status is SyscallStatus.SUSPENDED
        syscall.start_slice()
        syscall.finish("done")
        assert await syscall.result() == "done"
        assert len(syscall.start_times) == len(syscall.end_times) == len(syscall.turnaround_times) == 2
        assert syscall.turnaround_times[0] <= syscall.turnaround_times[1]

    run(main())


def test_a_finished_syscall_cannot_be_settled_again() -> None:
    async def main() -> None:
        syscall = Syscall(SyscallKind.LLM, "a", None)
        syscall.start_slice()
        syscall.finish(1)
        syscall.fail(RuntimeError("late"))
        syscall.cancel()
        assert syscall.status is SyscallStatus.DONE and await syscall.result() == 1

    run(main())


def test_workers_taken_back_leave_idle_ones_at_once_busy_ones_after_their_syscall() -> None:
    """Five workers, two busy; four taken back: the three idle ones have left when remove_workers returns, and
    one busy one leaves once its syscall ends. The one left serves on."""

    async def main() -> None:
        release, started = asyncio.Event(), asyncio.Semaphore(0)

        async def handler(syscall: Syscall) -> str:
            if syscall.payload == "held":
                started.release()
                await release.wait()
            return syscall.payload

        scheduler = await _scheduler(handler, workers=3)
        scheduler.add_workers(SyscallKind.LLM, 2)
        held = [await scheduler.submit(Syscall(SyscallKind.LLM, "a", "held")) for _ in range(2)]
        for _ in held:
            await asyncio.wait_for(started.acquire(), 10)
        workers = [task for task in asyncio.all_tasks() if task.get_name().startswith("llm-worker")]
        assert len(workers) == 5
        await scheduler.remove_workers(SyscallKind.LLM, 4)
        busy = [task for task in workers if not task.done()]
        assert len(busy) == 2
        release.set()
        assert [await call.result() for call in held] == ["held", "held"]
        await asyncio.wait(busy, timeout=10, return_when=asyncio.FIRST_COMPLETED)
        assert sum(task.done() for task in workers) == 4
        calls = [await scheduler.submit(Syscall(SyscallKind.LLM, "b", f"job{i}")) for i in range(3)]
        assert [await call.result() for call in calls] == ["job0", "job1", "job2"]
        assert sum(task.done() for task in workers) == 4
        await scheduler.stop()

    run(main())


def test_a_handler_that_times_slices_shows_running_only_what_runs() -> None:
    """An LLM handler hands its syscalls to an engine, which runs some and holds others waiting or suspended:
    ``running`` counts the first, ``queued`` the others with those still in the kernel's queue."""

    async def main() -> None:
        release, handed = asyncio.Event(), asyncio.Semaphore(0)

        async def engine(syscall: Syscall) -> None:
            if syscall.payload in ("runs", "suspended"):
                syscall.start_slice()
            if syscall.payload == "suspended":
                syscall.suspend()
            handed.release()
            await release.wait()

        scheduler = Scheduler()
        scheduler.add_queue(SyscallKind.LLM, FifoPolicy(), engine, workers=3, handler_times_slices=True)
        await scheduler.start()
        calls = [await scheduler.submit(Syscall(SyscallKind.LLM, "a", state))
                 for state in ("runs", "waits", "suspended", "in the kernel's queue")]
        for _ in range(3):
            await asyncio.wait_for(handed.acquire(), 10)
        assert scheduler.stats()["llm"] == {"policy": "fifo", "queued": 3, "running": 1}
        release.set()
        for call in calls:
            await call.result()
        assert scheduler.stats()["llm"] == {"policy": "fifo", "queued": 0, "running": 0}
        await scheduler.stop()

    run(main())


def test_unknown_policy_names_the_known_ones() -> None:
    with pytest.raises(ValueError, match="unknown scheduling policy 'lottery'; known: fifo, rr, priority"):
        make_policy("lottery")
