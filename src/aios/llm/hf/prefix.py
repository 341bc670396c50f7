"""Prefix reuse: the KV of recently finished sequences, so that a prompt starting the same way (an agent's next
turn repeats its whole conversation) only computes its new suffix. LRU, bounded by bytes."""

from __future__ import annotations

from collections import OrderedDict
from itertools import count

from aios.context import KV


class PrefixCache:
    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._entries: OrderedDict[int, tuple[list[int], KV, int]] = OrderedDict()  # oldest first
        self._ids = count()
        self.nbytes = 0
        self.hits = 0  # lookups that reused something (for status pages and tests)

    def lookup(self, ids: list[int]) -> tuple[int, KV | None]:
        """The longest cached prefix of ``ids`` (``(0, None)`` if none) as ``(length, kv)``; ``kv`` covers at
        least ``length`` positions. At least one token of ``ids`` is always left to compute."""
        best, best_key = 0, None
        for key, (tokens, _, _) in self._entries.items():
            shared = common_prefix(tokens, ids, len(ids) - 1)
            if shared > best:
                best, best_key = shared, key
        if best_key is None:
            return 0, None
        self._entries.move_to_end(best_key)
        self.hits += 1
        return best, self._entries[best_key][1]

    def insert(self, ids: list[int], kv: KV) -> None:
        """Remember ``kv`` (fresh tensors, ``len(ids)`` positions each) for the tokens ``ids``."""
        nbytes = sum(t.numel() * t.element_size() for tensors in kv for t in tensors)
        if nbytes > self.max_bytes:
            return
        # An entry that is a prefix of the new one is now redundant.
        for key in [k for k, (tokens, _, _) in self._entries.items() if ids[: len(tokens)] == tokens]:
            self._drop(key)
        self._entries[next(self._ids)] = (list(ids), kv, nbytes)
        self.nbytes += nbytes
        while self.nbytes > self.max_bytes:
            self._drop(next(iter(self._entries)))

    def _drop(self, key: int) -> None:
        self.nbytes -= self._entries.pop(key)[2]

    def __len__(self) -> int:
        return len(self._entries)


def common_prefix(a: list[int], b: list[int], limit: int) -> int:
    """How many leading tokens ``a`` and ``b`` share, at most ``limit``: a binary search over list comparisons,
    which run in C (a Python loop over 4k tokens would cost milliseconds per pair)."""
    low, high = 0, max(0, min(len(a), len(b), limit))  # a[:low] == b[:low] always holds
    if a[:high] == b[:high]:
        return high
    while high - low > 1:
        middle = (low + high) // 2
        if a[:middle] == b[:middle]:
            low = middle
        else:
            high = middle
    return low
