"""The access side of the HTTP API: agents and their tokens, groups (the administrator's); permissions, grants,
requests and the audit log (each agent's own); approvals of irreversible operations.

Who calls is the identity of the bearer token (see ``aios.server.auth``); on a kernel that does not require
tokens, an agent may name itself with the ``X-AIOS-Agent`` header instead. Administrator routes always need the
administrator's token (``<data_dir>/access/admin.token``); ``GET /access/confirm``, whose answer is the same for
everyone, needs only what every route does (a valid token where tokens are required).
"""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from aios.access.manager import ADMIN, AccessManager
from aios.errors import Forbidden, Unauthenticated
from aios.server.wire import AgentName, PathId
from aios.tools.builtin import files

router = APIRouter(prefix="/access")


async def caller(request: Request) -> str:
    """The calling agent: its token's identity, else (tokens not required) its X-AIOS-Agent header."""
    identity = request.scope.get("state", {}).get("identity")
    if identity is not None:
        return identity
    named = request.headers.get("x-aios-agent", "").strip()
    if not named:
        raise Unauthenticated("say which agent is calling: Authorization: Bearer <token>, or the X-AIOS-Agent header")
    if named == ADMIN:
        raise Forbidden(f"{ADMIN!r} is the administrator's identity: it needs the administrator's token")
    await _access(request).check_claim(None, named)
    return named


def administrator(request: Request) -> None:
    if request.scope.get("state", {}).get("identity") != ADMIN:
        raise Forbidden("this route needs the administrator's token (in <data_dir>/access/admin.token)")


def _access(request: Request) -> AccessManager:
    return request.app.state.kernel.access


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class AgentBody(_Body):
    agent_name: AgentName


class GrantBody(_Body):
    resource: str = Field(min_length=1, max_length=600, examples=["files:alice", "memory:alice", "tool:aios/calculator"])
    grantee: str = Field(min_length=1, max_length=300, examples=["bob", "group:team"])
    permission: Literal["read", "write", "call"]


class RequestBody(_Body):
    resource: str = Field(min_length=1, max_length=600)
    permission: Literal["read", "write", "call"]
    note: str = Field(default="", max_length=2000)


class AnswerBody(_Body):
    approve: bool


# -- the administrator ------------------------------------------------------------------------------------------
@router.post("/agents")
async def register_agent(body: AgentBody, request: Request) -> dict[str, Any]:
    """A new token for an agent (shown once; only its hash is kept). An earlier token stops working."""
    administrator(request)
    return {"status": "success", "agent_name": body.agent_name, "token": await _access(request).register(body.agent_name)}


@router.get("/agents")
async def list_agents(request: Request) -> dict[str, Any]:
    administrator(request)
    return {"status": "success", "agents": await _access(request).agents()}


@router.delete("/agents/{agent_name:path}")
async def unregister_agent(agent_name: str, request: Request) -> dict[str, Any]:
    administrator(request)
    await _access(request).unregister(agent_name)
    return {"status": "success"}


@router.get("/groups")
async def list_groups(request: Request) -> dict[str, Any]:
    administrator(request)
    return {"status": "success", "groups": await _access(request).groups()}


@router.post("/groups/{group}/members")
async def add_member(group: str, body: AgentBody, request: Request) -> dict[str, Any]:
    administrator(request)
    await _access(request).add_member(group, body.agent_name)
    return {"status": "success"}


@router.delete("/groups/{group}/members/{agent_name:path}")
async def remove_member(group: str, agent_name: str, request: Request) -> dict[str, Any]:
    administrator(request)
    await _access(request).remove_member(group, agent_name)
    return {"status": "success"}


# -- each agent's permissions ---------------------------------------------------------------------------------
@router.get("/permissions")
async def permissions(request: Request) -> dict[str, Any]:
    """The calling agent's groups, the grants it made and holds, and its permission requests (made and received)."""
    return {"status": "success", **await _access(request).permissions(await caller(request))}


@router.post("/grants")
async def grant(body: GrantBody, request: Request) -> dict[str, Any]:
    """Grant a permission on one of the caller's resources (tools: the administrator's) to an agent or group."""
    made = await _access(request).grant(await caller(request), body.resource, body.grantee, body.permission)
    return {"status": "success", "grant": made}


@router.delete("/grants/{grant_id}")
async def revoke(grant_id: PathId, request: Request) -> dict[str, Any]:
    return {"status": "success", "grant": await _access(request).revoke(await caller(request), grant_id)}


@router.post("/requests")
async def request_permission(body: RequestBody, request: Request) -> dict[str, Any]:
    """Ask a resource's owner for a permission; the owner answers with POST /access/requests/{id}."""
    made = await _access(request).request(await caller(request), body.resource, body.permission, body.note)
    return {"status": "success", "request": made}


@router.post("/requests/{request_id}")
async def answer_request(request_id: PathId, body: AnswerBody, request: Request) -> dict[str, Any]:
    answered = await _access(request).answer(await caller(request), request_id, body.approve)
    return {"status": "success", "request": answered}


@router.get("/audit")
async def audit(request: Request, agent: str | None = None, decision: str | None = None, since: float | None = None,
                limit: int = Query(default=100, ge=1, le=10_000)) -> dict[str, Any]:
    """Newest first. An agent sees its own entries; the administrator everyone's."""
    viewer = await caller(request)
    entries = await _access(request).audit_log(viewer, agent, decision, since, limit)
    return {"status": "success", "entries": entries}


# -- approvals of irreversible operations ---------------------------------------------------------------------
@router.get("/confirm")
async def confirmations(request: Request) -> dict[str, Any]:
    """What this kernel counts as irreversible, for a client that asks its own person first (``aios terminal``):
    the storage and memory ``operations`` of ``access.confirm.operations``, the ``tools`` whose calls make them
    or are marked ``requires_confirmation``, and the ``mode`` that says whether the kernel itself waits for a
    person's approval of them (``off``: it does not). The answer is the same for every caller, so the route
    needs no agent's name: where tokens are required, the middleware has already asked for one (any agent's)."""
    kernel = request.app.state.kernel
    confirm = kernel.config.access.confirm
    marked = [tool.name for tool in kernel.tools.registry if tool.requires_confirmation]
    return {"status": "success", "mode": confirm.mode, "operations": list(confirm.operations),
            "tools": sorted({*files.confirmed(confirm.operations), *marked})}


@router.get("/approvals")
async def pending_approvals(request: Request, wait: float = Query(default=0, ge=0, le=60)) -> dict[str, Any]:
    """The operations waiting for a person's answer; with ``wait``, hold the request up to that many seconds
    until one arrives (a long poll: the terminal prompt listens this way)."""
    administrator(request)
    return {"status": "success", "approvals": await _access(request).approvals.waiting(wait)}


@router.post("/approvals/{approval_id}")
async def answer_approval(approval_id: PathId, body: AnswerBody, request: Request) -> dict[str, Any]:
    administrator(request)
    answered = _access(request).approvals.answer(approval_id, body.approve, by="the administrator")
    return {"status": "success", "approval": answered.describe()}
