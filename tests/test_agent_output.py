"""An agent's output kept in its log within a bound: the start and the end, exactly, whatever the sizes of the
writes; and an output that cannot be kept (a full disk) never blocks the agent."""

from __future__ import annotations

import asyncio
import os
import random
from pathlib import Path

import pytest

from aios.agents import output
from aios.agents.output import keep_output


async def kept(path: Path, data: bytes, limit: int, sizes: random.Random) -> None:
    """``data`` written into a pipe in writes of random sizes (from a thread: a full pipe blocks it) while
    :func:`keep_output` copies it into ``path``."""
    read_end, write_end = os.pipe()

    def write() -> None:
        at = 0
        while at < len(data):
            step = sizes.randint(1, 20_000)
            os.write(write_end, data[at:at + step])
            at += step
        os.close(write_end)

    await asyncio.gather(keep_output(open(read_end, "rb", buffering=0), path, limit), asyncio.to_thread(write))


@pytest.mark.parametrize("limit", [1, 2, 3, 100, 4096, 65_536, 150_000, 10**6])
def test_a_log_holds_the_first_and_the_last_bytes_of_its_output_and_says_how_many_it_dropped(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, limit: int) -> None:
    monkeypatch.setattr(output, "TAIL_BYTES", 30_000)  # below half of the larger bounds too
    sizes = random.Random(limit)
    for case in range(6):
        data = bytes(sizes.getrandbits(8) for _ in range(sizes.choice([0, limit - 1, limit, limit + 1,
                                                                         sizes.randint(0, 300_000)])))
        path = tmp_path / f"{case}.log"
        asyncio.run(kept(path, data, limit, sizes))
        tail = min(30_000, limit // 2)
        head = limit - tail
        if len(data) <= limit:
            assert path.read_bytes() == data
        else:
            dropped = len(data) - limit
            assert path.read_bytes() == (data[:head] + f"\n[aios: {dropped} bytes of output dropped here; a run "
                                         f"keeps its first {head} and last {tail} bytes (agents.max_log_mb)]\n".encode()
                                         + data[len(data) - tail:])


def test_output_that_cannot_be_kept_is_read_and_dropped_and_a_cancel_still_ends_the_copying() -> None:
    """/dev/full fails every write, as a full disk does: the writer is never blocked by a pipe left full, and once
    the run is over (the copying cancelled, while a daemon would still hold the pipe) the copying ends."""
    async def scenario() -> None:
        read_end, write_end = os.pipe()
        copying = asyncio.create_task(keep_output(open(read_end, "rb", buffering=0), Path("/dev/full"), 4096))
        await asyncio.to_thread(os.write, write_end, b"x" * 300_000)  # blocks for good if nothing reads
        copying.cancel()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(copying, 30)
        os.close(write_end)

    asyncio.run(scenario())
