"""The access manager: identities (per-agent tokens, and the kernel's administrator), decisions (ownership,
grants to agents and groups, restricted tools), permission requests, approvals, and the audit log.

An agent always reaches its own files and memories. Another agent's need a grant from their owner (``read``, or
``write`` which includes it), to the agent or to a group it belongs to (groups come from the config and from
the administrator). Denials, grants, revocations, requests and approvals are audited; an agent's use of its own
resources is not (it would drown the log).
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any, Callable

from aios.access import address
from aios.access.approvals import Approvals
from aios.access.resources import GROUP_PREFIX, Resource, check_grantee, satisfies
from aios.access.store import AccessStore
from aios.config import AccessConfig
from aios.errors import BadRequest, Conflict, Forbidden, NotFound, Unauthenticated
from aios.params import Request

log = logging.getLogger(__name__)

ADMIN = "kernel/admin"  # the identity of the administrator's token; no agent may take this name
TOKEN_PREFIX = "aios_"
MAX_PENDING_REQUESTS = 100  # per requester: what keeps an agent from filling owners' inboxes (and the database)


class AccessManager:
    def __init__(self, config: AccessConfig, data_dir: Path) -> None:
        self.config = config
        self.store = AccessStore(data_dir / "access" / "access.db")
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="access")
        self.admin_token_path = data_dir / "access" / "admin.token"
        self._admin_token = _admin_token(self.admin_token_path)
        self.approvals = Approvals(config.confirm.mode, config.confirm.timeout_s, self.audit)
        self._run_tokens: dict[str, str] = {}  # token -> agent, for agent processes the kernel runs

    async def _db(self, function: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._thread, function, *args)

    # -- who is asking ---------------------------------------------------------------------------------------
    async def identify(self, token: str) -> str | None:
        """The agent a bearer token belongs to (``ADMIN`` for the administrator's), or None."""
        # As bytes: compare_digest refuses str with non-ASCII characters, which any caller may send.
        if secrets.compare_digest(token.encode(), self._admin_token.encode()):
            return ADMIN
        if token in self._run_tokens:
            return self._run_tokens[token]
        return await self._db(self.store.agent_of, token)

    async def check_claim(self, identity: str | None, agent: str) -> None:
        """Where tokens are not required, a request without one is the agent it names, unless that agent has a
        token of its own (``aios token create``): then it must send it. Otherwise any local program could read
        the files and memories of an agent whose owner gave it a token. (Read from the store each time: another
        kernel on the same data dir may have made or revoked one.)"""
        if identity is None and await self._db(self.store.has_token, agent):
            raise Unauthenticated(f"agent {agent!r} has a token: requests as {agent!r} must send it "
                                  "(Authorization: Bearer <token>, $AIOS_TOKEN for this project's SDK, or a kernel "
                                  "URL ending in /as/<token> for the AIOS SDK)")

    def issue_run_token(self, agent: str) -> str:
        """A token for one agent process the kernel starts: held in memory only, so it never replaces the
        agent's own token, and ends with ``revoke_run_token`` when the process does (or with the kernel)."""
        assert agent != ADMIN, "the runtime refuses an agent of the administrator's name"
        token = TOKEN_PREFIX + "run_" + secrets.token_urlsafe(32)
        self._run_tokens[token] = agent
        return token

    def revoke_run_token(self, token: str) -> None:
        self._run_tokens.pop(token, None)

    async def register(self, agent: str) -> str:
        """A new token for ``agent`` (any earlier one stops working)."""
        if agent == ADMIN:
            raise BadRequest(f"{ADMIN!r} is the administrator's identity; choose another agent name")
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        await self._db(self.store.set_token, agent, token)
        await self.audit(ADMIN, "register", f"agent:{agent}", "done", "new token issued")
        return token

    async def unregister(self, agent: str) -> None:
        if not await self._db(self.store.remove_agent, agent):
            raise NotFound(f"no agent {agent!r} is registered: `aios token list` shows those that are")
        await self.audit(ADMIN, "unregister", f"agent:{agent}", "done", "token revoked")

    async def tokened(self) -> frozenset[str]:
        """The agents that have a token of their own."""
        return frozenset(name for name, _ in await self._db(self.store.agents))

    async def agents(self) -> list[dict[str, Any]]:
        return [{"agent_name": name, "created": created} for name, created in await self._db(self.store.agents)]

    # -- decisions -------------------------------------------------------------------------------------------
    async def authorize(self, agent: str, permission: str, resource: Resource) -> None:
        """Return if ``agent`` may use ``resource`` so; else raise Forbidden (403) naming what is missing."""
        if agent in (resource.owner, ADMIN) or (resource.kind == "tool" and resource.name not in
                                                  self.config.restricted_tools):
            return
        groups = await self.groups_of(agent)
        grantees = [agent, *(GROUP_PREFIX + g for g in sorted(groups))]
        for grant in await self._db(self.store.grants_on, str(resource), grantees):
            if satisfies(grant.permission, permission):
                await self.audit(agent, permission, str(resource), "allowed", f"grant {grant.id} to {grant.grantee}")
                return
        reason = f"agent {agent!r} has no {permission} permission on {resource}"
        await self.audit(agent, permission, str(resource), "denied", reason)
        who = "the kernel's administrator" if resource.owner is None else f"its owner, {resource.owner!r},"
        raise Forbidden(f"{reason}; {who} can grant it (ask with request_permission)")

    async def admit(self, caller: str, kind: str, request: Request, needs: dict[str, str],
                    asking: frozenset[str]) -> Request:
        """The request with whose ``kind`` resource (files, memory) it works on as its ``owner`` —
        ``params["owner"]``, else the caller's own — once allowed: another agent's needs the permission
        ``needs[operation]`` on it, and an operation in ``asking`` a person's approval (unless one approved it
        already: ``request.approved``). Raises Forbidden
        otherwise. Checked once, when the syscall is submitted: a grant revoked while it is queued does not stop
        it."""
        params = dict(request.params)
        owner = params.pop("owner", caller)
        if owner != caller:
            await self.authorize(caller, needs[request.operation], Resource(kind, owner))
        if request.operation in asking and not request.approved:
            action = "storage" if kind == "files" else kind
            await self.confirm(caller, f"{action} {request.operation}", {"owner": owner, **params})
        return replace(request, owner=owner, params=params)

    async def groups_of(self, agent: str) -> set[str]:
        configured = {group for group, members in self.config.groups.items() if agent in members}
        return configured | await self._db(self.store.groups_of, agent)

    async def confirm(self, agent: str, action: str, detail: dict[str, Any]) -> None:
        await self.approvals.confirm(agent, action, detail)

    # -- grants and requests ---------------------------------------------------------------------------------
    async def grant(self, granter: str, resource_text: str, grantee: str, permission: str) -> dict[str, Any]:
        resource = _parsed(resource_text, permission)
        try:
            check_grantee(grantee)
        except ValueError as exc:
            raise BadRequest(str(exc)) from None
        if granter not in (resource.owner, ADMIN):
            raise Forbidden(f"only {resource.owner or 'the administrator'!r} can grant permissions on {resource}")
        grant = await self._db(self.store.add_grant, granter, str(resource), grantee, permission)
        await self.audit(granter, "grant", str(resource), "granted", f"{permission} to {grantee} (grant {grant.id})")
        return asdict(grant)

    async def revoke(self, agent: str, grant_id: int) -> dict[str, Any]:
        grant = await self._db(self.store.remove_grant, grant_id) if agent == ADMIN else None
        if agent != ADMIN:
            mine = [g for g in await self._db(self.store.grants_involving, agent, set()) if g.id == grant_id]
            if not mine or mine[0].owner != agent:
                raise NotFound(f"no grant {grant_id} made by {agent!r}")
            grant = await self._db(self.store.remove_grant, grant_id)
        if grant is None:
            raise NotFound(f"no grant {grant_id}")
        await self.audit(agent, "revoke", grant.resource, "revoked", f"{grant.permission} of {grant.grantee} "
                         f"(grant {grant.id})")
        return asdict(grant)

    async def request(self, requester: str, resource_text: str, permission: str, note: str) -> dict[str, Any]:
        """Ask the owner; asked again while the first is pending, the pending request is the answer (an agent
        retrying must not fill its owner's inbox)."""
        resource = _parsed(resource_text, permission)
        owner = resource.owner or ADMIN
        request, made = await self._db(self.store.add_request, requester, owner, str(resource), permission, note,
                                       MAX_PENDING_REQUESTS)
        if request is None:
            raise Conflict(f"agent {requester!r} already has {MAX_PENDING_REQUESTS} permission requests waiting "
                           "for an answer: ask again once their owners have answered some")
        if made:
            await self.audit(requester, "request", str(resource), "pending", f"{permission}, request {request.id}")
        return asdict(request)

    async def answer(self, owner: str, request_id: int, approve: bool) -> dict[str, Any]:
        request = await self._db(self.store.request, request_id)
        if request is None or owner not in (request.owner, ADMIN):
            raise NotFound(f"no permission request {request_id} to {owner!r}")
        # Only the answer that moves it from pending grants: of two at once, the other learns what won.
        if not await self._db(self.store.answer_request, request_id, "granted" if approve else "declined"):
            now = await self._db(self.store.request, request_id)
            raise Conflict(f"permission request {request_id} was already answered: it is {now.status}")
        if approve:
            await self.grant(request.owner, request.resource, request.requester, request.permission)
        else:
            await self.audit(owner, "decline", request.resource, "declined", f"request {request_id}")
        return asdict(await self._db(self.store.request, request_id))

    async def permissions(self, agent: str) -> dict[str, Any]:
        groups = await self.groups_of(agent)
        grants = await self._db(self.store.grants_involving, agent, groups)
        requests = await self._db(self.store.requests_involving, agent)
        return {"agent_name": agent, "groups": sorted(groups), "grants": [asdict(g) for g in grants],
                "requests": [asdict(r) for r in requests]}

    # -- groups ----------------------------------------------------------------------------------------------
    async def add_member(self, group: str, agent: str) -> None:
        await self._db(self.store.add_member, group, agent)
        await self.audit(ADMIN, "add_member", f"group:{group}", "done", agent)

    async def remove_member(self, group: str, agent: str) -> None:
        if not await self._db(self.store.remove_member, group, agent):
            raise NotFound(f"{agent!r} is not a member of group {group!r} (members from the config stay)")
        await self.audit(ADMIN, "remove_member", f"group:{group}", "done", agent)

    async def groups(self) -> dict[str, list[str]]:
        stored = await self._db(self.store.members)
        return {g: sorted(set(self.config.groups.get(g, [])) | set(stored.get(g, [])))
                for g in sorted({*self.config.groups, *stored})}

    # -- audit -----------------------------------------------------------------------------------------------
    async def audit(self, agent: str, action: str, resource: str, decision: str, reason: str) -> None:
        await self._db(self.store.audit, agent, action, resource, decision, reason)

    async def audit_log(self, viewer: str, agent: str | None, decision: str | None, since: float | None,
                        limit: int) -> list[dict[str, Any]]:
        """The newest entries first; an agent sees only its own, the administrator everyone's."""
        if viewer != ADMIN:
            if agent not in (None, viewer):
                raise Forbidden(f"agent {viewer!r} may read only its own audit entries")
            agent = viewer
        return await self._db(self.store.audit_log, agent, decision, since, limit)

    def serving_at(self, url: str) -> None:
        """Record where this kernel serves, beside the administrator's token: the command line sends the token
        there only (``aios.access.address``)."""
        address.record(self.admin_token_path.parent, url)

    async def close(self) -> None:
        address.forget(self.admin_token_path.parent)
        await asyncio.get_running_loop().run_in_executor(self._thread, self.store.close)
        self._thread.shutdown(wait=False)


def _parsed(resource_text: str, permission: str) -> Resource:
    try:
        resource = Resource.parse(resource_text)
        resource.check_permission(permission)
    except ValueError as exc:
        raise BadRequest(str(exc)) from None
    return resource


def _admin_token(path: Path) -> str:
    """The administrator's token: made once, kept in the data dir readable by its owner only."""
    if path.is_file():
        return path.read_text().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    token = TOKEN_PREFIX + "admin_" + secrets.token_urlsafe(32)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another kernel on this data dir made it first
        return path.read_text().strip()
    with os.fdopen(fd, "w") as file:
        file.write(token + "\n")
    log.warning("made the administrator's token: %s (keep it secret)", path)
    return token
