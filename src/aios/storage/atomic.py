"""Replacing a file's content atomically: after a crash at any moment, the path holds the old content or the
new, never a mix. The new bytes go to a temporary file in the same directory, are flushed to the disk, and
the temporary file is renamed over the path (an atomic step on POSIX file systems); the directory is flushed
too, so the rename itself survives a power cut."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

# Temporary files are hidden (dot) and named so that listings and mount scans can skip them: one left behind
# by a crash is never mistaken for an agent's file.
PARTIAL_PREFIX = ".aios-partial-"


def is_partial(name: str) -> bool:
    return name.startswith(PARTIAL_PREFIX)


def replace_file(path: Path, data: bytes) -> None:
    temporary = path.parent / f"{PARTIAL_PREFIX}{secrets.token_hex(8)}"
    try:
        _write_durably(temporary, data)
        os.replace(temporary, path)
    except BaseException as exc:
        temporary.unlink(missing_ok=True)
        if isinstance(exc, OSError):  # name the file being replaced, not its temporary
            raise OSError(exc.errno, exc.strerror, str(path)) from exc
        raise
    sync_directory(path.parent)


def _write_durably(path: Path, data: bytes) -> None:
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


def remove_file(path: Path) -> None:
    """Unlink ``path`` (already gone is fine) and flush its directory, so the removal is durable too."""
    path.unlink(missing_ok=True)
    sync_directory(path.parent)


def sync_directory(directory: Path) -> None:
    descriptor = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
