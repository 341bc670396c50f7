"""The little the kernel's plain ASGI middlewares share: answering with a JSON error before the app runs."""

from __future__ import annotations

import json
from typing import Any, Awaitable, Callable

Send = Callable[[dict[str, Any]], Awaitable[None]]


async def send_error(send: Send, status: int, detail: str, *headers: tuple[bytes, bytes]) -> None:
    """Answer ``{"detail": ...}`` with ``status``; the connection closes (the body may be unread)."""
    body = json.dumps({"detail": detail}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close"), *headers]})
    await send({"type": "http.response.body", "body": body})
