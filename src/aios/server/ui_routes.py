"""The web UI: static files (``server/ui/``, shipped as package data) served at ``/ui/``, no build step.

The page works through the kernel's HTTP API only, with the same authentication: on a kernel that requires
tokens, ``/ui`` without one is answered 401 with the token page (``login.html``), which opens the UI at
``/as/<token>/ui/``; the page then makes its API calls under that same prefix.
"""

from __future__ import annotations

import html
from pathlib import Path

from fastapi import APIRouter, HTTPException
from fastapi.responses import FileResponse, RedirectResponse

UI_DIR = Path(__file__).parent / "ui"
UI_PREFIX = "/ui"
# The page runs only its own scripts and styles, reaches only this kernel, and names no referrer (its URL may
# hold a token).
HEADERS = {"Content-Security-Policy": "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'",
           "Referrer-Policy": "no-referrer", "X-Content-Type-Options": "nosniff", "Cache-Control": "no-cache"}

router = APIRouter()


def is_ui(path: str) -> bool:
    return path == UI_PREFIX or path.startswith(UI_PREFIX + "/")


def login_page(reason: str) -> bytes:
    """The token page, saying why the UI was refused."""
    page = (UI_DIR / "login.html").read_text(encoding="utf-8")
    return page.replace("<!--reason-->", html.escape(reason)).encode()


@router.get(UI_PREFIX, include_in_schema=False)
async def ui_root() -> RedirectResponse:
    # Relative, so that /as/<token>/ui keeps its prefix: the page's own links are relative to /ui/.
    return RedirectResponse("ui/", status_code=307)


@router.get(UI_PREFIX + "/{name:path}", include_in_schema=False)
async def ui_file(name: str) -> FileResponse:
    path = (UI_DIR / (name or "index.html")).resolve()
    if not path.is_relative_to(UI_DIR.resolve()) or not path.is_file():
        raise HTTPException(404, f"the web UI has no file {name!r}")
    return FileResponse(path, headers=HEADERS)
