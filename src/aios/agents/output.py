"""An agent's output, copied from its pipe into its run's log file with a bound on the file's size.

An agent that prints in a loop would otherwise fill the disk that every agent's files and memories live on.
A log keeps what came first, as it comes (``aios agents logs`` shows it while the agent runs), and, when the
output is longer than the bound, its last ``TAIL_BYTES`` (or half the bound, if less) after a line saying how much
was dropped between: the end of a run, where a traceback is, matters as much as its start. Past the bound, the
log grows again only when the output ends.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from pathlib import Path
from typing import BinaryIO

log = logging.getLogger(__name__)

CHUNK = 64 * 1024
TAIL_BYTES = 256 * 1024  # held in memory until the output ends: a traceback's worth, many times over


async def keep_output(pipe_end: BinaryIO, path: Path, limit: int) -> None:
    """Copy a pipe (``pipe_end``, its read end, which this closes) into ``path`` until every writer has closed
    it, keeping at most ``limit`` bytes (and the line that says what was dropped). Cancelled, it still writes
    the tail it holds. Where the file cannot be written (a full disk), the rest of the output is read and
    dropped, so the agent never blocks on its own output."""
    pipe = asyncio.StreamReader()
    transport, _ = await asyncio.get_running_loop().connect_read_pipe(
        lambda: asyncio.StreamReaderProtocol(pipe), pipe_end)
    try:
        with path.open("wb") as file:
            await _copy(pipe, file, limit)
    except OSError as exc:
        log.warning("an agent's output stops being kept in %s: %s", path, exc)
        while await pipe.read(CHUNK):  # a cancel (the run is over) still ends this
            pass
    finally:
        transport.close()


async def _copy(pipe: asyncio.StreamReader, file: BinaryIO, limit: int) -> None:
    tail_room = min(TAIL_BYTES, limit // 2)
    head_room = limit - tail_room
    tail: deque[bytes] = deque()
    held = dropped = 0
    try:
        while chunk := await pipe.read(CHUNK):
            if head_room > 0:
                head, chunk = chunk[:head_room], chunk[head_room:]
                file.write(head)
                file.flush()  # readable while the agent runs
                head_room -= len(head)
            if not chunk:
                continue
            tail.append(chunk)
            held += len(chunk)
            while tail and held - len(tail[0]) >= tail_room:  # the chunks after the first still hold the whole tail
                dropped += len(tail[0])
                held -= len(tail.popleft())
    finally:
        if held > tail_room:
            excess = held - tail_room
            tail[0], dropped = tail[0][excess:], dropped + excess
        try:  # an error here must not replace a cancel, which ends the copying
            if dropped:
                file.write(f"\n[aios: {dropped} bytes of output dropped here; a run keeps its first "
                           f"{limit - tail_room} and last {tail_room} bytes (agents.max_log_mb)]\n".encode())
            file.write(b"".join(tail))
            file.flush()
        except OSError as exc:
            log.warning("the end of an agent's output could not be kept: %s", exc)
