"""Bearer-token authentication on the HTTP API, as a plain ASGI middleware.

A request may carry ``Authorization: Bearer <token>`` — an agent's token, or the administrator's. Agents written
for the AIOS SDK cannot add headers, so the token may also lead the path instead: ``/as/<token>/query`` is
``/query`` with that token (set ``CEREBRUM_KERNEL_URL=http://host:8000/as/<token>``). A token that is not valid
is answered 401 (but under ``/v1/`` on a kernel that requires none: OpenAI clients always send an API key);
so is a request without one when authentication is required, except share links and the web UI's static files
(the page sends its token with each API call it makes). The identity found goes into
``scope["state"]["identity"]`` for the routes (None: no token, on a kernel that does not require one).
"""

from __future__ import annotations

import ipaddress
from typing import Any, Awaitable, Callable

from starlette.responses import RedirectResponse

from aios.access.manager import AccessManager
from aios.server.asgi import OPENAI_PREFIX, send_error
from aios.server.ui_routes import LOGIN_PAGE, is_ui

Scope = dict[str, Any]
ASGIApp = Callable[[Scope, Callable[[], Awaitable[Any]], Callable[[Any], Awaitable[None]]], Awaitable[None]]

PUBLIC_PREFIXES = ("/share/",)  # a share link's token is its own credential
PATH_TOKEN = "/as/"
NOT_KEPT = {"cache-control": "no-store", "referrer-policy": "no-referrer"}  # a redirect from an address with a token


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def auth_required(mode: str, host: str) -> bool:
    return mode == "required" or (mode == "auto" and not is_loopback(host))


def exposure_problem(mode: str, host: str) -> str | None:
    """Why the kernel must not start on ``host`` as configured (None when it may)."""
    if mode == "auto" and not is_loopback(host):
        return (f"serving on {host} exposes the kernel beyond this machine, and access.auth is not set: set "
                "access.auth: required (agents then need tokens: `aios token create NAME`), or access.auth: off "
                "to serve without authentication (anyone who can reach the port acts as any agent)")
    return None


class BearerAuth:
    def __init__(self, app: ASGIApp, access: AccessManager, required: bool) -> None:
        self.app, self.access, self.required = app, access, required

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        token = _path_token(scope) or _bearer(scope)
        identity = None
        if token is not None:
            identity = await self.access.identify(token)
            # OpenAI clients send some API key whatever the server: where none is required, one that is no token
            # of this kernel is no identity.
            if identity is None and (self.required or not scope["path"].startswith(OPENAI_PREFIX)):
                await _deny(scope, send, "the bearer token is not valid (revoked, or never issued by this kernel)")
                return
        elif self.required and not (scope["path"].startswith(PUBLIC_PREFIXES) or is_ui(scope["path"])):
            await _deny(scope, send, "this kernel requires a bearer token: send Authorization: Bearer <token> (an "
                                     "agent's token from `aios token create NAME`), or use the URL "
                                     "http://host:port/as/<token>")
            return
        scope.setdefault("state", {})["identity"] = identity
        await self.app(scope, receive, send)


def _bearer(scope: Scope) -> str | None:
    for name, value in scope.get("headers", []):
        if name == b"authorization":
            scheme, _, credential = value.decode("latin-1").partition(" ")
            return credential.strip() if scheme.lower() == "bearer" and credential.strip() else None
    return None


def _path_token(scope: Scope) -> str | None:
    """``/as/<token>/rest`` → the token, with the path made ``/rest``."""
    path: str = scope["path"]
    if not path.startswith(PATH_TOKEN):
        return None
    token, _, rest = path[len(PATH_TOKEN):].partition("/")
    scope["path"] = "/" + rest
    scope["raw_path"] = scope["path"].encode()
    return token or None


async def _deny(scope: Scope, send: Any, detail: str) -> None:
    if is_ui(scope["path"]):  # a browser at an address with a token that is not valid: the page that asks for one
        await RedirectResponse(f"{LOGIN_PAGE}?reason=refused", 303, headers=NOT_KEPT)(
            scope, None, send)  # type: ignore[arg-type]  # a response never reads the request
        return
    await send_error(send, scope["path"], 401, detail, (b"www-authenticate", b"Bearer"))
