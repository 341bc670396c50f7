"""Helpers for the storage tests: a file system on either store, and a clock the tests move by hand (share
links expire after days; a test cannot wait that long, so it moves the clock instead)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from aios.storage.blobs import BlobStore
from aios.storage.files import FileSystem, Settings
from aios.storage.store import Store


@dataclass
class FakeClock:
    now: float = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def open_store(kind: str, tmp_path: Path, postgres: Callable[[], str] | None, vectors: bool = True) -> Store:
    if kind == "postgres":
        from aios.storage.postgres_store import PostgresStore

        assert postgres is not None
        return PostgresStore(postgres(), vectors=vectors)
    from aios.storage.sqlite_store import SQLiteStore

    return SQLiteStore(tmp_path / "lsfs" / "lsfs.db", vectors=vectors)


def make_fs(store: Store, data: Path, clock: Callable[[], float] | None = None,
            max_file_bytes: int = 1 << 20) -> FileSystem:
    root = data / "storage"
    root.mkdir(parents=True, exist_ok=True)
    settings = Settings(storage_root=root, mount_roots=(root,), protected=(data / "lsfs",),
                        max_file_bytes=max_file_bytes)
    return FileSystem(store, BlobStore(data / "lsfs" / "blobs"), settings, clock or FakeClock())


async def run_here(function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """The I/O-thread hand-off, for tests that drive the index from one thread: just call it."""
    return function(*args, **kwargs)


def run(coroutine: Any) -> Any:
    return asyncio.run(coroutine)
