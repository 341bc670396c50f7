"""The local hub's HTTP API: the routes the AIOS SDK's AgentManager and ToolManager call, in their shapes, so
``CEREBRUM_AGENT_HUB_URL`` / ``CEREBRUM_TOOL_HUB_URL`` can point at this kernel:

    POST /cerebrum/upload          {author, name, version, license, files: [{path, content}], entry, module}
    GET  /cerebrum/download        ?author&name[&version]  → the same shape (the newest version without one)
    GET  /cerebrum/get_all_agents  → {"<author>/<name>/<version>": {...}, ..., "count": N}
    GET  /cerebrum/check_updates   ?author&name&current_version → {update_available, latest_version}
    and the same under /cerebrum/tools/ (upload, download, list → a JSON list, check_updates).

Refusals are ``{"detail": ...}`` with a status saying why (400 a bad package, 404 none such, 409 that version
already holds other content, 413 too large); the AIOS SDK raises on them. With tokens required, an upload
needs the administrator's token or that of the agent ``author/name`` it uploads.
"""

from __future__ import annotations

import asyncio
import base64
from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field

from aios.access.manager import ADMIN
from aios.agents.hub import Hub, HubEntry, Upload
from aios.errors import Forbidden

router = APIRouter(prefix="/cerebrum")


class PackageFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    path: str = Field(max_length=1024)
    content: str  # base64


class UploadBody(BaseModel):
    """As the AIOS SDK's ``package_agent`` / ``package_tool`` make it; author, name and version come from
    config.json there (None when it lacks them), so they are checked by the hub, naming the field."""

    model_config = ConfigDict(extra="allow")

    author: str | None = None
    name: str | None = None
    version: str | None = None
    license: str = "Unknown"
    files: list[PackageFile] = Field(max_length=10_000)  # entry and module (sent too) are read from config.json


def _hub(request: Request) -> Hub:
    return request.app.state.kernel.agents.hub


async def _upload(kind: str, body: UploadBody, request: Request) -> dict[str, Any]:
    identity = request.scope.get("state", {}).get("identity")
    if identity not in (None, ADMIN, f"{body.author}/{body.name}"):
        raise Forbidden(f"agent {identity!r} may upload only packages named after itself, not "
                        f"{body.author}/{body.name}")
    await request.app.state.kernel.access.check_claim(identity, f"{body.author}/{body.name}")
    upload = Upload(body.author, body.name, body.version, body.license, [(f.path, f.content) for f in body.files])
    entry = await asyncio.to_thread(_hub(request).put, kind, upload)
    return {"status": "success", "message": f"{kind} {entry.author}/{entry.name} (v{entry.version}) uploaded",
            **entry.listing()}


async def _download(kind: str, request: Request, author: str, name: str, version: str | None) -> dict[str, Any]:
    entry, files = await asyncio.to_thread(_hub(request).get, kind, author, name, version)
    encoded = [{"path": path, "content": base64.b64encode(data).decode("ascii")} for path, data in files.items()]
    return {**entry.listing(), "files": encoded}


async def _check_updates(kind: str, request: Request, author: str, name: str, current_version: str) -> dict[str, Any]:
    available, newest = await asyncio.to_thread(_hub(request).update_available, kind, author, name, current_version)
    return {"update_available": available, "latest_version": newest}


async def _entries(kind: str, request: Request) -> list[HubEntry]:
    return await asyncio.to_thread(_hub(request).entries, kind)


def _package_routes(kind: str, prefix: str) -> None:
    """Upload, download and check_updates of one kind of package: the same shapes for agents and tools."""

    async def upload(body: UploadBody, request: Request) -> dict[str, Any]:
        return await _upload(kind, body, request)

    async def download(request: Request, author: str, name: str, version: str | None = None) -> dict[str, Any]:
        return await _download(kind, request, author, name, version)

    async def check_updates(request: Request, author: str, name: str, current_version: str) -> dict[str, Any]:
        return await _check_updates(kind, request, author, name, current_version)

    router.add_api_route(f"{prefix}/upload", upload, methods=["POST"], name=f"upload_{kind}")
    router.add_api_route(f"{prefix}/download", download, methods=["GET"], name=f"download_{kind}")
    router.add_api_route(f"{prefix}/check_updates", check_updates, methods=["GET"], name=f"check_{kind}_updates")


_package_routes("agent", "")
_package_routes("tool", "/tools")


@router.get("/get_all_agents")
async def all_agents(request: Request) -> dict[str, Any]:
    """Every version; the AIOS SDK reads all values but the last, which is the count."""
    entries = await _entries("agent", request)
    return {**{f"{e.author}/{e.name}/{e.version}": e.listing() for e in entries}, "count": len(entries)}


@router.get("/tools/list")
async def all_tools(request: Request) -> list[dict[str, Any]]:
    return [{**entry.listing(), "tool_type": "folder"} for entry in await _entries("tool", request)]
