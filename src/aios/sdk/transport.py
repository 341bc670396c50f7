"""HTTP transport to the kernel's ``/query`` route, and the one error type agents catch."""

from __future__ import annotations

import os
from typing import Any

import httpx

DEFAULT_KERNEL_URL = "http://localhost:8000"
# Syscalls wait in the kernel's queues as long as the load requires, so there is no read timeout by default.
DEFAULT_TIMEOUT = httpx.Timeout(None, connect=10.0)


class AIOSError(Exception):
    """The kernel refused or failed a syscall, or could not be reached (``status_code`` 0).

    ``status_code`` is the HTTP status (or the envelope's ``status_code`` for a syscall that ran and failed);
    ``message`` says what went wrong; ``response`` holds the typed reply when there was one.
    """

    def __init__(self, status_code: int, message: str, response: Any = None) -> None:
        super().__init__(f"[{status_code}] {message}")
        self.status_code = status_code
        self.message = message
        self.response = response


def kernel_url(base_url: str | None = None) -> str:
    return (base_url or os.environ.get("AIOS_KERNEL_URL") or DEFAULT_KERNEL_URL).rstrip("/")


def send_query(
    agent_name: str,
    query_type: str,
    query_data: dict[str, Any],
    base_url: str | None = None,
    timeout: float | httpx.Timeout | None = DEFAULT_TIMEOUT,
) -> dict[str, Any]:
    """POST one syscall and return the reply envelope; raise :class:`AIOSError` on any HTTP error."""
    url = kernel_url(base_url)
    body = {"agent_name": agent_name, "query_type": query_type, "query_data": query_data}
    try:
        reply = httpx.post(f"{url}/query", json=body, timeout=timeout)
    except httpx.TransportError as exc:
        raise AIOSError(0, f"cannot reach the kernel at {url} ({exc}); is `aios serve` running?") from None
    if reply.status_code != 200:
        raise AIOSError(reply.status_code, _detail(reply))
    return reply.json()


def _detail(reply: httpx.Response) -> str:
    try:
        detail = reply.json().get("detail", reply.text)
    except ValueError:
        return reply.text or reply.reason_phrase
    if isinstance(detail, list):  # validation errors: say which field and why
        return "; ".join(f"{'.'.join(str(p) for p in d.get('loc', []))}: {d.get('msg')}" for d in detail)
    return str(detail)
