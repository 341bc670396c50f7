"""Scratch directories that belong to a live process, and the sweep that removes those of dead ones.

A kernel keeps some data only while it runs: spilled KV snapshots, a model conversion in progress. Killed
(kill -9, out of memory, power loss), it cannot remove them, and nothing else knows they are garbage. So each
such directory has a lock file beside it that its owner holds (``flock``) for as long as it lives; the operating
system lets go of the lock when the process ends, however it ends. At start-up, ``sweep_leftovers`` removes
every such directory whose lock nobody holds — only these kinds, only under the data dir — while the
directories of other live kernels sharing the data dir are left alone.
"""

from __future__ import annotations

import fcntl
import logging
import os
import secrets
import shutil
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

# (folder under the data dir, name prefix) of every kind of leased directory.
SNAPSHOTS = ("snapshots", "kv-")
CONVERSIONS = ("models", ".converting-")
LEASED = (SNAPSHOTS, CONVERSIONS)


class Lease:
    """A new directory ``parent/<prefix><pid>-<random>``, owned by this process until ``release``."""

    def __init__(self, parent: Path, prefix: str) -> None:
        parent.mkdir(parents=True, exist_ok=True)
        name = f"{prefix}{os.getpid()}-{secrets.token_hex(4)}"
        self.lock_path = parent / f"{name}.lock"
        # The lock is taken before the directory exists, so a sweep never sees the directory unlocked.
        self._fd: int | None = os.open(self.lock_path, os.O_CREAT | os.O_RDWR, 0o600)
        fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        self.path = parent / name
        self.path.mkdir()

    def release(self) -> None:
        """Remove the directory (whatever is still in it) and the lock."""
        if self._fd is None:
            return
        shutil.rmtree(self.path, ignore_errors=True)
        self.lock_path.unlink(missing_ok=True)
        os.close(self._fd)
        self._fd = None


@dataclass
class Freed:
    items: int = 0
    bytes: int = 0

    def add(self, other: "Freed") -> None:
        self.items += other.items
        self.bytes += other.bytes


def sweep_leftovers(data_dir: Path) -> Freed:
    """Remove what dead kernels left under ``data_dir``; says how much, and logs it when there was any."""
    freed = Freed()
    for folder, prefix in LEASED:
        freed.add(sweep(data_dir / folder, prefix))
    # Spilled snapshots of kernels from before leases: plain files in the snapshots folder, nobody's now.
    for path in (data_dir / SNAPSHOTS[0]).glob("snapshot-*.safetensors"):
        freed.add(_remove(path))
    if freed.items:
        log.warning("removed %d leftover%s of kernels that did not shut down cleanly from %s (%.1f MB freed)",
                    freed.items, "s" * (freed.items > 1), data_dir, freed.bytes / (1 << 20))
    return freed


def sweep(parent: Path, prefix: str) -> Freed:
    """Remove the leased directories in ``parent`` whose owner is gone."""
    freed = Freed()
    if not parent.is_dir():
        return freed
    for path in parent.glob(f"{prefix}*"):
        if path.is_symlink() or not path.is_dir():
            continue
        lock_path = path.with_name(f"{path.name}.lock")
        fd = os.open(lock_path, os.O_CREAT | os.O_RDWR, 0o600)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # its owner is alive
            freed.add(_remove(path))
            lock_path.unlink(missing_ok=True)
        finally:
            os.close(fd)
    return freed


def _remove(path: Path) -> Freed:
    try:
        if path.is_dir():
            size = sum(f.stat().st_size for f in path.rglob("*") if f.is_file() and not f.is_symlink())
            shutil.rmtree(path)
        else:
            size = path.stat().st_size
            path.unlink()
    except FileNotFoundError:  # its owner removed it first
        return Freed()
    except OSError as exc:
        log.warning("could not remove the leftover %s: %s", path, exc)
        return Freed()
    return Freed(1, size)
