"""The storage side of the HTTP API: reading a storage ``query_data`` into a request (422 naming the field when
it is malformed, a BadRequest naming it when the kernel refuses a value), and ``GET /share/{token}``, which
serves a shared file read-only."""

from __future__ import annotations

import mimetypes
from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, Request
from fastapi.responses import Response

from aios.server.operation_data import read_operation
from aios.storage.requests import StorageRequest, parse_request

router = APIRouter()


def storage_request(query_data: dict[str, Any], request: Request) -> StorageRequest:
    """``{query_class: "storage", operation_type, params}`` as the AIOS SDK sends it, checked."""
    base_url = str(request.base_url).rstrip("/")
    return read_operation("storage", query_data, lambda operation, params: parse_request(operation, params, base_url))


@router.get("/share/{token}")
async def shared_file(token: str, request: Request) -> Response:
    """The shared version of a file, as it was when shared; 404 for an unknown link, 410 once expired or revoked."""
    shared = await request.app.state.kernel.storage.shared_file(token)
    media_type, _ = mimetypes.guess_type(shared.name)
    if media_type is None:
        media_type = "text/plain" if _is_text(shared.data) else "application/octet-stream"
    if media_type.startswith("text/"):
        media_type += "; charset=utf-8"
    return Response(shared.data, media_type=media_type, headers={
        "Content-Disposition": f"inline; filename*=UTF-8''{quote(shared.name)}",
        "Cache-Control": "no-store",
        "X-Content-Type-Options": "nosniff",
        "Content-Security-Policy": "sandbox",  # a shared page never runs as this kernel's origin
        "X-File-Version": str(shared.version),
    })


def _is_text(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True
