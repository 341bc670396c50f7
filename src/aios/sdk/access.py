"""The access API: an agent's permissions on other agents' resources, and the grants it makes on its own.

Resources are written ``files:<agent>``, ``memory:<agent>`` and ``tool:<author/name>``; permissions are ``read``
and ``write`` (files, memories; write includes read) and ``call`` (tools). Another agent's files are then
reached with ``owner=`` on the storage functions. On a kernel that requires tokens, set ``$AIOS_TOKEN`` to the
agent's token; the functions raise :class:`AIOSError` (403 when the agent may not) like every SDK call."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from aios.sdk.transport import call_route, get_json


def list_permissions(agent_name: str, base_url: str | None = None) -> dict[str, Any]:
    """``{agent_name, groups, grants (made and held), requests (made and received)}``."""
    return get_json("/access/permissions", base_url, agent_name=agent_name)


def grant_permission(agent_name: str, resource: str, grantee: str, permission: str,
                     base_url: str | None = None) -> dict[str, Any]:
    """Let ``grantee`` (an agent, or ``group:<name>``) use one of ``agent_name``'s resources; the grant made."""
    body = {"resource": resource, "grantee": grantee, "permission": permission}
    return call_route("POST", "/access/grants", agent_name, base_url, body)["grant"]


def revoke_permission(agent_name: str, grant_id: int, base_url: str | None = None) -> dict[str, Any]:
    """Take back a grant ``agent_name`` made; the grant revoked."""
    return call_route("DELETE", f"/access/grants/{int(grant_id)}", agent_name, base_url)["grant"]


def request_permission(agent_name: str, resource: str, permission: str, note: str = "",
                       base_url: str | None = None) -> dict[str, Any]:
    """Ask a resource's owner for a permission; the request (its owner answers with :func:`answer_request`)."""
    body = {"resource": resource, "permission": permission, "note": note}
    return call_route("POST", "/access/requests", agent_name, base_url, body)["request"]


def answer_request(agent_name: str, request_id: int, approve: bool, base_url: str | None = None) -> dict[str, Any]:
    """Grant (``approve``) or decline a permission request made to ``agent_name``."""
    return call_route("POST", f"/access/requests/{int(request_id)}", agent_name, base_url,
                      {"approve": approve})["request"]


def audit_log(agent_name: str, base_url: str | None = None, *, decision: str | None = None,
              limit: int = 100) -> list[dict[str, Any]]:
    """``agent_name``'s own audit entries, newest first."""
    query = urlencode({"limit": int(limit), **({"decision": decision} if decision else {})})
    return get_json(f"/access/audit?{query}", base_url, agent_name=agent_name)["entries"]


def confirmations(agent_name: str, base_url: str | None = None) -> dict[str, Any]:
    """What the kernel counts as irreversible: ``{mode, operations, tools}`` (``GET /access/confirm``): the
    operations of ``access.confirm.operations``, the tools whose calls make them or are marked
    ``requires_confirmation``, and whether the kernel itself waits for a person's approval (``mode``)."""
    reply = get_json("/access/confirm", base_url, agent_name=agent_name)
    return {key: reply[key] for key in ("mode", "operations", "tools")}
