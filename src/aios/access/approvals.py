"""A person's approval of irreversible operations (rollback, delete, share; tools marked
``requires_confirmation``), per ``access.confirm.mode``:

- ``off``: nothing is asked;
- ``auto_approve`` / ``auto_deny``: a fixed answer, recorded in the audit log;
- ``ask``: the operation waits until a person answers — in the ``aios approvals`` terminal prompt or through
  ``POST /access/approvals/{id}`` from any UI — and an unanswered request is denied after ``timeout_s``.

Waiting is event-driven: an operation awaits its own future, and a watcher awaits the condition that a new
request arrived (``GET /access/approvals?wait=S`` is a long poll).
"""

from __future__ import annotations

import asyncio
import itertools
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from aios.errors import Forbidden, NotFound

Audit = Callable[[str, str, str, str, str], Any]  # (agent, action, resource, decision, reason), awaitable
MAX_WAITING_PER_AGENT = 8  # operations of one agent waiting for a person at once


@dataclass
class Approval:
    id: int
    agent: str
    action: str  # e.g. "storage delete", "tool aios/delete_file"
    detail: dict[str, Any]
    created: float = field(default_factory=time.time)
    future: asyncio.Future[tuple[bool, str]] | None = None

    def describe(self) -> dict[str, Any]:
        return {"id": self.id, "agent": self.agent, "action": self.action, "detail": self.detail,
                "created": self.created}


class Approvals:
    def __init__(self, mode: str, timeout_s: float, audit: Audit) -> None:
        self.mode, self.timeout_s, self._audit = mode, timeout_s, audit
        self.pending: dict[int, Approval] = {}
        self._ids = itertools.count(1)
        self._arrived = asyncio.Condition()
        self._closed = False

    async def confirm(self, agent: str, action: str, detail: dict[str, Any]) -> None:
        """Return once the operation may go ahead; raise Forbidden (403) saying why it may not."""
        if self.mode == "off":
            return
        if self.mode in ("auto_approve", "auto_deny"):
            approved = self.mode == "auto_approve"
            await self._audit(agent, action, str(detail), "approved" if approved else "denied",
                              f"access.confirm.mode is {self.mode}")
            if not approved:
                raise Forbidden(f"{action} needs a person's approval, and this kernel denies such operations "
                                "(access.confirm.mode: auto_deny)")
            return
        waiting = sum(approval.agent == agent for approval in self.pending.values())
        if waiting >= MAX_WAITING_PER_AGENT:  # a person answers them one by one: one agent must not bury the rest
            raise Forbidden(f"{action} needs a person's approval, and agent {agent!r} already has {waiting} "
                            "operations waiting for one: wait for their answers, then ask again")
        approved, why = await self._ask(Approval(next(self._ids), agent, action, detail))
        await self._audit(agent, action, str(detail), "approved" if approved else "denied", why)
        if not approved:
            raise Forbidden(f"{action} was not approved: {why}")

    async def _ask(self, approval: Approval) -> tuple[bool, str]:
        if self._closed:
            return False, "the kernel is stopping"
        approval.future = asyncio.get_running_loop().create_future()
        self.pending[approval.id] = approval
        async with self._arrived:
            self._arrived.notify_all()
        try:
            return await asyncio.wait_for(asyncio.shield(approval.future), self.timeout_s)
        except TimeoutError:
            return False, f"nobody answered within {self.timeout_s:g} s (access.confirm.timeout_s)"
        finally:
            self.pending.pop(approval.id, None)

    def answer(self, approval_id: int, approve: bool, by: str) -> Approval:
        # Taken off the list now, not when the waiting operation wakes: a poll in between must not offer it again.
        approval = self.pending.pop(approval_id, None)
        if approval is None or approval.future is None or approval.future.done():
            raise NotFound(f"no pending approval {approval_id} (it was answered, timed out, or never asked)")
        approval.future.set_result((approve, f"{'approved' if approve else 'denied'} by {by}"))
        return approval

    async def waiting(self, wait_s: float) -> list[dict[str, Any]]:
        """The pending approvals; with none, wait up to ``wait_s`` for one to arrive (or for the kernel to
        stop)."""
        if not self.pending and wait_s > 0 and not self._closed:
            async with self._arrived:
                try:
                    await asyncio.wait_for(self._arrived.wait(), wait_s)
                except TimeoutError:
                    pass
        return [approval.describe() for approval in self.pending.values()]

    async def close(self) -> None:
        """The kernel is stopping: every wait for approvals answers now with what is pending, and later ones do
        not wait (the server waits for every open request before it stops, up to a minute for a long poll). The
        operations waiting for an answer are denied, and later ones at once."""
        self._closed = True
        async with self._arrived:
            self._arrived.notify_all()
        for approval in list(self.pending.values()):
            if approval.future is not None and not approval.future.done():
                approval.future.set_result((False, "the kernel stopped before anyone answered"))
