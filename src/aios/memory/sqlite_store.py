"""The embedded memory store: one SQLite file (WAL) in the data dir, with sqlite-vec for vectors and FTS5 for
words. One kernel per file: several kernels sharing memories use the PostgreSQL store.

Vectors sit in a ``vec0`` table partitioned by agent, so a search scans only the agent's own notes, exactly
(no approximate index: results are the true nearest). Category and creation time are columns of that table,
so those filters apply inside the scan; tag and metadata filters select the allowed notes first. The
unfiltered searches of an agent with many notes scan an in-RAM copy of its vectors instead (vector_cache.py).
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from aios.database import SQLiteDatabase, vector_blob
from aios.embeddings import DIMENSION
from aios.memory.notes import Note
from aios.memory.sql_store import NOTES_SCHEMA, SQLMemoryStore
from aios.memory.store import Filters, Hit
from aios.memory.vector_cache import VectorCache

_INDEX_SCHEMA = f"""
CREATE VIRTUAL TABLE IF NOT EXISTS memory_vectors USING vec0(
    agent TEXT PARTITION KEY, category TEXT, created FLOAT, embedding FLOAT[{DIMENSION}] distance_metric=cosine);
CREATE VIRTUAL TABLE IF NOT EXISTS memory_words USING fts5(
    text, tokenize='porter unicode61', content='', contentless_delete=1);
"""


class SQLiteMemoryStore(SQLiteDatabase, SQLMemoryStore):
    def __init__(self, path: Path, cache: VectorCache | None = None) -> None:
        super().__init__(path, NOTES_SCHEMA.format(id="INTEGER PRIMARY KEY") + _INDEX_SCHEMA)
        self.cache = cache if cache is not None else VectorCache()
        self._depth = 0  # transactions open (nested ones are savepoints)

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        """As the database's, and the vector cache takes the changes once the outermost one commits."""
        self._depth += 1
        try:
            with super().transaction():
                yield
        except BaseException:
            if self._depth == 1:
                self.cache.discard()
            raise
        finally:
            self._depth -= 1
        if self._depth == 0:
            self.cache.commit()

    def _index(self, note: Note, vector: np.ndarray) -> None:
        self._run("INSERT INTO memory_vectors (rowid, agent, category, created, embedding) VALUES (?, ?, ?, ?, ?)",
                  (note.row, note.agent, note.category, float(note.created), vector_blob(vector)))
        self._run("INSERT INTO memory_words (rowid, text) VALUES (?, ?)", (note.row, note.search_text()))
        self.cache.stage(note.agent, note.row, np.asarray(vector, dtype=np.float32))

    def _unindex(self, note: Note) -> None:
        self._run("DELETE FROM memory_vectors WHERE rowid = ?", (note.row,))
        self._run("DELETE FROM memory_words WHERE rowid = ?", (note.row,))
        self.cache.stage(note.agent, note.row, None)

    def save(self, note: Note, vector: np.ndarray | None) -> None:
        with self.transaction():
            super().save(note, vector)
            if vector is None:  # the category is a column of the vector table too
                self._run("UPDATE memory_vectors SET category = ? WHERE rowid = ?", (note.category, note.row))

    def touch(self, rows: list[int], when: float) -> None:
        """Retrieval counts are bookkeeping: their commit skips the disk flush (the next write's flush covers it;
        a power cut may lose the last counts, never a note). A search then costs no fsync."""
        if self._depth:
            return super().touch(rows, when)
        self._run("PRAGMA synchronous = NORMAL")
        try:
            super().touch(rows, when)
        finally:
            self._run("PRAGMA synchronous = FULL")

    def _metadata_value(self, key: str) -> tuple[str, Any]:
        return "json_extract(m.metadata, ?)", "$." + json.dumps(key)

    def nearest(self, agent: str, vector: np.ndarray, k: int, filters: Filters) -> list[Hit]:
        if not filters and self._cached(agent):
            return [Hit(row, distance) for row, distance in self.cache.nearest(agent, vector, k) or []]
        sql = ("SELECT rowid, distance FROM memory_vectors WHERE embedding MATCH ? AND k = ? AND agent = ?")
        params: list[Any] = [vector_blob(vector), k, agent]
        if filters.tags or filters.metadata:
            where, where_params = self._where(filters)
            allowed = [row for (row,) in self._rows(f"SELECT m.id FROM memories m WHERE m.agent = ?{where}",
                                                    (agent, *where_params))]
            if not allowed:
                return []
            sql += f" AND {self._in('rowid')}"
            params.append(self._list(allowed))
        else:
            if filters.category is not None:
                sql += " AND category = ?"
                params.append(filters.category)
            for bound, operator in ((filters.created_after, ">="), (filters.created_before, "<=")):
                if bound is not None:
                    sql += f" AND created {operator} ?"
                    params.append(bound)
        return [Hit(*row) for row in self._rows(sql + " ORDER BY distance", params)]

    def _cached(self, agent: str) -> bool:
        """Whether the agent's vectors are in the cache, loading them when it has enough notes for it."""
        if not self.cache.enabled or self.cache.holds(agent) or self.cache.declined(agent):
            return self.cache.holds(agent)
        enough = self._one("SELECT 1 FROM memories WHERE agent = ? LIMIT 1 OFFSET ?", (agent, self.cache.min_notes - 1))
        if enough is None:
            return False
        rows = self._rows("SELECT rowid, embedding FROM memory_vectors WHERE agent = ?", (agent,))
        vectors = np.frombuffer(b"".join(blob for _, blob in rows), dtype=np.float32).reshape(len(rows), DIMENSION)
        return self.cache.load(agent, np.array([row for row, _ in rows], dtype=np.int64), vectors)

    def matching(self, agent: str, words: list[str], k: int, filters: Filters) -> list[Hit]:
        if not words:
            return []
        query = " OR ".join(f'"{word}"' for word in words)  # words are \w+ runs: nothing to escape
        where, params = self._where(filters)
        rows = self._rows("SELECT w.rowid, w.rank FROM memory_words w JOIN memories m ON m.id = w.rowid "
                          f"WHERE memory_words MATCH ? AND m.agent = ?{where} ORDER BY w.rank LIMIT ?",
                          (query, agent, *params, k))
        return [Hit(*row) for row in rows]

    def notes_with_word(self, agent: str, word: str, at_most: int) -> int:
        return self._one("SELECT COUNT(*) FROM (SELECT 1 FROM memory_words w JOIN memories m ON m.id = w.rowid "
                         "WHERE memory_words MATCH ? AND m.agent = ? LIMIT ?)", (f'"{word}"', agent, at_most + 1))[0]  # type: ignore[index]

    def distances(self, rows: list[int], vector: np.ndarray) -> dict[int, float]:
        # Joined row by row: vec0 looks up one rowid at a time, but scans its whole table for an IN list.
        found = self._rows("SELECT v.rowid, vec_distance_cosine(v.embedding, ?) FROM json_each(?) j "
                           "JOIN memory_vectors v ON v.rowid = j.value", (vector_blob(vector), self._list(rows)))
        return dict(found)  # type: ignore[arg-type]
