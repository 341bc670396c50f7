"""Helpers for the storage tests: a file system on either store, and a clock the tests move by hand (share
links expire after days; a test cannot wait that long, so it moves the clock instead)."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

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
            max_file_bytes: int = 1 << 20, more_mount_roots: tuple[Path, ...] = ()) -> FileSystem:
    root = data / "storage"
    root.mkdir(parents=True, exist_ok=True)
    settings = Settings(storage_root=root, mount_roots=(root, *more_mount_roots), protected=(data / "lsfs",),
                        max_file_bytes=max_file_bytes, data_dir=data)
    return FileSystem(store, BlobStore(data / "lsfs" / "blobs"), settings, clock or FakeClock())


async def run_here(function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """The I/O-thread hand-off, for tests that drive the index from one thread: just call it."""
    return function(*args, **kwargs)


def run(coroutine: Any) -> Any:
    return asyncio.run(coroutine)


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapSets(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]


_CAPABILITY_VERSION_3 = 0x20080522
_BYPASS_FILE_PERMISSIONS = (1 << 1) | (1 << 2)  # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH


def _effective_capabilities(change: Callable[[int], int]) -> int:
    """Set this thread's effective capabilities (the low 32) to ``change(current)``; returns the previous set."""
    libc = ctypes.CDLL(None, use_errno=True)
    header, sets = _CapHeader(_CAPABILITY_VERSION_3, 0), (_CapSets * 2)()
    if libc.capget(ctypes.byref(header), sets) != 0:
        raise OSError(ctypes.get_errno(), "capget")
    before = sets[0].effective
    sets[0].effective = change(before)
    if libc.capset(ctypes.byref(header), sets) != 0:
        raise OSError(ctypes.get_errno(), "capset")
    return before


@contextlib.contextmanager
def file_permissions_bind() -> Iterator[None]:
    """File permissions as an ordinary user meets them, also when the tests run as root (a container): this thread,
    and every thread it starts meanwhile, drops the two capabilities that let root read and write past them, so a
    ``chmod 000`` file is really unreadable. Threads started inside keep the restriction after the block."""
    if os.geteuid() != 0:
        yield
        return
    before = _effective_capabilities(lambda current: current & ~_BYPASS_FILE_PERMISSIONS)
    try:
        yield
    finally:
        _effective_capabilities(lambda current: before)
