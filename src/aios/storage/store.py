"""The metadata store: mounts, files, versions, the search index and share links, behind one small interface.

Two implementations pass the same tests: ``SQLiteStore`` (embedded; one kernel per data dir) and
``PostgresStore`` (several kernel processes sharing one file system, with the blobs in a directory they all
mount). File contents never live here: versions name their blob by hash, and the live file is on disk.

A store is used from one thread at a time (the storage subsystem's I/O thread). Methods are plain SQL-level
steps; the file system logic that combines them lives in ``files.py``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ContextManager, Protocol

import numpy as np

# How versions came about: through the kernel (create, write, rollback, delete), or seen on disk when the
# kernel next touched the file (external: changed, created or removed by something else).
KINDS = ("create", "write", "rollback", "delete", "external")


@dataclass(frozen=True)
class Root:
    """A mounted directory (resolved, absolute), owned by the agent that first mounted it."""

    id: int
    path: str
    owner: str


@dataclass(frozen=True)
class FileRecord:
    """A file's identity (its root and path inside it) and its head: the latest committed version, with that
    version's hash and size. ``hash`` is None when the head says the file does not exist (deleted)."""

    id: int
    root_id: int
    path: str
    head: int = 0
    hash: str | None = None
    size: int = 0


@dataclass(frozen=True)
class Version:
    file_id: int
    number: int
    time: float  # Unix seconds
    size: int
    hash: str | None  # None: the file did not exist in this version (deleted)
    agent: str
    kind: str
    restored_from: int | None = None  # the version a rollback brought back
    pending: bool = False  # written to the store before the disk; settled by the next touch if a crash intervened


@dataclass(frozen=True)
class Chunk:
    number: int
    start: int  # character offset in the file's text
    text: str


@dataclass(frozen=True)
class ChunkHit:
    chunk_id: int
    file_id: int
    value: float  # cosine distance (vectors) or a relevance rank (words): lower is better


@dataclass(frozen=True)
class Share:
    token_hash: str  # the token itself is never stored: a leaked database gives no working links
    file_id: int
    version: int
    agent: str
    created: float
    expires: float
    revoked: float | None = None


class Store(Protocol):
    vectors: bool  # whether chunk vectors are stored (storage.use_vector_db)

    def transaction(self) -> ContextManager[None]:
        """Group the enclosed calls into one atomic transaction."""
        ...

    def file_lock(self, root_id: int, path: str) -> ContextManager[None]:
        """Exclusive use of one file across kernel processes, for a read-modify-write of it and its disk copy."""
        ...

    def mounts_lock(self) -> ContextManager[None]:
        """Exclusive use of the mounts across kernel processes, for checking that a new one overlaps no other."""
        ...

    # -- mounts -------------------------------------------------------------------------------------------------
    def roots(self) -> list[Root]: ...
    def add_root(self, path: str, owner: str) -> Root: ...
    def mount_of(self, agent: str) -> Root | None: ...
    def set_mount(self, agent: str, root_id: int) -> None: ...

    # -- files and versions -------------------------------------------------------------------------------------
    def file(self, root_id: int, path: str) -> FileRecord | None: ...
    def file_by_id(self, file_id: int) -> FileRecord: ...
    def add_file(self, root_id: int, path: str) -> FileRecord:
        """The file's record, created (head 0) if it has none yet."""
        ...

    def files(self, root_id: int) -> list[FileRecord]: ...
    def set_head(self, file_id: int, head: int, hash: str | None, size: int) -> None: ...
    def add_version(self, version: Version) -> None: ...
    def versions(self, file_id: int, limit: int | None = None) -> list[Version]:
        """Committed versions, newest first."""
        ...

    def version(self, file_id: int, number: int) -> Version | None: ...
    def version_at(self, file_id: int, time: float) -> Version | None:
        """The newest committed version made at or before ``time``."""
        ...

    def deleted_after(self, file_id: int, number: int) -> Version | None:
        """The first committed deletion of the file after version ``number``, if there is one."""
        ...

    def pending(self, file_id: int) -> Version | None: ...
    def settle(self, file_id: int, number: int, keep: bool) -> None:
        """Commit a pending version (``keep``) or drop it; Conflict if it is not pending (any more)."""
        ...

    # -- the search index ---------------------------------------------------------------------------------------
    def stale_files(self, root_id: int, limit: int) -> list[FileRecord]:
        """Files whose indexed content is not their head's."""
        ...

    def replace_chunks(self, file: FileRecord, chunks: list[Chunk], vectors: np.ndarray | None) -> bool:
        """Index ``file`` at its head as ``chunks``; False (and nothing changed) if its head moved meanwhile."""
        ...

    def nearest_chunks(self, root_id: int, vector: np.ndarray, k: int) -> list[ChunkHit]: ...
    def matching_chunks(self, root_id: int, words: list[str], k: int) -> list[ChunkHit]:
        """Chunks holding any of ``words``, best keyword match first."""
        ...

    def files_containing(self, root_id: int, keyword: str) -> set[int]:
        """Files with a chunk that contains ``keyword`` (case-insensitive)."""
        ...

    def chunk_distances(self, file_ids: list[int], vector: np.ndarray | None) -> list[ChunkHit]:
        """Every chunk of these files, with its cosine distance to ``vector`` (0 when there is none)."""
        ...

    def chunk_texts(self, chunk_ids: list[int]) -> dict[int, str]: ...

    # -- share links --------------------------------------------------------------------------------------------
    def add_share(self, share: Share) -> None: ...
    def share(self, token_hash: str) -> Share | None: ...
    def revoke_shares(self, time: float, token_hash: str | None = None, file_id: int | None = None) -> int:
        """Revoke one link (by token) or all of a file's; returns how many were live."""
        ...

    def close(self) -> None: ...
