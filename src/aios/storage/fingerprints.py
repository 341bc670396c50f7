"""Content hashes remembered by what ``stat`` says of a file (size, modification time, inode, device), so that a
file that has not changed is not read and hashed again: a mount of thousands of unchanged files reads none of
them, and reading a version checks its stored copy once.

A change that ``stat`` cannot see is one made within the clock's granularity of the moment the file was hashed,
leaving its size as it was. So a file modified less than ``SETTLED_S`` before it was hashed is not remembered
(as git treats "racily clean" files): it is hashed again until its modification time is older than that.
"""

from __future__ import annotations

import os
import threading
import time
from collections import OrderedDict

SETTLED_S = 2  # coarser than any file system's timestamps (ext4: a clock tick; network file systems: a second)
_Fingerprint = tuple[int, int, int, int]


def _fingerprint(facts: os.stat_result) -> _Fingerprint:
    return facts.st_size, facts.st_mtime_ns, facts.st_ino, facts.st_dev


class KnownHashes:
    """The hash of each file (by path) as of its fingerprint; the least recently used are forgotten first."""

    def __init__(self, capacity: int = 100_000) -> None:
        self._known: OrderedDict[str, tuple[_Fingerprint, str]] = OrderedDict()
        self._capacity = capacity
        self._lock = threading.Lock()

    def get(self, path: str, facts: os.stat_result) -> str | None:
        """The hash of ``path`` if it was hashed when it had these facts; None if it must be read."""
        with self._lock:
            known = self._known.get(path)
            if known is None or known[0] != _fingerprint(facts):
                return None
            self._known.move_to_end(path)
            return known[1]

    def remember(self, path: str, facts: os.stat_result, digest: str) -> None:
        with self._lock:
            if time.time_ns() - facts.st_mtime_ns < SETTLED_S * 1_000_000_000:
                self._known.pop(path, None)  # changed too recently for its fingerprint to show the next change
                return
            self._known[path] = (_fingerprint(facts), digest)
            self._known.move_to_end(path)
            if len(self._known) > self._capacity:
                self._known.popitem(last=False)
