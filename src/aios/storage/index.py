"""Search over the contents of an agent's files: chunked, embedded (the kernel's shared embedding model), and
ranked by meaning and by keywords together.

The index follows the files: a file whose head is not what is indexed (written, rolled back, deleted, or
changed outside the kernel and since touched) is *stale*. Stale files are indexed in the background after
each change, and a search first indexes whatever is still stale in its mount, so it always sees the latest
versions. Ranking fuses two lists by reciprocal rank — chunks nearest the query's vector, and chunks holding
its words (BM25 in SQLite, ts_rank in PostgreSQL) — and reports the best chunk of each file as its snippet.
``keywords`` filter: every keyword must appear (case-insensitive) in the file.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from dataclasses import dataclass
from typing import Any, Awaitable, Callable

import numpy as np

from aios.embeddings import Embedder
from aios.hybrid_search import fuse_ranks, query_words
from aios.storage.files import FileSystem
from aios.storage.store import Chunk, ChunkHit, FileRecord, Root

log = logging.getLogger(__name__)

CHUNK_CHARS = 1000  # about 250 tokens: what the embedding model reads in full
FILES_PER_BATCH = 32
# Chunks per call of the shared embedding model: a search's query, from any mount, waits behind at most one
# such pass of the indexing, not behind a whole mount's (32 files of up to 4 MB are thousands of chunks).
CHUNKS_PER_EMBEDDING = 256
SNIPPET_CHARS = 300

RunIO = Callable[..., Awaitable[Any]]  # runs a blocking function on the storage I/O thread


def chunk_text(text: str) -> list[Chunk]:
    """Pieces of at most ``CHUNK_CHARS``, cut at a paragraph, else a line, else a space where possible."""
    chunks: list[Chunk] = []
    start = 0
    while start < len(text):
        end = min(start + CHUNK_CHARS, len(text))
        if end < len(text):
            floor = start + CHUNK_CHARS // 2
            cut = max((text.rfind(mark, floor, end) for mark in ("\n\n", "\n", " ")), default=-1)
            end = cut + 1 if cut > 0 else end
        if text[start:end].strip():
            chunks.append(Chunk(len(chunks), start, text[start:end]))
        start = end
    return chunks


@dataclass
class _Pending:
    record: FileRecord
    chunks: list[Chunk]


class Indexer:
    def __init__(self, fs: FileSystem, run_io: RunIO, embedder: Embedder | None) -> None:
        self.fs, self.run_io, self.embedder = fs, run_io, embedder
        self._locks: dict[int, asyncio.Lock] = defaultdict(asyncio.Lock)

    async def refresh(self, root_id: int) -> int:
        """Index every stale file of one mount; returns how many were indexed."""
        done = 0
        async with self._locks[root_id]:  # the background pass and a search never index the same files twice
            while work := await self.run_io(self._stale, root_id):
                texts = [f"{item.record.path}\n{chunk.text}" for item in work for chunk in item.chunks]
                vectors = await self._embed(texts) if self.embedder and texts else None
                await self.run_io(self._store, work, vectors)
                done += len(work)
        return done

    async def _embed(self, texts: list[str]) -> np.ndarray:
        assert self.embedder is not None
        parts = [await self.embedder.aembed(texts[start:start + CHUNKS_PER_EMBEDDING])
                 for start in range(0, len(texts), CHUNKS_PER_EMBEDDING)]
        return np.concatenate(parts)

    def _stale(self, root_id: int) -> list[_Pending]:
        return [_Pending(record, self._chunks(record)) for record in self.fs.store.stale_files(root_id, FILES_PER_BATCH)]

    def _chunks(self, record: FileRecord) -> list[Chunk]:
        if record.hash is None:
            return []  # deleted: its chunks go
        try:
            text = self.fs.blobs.get(record.hash).decode("utf-8")
        except UnicodeDecodeError:
            return []  # not text: nothing to search
        except (OSError, ValueError) as exc:  # a missing or damaged blob must not stop the rest of the index
            log.warning("cannot index %s (version %s): %s", record.path, record.head, exc)
            return []
        # PostgreSQL text cannot hold NUL: indexed as a space, which is how SQLite's words already read it (a
        # separator), so both stores index the same text and every chunk keeps its offset in the file.
        return chunk_text(text.replace("\x00", " "))

    def _store(self, work: list[_Pending], vectors: np.ndarray | None) -> None:
        start = 0
        for item in work:
            count = len(item.chunks)
            own = vectors[start:start + count] if vectors is not None else None
            self.fs.store.replace_chunks(item.record, item.chunks, own)
            start += count

    async def search(self, root: Root, query_text: str, n: int, keywords: list[str] | None) -> list[dict[str, Any]]:
        await self.refresh(root.id)
        vector = (await self.embedder.aembed([query_text]))[0] if self.embedder else None
        return await self.run_io(self._rank, root, query_text, vector, n, keywords)

    def _rank(self, root: Root, query_text: str, vector: np.ndarray | None, n: int,
              keywords: list[str] | None) -> list[dict[str, Any]]:
        store, depth = self.fs.store, max(50, 10 * n)
        words = query_words(query_text)
        if keywords:
            allowed = set.intersection(*(store.files_containing(root.id, keyword) for keyword in keywords))
            if not allowed:
                return []
            candidates = store.chunk_distances(sorted(allowed), vector)  # every chunk of the files that qualify
            by_meaning = sorted(candidates, key=lambda hit: hit.value) if vector is not None else []
            by_words = [hit for hit in store.matching_chunks(root.id, words, 10 * depth) if hit.file_id in allowed]
            best = _fuse(by_meaning, by_words)
            for hit in candidates:  # a file with every keyword is a result even if nothing else ranks it
                best.setdefault(hit.file_id, _Best(hit.file_id, hit.chunk_id, 0.0))
        else:
            by_meaning = store.nearest_chunks(root.id, vector, depth) if vector is not None else []
            best = _fuse(by_meaning, store.matching_chunks(root.id, words, depth))
        ranked = sorted(best.values(), key=lambda b: -b.score)[:n]
        return self._results(root, ranked, {hit.chunk_id: hit.value for hit in by_meaning})

    def _results(self, root: Root, ranked: list["_Best"], distances: dict[int, float]) -> list[dict[str, Any]]:
        texts = self.fs.store.chunk_texts([b.chunk_id for b in ranked])
        results = []
        for best in ranked:
            record = self.fs.store.file_by_id(best.file_id)
            distance = distances.get(best.chunk_id)
            results.append({"file_path": record.path, "path": f"{root.path}/{record.path}", "version": record.head,
                            "score": round(best.score, 6),
                            "similarity": None if distance is None else round(1.0 - distance, 4),
                            "snippet": _snippet(texts.get(best.chunk_id, ""))})
        return results


@dataclass
class _Best:
    file_id: int
    chunk_id: int
    score: float


def _fuse(by_meaning: list[ChunkHit], by_words: list[ChunkHit]) -> dict[int, _Best]:
    """Reciprocal rank fusion of the two chunk lists, then each file's best chunk."""
    files = {hit.chunk_id: hit.file_id for hit in (*by_meaning, *by_words)}
    scores = fuse_ranks((hit.chunk_id for hit in by_meaning), (hit.chunk_id for hit in by_words))
    best: dict[int, _Best] = {}
    for chunk_id, score in scores.items():
        file_id = files[chunk_id]
        if file_id not in best or score > best[file_id].score:
            best[file_id] = _Best(file_id, chunk_id, score)
    return best


def _snippet(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= SNIPPET_CHARS else text[:SNIPPET_CHARS - 1] + "…"
