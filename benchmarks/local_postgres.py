"""Shared helper for benchmark scripts: a local PostgreSQL (with pgvector) from the pgserver package."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any, Callable


def start_postgres(prefix: str) -> tuple[Callable[[], str] | None, Any, str]:
    """``(dsn of a fresh 'bench' database, the server to clean up, "")``, or ``(None, None, why)`` when it cannot
    start here (the benchmark then reports SQLite alone and says why)."""
    try:
        import pgserver
        import psycopg

        server = pgserver.get_server(Path(tempfile.mkdtemp(prefix=prefix)), cleanup_mode="delete")
        with psycopg.connect(server.get_uri(), autocommit=True) as admin:
            admin.execute("CREATE DATABASE bench")
        return (lambda: server.get_uri("bench")), server, ""
    except Exception as exc:  # noqa: BLE001 - reported in the table instead
        return None, None, f"{type(exc).__name__}: {exc}"
