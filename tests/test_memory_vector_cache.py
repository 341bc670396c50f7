"""The vector cache of the SQLite memory store: searches it serves find exactly what sqlite-vec finds, it follows
every committed change and none that rolled back, and it keeps to its memory budget."""

from __future__ import annotations

import uuid
from pathlib import Path

import numpy as np
import pytest

from aios.embeddings import DIMENSION
from aios.memory.notes import Note
from aios.memory.sqlite_store import SQLiteMemoryStore
from aios.memory.store import Filters
from aios.memory.vector_cache import VectorCache

AGENT = "cache/agent"


def unit(rng: np.random.Generator, count: int) -> np.ndarray:
    vectors = rng.standard_normal((count, DIMENSION)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def note(agent: str = AGENT, content: str = "a note") -> Note:
    return Note(str(uuid.uuid4()), agent, content, created=1.0, updated=1.0, last_accessed=1.0)


def fill(store: SQLiteMemoryStore, vectors: np.ndarray, agent: str = AGENT) -> list[Note]:
    notes = [note(agent) for _ in vectors]
    with store.transaction():
        for item, vector in zip(notes, vectors):
            store.insert(item, vector)
    return notes


def nearest(store: SQLiteMemoryStore, vector: np.ndarray, k: int = 10, agent: str = AGENT) -> list[int]:
    return [hit.row for hit in store.nearest(agent, vector, k, Filters())]


def test_the_cache_finds_exactly_what_sqlite_vec_finds_and_follows_changes(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    cached = SQLiteMemoryStore(tmp_path / "cached.db", VectorCache(min_notes=100))
    plain = SQLiteMemoryStore(tmp_path / "plain.db", VectorCache(max_bytes=0))
    vectors = unit(rng, 1500)
    kept = {name: fill(store, vectors) for name, store in (("cached", cached), ("plain", plain))}
    queries = unit(rng, 20)
    assert [nearest(cached, q) for q in queries] == [nearest(plain, q) for q in queries]
    assert cached.cache.holds(AGENT) and not plain.cache.holds(AGENT)
    # Changes after the load: a new note, a moved vector, a removal; each store the same way.
    extra, moved = unit(rng, 2)
    for name, store in (("cached", cached), ("plain", plain)):
        notes = kept[name]
        store.insert(note(), extra)
        store.save(notes[0], moved)
        store.delete(notes[1])
    for query in (extra, moved, vectors[1], *queries[:5]):
        assert nearest(cached, query) == nearest(plain, query)
    assert nearest(cached, vectors[1], 1) != [kept["cached"][1].row]  # the removed note is gone
    distances = [round(hit.value, 4) for hit in cached.nearest(AGENT, queries[0], 5, Filters())]
    assert distances == [round(hit.value, 4) for hit in plain.nearest(AGENT, queries[0], 5, Filters())]


def test_a_change_that_rolls_back_never_reaches_the_cache(tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    store = SQLiteMemoryStore(tmp_path / "memory.db", VectorCache(min_notes=1))
    fill(store, unit(rng, 50))
    assert nearest(store, unit(rng, 1)[0]) and store.cache.holds(AGENT)
    stray = unit(rng, 1)[0]
    with pytest.raises(RuntimeError), store.transaction():
        store.insert(note(content="never committed"), stray)
        raise RuntimeError("the transaction fails")
    assert store.count(AGENT) == 50
    top = store.nearest(AGENT, stray, 1, Filters())[0]
    assert top.value > 0.5  # the stray vector is not in the database, nor in the cache


def test_the_cache_keeps_to_its_budget(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    one_agent = 200 * DIMENSION * 4 + 200 * 8
    store = SQLiteMemoryStore(tmp_path / "memory.db", VectorCache(min_notes=10, max_bytes=int(1.5 * one_agent)))
    for agent in ("a", "b"):
        fill(store, unit(rng, 200), agent)
    query = unit(rng, 1)[0]
    nearest(store, query, agent="a")
    nearest(store, query, agent="b")  # both do not fit: the least recently searched goes
    assert store.cache.holds("b") and not store.cache.holds("a")
    assert nearest(store, query, agent="a")  # served again (from sqlite-vec, then the cache)
    fill(store, unit(rng, 400), "big")  # more than the whole budget: sqlite-vec serves it, no reload each time
    assert nearest(store, query, agent="big") and not store.cache.holds("big") and store.cache.declined("big")
    few = SQLiteMemoryStore(tmp_path / "few.db", VectorCache(min_notes=100))
    fill(few, unit(rng, 99))
    assert nearest(few, query) and not few.cache.holds(AGENT)  # under min_notes: sqlite-vec
