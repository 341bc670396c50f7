"""HTTP transport to the kernel's ``/query`` route, and the one error type agents catch."""

from __future__ import annotations

import json
import os
from contextlib import contextmanager
from typing import Any, Generator, Iterator

import httpx

DEFAULT_KERNEL_URL = "http://localhost:8000"
# Syscalls wait in the kernel's queues as long as the load requires, so there is no read timeout by default.
DEFAULT_TIMEOUT = httpx.Timeout(None, connect=10.0)


class AIOSError(Exception):
    """The kernel refused or failed a syscall, or the call never reached one (``status_code`` 0: no kernel at the
    URL, a call that cannot be sent, a reply that is no kernel's).

    ``status_code`` is the HTTP status (or the envelope's ``status_code`` for a syscall that ran and failed);
    ``message`` says what went wrong; ``response`` holds the typed reply when there was one.
    """

    def __init__(self, status_code: int, message: str, response: Any = None) -> None:
        super().__init__(f"[{status_code}] {message}" if status_code else message)  # 0: no reply had a status
        self.status_code = status_code
        self.message = message
        self.response = response


def kernel_url(base_url: str | None = None) -> str:
    """``base_url``, else ``$AIOS_KERNEL_URL``, else the default; a ``base_url`` that is not a string (say, a tools
    list passed where Cerebrum's order has the URL) raises :class:`AIOSError` naming it."""
    if base_url is not None and not isinstance(base_url, str):
        raise AIOSError(0, f"base_url must be the kernel's URL as a string (such as {DEFAULT_KERNEL_URL!r}), not "
                           f"{type(base_url).__name__} {_excerpt(base_url)}; check the arguments' order")
    return (base_url or os.environ.get("AIOS_KERNEL_URL") or DEFAULT_KERNEL_URL).rstrip("/")


def _headers(agent_name: str | None) -> dict[str, str]:
    """The agent's bearer token (``$AIOS_TOKEN``) when it has one; its name for routes that ask who calls."""
    headers = {"X-AIOS-Agent": agent_name} if agent_name else {}
    token = os.environ.get("AIOS_TOKEN")
    return {**headers, "Authorization": f"Bearer {token}"} if token else headers


def send_query(
    agent_name: str,
    query_type: str,
    query_data: dict[str, Any],
    base_url: str | None = None,
    timeout: float | httpx.Timeout | None = DEFAULT_TIMEOUT,
) -> dict[str, Any]:
    """POST one syscall and return the reply envelope; raise :class:`AIOSError` on any failure, so that an
    agent needs one ``except`` whatever went wrong (bad URL, no kernel, or a reply that is no kernel's)."""
    body = {"agent_name": agent_name, "query_type": query_type, "query_data": query_data}
    return _exchange("POST", "/query", base_url, timeout, f"the {query_type} syscall", json=body,
                     headers=_headers(None))


def stream_query(
    agent_name: str,
    query_type: str,
    query_data: dict[str, Any],
    base_url: str | None = None,
    timeout: float | httpx.Timeout | None = DEFAULT_TIMEOUT,
) -> Generator[dict[str, Any], None, None]:
    """POST one syscall with ``stream: true`` and yield each NDJSON line as it comes (deltas, then the envelope);
    errors as for :func:`send_query`."""
    body = {"agent_name": agent_name, "query_type": query_type, "query_data": {**query_data, "stream": True}}
    url = kernel_url(base_url)
    exchange = httpx.stream("POST", f"{url}/query", json=body, headers=_headers(None), timeout=timeout)
    with reaching(url, f"the {query_type} syscall"), exchange as reply:
        if reply.status_code != 200:
            reply.read()
            raise AIOSError(reply.status_code, error_detail(reply))
        for line in reply.iter_lines():
            if line.strip():
                yield _parsed_line(line, url)


def _parsed_line(line: str, url: str) -> dict[str, Any]:
    try:
        item = json.loads(line)
    except ValueError:
        raise not_an_envelope(line, f"the stream from {url} is not a kernel's (a line is not JSON)") from None
    if not isinstance(item, dict):
        raise not_an_envelope(item)
    return item


def get_json(path: str, base_url: str | None = None, timeout: float | httpx.Timeout | None = 30.0,
             agent_name: str | None = None) -> dict[str, Any]:
    """GET one of the kernel's JSON routes (``/tools``, ``/status``, ...); errors as for :func:`send_query`."""
    return _exchange("GET", path, base_url, timeout, f"GET {path}", headers=_headers(agent_name))


def call_route(method: str, path: str, agent_name: str | None, base_url: str | None = None,
               body: dict[str, Any] | None = None, timeout: float | httpx.Timeout | None = 30.0) -> dict[str, Any]:
    """Any other JSON route, as ``agent_name``; errors as for :func:`send_query`."""
    return _exchange(method, path, base_url, timeout, f"{method} {path}", headers=_headers(agent_name),
                     **({"json": body} if body is not None else {}))


def _exchange(method: str, path: str, base_url: str | None, timeout: float | httpx.Timeout | None, what: str,
              **request: Any) -> dict[str, Any]:
    url = kernel_url(base_url)
    with reaching(url, what):
        reply = httpx.request(method, f"{url}{path}", timeout=timeout, **request)
    if reply.status_code != 200:
        raise AIOSError(reply.status_code, error_detail(reply))
    try:
        body = reply.json()
    except ValueError:
        raise not_an_envelope(reply.text, f"the reply from {url} is not a kernel envelope (not JSON)") from None
    if not isinstance(body, dict):
        raise not_an_envelope(body)
    return body


@contextmanager
def reaching(url: str, what: str) -> Iterator[None]:
    """An exchange with the kernel at ``url``; what goes wrong on the way raises :class:`AIOSError`."""
    try:
        yield
    except httpx.InvalidURL as exc:
        raise AIOSError(0, f"invalid kernel URL {url!r}: {exc}") from None
    except httpx.TransportError as exc:
        raise AIOSError(0, f"cannot reach the kernel at {url} ({exc}); is `aios serve` running?") from None
    except httpx.HTTPError as exc:
        raise AIOSError(0, f"HTTP exchange with the kernel at {url} failed: {exc}") from None
    except (TypeError, ValueError) as exc:  # httpx encodes the body as JSON: an object() or a NaN lands here
        raise AIOSError(0, f"cannot send {what}: its data is not JSON-serialisable ({exc})") from None


def not_an_envelope(payload: Any, why: str = "the reply is not a kernel envelope") -> AIOSError:
    """The error for a reply that is not what a kernel sends (another server on the port, a proxy's page)."""
    return AIOSError(0, f"{why}: {_excerpt(payload)}")


def _excerpt(payload: Any, limit: int = 200) -> str:
    text = repr(payload)  # repr keeps a multi-line page on one line and shows what kind of value it was
    return text if len(text) <= limit else text[:limit] + "..."


def error_detail(reply: httpx.Response) -> str:
    """What a kernel's error reply says, on one line: its ``detail``, with each field's problem for a 422."""
    try:
        body = reply.json()
    except ValueError:
        return reply.text or reply.reason_phrase
    detail = body.get("detail", reply.text) if isinstance(body, dict) else body
    if isinstance(detail, list):  # validation errors: say which field and why
        return "; ".join(_problem(d) for d in detail) or reply.reason_phrase
    return str(detail)


def _problem(item: Any) -> str:
    """One FastAPI validation error ``{"loc": [...], "msg": ...}``, or whatever else the list holds."""
    if not isinstance(item, dict):
        return str(item)
    loc = item.get("loc")
    path = ".".join(str(p) for p in loc) if isinstance(loc, (list, tuple)) else str(loc or "")
    return f"{path}: {item.get('msg')}" if path else str(item.get("msg"))
