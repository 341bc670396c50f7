"""The check that refuses web pages' requests, case by case (the kernel's wiring of it is tested over HTTP in
test_server.py and test_access.py): which Host and Origin headers reach the app."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from aios.server.origin import SameOrigin

CASES = [
    # (id, served_host, public_url, Host, Origin, status, said)
    ("a-program", "127.0.0.1", None, "127.0.0.1:8000", None, 200, None),
    ("localhost", "127.0.0.1", None, "localhost:8000", None, 200, None),
    ("the-configured-host", "aios.lan", None, "aios.lan:8000", None, 200, None),
    ("its-own-page", "127.0.0.1", None, "127.0.0.1:8000", "http://127.0.0.1:8000", 200, None),
    ("rebinding", "127.0.0.1", None, "evil.example:8000", "http://evil.example:8000", 403, "'evil.example:8000'"),
    ("another-site", "127.0.0.1", None, "127.0.0.1:8000", "https://evil.example", 403, "'https://evil.example'"),
    ("a-sandboxed-page", "127.0.0.1", None, "127.0.0.1:8000", "null", 403, "'null'"),
    ("another-port", "127.0.0.1", None, "127.0.0.1:8000", "http://127.0.0.1:3000", 403, "web page"),
    ("no-host-but-an-origin", None, None, None, "http://127.0.0.1:8000", 403, "web page"),
    ("tokens-any-name", None, None, "aios.example.org", None, 200, None),
    ("behind-a-proxy-its-page", None, "https://aios.example.org/", "127.0.0.1:8000", "https://aios.example.org",
     200, None),
    ("behind-a-proxy-another-site", None, "https://aios.example.org", "127.0.0.1:8000", "https://evil.example",
     403, "'https://evil.example'"),
    ("public-url-with-its-default-port", None, "https://aios.example.org:443/", "127.0.0.1:8000",
     "https://aios.example.org", 200, None),
    ("a-host-that-is-no-address", "127.0.0.1", None, "[::1", None, 403, "is no address"),
    ("an-origin-that-is-no-address", "127.0.0.1", None, "127.0.0.1:8000", "http://[x", 403, "is no address"),
]


def answer(served_host: str | None, public_url: str | None, host: str | None, origin: str | None
           ) -> tuple[int, dict[str, Any] | None]:
    """What the check answers a POST with these headers (200: it let the app answer)."""
    sent: list[dict[str, Any]] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    headers = [(name, value.encode()) for name, value in ((b"host", host), (b"origin", origin)) if value is not None]
    scope = {"type": "http", "method": "POST", "path": "/query", "headers": headers}
    asyncio.run(SameOrigin(app, served_host, public_url)(scope, None, send))
    body = sent[1]["body"]
    return sent[0]["status"], json.loads(body) if body else None


@pytest.mark.parametrize(("served_host", "public_url", "host", "origin", "status", "said"), [c[1:] for c in CASES],
                         ids=[c[0] for c in CASES])
def test_only_the_kernels_own_pages_and_programs_get_through(served_host: str | None, public_url: str | None,
                                                             host: str | None, origin: str | None, status: int,
                                                             said: str | None) -> None:
    got, body = answer(served_host, public_url, host, origin)
    assert got == status, body
    if said is not None:
        assert body is not None and said in body["detail"]
