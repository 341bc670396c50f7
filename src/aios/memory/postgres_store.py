"""The shared memory store: PostgreSQL with pgvector, so several kernel processes serve the same agents'
memories. Writes are ordinary transactions; a note being changed (an update, an evolution) is held with
``SELECT ... FOR UPDATE`` so two kernels changing it take turns.

Vectors are searched exactly (no approximate index): every search is limited to one agent's notes, and an
exact scan keeps results identical to the SQLite store's. Words use PostgreSQL's English full-text search.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from aios.database import PostgresDatabase, vector_literal
from aios.embeddings import DIMENSION
from aios.memory.notes import Note
from aios.memory.sql_store import NOTES_SCHEMA, SQLMemoryStore
from aios.memory.store import Filters, Hit

_INDEX_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS memory_index (
    memory BIGINT PRIMARY KEY REFERENCES memories (id) ON DELETE CASCADE, embedding vector({DIMENSION}) NOT NULL,
    words tsvector NOT NULL);
CREATE INDEX IF NOT EXISTS memory_index_words ON memory_index USING gin (words);
"""


class PostgresMemoryStore(PostgresDatabase, SQLMemoryStore):
    _FOR_UPDATE = " FOR UPDATE"

    def __init__(self, dsn: str) -> None:
        super().__init__(dsn, NOTES_SCHEMA.format(id="BIGSERIAL PRIMARY KEY") + _INDEX_SCHEMA, schema_lock=7243002)

    def _index(self, note: Note, vector: np.ndarray) -> None:
        self._run("INSERT INTO memory_index (memory, embedding, words) VALUES (?, ?::vector, to_tsvector('english', ?))",
                  (note.row, vector_literal(vector), note.search_text()))

    def _unindex(self, note: Note) -> None:
        self._run("DELETE FROM memory_index WHERE memory = ?", (note.row,))

    def touch(self, rows: list[int], when: float) -> None:
        """Retrieval counts are bookkeeping: their commit does not wait for the WAL flush (a crash may lose the
        last counts, never a note)."""
        with self.transaction():
            self._run("SET LOCAL synchronous_commit = off")
            super().touch(rows, when)

    def _metadata_value(self, key: str) -> tuple[str, Any]:
        return "(m.metadata::jsonb ->> ?)", key

    def nearest(self, agent: str, vector: np.ndarray, k: int, filters: Filters) -> list[Hit]:
        where, params = self._where(filters)
        rows = self._rows("SELECT m.id, i.embedding <=> ?::vector AS distance FROM memories m "
                          f"JOIN memory_index i ON i.memory = m.id WHERE m.agent = ?{where} ORDER BY distance LIMIT ?",
                          (vector_literal(vector), agent, *params, k))
        return [Hit(*row) for row in rows]

    def matching(self, agent: str, words: list[str], k: int, filters: Filters) -> list[Hit]:
        if not words:
            return []
        where, params = self._where(filters)
        # Negated so that, as for the other hits, lower is better.
        rows = self._rows("SELECT m.id, -ts_rank(i.words, q) FROM memories m JOIN memory_index i ON i.memory = m.id, "
                          f"websearch_to_tsquery('english', ?) q WHERE m.agent = ? AND i.words @@ q{where} "
                          "ORDER BY 2 LIMIT ?", (" or ".join(words), agent, *params, k))
        return [Hit(*row) for row in rows]

    def notes_with_word(self, agent: str, word: str, at_most: int) -> int:
        return self._one("SELECT COUNT(*) FROM (SELECT 1 FROM memories m JOIN memory_index i ON i.memory = m.id "
                         "WHERE m.agent = ? AND i.words @@ plainto_tsquery('english', ?) LIMIT ?) counted",
                         (agent, word, at_most + 1))[0]  # type: ignore[index]

    def distances(self, rows: list[int], vector: np.ndarray) -> dict[int, float]:
        found = self._rows(f"SELECT memory, embedding <=> ?::vector FROM memory_index WHERE {self._in('memory')}",
                           (vector_literal(vector), self._list(rows)))
        return dict(found)  # type: ignore[arg-type]
