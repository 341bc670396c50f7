"""The storage syscall handler: runs an agent's file operations (the AIOS storage API and ours beside it) on the
versioned file system, as that agent, inside its mount.

``prepare`` checks a request when it is submitted. ``__call__`` runs it: file work happens on one I/O thread
(the database connection and the disk), so the event loop never blocks and operations on the store never
interleave; embeddings run on the shared embedding model's thread. A refused operation raises a KernelError,
which the reply carries as ``error`` and ``status_code`` (HTTP 200, as upstream); so does an operating-system
error a request can cause (a permission, a name too long, a full disk: see ``os_errors``).
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from aios.access.manager import AccessManager
from aios.config import Config
from aios.embeddings import Embedder
from aios.errors import NotAvailable
from aios.params import syscall_request
from aios.storage.blobs import BlobStore
from aios.storage.files import FileSystem, Result, Settings
from aios.storage.index import Indexer
from aios.storage.os_errors import refusal
from aios.storage.requests import NEEDS, StorageRequest, parse_request
from aios.storage.shares import ShareLinks, SharedFile
from aios.storage.store import Store
from aios.syscall import Syscall

log = logging.getLogger(__name__)

# Operations after which the agent's mount has content to (re)index.
_CHANGES = frozenset({"mount", "create_file", "write", "rollback", "delete"})
_VERSIONED = frozenset({"create_file", "write", "rollback", "delete"})  # each change is a version, saying who made it


@dataclass
class StorageResponse:
    """The AIOS storage reply; ``response_message`` is a JSON object of what happened (see docs/storage.md)."""

    response_class: str = "storage"
    response_message: str | None = None
    finished: bool = False
    error: str | None = None
    status_code: int = 200


def open_store(config: Config) -> Store:
    storage = config.storage
    try:
        if storage.backend == "postgres":
            from aios.storage.postgres_store import PostgresStore

            return PostgresStore(storage.dsn or "", vectors=storage.use_vector_db)
        from aios.storage.sqlite_store import SQLiteStore

        return SQLiteStore(storage.metadata_dir(config.data_dir) / "lsfs.db", vectors=storage.use_vector_db)
    except Exception as exc:  # a database that cannot be opened stops start-up with one line saying why
        why = " ".join(str(exc).split()) or type(exc).__name__
        raise NotAvailable(f"storage: cannot open the {storage.backend} store: {why}") from exc


class StorageHandler:
    workers = 4  # syscalls in flight: a search waiting on the embedding model does not hold up a write

    def __init__(self, fs: FileSystem, shares: ShareLinks, embedder: Embedder | None, access: AccessManager,
                 confirm: frozenset[str] = frozenset()) -> None:
        """``confirm``: the operations a person must approve first (``access.confirm``)."""
        self.fs, self.shares, self.access, self.confirm = fs, shares, access, confirm
        self._io = ThreadPoolExecutor(max_workers=1, thread_name_prefix="storage-io")
        self.indexer = Indexer(fs, self.run_io, embedder)
        self._operations: dict[str, Callable[..., Result]] = {
            "mount": fs.mount, "create_file": fs.create_file, "create_dir": fs.create_dir, "write": fs.write,
            "read": lambda agent, file_path, version=None: fs.read(agent, file_path, version),
            "list": fs.listing, "delete": self._delete, "history": fs.history,
            "rollback": lambda agent, file_path, n=None, time=None, by=None: fs.rollback(agent, file_path, n, time, by),
            "share": shares.share, "unshare": shares.unshare,
        }
        self._dirty: set[int] = set()
        self._wake = asyncio.Event()
        self._background: asyncio.Task[None] | None = None

    @classmethod
    def from_config(cls, config: Config, embedder: Embedder | None, access: AccessManager) -> "StorageHandler":
        storage = config.storage
        settings = Settings(storage_root=storage.root(config.data_dir),
                            mount_roots=tuple(storage.mountable(config.data_dir)),
                            protected=(storage.metadata_dir(config.data_dir), storage.blobs(config.data_dir)),
                            max_file_bytes=int(storage.max_file_mb * 2**20),
                            data_dir=Path(os.path.realpath(config.data_dir)))
        settings.storage_root.mkdir(parents=True, exist_ok=True)
        fs = FileSystem(open_store(config), BlobStore(storage.blobs(config.data_dir)), settings)
        shares = ShareLinks(fs, int(storage.share_expiry_days * 86400), int(storage.share_max_expiry_days * 86400),
                            storage.public_url)
        return cls(fs, shares, embedder if storage.use_vector_db else None, access, config.access.confirm.asking())

    # -- the syscall ----------------------------------------------------------------------------------------------
    def prepare(self, payload: Any) -> StorageRequest:
        return syscall_request(payload, StorageRequest, parse_request, "storage")

    async def admit(self, agent: str, request: StorageRequest) -> StorageRequest:
        """The request, with whose files it works on, once ``agent`` may make it (a person's approval, where one
        is asked, is awaited here, before the syscall is queued: waiting for one holds none of the workers)."""
        return await self.access.admit(agent, "files", request, NEEDS, self.confirm)

    async def __call__(self, syscall: Syscall) -> StorageResponse:
        request: StorageRequest = syscall.payload
        agent, params = request.admitted_owner(), dict(request.params)
        if request.operation in _VERSIONED and agent != syscall.agent_name:
            params["by"] = syscall.agent_name
        if request.operation == "retrieve":
            result = await self._retrieve(agent, params)
        else:
            if request.operation == "share":
                params["base_url"] = request.base_url
            result = await self.run_io(self._operations[request.operation], agent, **params)
            if request.operation in _CHANGES:
                await self._index_soon(agent)
        return StorageResponse(response_message=json.dumps(result, ensure_ascii=False), finished=True)

    async def _retrieve(self, agent: str, params: dict[str, Any]) -> Result:
        root = await self.run_io(self.fs.root_of, agent)
        query, n = params["query_text"], params.get("n", 3)
        files = await self.indexer.search(root, query, n, params.get("keywords"))
        found = ", ".join(f"{f['file_path']} ({f['score']})" for f in files) or "nothing"
        return {"operation": "retrieve", "root": root.path, "query_text": query, "files": files,
                "message": f"{len(files)} of the files in {root.path} match {query[:80]!r}: {found}"}

    def _delete(self, agent: str, file_path: str | None = None, dir_path: str | None = None,
                recursive: bool = False, by: str | None = None) -> Result:
        if file_path is not None:
            return self.fs.delete(agent, file_path, recursive, by, kind="file")
        return self.fs.delete(agent, dir_path or "", recursive, by, kind="dir")

    # -- share links (GET /share/{token}) -------------------------------------------------------------------------
    async def shared_file(self, token: str) -> SharedFile:
        return await self.run_io(self.shares.open, token)

    # -- life cycle, and the background index -------------------------------------------------------------------
    async def run_io(self, function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run blocking file work on the I/O thread; an OS error a request can cause becomes its refusal."""
        work = functools.partial(function, *args, **kwargs)
        try:
            return await asyncio.get_running_loop().run_in_executor(self._io, work)
        except OSError as exc:
            refused = refusal(exc)
            if refused is None:
                raise
            raise refused from exc

    async def start(self) -> None:
        self._background = asyncio.create_task(self._index_in_background(), name="storage-index")

    async def close(self) -> None:
        if self._background is not None:
            self._background.cancel()
            await asyncio.gather(self._background, return_exceptions=True)
        await self.run_io(self.fs.store.close)
        await asyncio.to_thread(self._io.shutdown, wait=True)  # work still queued may take a while: not on the loop

    async def _index_soon(self, agent: str) -> None:
        root = await self.run_io(self.fs.root_of, agent)
        self._dirty.add(root.id)
        self._wake.set()

    async def _index_in_background(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            roots, self._dirty = self._dirty, set()
            for root_id in roots:
                try:
                    await self.indexer.refresh(root_id)
                except Exception as exc:  # the next search indexes what is left, and says what fails
                    log.warning("background indexing of mount %s failed: %r", root_id, exc)
