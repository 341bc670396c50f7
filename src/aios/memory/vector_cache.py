"""In-RAM copies of large agents' vectors, so that their searches stay fast.

sqlite-vec holds every vector and scans an agent's partition exactly, but its distance loop is scalar: about
40 ms per 100k vectors on a 2-core machine, most of a search's budget. An agent with at least ``min_notes``
notes gets a copy of its vectors as one float32 matrix here, loaded from sqlite-vec on its first search, and a
search is then one matrix-vector product (about 5 ms per 100k): exact, the same nearest notes.

The copy follows the store: changes are staged while a transaction runs and applied when it commits (dropped
if it rolls back), so a search never sees what the database does not hold. One kernel owns a SQLite file, so
no other process changes it behind the copy's back. Matrices beyond ``max_bytes`` go, least recently searched
first, and are loaded again when next needed.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from aios.embeddings import DIMENSION


@dataclass
class _Matrix:
    """One agent's vectors: ``vectors[:size]``, the store row of each in ``rows``."""

    rows: np.ndarray
    vectors: np.ndarray
    size: int
    where: dict[int, int] = field(default_factory=dict)  # store row -> index
    used: float = 0.0

    @classmethod
    def of(cls, rows: np.ndarray, vectors: np.ndarray) -> "_Matrix":
        return cls(rows.astype(np.int64), vectors.astype(np.float32), len(rows),
                   {int(row): i for i, row in enumerate(rows)}, time.monotonic())

    def put(self, row: int, vector: np.ndarray) -> None:
        if row in self.where:
            self.vectors[self.where[row]] = vector
            return
        if self.size == len(self.rows):  # full: double the room, so that adds cost O(1) on average
            grown = max(16, 2 * len(self.rows))
            self.rows = np.resize(self.rows, grown)
            self.vectors = np.concatenate([self.vectors, np.zeros((grown - self.size, DIMENSION), np.float32)])
        self.rows[self.size], self.vectors[self.size] = row, vector
        self.where[row] = self.size
        self.size += 1

    def drop(self, row: int) -> None:
        index = self.where.pop(row, None)
        if index is None:
            return
        last = self.size - 1
        if index != last:  # the last one fills the hole
            self.rows[index], self.vectors[index] = self.rows[last], self.vectors[last]
            self.where[int(self.rows[index])] = index
        self.size = last

    def nearest(self, vector: np.ndarray, k: int) -> list[tuple[int, float]]:
        self.used = time.monotonic()
        if self.size == 0:
            return []
        similarities = self.vectors[:self.size] @ np.asarray(vector, dtype=np.float32)
        k = min(k, self.size)
        top = np.argpartition(-similarities, k - 1)[:k]
        top = top[np.argsort(-similarities[top], kind="stable")]
        # Cosine distance, as sqlite-vec reports it (the vectors are unit length).
        return [(int(self.rows[i]), float(1.0 - similarities[i])) for i in top]

    @property
    def nbytes(self) -> int:
        return self.vectors.nbytes + self.rows.nbytes


class VectorCache:
    def __init__(self, min_notes: int = 4096, max_bytes: int = 1 << 30) -> None:
        self.min_notes, self.max_bytes = min_notes, max_bytes
        self._matrices: dict[str, _Matrix] = {}
        self._too_large: set[str] = set()  # agents whose vectors alone exceed the budget: sqlite-vec serves them
        self._staged: list[tuple[str, int, np.ndarray | None]] = []  # (agent, row, vector or None: removed)

    @property
    def enabled(self) -> bool:
        return self.max_bytes > 0

    def holds(self, agent: str) -> bool:
        return agent in self._matrices

    def declined(self, agent: str) -> bool:
        return agent in self._too_large

    def nearest(self, agent: str, vector: np.ndarray, k: int) -> list[tuple[int, float]] | None:
        """``(row, cosine distance)`` of the agent's ``k`` nearest, nearest first; None if not held."""
        matrix = self._matrices.get(agent)
        return None if matrix is None else matrix.nearest(vector, k)

    def load(self, agent: str, rows: np.ndarray, vectors: np.ndarray) -> bool:
        """Hold these vectors of the agent (False, and nothing held, if they alone exceed the budget)."""
        matrix = _Matrix.of(rows, vectors)
        if matrix.nbytes > self.max_bytes:
            self._too_large.add(agent)
            return False
        self._matrices[agent] = matrix
        self._evict(keep=agent)
        return True

    def stage(self, agent: str, row: int, vector: np.ndarray | None) -> None:
        if agent in self._matrices:
            self._staged.append((agent, row, vector))

    def commit(self) -> None:
        staged, self._staged = self._staged, []
        for agent, row, vector in staged:
            matrix = self._matrices.get(agent)
            if matrix is not None:
                matrix.drop(row) if vector is None else matrix.put(row, vector)

    def discard(self) -> None:
        self._staged = []

    def _evict(self, keep: str) -> None:
        by_age = sorted((m.used, agent) for agent, m in self._matrices.items() if agent != keep)
        while sum(m.nbytes for m in self._matrices.values()) > self.max_bytes and by_age:
            self._matrices.pop(by_age.pop(0)[1])
