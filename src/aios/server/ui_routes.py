"""The web UI: static files (``server/ui/``, shipped as package data) served at ``/ui/``, no build step.

The files are public; the page works through the kernel's HTTP API only, with the same authentication. On a
kernel that requires tokens, the page sends the one given on its login page (``login.html``, where a refused
call sends it) as a bearer token with every call, keeping it in the tab's sessionStorage, never in an address.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, HTTPException
from fastapi.responses import FileResponse, RedirectResponse

UI_DIR = Path(__file__).parent / "ui"
UI_PREFIX = "/ui"
LOGIN_PAGE = UI_PREFIX + "/login.html"
# The page runs only its own scripts and styles, reaches only this kernel, and names no referrer (its URL may
# hold a token).
HEADERS = {"Content-Security-Policy": "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'",
           "Referrer-Policy": "no-referrer", "X-Content-Type-Options": "nosniff", "Cache-Control": "no-cache"}

router = APIRouter()


def is_ui(path: str) -> bool:
    return path == UI_PREFIX or path.startswith(UI_PREFIX + "/")


@router.get(UI_PREFIX, include_in_schema=False)
async def ui_root() -> RedirectResponse:
    # Relative, so that an address of the older form /as/<token>/ui keeps its prefix (the page then moves the
    # token out of the address).
    return RedirectResponse("ui/", status_code=307)


@router.get(UI_PREFIX + "/{name:path}", include_in_schema=False)
async def ui_file(name: str) -> FileResponse:
    path = _shipped(name or "index.html")
    if path is None:
        raise HTTPException(404, f"the web UI has no file {name!r}")
    return FileResponse(path, headers=HEADERS)


def _shipped(name: str) -> Path | None:
    """The UI's file of that name, or None: also for a name no file system could hold (a NUL, a name too long),
    which is a file the UI does not have, not the server's failure."""
    try:
        path = (UI_DIR / name).resolve()
        return path if path.is_relative_to(UI_DIR.resolve()) and path.is_file() else None
    except (ValueError, OSError):
        return None
