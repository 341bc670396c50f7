"""``GET /scheduler/events``: the scheduler feed as server-sent events, for the web UI's scheduler view.

Each event is ``event: snapshot`` with one JSON object: ``time``, ``models`` (per model: running, waiting,
preemptions, policy, max_batch), ``queues`` (per syscall kind: queued, running), and ``syscalls`` (the live ones
and the most recent ended ones: id, kind, agent, status, model, priority, created, slices as ``[start, end]``,
preemptions). All watchers share one producer (see ``aios.scheduler.feed``); a token of an agent sees its own
syscalls only, the administrator's (or none, on a kernel that requires none) every agent's.
"""

from __future__ import annotations

import json
from typing import Any, AsyncIterator

from fastapi import APIRouter, Query, Request
from fastapi.responses import StreamingResponse

from aios.access.manager import ADMIN
from aios.errors import Forbidden

router = APIRouter(prefix="/scheduler")

MAX_SYSCALLS = 1000


@router.get("/events")
async def events(request: Request, limit: int = Query(default=200, ge=1, le=MAX_SYSCALLS),
                 agent: str | None = Query(default=None, min_length=1, max_length=256)) -> StreamingResponse:
    """Snapshots as the scheduling changes (at a bounded rate), the current one first; ``limit``: the most
    recent syscalls each holds; ``agent``: only that agent's syscalls."""
    identity = request.scope.get("state", {}).get("identity")
    if identity not in (None, ADMIN, agent) and agent is not None:
        raise Forbidden(f"this bearer token is agent {identity!r}'s: it sees its own syscalls, not {agent!r}'s")
    only = identity if identity not in (None, ADMIN) else agent

    async def stream() -> AsyncIterator[str]:
        async for snapshot in request.app.state.kernel.feed.watch():
            yield f"event: snapshot\ndata: {json.dumps(_seen(snapshot, only, limit))}\n\n"

    return StreamingResponse(stream(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})


def _seen(snapshot: dict[str, Any], agent: str | None, limit: int) -> dict[str, Any]:
    syscalls = [s for s in snapshot["syscalls"] if agent is None or s["agent"] == agent]
    return {**snapshot, "syscalls": syscalls[-limit:]}
