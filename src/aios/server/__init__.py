"""The kernel's HTTP server: the AIOS-compatible API (``/query`` and status routes)."""

from aios.server.app import create_app, serve

__all__ = ["create_app", "serve"]
