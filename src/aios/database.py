"""The database connections the kernel's stores share: an embedded SQLite file and a PostgreSQL server.

``SQLiteDatabase`` opens one SQLite file through apsw (the standard library's sqlite3 here cannot load
extensions) with sqlite-vec loaded, in WAL mode with full syncs; ``PostgresDatabase`` connects with psycopg
and creates its schema under an advisory lock, with pgvector enabled. Both run SQL written with ``?``
placeholders, so a store's queries can be shared by the two; each store subclasses one of them and brings
its tables and queries. A connection is used from one thread at a time (its store's I/O thread).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np


class SQLDatabase:
    """Running SQL; each backend provides ``_rows``, ``_run``, ``transaction`` and ``close``."""

    def _rows(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        raise NotImplementedError

    def _run(self, sql: str, params: Sequence[Any] = ()) -> int:
        """Execute; returns the number of rows changed."""
        raise NotImplementedError

    def _one(self, sql: str, params: Sequence[Any] = ()) -> tuple[Any, ...] | None:
        rows = self._rows(sql, params)
        return rows[0] if rows else None

    def _in(self, column: str) -> str:
        """A condition that ``column`` is one of a list, given as one parameter made by ``_list``."""
        raise NotImplementedError

    def _list(self, values: Sequence[Any]) -> Any:
        raise NotImplementedError


class SQLiteDatabase(SQLDatabase):
    def __init__(self, path: Path, schema: str, functions: dict[str, Callable[..., Any]] | None = None) -> None:
        import apsw
        import sqlite_vec

        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = apsw.Connection(str(path))
        self._db.enable_load_extension(True)
        self._db.load_extension(sqlite_vec.loadable_path())
        self._db.enable_load_extension(False)
        self._db.set_busy_timeout(30_000)
        # WAL: readers do not block the writer; FULL: a committed change survives a power cut, not only a crash.
        self._db.execute("PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL")
        for name, function in (functions or {}).items():
            self._db.create_scalar_function(name, function, -1, deterministic=True)
        with self._db:
            self._db.execute(schema)

    def _rows(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        return list(self._db.execute(sql, tuple(params)))

    def _run(self, sql: str, params: Sequence[Any] = ()) -> int:
        self._db.execute(sql, tuple(params))
        return self._db.changes()

    def _in(self, column: str) -> str:
        return f"{column} IN (SELECT value FROM json_each(?))"

    def _list(self, values: Sequence[Any]) -> Any:
        return json.dumps(list(values))

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        with self._db:
            yield

    def close(self) -> None:
        self._db.close()


class PostgresDatabase(SQLDatabase):
    def __init__(self, dsn: str, schema: str, schema_lock: int) -> None:
        """``schema``: statements separated by ``;``. ``schema_lock``: the advisory lock key under which it is
        created, so that of several kernels starting at once one creates it and the others wait."""
        import psycopg  # imported here: only the PostgreSQL stores need the driver

        self._db = psycopg.connect(dsn, autocommit=True)
        with self._db.transaction():
            self._db.execute("SELECT pg_advisory_xact_lock(%s)", (schema_lock,))
            self._db.execute("CREATE EXTENSION IF NOT EXISTS vector")
            for statement in schema.split(";"):
                if statement.strip():
                    self._db.execute(statement)

    def _rows(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        cursor = self._db.execute(sql.replace("?", "%s"), tuple(params))
        return cursor.fetchall() if cursor.description else []

    def _run(self, sql: str, params: Sequence[Any] = ()) -> int:
        return self._db.execute(sql.replace("?", "%s"), tuple(params)).rowcount

    def _in(self, column: str) -> str:
        return f"{column} = ANY(?)"

    def _list(self, values: Sequence[Any]) -> Any:
        return list(values)

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        with self._db.transaction():
            yield

    @contextlib.contextmanager
    def advisory_lock(self, name: str) -> Iterator[None]:
        """Exclusive use of ``name`` across every connection to the database, until the block ends."""
        key = int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)
        self._db.execute("SELECT pg_advisory_lock(%s)", (key,))
        try:
            yield
        finally:
            self._db.execute("SELECT pg_advisory_unlock(%s)", (key,))

    def close(self) -> None:
        self._db.close()


def vector_blob(vector: np.ndarray) -> bytes:
    """sqlite-vec's form of a float vector: its float32 bytes."""
    return np.asarray(vector, dtype=np.float32).tobytes()


def vector_literal(vector: np.ndarray) -> str:
    """pgvector's text form, ``[0.1,0.2,...]`` (no client-side adapter needed)."""
    return "[" + ",".join(f"{x:.7g}" for x in np.asarray(vector, dtype=np.float32)) + "]"
