"""The memory stores and hybrid search on both backends (SQLite, and a real PostgreSQL): recall on a labelled set,
filters, isolation between agents, and the index following updates and removals.

The labelled set (tests/memory_corpus.py: 40 questions, 360 memories) is embedded once, in batches, per module."""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pytest

from aios.embeddings import Embedder
from aios.memory.notes import Note
from aios.memory import search as search_module
from aios.memory.search import Found, nearest_notes, search
from aios.memory.store import Filters, MemoryStore
from aios.memory.vector_cache import VectorCache
from memory_corpus import TARGETS, corpus

AGENT = "tests/recall"


@pytest.fixture(scope="module")
def labelled(embedder: Embedder) -> tuple[list[str], np.ndarray, np.ndarray]:
    memories = corpus()
    assert len(set(memories)) == len(memories) >= 300
    return memories, embedder.embed(memories), embedder.embed([question for _, question in TARGETS])


@pytest.fixture(params=["sqlite", "sqlite-cached", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[MemoryStore]:
    """Each store; ``sqlite-cached`` holds every agent's vectors in RAM from its first note on (by default only
    agents with 4,096 notes or more are), so the same tests cover searches served by the vector cache."""
    if request.param == "postgres":
        from aios.memory.postgres_store import PostgresMemoryStore

        opened: MemoryStore = PostgresMemoryStore(request.getfixturevalue("postgres")())
    else:
        from aios.memory.sqlite_store import SQLiteMemoryStore

        cache = VectorCache(min_notes=1) if request.param == "sqlite-cached" else VectorCache(max_bytes=0)
        opened = SQLiteMemoryStore(tmp_path / "memory.db", cache)
    yield opened
    opened.close()


def note(agent: str, content: str, when: float = 1_700_000_000.0, **fields) -> Note:  # noqa: ANN003
    return Note(str(uuid.uuid4()), agent, content, created=when, updated=when, last_accessed=when, **fields)


def find(store: MemoryStore, embedder: Embedder, agent: str, query: str, k: int = 5,
         filters: Filters = Filters()) -> list[Found]:
    return search(store, agent, query, embedder.embed([query])[0], k, filters, time.time())


def test_recall_at_5_on_the_labelled_set_is_at_least_0_9(store: MemoryStore, labelled) -> None:  # noqa: ANN001
    memories, vectors, questions = labelled
    with store.transaction():
        for text, vector in zip(memories, vectors):
            store.insert(note(AGENT, text), vector)
    misses = []
    for (target, question), vector in zip(TARGETS, questions):
        found = [item.note.content for item in search(store, AGENT, question, vector, 5, Filters(), time.time())]
        if target not in found:
            misses.append((question, found[:2]))
    recall = 1 - len(misses) / len(TARGETS)
    assert recall >= 0.9, f"recall@5 = {recall:.3f}; missed: {misses}"


def test_a_search_sees_only_the_agents_own_notes(store: MemoryStore, embedder: Embedder) -> None:
    texts = ["Max the dog is allergic to chicken.", "The dentist appointment is on Friday."]
    for agent in ("alice", "bob"):
        for text in texts:
            store.insert(note(agent, f"{agent}: {text}"), embedder.embed([f"{agent}: {text}"])[0])
    for agent in ("alice", "bob"):
        found = find(store, embedder, agent, "What can the dog not eat?", k=10)
        assert [item.note.agent for item in found] == [agent, agent]
        assert found[0].note.content == f"{agent}: {texts[0]}" and found[0].similarity > 0.4
    mallory = find(store, embedder, "mallory", "dog chicken allergy")
    assert mallory == []
    alice_id = find(store, embedder, "alice", "dog")[0].note.memory_id
    assert store.note("bob", alice_id) is None and store.note("alice", alice_id) is not None


def test_how_a_query_is_ranked_does_not_depend_on_other_agents_notes(store: MemoryStore, embedder: Embedder,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """A word held by more than MAX_WORD_NOTES of the agent's notes is left to the meaning ranking. Counted over
    every agent's notes, another agent could learn what others' notes say, by watching its own results change as
    it adds notes: only the agent's own count."""
    monkeypatch.setattr(search_module, "MAX_WORD_NOTES", 2)
    for agent, count in (("crowd", 3), ("alice", 1)):
        for index in range(count):
            text = f"{agent} note {index} about the zebra"
            store.insert(note(agent, text), embedder.embed([text])[0])
    assert [store.notes_with_word(agent, "zebra", 2) for agent in ("alice", "crowd", "nobody")] == [1, 3, 0]
    ranked_by: list[list[str]] = []
    matching = store.matching

    def words_used(agent: str, words: list[str], k: int, filters: Filters) -> list[Any]:
        ranked_by.append(words)
        return matching(agent, words, k, filters)

    monkeypatch.setattr(store, "matching", words_used)
    for agent in ("alice", "crowd"):
        assert find(store, embedder, agent, "zebra")[0].note.agent == agent
    assert ranked_by == [["zebra"], []]  # alice's query ranks by its word; the crowd's own notes are too many


def test_filters_by_tags_category_time_and_metadata(store: MemoryStore, embedder: Embedder) -> None:
    agent = "tests/filters"
    rows = {
        "pasta": note(agent, "Pasta with tomato sauce for dinner.", 100.0, tags=["Food", "dinner"], category="meals"),
        "salad": note(agent, "A green salad for lunch.", 200.0, tags=["food"], category="meals"),
        "run": note(agent, "Ran 5 km by the river.", 300.0, tags=["sport"], category="health",
                    metadata={"user_id": "u1"}),
        "swim": note(agent, "Swam 20 laps at the pool.", 400.0, tags=["sport", "water"], category="health",
                     metadata={"user_id": "u2"}),
    }
    for item in rows.values():
        store.insert(item, embedder.embed([item.search_text()])[0])
    name = {item.memory_id: key for key, item in rows.items()}

    def names(query: str, **filters) -> set[str]:  # noqa: ANN003
        return {name[item.note.memory_id] for item in find(store, embedder, agent, query, 10, Filters(**filters))}

    assert names("food") == {"pasta", "salad", "run", "swim"}  # no filter: every note of the agent qualifies
    assert names("food", tags=("FOOD",)) == {"pasta", "salad"}  # tags match case-insensitively
    assert names("anything", tags=("food", "dinner")) == {"pasta"}  # every tag given must be there
    assert names("exercise", category="health") == {"run", "swim"}
    assert names("meal", created_after=150.0, created_before=350.0) == {"salad", "run"}
    assert names("exercise", metadata=(("user_id", "u2"),)) == {"swim"}
    assert names("exercise", tags=("sport",), created_after=350.0) == {"swim"}
    assert names("anything", tags=("nonexistent",)) == set()
    assert names("food", category="meals", tags=("sport",)) == set()


def test_the_index_follows_updates_and_removals(store: MemoryStore, embedder: Embedder) -> None:
    agent = "tests/index"
    old = note(agent, "The spare key is under the flower pot.", tags=["home"])
    other = note(agent, "The car is parked on level 3.")
    for item in (old, other):
        store.insert(item, embedder.embed([item.search_text()])[0])
    old.content, old.tags, old.category = "The spare key is with the neighbour, Mrs. Lind.", ["neighbours"], "keys"
    store.save(old, embedder.embed([old.search_text()])[0])
    top = find(store, embedder, agent, "Who keeps our extra key?", 1)[0]
    assert top.note.content == old.content and top.note.tags == ["neighbours"]
    assert [f.note.content for f in find(store, embedder, agent, "flower pot", 5, Filters(tags=("home",)))] == []
    assert [f.note.memory_id for f in find(store, embedder, agent, "key", 5, Filters(category="keys"))] == [
        old.memory_id]
    store.delete(old)
    assert store.note(agent, old.memory_id) is None
    assert [f.note.memory_id for f in find(store, embedder, agent, "spare key neighbour", 5)] == [other.memory_id]
    assert store.count(agent) == 1


def test_retrievals_are_counted_and_a_save_does_not_undo_them(store: MemoryStore, embedder: Embedder) -> None:
    agent = "tests/counts"
    item = note(agent, "Tomas prefers window seats.")
    store.insert(item, embedder.embed([item.content])[0])
    before = store.note(agent, item.memory_id)
    for _ in range(3):
        find(store, embedder, agent, "window seat")
    item.context = "travel preferences"
    store.save(item, None)  # a note read before the searches, saved after them
    after = store.note(agent, item.memory_id)
    assert after.retrieval_count == 3 and after.last_accessed > before.last_accessed
    assert after.context == "travel preferences"


def test_nearest_notes_keeps_only_those_above_the_similarity_floor(store: MemoryStore, embedder: Embedder) -> None:
    agent = "tests/neighbours"
    texts = ["Max the golden retriever needs his vaccination.", "I bought a leash for Max the dog.",
             "The quarterly budget review is on Thursday."]
    vectors = embedder.embed(texts)
    for text, vector in zip(texts, vectors):
        store.insert(note(agent, text), vector)
    query = embedder.embed(["Max the dog has a vet appointment."])[0]
    found = nearest_notes(store, agent, query, 3, 0.3)
    assert [n.content for n, _ in found] == texts[:2] and all(similarity >= 0.3 for _, similarity in found)
    assert found[0][1] >= found[1][1]
    assert nearest_notes(store, "tests/someone-else", query, 3, -1.0) == []
