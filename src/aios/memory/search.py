"""Hybrid search over an agent's memories: the notes nearest the query's vector (all-MiniLM-L6-v2, the kernel's
shared embedding model) and the notes best matching its words (BM25 in SQLite, ts_rank in PostgreSQL), fused by
reciprocal rank. Filters (tags, category, creation time, metadata values) apply to both lists.

Each result's ``score`` is its cosine similarity to the query — the figure a relevance threshold compares —
while the order is the fused ranking, which also counts the words. Blocking: runs on the memory I/O thread.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from aios.hybrid_search import fuse_ranks, query_words
from aios.memory.notes import Note
from aios.memory.store import Filters, MemoryStore

# Notes are short and the lists shallow, so the top of the meaning list is reliable: with the usual k = 60 a
# middling note sharing a common word ("meeting", "December") overtakes the best match. On the labelled set of
# tests/memory_corpus.py, recall@5 is 0.975 with k from 2 to 20 on both stores, 0.875-0.9 with k = 60.
RRF_K = 10
# A word held by more of the agent's notes than this adds little to the ranking (it matches a crowd) and costs
# most of it (every match is scored): it is left to the meaning ranking.
MAX_WORD_NOTES = 2000


@dataclass(frozen=True)
class Found:
    note: Note
    similarity: float  # cosine similarity of the note's vector to the query's
    fused: float  # its reciprocal-rank score: results are ordered by it


def depth(k: int) -> int:
    """How far down each list fusion looks for ``k`` results: a note ranked low by meaning but high by words
    (or the other way) still makes it."""
    return max(30, 5 * k)


def search(store: MemoryStore, agent: str, query: str, vector: np.ndarray, k: int, filters: Filters,
           when: float) -> list[Found]:
    """The ``k`` best of the agent's notes for ``query``, best first; each is counted as retrieved at ``when``."""
    by_meaning = store.nearest(agent, vector, depth(k), filters)
    words = [word for word in query_words(query)
             if store.notes_with_word(agent, word, MAX_WORD_NOTES) <= MAX_WORD_NOTES]
    by_words = store.matching(agent, words, depth(k), filters)
    scores = fuse_ranks([hit.row for hit in by_meaning], [hit.row for hit in by_words], RRF_K)
    ranked = sorted(scores, key=lambda row: -scores[row])[:k]
    distances = {hit.row: hit.value for hit in by_meaning}
    missing = [row for row in ranked if row not in distances]
    if missing:  # found by words only: its similarity still says how close it is in meaning
        distances.update(store.distances(missing, vector))
    store.touch(ranked, when)
    notes = store.notes(agent, ranked)
    return [Found(notes[row], 1.0 - distances[row], scores[row]) for row in ranked if row in notes]


def nearest_notes(store: MemoryStore, agent: str, vector: np.ndarray, k: int,
                  min_similarity: float) -> list[tuple[Note, float]]:
    """The agent's ``k`` notes nearest ``vector`` with at least ``min_similarity``, nearest first (agentic
    memory's neighbours; not counted as retrievals)."""
    hits = [hit for hit in store.nearest(agent, vector, k, Filters()) if 1.0 - hit.value >= min_similarity]
    notes = store.notes(agent, [hit.row for hit in hits])
    return [(notes[hit.row], 1.0 - hit.value) for hit in hits if hit.row in notes]
