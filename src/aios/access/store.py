"""The access manager's records, in one SQLite file beside the kernel's other data: agents and their token
hashes, group members, grants, permission requests and the audit log. Blocking: the manager calls it from a
thread of its own.

Tokens are stored as SHA-256 hashes only: a token is 256 random bits, so a fast hash is as good as a slow one
and a stolen database gives no usable token."""

from __future__ import annotations

import hashlib
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SCHEMA = """
CREATE TABLE IF NOT EXISTS agents (name TEXT PRIMARY KEY, token_hash TEXT UNIQUE NOT NULL, created REAL NOT NULL);
CREATE TABLE IF NOT EXISTS group_members (group_name TEXT NOT NULL, agent TEXT NOT NULL,
                                          PRIMARY KEY (group_name, agent));
CREATE TABLE IF NOT EXISTS grants (id INTEGER PRIMARY KEY, owner TEXT NOT NULL, resource TEXT NOT NULL,
                                   grantee TEXT NOT NULL, permission TEXT NOT NULL, created REAL NOT NULL,
                                   UNIQUE (resource, grantee, permission));
CREATE TABLE IF NOT EXISTS requests (id INTEGER PRIMARY KEY, requester TEXT NOT NULL, owner TEXT NOT NULL,
                                     resource TEXT NOT NULL, permission TEXT NOT NULL, note TEXT NOT NULL,
                                     created REAL NOT NULL, status TEXT NOT NULL DEFAULT 'pending');
CREATE TABLE IF NOT EXISTS audit (id INTEGER PRIMARY KEY, time REAL NOT NULL, agent TEXT NOT NULL,
                                  action TEXT NOT NULL, resource TEXT NOT NULL, decision TEXT NOT NULL,
                                  reason TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS audit_by_agent ON audit (agent, time);
CREATE INDEX IF NOT EXISTS grants_by_grantee ON grants (grantee);
CREATE INDEX IF NOT EXISTS requests_by_requester ON requests (requester, status);
"""


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True)
class Grant:
    id: int
    owner: str
    resource: str
    grantee: str
    permission: str
    created: float


@dataclass(frozen=True)
class Request:
    id: int
    requester: str
    owner: str
    resource: str
    permission: str
    note: str
    created: float
    status: str


class AccessStore:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA busy_timeout=5000")  # several kernel processes may share the file
        self._db.executescript(SCHEMA)
        self._lock = threading.Lock()

    def _rows(self, sql: str, *args: Any) -> list[tuple[Any, ...]]:
        with self._lock:
            return self._db.execute(sql, args).fetchall()

    def _write(self, sql: str, *args: Any) -> int:
        """Run an INSERT, UPDATE or DELETE; the number of rows it changed. (Not ``lastrowid``: sqlite3 sets it
        after every statement to the connection's last inserted row, so a DELETE that matched nothing would
        look like a success after any earlier INSERT (an audit entry's, say).)"""
        with self._lock:
            return self._db.execute(sql, args).rowcount

    # -- agents --------------------------------------------------------------------------------------------------
    def set_token(self, agent: str, token: str) -> None:
        self._write("INSERT INTO agents (name, token_hash, created) VALUES (?, ?, ?) ON CONFLICT (name) DO UPDATE "
                    "SET token_hash = excluded.token_hash", agent, token_hash(token), time.time())

    def agent_of(self, token: str) -> str | None:
        rows = self._rows("SELECT name FROM agents WHERE token_hash = ?", token_hash(token))
        return rows[0][0] if rows else None

    def has_token(self, agent: str) -> bool:
        return bool(self._rows("SELECT 1 FROM agents WHERE name = ?", agent))

    def remove_agent(self, agent: str) -> bool:
        return self._write("DELETE FROM agents WHERE name = ?", agent) > 0

    def agents(self) -> list[tuple[str, float]]:
        return [(name, created) for name, created in self._rows("SELECT name, created FROM agents ORDER BY name")]

    # -- groups --------------------------------------------------------------------------------------------------
    def add_member(self, group: str, agent: str) -> None:
        self._write("INSERT OR IGNORE INTO group_members (group_name, agent) VALUES (?, ?)", group, agent)

    def remove_member(self, group: str, agent: str) -> bool:
        return self._write("DELETE FROM group_members WHERE group_name = ? AND agent = ?", group, agent) > 0

    def groups_of(self, agent: str) -> set[str]:
        return {row[0] for row in self._rows("SELECT group_name FROM group_members WHERE agent = ?", agent)}

    def members(self) -> dict[str, list[str]]:
        groups: dict[str, list[str]] = {}
        for group, agent in self._rows("SELECT group_name, agent FROM group_members ORDER BY group_name, agent"):
            groups.setdefault(group, []).append(agent)
        return groups

    # -- grants --------------------------------------------------------------------------------------------------
    def add_grant(self, owner: str, resource: str, grantee: str, permission: str) -> Grant:
        self._write("INSERT OR IGNORE INTO grants (owner, resource, grantee, permission, created) "
                    "VALUES (?, ?, ?, ?, ?)", owner, resource, grantee, permission, time.time())
        (row,) = self._rows("SELECT * FROM grants WHERE resource = ? AND grantee = ? AND permission = ?",
                            resource, grantee, permission)
        return Grant(*row)

    def remove_grant(self, grant_id: int) -> Grant | None:
        rows = self._rows("SELECT * FROM grants WHERE id = ?", grant_id)
        if not rows:
            return None
        self._write("DELETE FROM grants WHERE id = ?", grant_id)
        return Grant(*rows[0])

    def grants_on(self, resource: str, grantees: list[str]) -> list[Grant]:
        marks = ",".join("?" * len(grantees))
        return [Grant(*row) for row in self._rows(
            f"SELECT * FROM grants WHERE resource = ? AND grantee IN ({marks})", resource, *grantees)]

    def grants_involving(self, agent: str, groups: set[str]) -> list[Grant]:
        """Grants the agent made, and grants made to it or to one of its groups."""
        grantees = [agent, *(f"group:{g}" for g in sorted(groups))]
        marks = ",".join("?" * len(grantees))
        return [Grant(*row) for row in self._rows(
            f"SELECT * FROM grants WHERE owner = ? OR grantee IN ({marks}) ORDER BY id", agent, *grantees)]

    # -- permission requests -------------------------------------------------------------------------------------
    def add_request(self, requester: str, owner: str, resource: str, permission: str, note: str,
                    most_pending: int) -> tuple[Request | None, bool]:
        """The requester's pending request for this permission, and whether it is new: one asked again is the one
        already waiting, and none is added while the requester has ``most_pending`` waiting (None then). One
        statement, so that kernels sharing the file cannot both add it."""
        pending = "SELECT {} FROM requests WHERE requester = ? AND status = 'pending'"
        same = " AND resource = ? AND permission = ?"
        made = self._write("INSERT INTO requests (requester, owner, resource, permission, note, created) "
                           f"SELECT ?, ?, ?, ?, ?, ? WHERE NOT EXISTS ({pending.format(1) + same}) "
                           f"AND ({pending.format('COUNT(*)')}) < ?",
                           requester, owner, resource, permission, note, time.time(),
                           requester, resource, permission, requester, most_pending)
        rows = self._rows(pending.format("*") + same, requester, resource, permission)
        return (Request(*rows[0]) if rows else None), made > 0

    def request(self, request_id: int) -> Request | None:
        rows = self._rows("SELECT * FROM requests WHERE id = ?", request_id)
        return Request(*rows[0]) if rows else None

    def answer_request(self, request_id: int, status: str) -> bool:
        """Move a pending request to ``status``; False if it was no longer pending (another answer came first)."""
        return self._write("UPDATE requests SET status = ? WHERE id = ? AND status = 'pending'",
                           status, request_id) > 0

    def requests_involving(self, agent: str) -> list[Request]:
        return [Request(*row) for row in self._rows(
            "SELECT * FROM requests WHERE requester = ? OR owner = ? ORDER BY id", agent, agent)]

    # -- audit ---------------------------------------------------------------------------------------------------
    def audit(self, agent: str, action: str, resource: str, decision: str, reason: str) -> None:
        self._write("INSERT INTO audit (time, agent, action, resource, decision, reason) VALUES (?, ?, ?, ?, ?, ?)",
                    time.time(), agent, action, resource, decision, reason)

    def audit_log(self, agent: str | None, decision: str | None, since: float | None,
                  limit: int) -> list[dict[str, Any]]:
        where, args = [], []
        for column, value in (("agent = ?", agent), ("decision = ?", decision), ("time >= ?", since)):
            if value is not None:
                where.append(column)
                args.append(value)
        sql = "SELECT time, agent, action, resource, decision, reason FROM audit"
        sql += f" WHERE {' AND '.join(where)}" if where else ""
        rows = self._rows(sql + " ORDER BY id DESC LIMIT ?", *args, limit)
        keys = ("time", "agent", "action", "resource", "decision", "reason")
        return [dict(zip(keys, row)) for row in rows]

    def close(self) -> None:
        with self._lock:
            self._db.close()
