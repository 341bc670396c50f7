"""The little the kernel's plain ASGI middlewares share: answering with a JSON error (or a page) before the app
runs."""

from __future__ import annotations

import json
from typing import Any, Awaitable, Callable

Send = Callable[[dict[str, Any]], Awaitable[None]]

OPENAI_PREFIX = "/v1/"  # the OpenAI-compatible API, whose clients read OpenAI's error objects


async def send_error(send: Send, path: str, status: int, detail: str, *headers: tuple[bytes, bytes]) -> None:
    """Answer ``{"detail": ...}`` with ``status`` (an OpenAI error object under ``/v1/``); the connection closes
    (the body may be unread)."""
    content = openai_error(status, detail) if path.startswith(OPENAI_PREFIX) else {"detail": detail}
    body = json.dumps(content).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close"), *headers]})
    await send({"type": "http.response.body", "body": body})


# OpenAI's error types by HTTP status; anything else under 500 is the request's fault, the rest the server's.
ERROR_TYPES = {401: "authentication_error", 403: "permission_error", 404: "invalid_request_error",
               429: "rate_limit_error"}


def openai_error(status: int, message: str, param: str | None = None, code: str | None = None) -> dict[str, Any]:
    """The body of an OpenAI API error: ``{"error": {"message", "type", "param", "code"}}``."""
    kind = ERROR_TYPES.get(status, "invalid_request_error" if status < 500 else "server_error")
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}
