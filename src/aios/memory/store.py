"""Where notes live, behind one small interface with two implementations that pass the same tests:
``SQLiteMemoryStore`` (embedded, one kernel per file) and ``PostgresMemoryStore`` (several kernel processes
sharing one database). A note, its vector and its words are written in one transaction.

Every read names the agent: a store never returns another agent's note, whatever id it is asked for. A store is
used from one thread at a time (the memory subsystem's I/O thread).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ContextManager, Protocol

import numpy as np

from aios.memory.notes import Note


@dataclass(frozen=True)
class Filters:
    """What a search may return: notes with every one of ``tags`` (case-insensitive), of ``category``, made
    within the time range (Unix seconds, inclusive), whose metadata holds each ``(key, value)`` pair."""

    tags: tuple[str, ...] = ()
    category: str | None = None
    created_after: float | None = None
    created_before: float | None = None
    metadata: tuple[tuple[str, str], ...] = ()

    def __bool__(self) -> bool:
        return bool(self.tags or self.category is not None or self.created_after is not None
                    or self.created_before is not None or self.metadata)


@dataclass(frozen=True)
class Hit:
    row: int
    value: float  # cosine distance (vectors) or a relevance rank (words): lower is better


class MemoryStore(Protocol):
    def transaction(self) -> ContextManager[None]:
        """Group the enclosed calls into one atomic transaction."""
        ...

    def insert(self, note: Note, vector: np.ndarray) -> int:
        """Store a new note with its vector and words; returns its row."""
        ...

    def note(self, agent: str, memory_id: str, for_update: bool = False) -> Note | None:
        """The agent's note with this id (None for an unknown id or another agent's); ``for_update`` holds it
        against concurrent writers until the transaction ends."""
        ...

    def notes(self, agent: str, rows: list[int]) -> dict[int, Note]: ...

    def save(self, note: Note, vector: np.ndarray | None) -> None:
        """Write a stored note's fields; with ``vector``, its vector and words are replaced too."""
        ...

    def delete(self, note: Note) -> None: ...
    def count(self, agent: str) -> int: ...

    def recent(self, agent: str, limit: int, offset: int) -> list[Note]:
        """The agent's notes, most recently made first: ``limit`` of them after the first ``offset``."""
        ...

    def nearest(self, agent: str, vector: np.ndarray, k: int, filters: Filters) -> list[Hit]:
        """The agent's notes nearest ``vector`` (cosine distance), nearest first."""
        ...

    def matching(self, agent: str, words: list[str], k: int, filters: Filters) -> list[Hit]:
        """The agent's notes holding any of ``words``, best keyword match first."""
        ...

    def notes_with_word(self, agent: str, word: str, at_most: int) -> int:
        """How many of the agent's notes hold ``word``, counted up to ``at_most + 1`` (only the agent's: how its
        query is ranked must not tell it what other agents' notes say)."""
        ...

    def distances(self, rows: list[int], vector: np.ndarray) -> dict[int, float]: ...

    def touch(self, rows: list[int], when: float) -> None:
        """Count a retrieval of each note and set its last access."""
        ...

    def close(self) -> None: ...
