"""What the SQLite and PostgreSQL stores share: the tables for mounts, files, versions and shares are the same
in both, and so is the SQL that reads and writes them (written with ``?`` placeholders; the PostgreSQL store
turns them into its own). Each subclass brings its connection, transactions, locks and search index."""

from __future__ import annotations

from typing import Any

from aios.database import SQLDatabase
from aios.errors import Conflict
from aios.storage.store import FileRecord, Root, Share, Version

# Columns, in the order the dataclasses take them.
_FILE = "id, root_id, path, head, hash, size"
_VERSION = "file_id, number, time, size, hash, agent, kind, restored_from, pending"
_SHARE = "token_hash, file_id, version, agent, created, expires, revoked"


class SQLStore(SQLDatabase):
    vectors: bool

    # -- mounts -------------------------------------------------------------------------------------------------
    def roots(self) -> list[Root]:
        return [Root(*row) for row in self._rows("SELECT id, path, owner FROM roots ORDER BY id")]

    def add_root(self, path: str, owner: str) -> Root:
        self._run("INSERT INTO roots (path, owner) VALUES (?, ?) ON CONFLICT (path) DO NOTHING", (path, owner))
        return Root(*self._one("SELECT id, path, owner FROM roots WHERE path = ?", (path,)))  # type: ignore[misc]

    def mount_of(self, agent: str) -> Root | None:
        row = self._one("SELECT r.id, r.path, r.owner FROM mounts m JOIN roots r ON r.id = m.root_id "
                        "WHERE m.agent = ?", (agent,))
        return Root(*row) if row else None

    def set_mount(self, agent: str, root_id: int) -> None:
        self._run("INSERT INTO mounts (agent, root_id) VALUES (?, ?) "
                  "ON CONFLICT (agent) DO UPDATE SET root_id = excluded.root_id", (agent, root_id))

    # -- files and versions -------------------------------------------------------------------------------------
    def file(self, root_id: int, path: str) -> FileRecord | None:
        row = self._one(f"SELECT {_FILE} FROM files WHERE root_id = ? AND path = ?", (root_id, path))
        return FileRecord(*row) if row else None

    def file_by_id(self, file_id: int) -> FileRecord:
        return FileRecord(*self._one(f"SELECT {_FILE} FROM files WHERE id = ?", (file_id,)))  # type: ignore[misc]

    def add_file(self, root_id: int, path: str) -> FileRecord:
        self._run("INSERT INTO files (root_id, path) VALUES (?, ?) ON CONFLICT (root_id, path) DO NOTHING",
                  (root_id, path))
        return self.file(root_id, path)  # type: ignore[return-value]

    def files(self, root_id: int) -> list[FileRecord]:
        return [FileRecord(*row) for row in self._rows(f"SELECT {_FILE} FROM files WHERE root_id = ? ORDER BY path",
                                                       (root_id,))]

    def set_head(self, file_id: int, head: int, hash: str | None, size: int) -> None:
        self._run("UPDATE files SET head = ?, hash = ?, size = ? WHERE id = ?", (head, hash, size, file_id))

    def add_version(self, version: Version) -> None:
        v = version
        self._run(f"INSERT INTO versions ({_VERSION}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                  (v.file_id, v.number, v.time, v.size, v.hash, v.agent, v.kind, v.restored_from, int(v.pending)))

    def versions(self, file_id: int, limit: int | None = None) -> list[Version]:
        sql = f"SELECT {_VERSION} FROM versions WHERE file_id = ? AND pending = 0 ORDER BY number DESC"
        rows = self._rows(sql + " LIMIT ?", (file_id, limit)) if limit else self._rows(sql, (file_id,))
        return [_version(row) for row in rows]

    def version(self, file_id: int, number: int) -> Version | None:
        row = self._one(f"SELECT {_VERSION} FROM versions WHERE file_id = ? AND number = ? AND pending = 0",
                        (file_id, number))
        return _version(row) if row else None

    def version_at(self, file_id: int, time: float) -> Version | None:
        row = self._one(f"SELECT {_VERSION} FROM versions WHERE file_id = ? AND pending = 0 AND time <= ? "
                        "ORDER BY number DESC LIMIT 1", (file_id, time))
        return _version(row) if row else None

    def deleted_after(self, file_id: int, number: int) -> Version | None:
        row = self._one(f"SELECT {_VERSION} FROM versions WHERE file_id = ? AND number > ? AND hash IS NULL "
                        "AND pending = 0 ORDER BY number LIMIT 1", (file_id, number))
        return _version(row) if row else None

    def pending(self, file_id: int) -> Version | None:
        row = self._one(f"SELECT {_VERSION} FROM versions WHERE file_id = ? AND pending = 1", (file_id,))
        return _version(row) if row else None

    def settle(self, file_id: int, number: int, keep: bool) -> None:
        where = "WHERE file_id = ? AND number = ? AND pending = 1"
        changed = self._run(f"UPDATE versions SET pending = 0 {where}" if keep else f"DELETE FROM versions {where}",
                            (file_id, number))
        if changed != 1:  # settled by someone else meanwhile: making it the head would point at nothing
            raise Conflict(f"version {number} of this file is no longer pending: another process changed its "
                           "history meanwhile; nothing was recorded, try again")

    def stale_files(self, root_id: int, limit: int) -> list[FileRecord]:
        # IS NOT: true when exactly one side is NULL too (a deleted file whose chunks are still indexed).
        return [FileRecord(*row) for row in self._rows(
            f"SELECT {_FILE} FROM files WHERE root_id = ? AND indexed_hash {self._DISTINCT} hash "
            "ORDER BY id LIMIT ?", (root_id, limit))]

    _DISTINCT = "IS NOT"

    # -- share links --------------------------------------------------------------------------------------------
    def add_share(self, share: Share) -> None:
        s = share
        self._run(f"INSERT INTO shares ({_SHARE}) VALUES (?, ?, ?, ?, ?, ?, ?)",
                  (s.token_hash, s.file_id, s.version, s.agent, s.created, s.expires, s.revoked))

    def share(self, token_hash: str) -> Share | None:
        row = self._one(f"SELECT {_SHARE} FROM shares WHERE token_hash = ?", (token_hash,))
        return Share(*row) if row else None

    def revoke_shares(self, time: float, token_hash: str | None = None, file_id: int | None = None) -> int:
        column, value = ("token_hash", token_hash) if token_hash is not None else ("file_id", file_id)
        return self._run(f"UPDATE shares SET revoked = ? WHERE {column} = ? AND revoked IS NULL AND expires > ?",
                         (time, value, time))


def _version(row: tuple[Any, ...]) -> Version:
    *head, pending = row
    return Version(*head, pending=bool(pending))


# Tables both backends create, in their shared dialect (the index tables differ and are each backend's own).
COMMON_SCHEMA = """
CREATE TABLE IF NOT EXISTS roots (id {id}, path TEXT NOT NULL UNIQUE, owner TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS mounts (agent TEXT PRIMARY KEY, root_id BIGINT NOT NULL REFERENCES roots (id));
CREATE TABLE IF NOT EXISTS files (
    id {id}, root_id BIGINT NOT NULL REFERENCES roots (id), path TEXT NOT NULL,
    head BIGINT NOT NULL DEFAULT 0, hash TEXT, size BIGINT NOT NULL DEFAULT 0, indexed_hash TEXT,
    UNIQUE (root_id, path));
CREATE TABLE IF NOT EXISTS versions (
    file_id BIGINT NOT NULL REFERENCES files (id), number BIGINT NOT NULL, time DOUBLE PRECISION NOT NULL,
    size BIGINT NOT NULL, hash TEXT, agent TEXT NOT NULL, kind TEXT NOT NULL, restored_from BIGINT,
    pending INTEGER NOT NULL DEFAULT 0, PRIMARY KEY (file_id, number));
CREATE INDEX IF NOT EXISTS versions_by_time ON versions (file_id, time);
CREATE TABLE IF NOT EXISTS shares (
    token_hash TEXT PRIMARY KEY, file_id BIGINT NOT NULL REFERENCES files (id), version BIGINT NOT NULL,
    agent TEXT NOT NULL, created DOUBLE PRECISION NOT NULL, expires DOUBLE PRECISION NOT NULL,
    revoked DOUBLE PRECISION);
CREATE INDEX IF NOT EXISTS shares_by_file ON shares (file_id);
"""
