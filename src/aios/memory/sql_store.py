"""What the SQLite and PostgreSQL memory stores share: the notes table and its tag index are the same in both,
and so is the SQL that reads and writes them (``?`` placeholders; list, JSON and locking details come from the
backend). Each subclass brings its vector and word index: ``_index``, ``_unindex``, ``nearest``, ``matching``
and ``distances``."""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from aios.database import SQLDatabase
from aios.memory.notes import Note
from aios.memory.store import Filters

# Columns, in the order Note takes them (its row last).
_NOTE = ("memory_id, agent, content, metadata, keywords, tags, context, category, links, evolution, created, "
         "updated, last_accessed, retrieval_count")
# What ``save`` writes: not the identity and creation time, which never change, nor the retrieval counts, which
# ``touch`` keeps (a save from a note read before a search must not undo that search's count).
_SAVED = ("content", "metadata", "keywords", "tags", "context", "category", "links", "evolution", "updated")

# Tables both backends create, in their shared dialect; ``{id}`` is each one's auto-numbered key.
NOTES_SCHEMA = """
CREATE TABLE IF NOT EXISTS memories (
    id {id}, memory_id TEXT NOT NULL UNIQUE, agent TEXT NOT NULL, content TEXT NOT NULL, metadata TEXT NOT NULL,
    keywords TEXT NOT NULL, tags TEXT NOT NULL, context TEXT NOT NULL, category TEXT NOT NULL, links TEXT NOT NULL,
    evolution TEXT NOT NULL, created DOUBLE PRECISION NOT NULL, updated DOUBLE PRECISION NOT NULL,
    last_accessed DOUBLE PRECISION NOT NULL, retrieval_count BIGINT NOT NULL DEFAULT 0);
CREATE INDEX IF NOT EXISTS memories_by_agent ON memories (agent, created);
CREATE TABLE IF NOT EXISTS memory_tags (memory BIGINT NOT NULL, tag TEXT NOT NULL, PRIMARY KEY (memory, tag));
CREATE INDEX IF NOT EXISTS memory_tags_by_tag ON memory_tags (tag, memory);
"""


class SQLMemoryStore(SQLDatabase):
    _FOR_UPDATE = ""  # how a read holds rows until the transaction ends (SQLite: one writer holds them all)

    # -- provided by each backend -------------------------------------------------------------------------------
    def _index(self, note: Note, vector: np.ndarray) -> None:
        raise NotImplementedError

    def _unindex(self, note: Note) -> None:
        raise NotImplementedError

    def _metadata_value(self, key: str) -> tuple[str, Any]:
        """SQL for the text value of ``key`` in a note's metadata (``m.metadata``), and its parameter."""
        raise NotImplementedError

    # -- notes --------------------------------------------------------------------------------------------------
    def insert(self, note: Note, vector: np.ndarray) -> int:
        with self.transaction():
            (row,) = self._one(f"INSERT INTO memories ({_NOTE}) VALUES ({', '.join('?' * 14)}) RETURNING id",
                               _values(note))  # type: ignore[misc]
            note.row = row
            self._tag(note)
            self._index(note, vector)
        return row

    def note(self, agent: str, memory_id: str, for_update: bool = False) -> Note | None:
        row = self._one(f"SELECT {_NOTE}, id FROM memories WHERE memory_id = ? AND agent = ?"
                        f"{self._FOR_UPDATE if for_update else ''}", (memory_id, agent))
        return _note(row) if row else None

    def notes(self, agent: str, rows: list[int]) -> dict[int, Note]:
        # By row first, the agent checked after: a condition on the agent in SQL would make SQLite walk every
        # note of the agent through its index instead of looking up the few rows.
        found = self._rows(f"SELECT {_NOTE}, id FROM memories WHERE {self._in('id')}", (self._list(rows),))
        return {note.row: note for note in map(_note, found) if note.agent == agent}

    def save(self, note: Note, vector: np.ndarray | None) -> None:
        with self.transaction():
            values = dict(zip(_NOTE.split(", "), _values(note)))
            self._run(f"UPDATE memories SET {', '.join(f'{name} = ?' for name in _SAVED)} WHERE id = ?",
                      (*(values[name] for name in _SAVED), note.row))
            self._run("DELETE FROM memory_tags WHERE memory = ?", (note.row,))
            self._tag(note)
            if vector is not None:
                self._unindex(note)
                self._index(note, vector)

    def delete(self, note: Note) -> None:
        with self.transaction():
            self._unindex(note)
            self._run("DELETE FROM memory_tags WHERE memory = ?", (note.row,))
            self._run("DELETE FROM memories WHERE id = ?", (note.row,))

    def count(self, agent: str) -> int:
        return self._one("SELECT COUNT(*) FROM memories WHERE agent = ?", (agent,))[0]  # type: ignore[index]

    def recent(self, agent: str, limit: int, offset: int) -> list[Note]:
        rows = self._rows(f"SELECT {_NOTE}, id FROM memories WHERE agent = ? ORDER BY created DESC, id DESC "
                          "LIMIT ? OFFSET ?", (agent, limit, offset))
        return [_note(row) for row in rows]

    def touch(self, rows: list[int], when: float) -> None:
        if rows:
            self._run(f"UPDATE memories SET retrieval_count = retrieval_count + 1, last_accessed = ? "
                      f"WHERE {self._in('id')}", (when, self._list(rows)))

    def _tag(self, note: Note) -> None:
        for tag in {tag.casefold() for tag in note.tags}:
            self._run("INSERT INTO memory_tags (memory, tag) VALUES (?, ?)", (note.row, tag))

    # -- filters ------------------------------------------------------------------------------------------------
    def _where(self, filters: Filters) -> tuple[str, list[Any]]:
        """SQL conditions (each after an AND) on ``m``, a memories row, for ``filters``; and their parameters."""
        sql: list[str] = []
        params: list[Any] = []
        if filters.category is not None:
            sql.append("m.category = ?")
            params.append(filters.category)
        for bound, operator in ((filters.created_after, ">="), (filters.created_before, "<=")):
            if bound is not None:
                sql.append(f"m.created {operator} ?")
                params.append(bound)
        for tag in filters.tags:
            sql.append("EXISTS (SELECT 1 FROM memory_tags t WHERE t.memory = m.id AND t.tag = ?)")
            params.append(tag.casefold())
        for key, value in filters.metadata:
            expression, parameter = self._metadata_value(key)
            sql.append(f"{expression} = ?")
            params += [parameter, value]
        return "".join(f" AND {condition}" for condition in sql), params


def _values(note: Note) -> tuple[Any, ...]:
    return (note.memory_id, note.agent, note.content, *(json.dumps(getattr(note, name), ensure_ascii=False)
                                                          for name in ("metadata", "keywords", "tags")),
            note.context, note.category, json.dumps(note.links), json.dumps(note.evolution, ensure_ascii=False),
            note.created, note.updated, note.last_accessed, note.retrieval_count)


def _note(row: tuple[Any, ...]) -> Note:
    (memory_id, agent, content, metadata, keywords, tags, context, category, links, evolution, created, updated,
     last_accessed, retrieval_count, key) = row
    return Note(memory_id, agent, content, json.loads(metadata), json.loads(keywords), json.loads(tags), context,
                category, json.loads(links), json.loads(evolution), created, updated, last_accessed, retrieval_count,
                key)
