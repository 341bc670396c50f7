"""Content-addressed blobs: every version's bytes, stored once under their SHA-256 (``ab/abcdef...``).

A blob is written atomically and never changed, so a version's content cannot be torn or altered after the
fact, and identical contents (a rollback, a file written twice) take the space once. Several kernels may share
one blob directory (the PostgreSQL setup): a blob's name is its content, so concurrent writers agree.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from aios.storage.atomic import replace_file
from aios.storage.fingerprints import KnownHashes


class DamagedBlob(ValueError):
    """A blob whose content no longer matches its hash."""


def content_hash(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class BlobStore:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self._checked = KnownHashes()

    def path(self, digest: str) -> Path:
        return self.directory / digest[:2] / digest

    def put(self, data: bytes) -> str:
        """Store ``data`` (if not already there) and return its hash."""
        digest = content_hash(data)
        path = self.path(digest)
        if not path.exists():
            path.parent.mkdir(exist_ok=True)
            replace_file(path, data)
        return digest

    def get(self, digest: str) -> bytes:
        """The bytes stored under ``digest``; raises FileNotFoundError if missing, DamagedBlob if damaged. A blob is
        checked against its hash once, and again only if its fingerprint changes."""
        path = self.path(digest)
        with path.open("rb") as handle:
            facts = os.fstat(handle.fileno())
            data = handle.read()
        if self._checked.get(str(path), facts) == digest:
            return data
        if content_hash(data) != digest:
            raise DamagedBlob(f"its stored content ({path}) is damaged: it no longer matches its hash")
        self._checked.remember(str(path), facts, digest)
        return data
