"""The shared store: PostgreSQL with pgvector, so several kernel processes serve one file system (each with the
same blob directory and mount paths). A file's read-modify-write holds a PostgreSQL advisory lock, so two
kernels writing one file take turns; everything else is ordinary transactions.

Chunk vectors are searched exactly (no approximate index): every search is limited to one mount's chunks, and
an exact scan keeps results identical to the SQLite store's.
"""

from __future__ import annotations

import contextlib
from typing import ContextManager, Iterator

import numpy as np

from aios.database import PostgresDatabase, vector_literal
from aios.embeddings import DIMENSION
from aios.storage.sql_store import COMMON_SCHEMA, SQLStore
from aios.storage.store import Chunk, ChunkHit, FileRecord

_INDEX_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS chunks (
    id BIGSERIAL PRIMARY KEY, file_id BIGINT NOT NULL REFERENCES files (id), root_id BIGINT NOT NULL,
    number INTEGER NOT NULL, start INTEGER NOT NULL, text TEXT NOT NULL, embedding vector({DIMENSION}),
    words tsvector GENERATED ALWAYS AS (to_tsvector('english', text)) STORED);
CREATE INDEX IF NOT EXISTS chunks_by_file ON chunks (file_id);
CREATE INDEX IF NOT EXISTS chunks_by_root ON chunks (root_id);
CREATE INDEX IF NOT EXISTS chunks_words ON chunks USING gin (words);
"""


class PostgresStore(PostgresDatabase, SQLStore):
    _DISTINCT = "IS DISTINCT FROM"

    def __init__(self, dsn: str, vectors: bool = True) -> None:
        self.vectors = vectors
        super().__init__(dsn, COMMON_SCHEMA.format(id="BIGSERIAL PRIMARY KEY") + _INDEX_SCHEMA, schema_lock=7243001)

    @contextlib.contextmanager
    def file_lock(self, root_id: int, path: str) -> Iterator[None]:
        with self.advisory_lock(f"{root_id}/{path}"):
            yield

    def mounts_lock(self) -> ContextManager[None]:
        return self.advisory_lock("mounts")

    def replace_chunks(self, file: FileRecord, chunks: list[Chunk], vectors: np.ndarray | None) -> bool:
        with self._db.transaction():
            row = self._one("SELECT hash IS NOT DISTINCT FROM ? FROM files WHERE id = ? FOR UPDATE", (file.hash, file.id))
            if row != (True,):
                return False  # written again meanwhile: that head will be indexed instead
            self._run("DELETE FROM chunks WHERE file_id = ?", (file.id,))
            for i, chunk in enumerate(chunks):
                vector = vector_literal(vectors[i]) if vectors is not None else None
                self._run("INSERT INTO chunks (file_id, root_id, number, start, text, embedding) "
                          "VALUES (?, ?, ?, ?, ?, ?::vector)",
                          (file.id, file.root_id, chunk.number, chunk.start, chunk.text, vector))
            self._run("UPDATE files SET indexed_hash = hash WHERE id = ?", (file.id,))
        return True

    def nearest_chunks(self, root_id: int, vector: np.ndarray, k: int) -> list[ChunkHit]:
        rows = self._rows("SELECT id, file_id, embedding <=> ?::vector AS distance FROM chunks "
                          "WHERE root_id = ? AND embedding IS NOT NULL ORDER BY distance LIMIT ?",
                          (vector_literal(vector), root_id, k))
        return [ChunkHit(*row) for row in rows]

    def matching_chunks(self, root_id: int, words: list[str], k: int) -> list[ChunkHit]:
        if not words:
            return []
        # Negated so that, as for the other hits, lower is better.
        rows = self._rows("SELECT id, file_id, -ts_rank(words, q) FROM chunks, websearch_to_tsquery('english', ?) q "
                          "WHERE root_id = ? AND words @@ q ORDER BY 3 LIMIT ?", (" or ".join(words), root_id, k))
        return [ChunkHit(*row) for row in rows]

    def files_containing(self, root_id: int, keyword: str) -> set[int]:
        rows = self._rows("SELECT DISTINCT file_id FROM chunks WHERE root_id = ? AND strpos(lower(text), lower(?)) > 0",
                          (root_id, keyword))
        return {file_id for (file_id,) in rows}

    def chunk_distances(self, file_ids: list[int], vector: np.ndarray | None) -> list[ChunkHit]:
        if vector is None or not self.vectors:
            rows = self._rows("SELECT id, file_id, 0.0 FROM chunks WHERE file_id = ANY(?)", (file_ids,))
        else:
            rows = self._rows("SELECT id, file_id, embedding <=> ?::vector FROM chunks WHERE file_id = ANY(?) "
                              "AND embedding IS NOT NULL", (vector_literal(vector), file_ids))
        return [ChunkHit(*row) for row in rows]

    def chunk_texts(self, chunk_ids: list[int]) -> dict[int, str]:
        return dict(self._rows("SELECT id, text FROM chunks WHERE id = ANY(?)", (chunk_ids,)))  # type: ignore[arg-type]

