"""The agent side of the HTTP API, in AIOS's shapes: ``POST /agents/submit`` ``{agent_id, agent_config: {task}}``
→ ``{status, execution_id, message}``; ``GET /agents/{execution_id}/status`` → ``{status: running | completed |
failed, result, execution_id}``; ``GET /agents/ps`` → ``{status, processes}``; and, beside them,
``POST /agents/{execution_id}/cancel`` and ``GET /agents/{execution_id}/logs``.

Refusals are ``{"detail": ...}`` with the HTTP status that says why (404 no such agent or execution, 400 an
invalid package, 403 not allowed, 409 already ended), as AIOS answers them.
"""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from aios.agents.runtime import COMPLETED, FAILED, AgentRuntime, Execution
from aios.server.wire import PathId, StrictFloat

router = APIRouter(prefix="/agents")


class AgentConfig(BaseModel):
    model_config = ConfigDict(extra="allow")  # AIOS clients send more (local_agent, ...); only these are read

    task: str = Field(max_length=1_000_000)
    time_limit_s: StrictFloat | None = Field(default=None, gt=0, description="at most agents.time_limit_s")


class AgentSubmit(BaseModel):
    model_config = ConfigDict(extra="forbid")

    agent_id: str = Field(min_length=1, max_length=4096, examples=["example/chat", "me/my_agent/0.1.0",
                                                                   "/path/to/my_agent"])
    agent_config: AgentConfig


def _runtime(request: Request) -> AgentRuntime:
    return request.app.state.kernel.agents


def _identity(request: Request) -> str | None:
    return request.scope.get("state", {}).get("identity")


async def _viewer(request: Request) -> tuple[str | None, frozenset[str]]:
    """Who asks about runs, and (asking without a token) the agents whose runs it may not see: theirs."""
    identity = _identity(request)
    return identity, (await _runtime(request).access.tokened() if identity is None else frozenset())


@router.post("/submit")
async def submit(body: AgentSubmit, request: Request) -> dict[str, Any]:
    execution = await _runtime(request).submit(body.agent_id, body.agent_config.task, _identity(request),
                                               body.agent_config.time_limit_s)
    return {"status": "success", "execution_id": execution.id,
            "message": f"Agent {body.agent_id} submitted for execution"}


@router.get("/ps")
async def processes(request: Request) -> dict[str, Any]:
    running = [execution.describe() for execution in _runtime(request).visible(*await _viewer(request))]
    return {"status": "success", "count": len(running), "processes": running}


@router.get("/{execution_id}/status")
async def status(execution_id: PathId, request: Request,
                 wait: float = Query(default=0, ge=0, le=60, description="hold up to this many seconds until the "
                                     "run ends (a long poll)")) -> dict[str, Any]:
    runtime = _runtime(request)
    execution = runtime.get(execution_id, *await _viewer(request))
    if wait:
        await runtime.wait(execution, wait)
    return _status(execution, await runtime.result(execution))


def _status(execution: Execution, result: Any) -> dict[str, Any]:
    reply: dict[str, Any] = {"status": execution.status, "result": result, "execution_id": execution.id}
    if execution.status == FAILED:
        return {**reply, "error": execution.error, "exit_code": execution.exit_code}
    if execution.status != COMPLETED:
        return {**reply, "message": "Execution in progress"}
    return reply


@router.post("/{execution_id}/cancel")
async def cancel(execution_id: PathId, request: Request) -> dict[str, Any]:
    runtime = _runtime(request)
    execution = runtime.get(execution_id, *await _viewer(request))
    await runtime.cancel(execution)
    return {"status": "success", "execution_id": execution.id, "message": f"Agent execution {execution.id} cancelled"}


@router.get("/{execution_id}/logs")
async def logs(execution_id: PathId, request: Request,
               tail_kb: int = Query(default=64, ge=1, le=10_240, description="the last KiB of each stream")
               ) -> dict[str, Any]:
    runtime = _runtime(request)
    execution = runtime.get(execution_id, *await _viewer(request))
    streams = await asyncio.to_thread(runtime.logs, execution, tail_kb * 1024)
    return {"status": "success", "execution_id": execution.id, **streams}
