"""Refuse a request body over the configured size before any of it is parsed.

A plain ASGI middleware: a ``Content-Length`` over the limit is answered 413 at once, without reading the body;
a body sent without one (chunked) is counted as it arrives, and reading it fails with a 413 as soon as it passes
the limit, before the route parses anything.
"""

from __future__ import annotations

from typing import Any, Awaitable, Callable

from starlette.exceptions import HTTPException

from aios.server.asgi import send_error

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

MB = 1 << 20


class BodyLimit:
    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.max_bytes:
            await send_error(send, scope["path"], 413, self._too_large(f"{declared / MB:.1f} MB"))
            return
        received = 0

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    # Raised inside the route's body read, which passes HTTPExceptions on to the app's handler.
                    raise HTTPException(413, self._too_large("more than that"))
            return message

        await self.app(scope, counting_receive, send)

    def _too_large(self, sent: str) -> str:
        return (f"the request body is too large ({sent}); this kernel takes at most {self.max_bytes / MB:g} MB "
                "(server.max_body_mb): send less, or raise the limit")


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", []):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None
