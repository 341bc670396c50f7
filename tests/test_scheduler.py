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


def test_unknown_policy_names_the_known_ones() -> None:
    with pytest.raises(ValueError, match="unknown scheduling policy 'lottery'; known: fifo, rr, priority"):
        make_policy("lottery")
