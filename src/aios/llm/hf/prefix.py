"""Prefix reuse: the KV of finished sequences in a radix tree over their tokens (as SGLang keeps it), so that a
prompt starting the same way only computes its new suffix. An agent's next turn repeats its whole conversation;
agents with one system prompt find it stored once, in the node that all their conversations branch from, and
that node's KV is handed to them as one :class:`SharedKV` they all attend to. Bounded by bytes: the least
recently used leaves go first."""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import count
from typing import Callable

import torch

from aios.context import KV
from aios.llm.hf.kv import SharedKV

# Reads positions ``begin..end-1`` of a finished sequence's KV (fresh tensors, per layer [kv_heads, n, dim]).
Reader = Callable[[int, int], KV]


@dataclass(eq=False)
class _Node:
    """The tokens ``ids`` that follow position ``start`` on some cached sequences, with their KV."""

    ids: list[int]
    start: int
    keys: list[torch.Tensor]  # per layer, [kv_heads, len(ids), head_dim]
    values: list[torch.Tensor]
    parent: "_Node | None"
    children: dict[int, "_Node"] = field(default_factory=dict)  # by first token
    used: int = 0  # the cache's clock when a lookup or insert last went through it
    shared: SharedKV | None = None  # positions 0..end-1 as one SharedKV, made when a prompt first takes them

    @property
    def end(self) -> int:
        return self.start + len(self.ids)

    @property
    def nbytes(self) -> int:
        own = sum(t.numel() * t.element_size() for t in (*self.keys, *self.values))
        # A shared start over a deeper path is a copy of all of it; a root child's is this node's own tensors.
        copied = self.shared.nbytes if self.shared is not None and self.start > 0 else 0
        return own + copied

    def path(self) -> list["_Node"]:
        """The nodes from the root's child down to this one."""
        nodes, node = [], self
        while node.parent is not None:
            nodes.append(node)
            node = node.parent
        return nodes[::-1]


@dataclass
class Match:
    """A cached start of a prompt: its first ``length`` tokens, held by the nodes of ``path``."""

    length: int
    path: list[_Node]

    def kv(self, begin: int, end: int) -> KV:
        """Fresh tensors of positions ``begin..end-1`` (per layer, ``[kv_heads, end-begin, head_dim]``)."""
        pieces = [(node, max(begin, node.start) - node.start, min(end, node.end) - node.start)
                  for node in self.path if node.start < end and node.end > begin]
        keys, values = ([torch.cat([getattr(node, part)[layer][:, a:b] for node, a, b in pieces], dim=1)
                         for layer in range(len(self.path[0].keys))] for part in ("keys", "values"))
        return keys, values


class PrefixCache:
    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._root = _Node([], 0, [], [], None)
        self._clock = count(1)
        self.nbytes = 0
        self.hits = 0  # lookups that reused something (for status pages and tests)
        self._leaves_held = 0  # kept as it changes: status pages ask from other threads, mid-step

    def lookup(self, ids: list[int]) -> Match | None:
        """The longest cached start of ``ids`` (``None`` if none). At least one token of ``ids`` is always left
        to compute."""
        limit, node, length, path = len(ids) - 1, self._root, 0, []
        now = next(self._clock)
        while length < limit and (child := node.children.get(ids[length])) is not None:
            shared = common_prefix(child.ids, ids[length:], limit - length)
            child.used = now
            path.append(child)
            length += shared
            if shared < len(child.ids):
                break
            node = child
        if not length:
            return None
        self.hits += 1
        return Match(length, path)

    def shared_start(self, match: Match, min_length: int) -> SharedKV | None:
        """The shortest start of ``match``, of at least ``min_length`` tokens, that other cached sequences
        continue too (its node has several children), as one SharedKV: the same object for every prompt that
        takes it, so that it is stored and attended to once for all of them. (The shortest: the start most
        sequences share, and usually the first node, whose tensors it is; a deeper one would be a copy of all of
        it for the few tokens a handful of them add.) ``None`` if there is no such start."""
        node = next((node for node in match.path if min_length <= node.end <= match.length
                     and len(node.children) > 1), None)
        if node is None:
            return None
        if node.shared is None:
            before = node.nbytes
            if node.start == 0:  # the node's own tensors: no copy
                node.shared = SharedKV(list(node.ids), node.keys, node.values)
            else:
                node.shared = SharedKV([t for n in node.path() for t in n.ids], *Match(node.end, node.path()).kv(
                    0, node.end))
            self.nbytes += node.nbytes - before
            self._evict()
        return node.shared

    def insert(self, ids: list[int], read: Reader) -> None:
        """Remember the KV of the tokens ``ids``: only what the tree does not hold yet is read (``read``)."""
        now = next(self._clock)
        node, length = self._root, 0
        while length < len(ids) and (child := node.children.get(ids[length])) is not None:
            shared = common_prefix(child.ids, ids[length:], len(ids) - length)
            child.used = now
            if length + shared == len(ids):
                return  # all of it is cached already
            if shared < len(child.ids):
                child = self._split(child, shared)
            node, length = child, length + shared
        keys, values = read(length, len(ids))
        leaf = _Node(ids[length:], length, keys, values, node, used=now)
        if leaf.nbytes > self.max_bytes:
            return
        self._leaves_held += 1 if node.children or node.parent is None else 0  # else it continues a leaf
        node.children[leaf.ids[0]] = leaf
        self.nbytes += leaf.nbytes
        self._evict()

    def _split(self, node: _Node, at: int) -> _Node:
        """Cut ``node``'s tokens after the first ``at``: a new node holds those, with ``node`` (the rest) under
        it. Returns the new node."""
        assert node.parent is not None
        before = node.nbytes
        upper = _Node(node.ids[:at], node.start, [t[:, :at].clone() for t in node.keys],
                      [t[:, :at].clone() for t in node.values], node.parent, used=node.used)
        node.parent.children[node.ids[0]] = upper
        node.ids, node.start, node.parent = node.ids[at:], node.start + at, upper
        node.keys, node.values = [t[:, at:].clone() for t in node.keys], [t[:, at:].clone() for t in node.values]
        upper.children[node.ids[0]] = node
        # A shared start made from the whole node lives on in the sequences holding it; the next prompt gets a
        # new one (no longer the node's own tensors).
        node.shared = None
        self.nbytes += upper.nbytes + node.nbytes - before
        return upper

    def _evict(self) -> None:
        while self.nbytes > self.max_bytes:
            leaf = min(self._leaves(), key=lambda n: n.used)
            assert leaf.parent is not None
            del leaf.parent.children[leaf.ids[0]]
            self.nbytes -= leaf.nbytes
            self._leaves_held -= 1 if leaf.parent.children or leaf.parent.parent is None else 0

    def _leaves(self) -> list[_Node]:
        leaves, stack = [], list(self._root.children.values())
        while stack:
            node = stack.pop()
            if node.children:
                stack.extend(node.children.values())
            else:
                leaves.append(node)
        return leaves

    def __len__(self) -> int:
        """How many cached sequences end here (leaves)."""
        return self._leaves_held


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
