"""Running a syscall for an HTTP request: until it ends or the client hangs up, whole or streamed.

A client that hangs up cancels its syscall, so that it frees its place (its queue slot, its row in a batch) at
once; nobody would read the reply.
"""

from __future__ import annotations

import asyncio
from typing import Any, AsyncIterator

from fastapi import Request

from aios.kernel import Kernel
from aios.llm.handler import LLMQuery
from aios.syscall import Syscall, SyscallKind


async def until_done_or_disconnected(call: Any, request: Request) -> Any:
    """Await the syscall; if the client hangs up first, cancel it so it frees its place at once (None)."""
    call_task = asyncio.ensure_future(call)
    gone = asyncio.ensure_future(disconnected(request))
    try:
        await asyncio.wait([call_task, gone], return_when=asyncio.FIRST_COMPLETED)
    except asyncio.CancelledError:  # the request itself is cancelled (server shutting down)
        call_task.cancel()
        raise
    finally:
        gone.cancel()
    if not call_task.done():
        call_task.cancel()
        await asyncio.gather(call_task, return_exceptions=True)
        return None
    return call_task.result()


async def disconnected(request: Request) -> None:
    # The body is already read, so the next ASGI message is the disconnect (event-driven, no polling).
    while (await request.receive())["type"] != "http.disconnect":
        pass


class StreamedCall:
    """An LLM syscall whose reply text is handed over as it is decoded. ``submit`` raises a KernelError for a
    request the kernel refuses (before any of the reply is sent); iterate ``pieces`` for the text, then read
    the ended ``syscall``."""

    def __init__(self, kernel: Kernel, request: Request) -> None:
        self.kernel, self.request = kernel, request
        self._pieces: asyncio.Queue[str | None] = asyncio.Queue()  # None: the syscall ended, or the client left
        self.syscall: Syscall | None = None

    async def submit(self, agent: str, query: LLMQuery, priority: int = 0) -> None:
        query.on_text = self._pieces.put_nowait
        self.syscall = await self.kernel.submit(SyscallKind.LLM, agent, query, priority)

    async def pieces(self) -> AsyncIterator[str]:
        """The reply's text in pieces, until the syscall ends. A client that hangs up, or a reader that stops
        early, cancels the syscall."""
        syscall = self.syscall
        assert syscall is not None, "submit() first"
        # The end and the hang-up come through the queue too, behind the pieces already in it: a piece then costs
        # one queue read, not a wait on three futures (a GPU's steps hand out thousands of pieces a second).
        ended = asyncio.ensure_future(syscall.wait())
        gone = asyncio.ensure_future(disconnected(self.request))
        for watched in (ended, gone):
            watched.add_done_callback(lambda _: self._pieces.put_nowait(None))
        try:
            while (piece := await self._pieces.get()) is not None:
                yield piece
            while not gone.done() and not self._pieces.empty():  # what came in just before the end
                if (piece := self._pieces.get_nowait()) is not None:
                    yield piece
        finally:
            ended.cancel()
            gone.cancel()
            if not syscall.done:
                self.kernel.scheduler.cancel(syscall)
