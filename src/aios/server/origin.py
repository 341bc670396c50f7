"""Requests that web pages make behind the user's back are refused, as a plain ASGI middleware.

A kernel on loopback that requires no tokens (the default) acts for whatever reaches its port, and any web page
the user opens can try to: by posting a form to ``http://127.0.0.1:8000`` (cross-site request forgery), or by
pointing its own name at 127.0.0.1 once loaded (DNS rebinding), after which the browser lets it read the
replies as its own. So:

- a request whose ``Origin`` is not this kernel's own address is refused (403). Browsers send ``Origin`` with
  every POST and every cross-origin request, and a rebinding page cannot send this kernel's;
- on such a kernel, a request whose ``Host`` is not a loopback name (``localhost``, ``127.0.0.1``, ``[::1]``) or
  the configured host is refused (403): a rebinding page's requests carry its own name.

Programs (the SDKs, OpenAI clients, curl) send no ``Origin`` and the address they connect to as ``Host``; the
web UI's pages are the kernel's own origin. Neither is affected.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from aios.server.asgi import send_error
from aios.server.auth import ASGIApp, Scope, is_loopback


class SameOrigin:
    def __init__(self, app: ASGIApp, served_host: str | None, public_url: str | None = None) -> None:
        """``served_host``: the loopback host a kernel without tokens serves on, whose Host headers are checked;
        None where any name may reach it (tokens guard it, or it serves beyond loopback). ``public_url``: the
        kernel's address as browsers reach it (``storage.public_url``), whose pages are its own too (behind a
        proxy that sends on another Host)."""
        self.app, self.served_host = app, None if served_host is None else _bare(served_host)
        self.public = _netloc(public_url) if public_url else None

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            headers = {name.lower(): value.decode("latin-1") for name, value in reversed(scope.get("headers", []))}
            problem = self._problem(headers.get(b"host"), headers.get(b"origin"))
            if problem is not None:
                await send_error(send, scope["path"], 403, problem)
                return
        await self.app(scope, receive, send)

    def _problem(self, host: str | None, origin: str | None) -> str | None:
        """Why a request must be refused (None when it may go on)."""
        try:
            return self._foreign(host, origin)
        except ValueError:  # no browser sends such headers ("[::1", "http://[x")
            return f"the request's Host ({host!r}) or Origin ({origin!r}) is no address"

    def _foreign(self, host: str | None, origin: str | None) -> str | None:
        if self.served_host is not None and host is not None:
            name = _bare(urlsplit(f"//{host}").hostname or "")
            if not (is_loopback(name) or name == self.served_host):
                return (f"this kernel, which requires no tokens, answers requests for a loopback address only, and "
                        f"this one is for {host!r} (a web page that pointed its name at this machine?); connect "
                        "to 127.0.0.1 or localhost, or, to serve it under another name (behind a proxy), set "
                        "access.auth: required")
        own = {name for name in (host and host.lower(), self.public) if name}
        if origin is not None and _netloc(origin) not in own:
            return (f"a request from the web page at {origin!r} is refused: this kernel answers its own pages and "
                    "programs (which send no Origin), not other sites' pages")
        return None


def _bare(host: str) -> str:
    return host.strip("[]").lower()


def _netloc(url: str) -> str | None:
    """``host[:port]`` of an ``Origin`` or URL, without its scheme's default port, as browsers write it (None for
    ``null``, which sandboxed pages and files send)."""
    parts = urlsplit(url)
    if parts.scheme not in DEFAULT_PORTS or not parts.netloc:
        return None
    netloc = parts.netloc.lower()
    return netloc.removesuffix(f":{DEFAULT_PORTS[parts.scheme]}") if parts.port == DEFAULT_PORTS[parts.scheme] \
        else netloc


DEFAULT_PORTS = {"http": 80, "https": 443}
