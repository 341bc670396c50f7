"""The embedded store: one SQLite database (WAL) in the data dir, through apsw (the standard library's sqlite3
here cannot load extensions), with sqlite-vec for chunk vectors and FTS5 for keywords.

Vectors sit in a ``vec0`` table partitioned by mount root, so a search scans only the agent's own chunks.
One kernel per database, enforced: the store holds a lock beside the database while it is open, and a second
kernel on the same data dir is refused at start-up. Several kernels sharing a file system use the PostgreSQL
store.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from pathlib import Path
from typing import IO, ContextManager, Iterator

import numpy as np

from aios.database import SQLiteDatabase, vector_blob
from aios.embeddings import DIMENSION
from aios.errors import NotAvailable
from aios.storage.sql_store import COMMON_SCHEMA, SQLStore
from aios.storage.store import Chunk, ChunkHit, FileRecord

_INDEX_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS chunks (
    id INTEGER PRIMARY KEY, file_id INTEGER NOT NULL, root_id INTEGER NOT NULL, number INTEGER NOT NULL,
    start INTEGER NOT NULL, text TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS chunks_by_file ON chunks (file_id);
CREATE INDEX IF NOT EXISTS chunks_by_root ON chunks (root_id);
CREATE VIRTUAL TABLE IF NOT EXISTS chunk_vectors USING vec0(
    root_id INTEGER PARTITION KEY, embedding FLOAT[{DIMENSION}] distance_metric=cosine);
CREATE VIRTUAL TABLE IF NOT EXISTS chunk_words USING fts5(
    text, tokenize='porter unicode61', content='', contentless_delete=1);
"""


class SQLiteStore(SQLiteDatabase, SQLStore):
    def __init__(self, path: Path, vectors: bool = True) -> None:
        self.vectors = vectors
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = _hold_database(path)  # before the database is touched: a refused kernel changes nothing
        try:
            super().__init__(path, COMMON_SCHEMA.format(id="INTEGER PRIMARY KEY") + _INDEX_SCHEMA,
                             functions={"contains_folded": _contains_folded})
        except BaseException:
            self._lock.close()
            raise

    @contextlib.contextmanager
    def file_lock(self, root_id: int, path: str) -> Iterator[None]:
        yield  # one kernel, one I/O thread: operations on the database are already one at a time

    def mounts_lock(self) -> ContextManager[None]:
        return contextlib.nullcontext()  # the same

    def replace_chunks(self, file: FileRecord, chunks: list[Chunk], vectors: np.ndarray | None) -> bool:
        with self._db:
            if self._one("SELECT hash IS ? FROM files WHERE id = ?", (file.hash, file.id)) != (1,):
                return False  # written again meanwhile: that head will be indexed instead
            for (chunk_id,) in self._rows("SELECT id FROM chunks WHERE file_id = ?", (file.id,)):
                self._db.execute("DELETE FROM chunk_words WHERE rowid = ?", (chunk_id,))
                self._db.execute("DELETE FROM chunk_vectors WHERE rowid = ?", (chunk_id,))
            self._db.execute("DELETE FROM chunks WHERE file_id = ?", (file.id,))
            for i, chunk in enumerate(chunks):
                (chunk_id,) = self._one("INSERT INTO chunks (file_id, root_id, number, start, text) "
                                        "VALUES (?, ?, ?, ?, ?) RETURNING id",
                                        (file.id, file.root_id, chunk.number, chunk.start, chunk.text))  # type: ignore[misc]
                self._db.execute("INSERT INTO chunk_words (rowid, text) VALUES (?, ?)", (chunk_id, chunk.text))
                if vectors is not None:
                    self._db.execute("INSERT INTO chunk_vectors (rowid, root_id, embedding) VALUES (?, ?, ?)",
                                     (chunk_id, file.root_id, vector_blob(vectors[i])))
            self._db.execute("UPDATE files SET indexed_hash = hash WHERE id = ?", (file.id,))
        return True

    def nearest_chunks(self, root_id: int, vector: np.ndarray, k: int) -> list[ChunkHit]:
        rows = self._rows("SELECT v.rowid, c.file_id, v.distance FROM chunk_vectors v JOIN chunks c ON c.id = v.rowid "
                          "WHERE v.embedding MATCH ? AND v.k = ? AND v.root_id = ? ORDER BY v.distance",
                          (vector_blob(vector), k, root_id))
        return [ChunkHit(*row) for row in rows]

    def matching_chunks(self, root_id: int, words: list[str], k: int) -> list[ChunkHit]:
        if not words:
            return []
        query = " OR ".join(f'"{word}"' for word in words)  # words are \w+ runs: nothing to escape
        rows = self._rows("SELECT w.rowid, c.file_id, w.rank FROM chunk_words w JOIN chunks c ON c.id = w.rowid "
                          "WHERE chunk_words MATCH ? AND c.root_id = ? ORDER BY w.rank LIMIT ?", (query, root_id, k))
        return [ChunkHit(*row) for row in rows]

    def files_containing(self, root_id: int, keyword: str) -> set[int]:
        rows = self._rows("SELECT DISTINCT file_id FROM chunks WHERE root_id = ? AND contains_folded(text, ?)",
                          (root_id, keyword.casefold()))
        return {file_id for (file_id,) in rows}

    def chunk_distances(self, file_ids: list[int], vector: np.ndarray | None) -> list[ChunkHit]:
        ids = json.dumps(file_ids)
        if vector is None or not self.vectors:
            rows = self._rows("SELECT id, file_id, 0.0 FROM chunks WHERE file_id IN (SELECT value FROM json_each(?))",
                              (ids,))
        else:
            rows = self._rows("SELECT c.id, c.file_id, vec_distance_cosine(v.embedding, ?) FROM chunks c "
                              "JOIN chunk_vectors v ON v.rowid = c.id "
                              "WHERE c.file_id IN (SELECT value FROM json_each(?))", (vector_blob(vector), ids))
        return [ChunkHit(*row) for row in rows]

    def chunk_texts(self, chunk_ids: list[int]) -> dict[int, str]:
        rows = self._rows("SELECT id, text FROM chunks WHERE id IN (SELECT value FROM json_each(?))",
                          (json.dumps(chunk_ids),))
        return dict(rows)  # type: ignore[arg-type]

    def close(self) -> None:
        super().close()
        self._lock.close()  # closing the descriptor lets go of the lock


def _hold_database(path: Path) -> IO[str]:
    """An exclusive lock on ``<database>.lock``, held while the returned file is open. A second kernel on the same
    database would take the first one's pending versions for crash leftovers and drop them, and both would number
    new versions alike; so it is refused. The operating system lets go of the lock when the process ends, however
    it ends, so a killed kernel never locks out the next one."""
    lock = open(path.with_name(f"{path.name}.lock"), "a+", encoding="utf-8")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.seek(0)
        holder = lock.read().strip()
        lock.close()
        who = f" (process {holder})" if holder.isdigit() else ""
        raise NotAvailable(f"another kernel{who} uses this data dir: its storage database {path} is in use; "
                           "use backend postgres to share storage") from None
    lock.truncate(0)
    lock.write(f"{os.getpid()}\n")  # for the message a refused kernel shows
    lock.flush()
    return lock


def _contains_folded(text: str, folded_keyword: str) -> bool:
    return folded_keyword in text.casefold()
