"""The KV cache of the continuous batch: rows of running sequences, in size classes (:class:`BatchKV`), and the
prompt starts that several sequences share, stored once (:class:`SharedKV`).

A running sequence has a row in the :class:`SlotKV` of its size class: its positions ``0..length-1``, or, for a
sequence that starts with a SharedKV of ``n`` tokens, its positions ``n..length-1`` (row offset ``p - n`` holds
position ``p``). A class's rows are kept dense (``0..n-1``), so a step attends over plain slices of its buffers
and nothing is gathered; when a sequence leaves, the class's last row moves into its place. Rows and positions
grow by doubling, only as far as the sequences need; ``bytes_for`` says what sizes would cost, so the engine can
keep within its memory budget, and buffers are cut down again when they are over it or four times what the rows
hold.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

from aios.context import KV

MIN_CAPACITY = 64  # positions of the smallest row


@dataclass(eq=False)
class SharedKV:
    """The KV of the first ``len(ids)`` tokens of some prompts, stored once for all the sequences that start with
    them (agents with one system prompt). Each of those sequences keeps only what follows in its own row, and its
    attention reads these keys once for all of them (see ``runner._Plan``). Immutable; it lives as long as a
    sequence holds it."""

    ids: list[int]
    keys: list[torch.Tensor]  # per layer, [kv_heads, len(ids), head_dim]
    values: list[torch.Tensor]

    @classmethod
    def start_of(cls, ids: list[int], kv: KV, n: int) -> "SharedKV":
        """The first ``n`` tokens of ``ids`` with a copy of their positions in ``kv`` (a view would keep the
        whole of ``kv`` alive)."""
        keys, values = ([t[:, :n].clone() for t in part] for part in kv)
        return cls(ids[:n], keys, values)

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (*self.keys, *self.values))


class SlotKV:
    """Rows of KV in one buffer for keys and one for values, ``[layers, rows, kv_heads, capacity, head_dim]``, so
    that an operation on a row (read, write, move) is one tensor operation for all the layers; ``keys[layer]``
    and ``values[layer]`` are views of one layer, which attention reads in place."""

    def __init__(self, layers: int, max_rows: int, kv_heads: int, head_dim: int, dtype: torch.dtype,
                 device: torch.device, rows: int = 1, capacity: int = MIN_CAPACITY) -> None:
        self.max_rows = max_rows
        shape = (layers, min(rows, max_rows), kv_heads, capacity, head_dim)
        self._set(torch.zeros(shape, dtype=dtype, device=device), torch.zeros(shape, dtype=dtype, device=device))
        self.bytes_per_position = 2 * layers * kv_heads * head_dim * self._keys.element_size()
        self.layout = 0  # counts the times the buffers were replaced (CUDA graphs hold their addresses)

    def _set(self, keys: torch.Tensor, values: torch.Tensor) -> None:
        self._keys, self._values = keys, values
        self.keys, self.values = list(keys.unbind(0)), list(values.unbind(0))

    @property
    def rows(self) -> int:
        return self._keys.shape[1]

    @property
    def capacity(self) -> int:
        return self._keys.shape[3]

    @property
    def nbytes(self) -> int:
        return self.rows * self.capacity * self.bytes_per_position

    def reserve(self, rows: int, positions: int, budget: int | None = None) -> None:
        """Make room for ``rows`` rows of ``positions`` tokens (the caller asks for at least what its rows hold).
        Buffers grow by doubling. When they are larger than ``budget``, or four times what is asked for in rows
        or positions (a long prompt's row left, or its start moved into a SharedKV), they are cut down to what
        is asked for: memory follows the tokens held (rows ``0..rows-1`` keep their contents)."""
        need_rows, need_capacity = self._shape(rows, positions)
        fits = need_rows <= self.rows and need_capacity <= self.capacity
        oversized = need_rows * 4 <= self.rows or need_capacity * 4 <= self.capacity
        if fits and not oversized and (budget is None or self.nbytes <= budget):
            return
        new_rows, new_capacity = (need_rows, need_capacity) if budget is not None or oversized else (
            max(need_rows, self.rows), max(need_capacity, self.capacity))
        rows, positions = min(self.rows, new_rows), min(self.capacity, new_capacity)
        self.layout += 1  # first: if an allocation below fails, graphs must not replay over what is left
        resized = []
        for old in (self._keys, self._values):
            new = old.new_zeros((old.shape[0], new_rows, old.shape[2], new_capacity, old.shape[4]))
            new[:, :rows, :, :positions] = old[:, :rows, :, :positions]
            resized.append(new)
        self._set(*resized)

    def _shape(self, rows: int, positions: int) -> tuple[int, int]:
        return _rows_for(rows, self.max_rows), capacity_for(positions)

    def read_row(self, row: int, end: int, begin: int = 0) -> KV:
        """A copy of offsets ``begin..end-1`` of a row, per layer ``[kv_heads, end-begin, head_dim]`` (views of
        one copy of all the layers)."""
        return (list(self._keys[:, row, :, begin:end].clone().unbind(0)),
                list(self._values[:, row, :, begin:end].clone().unbind(0)))

    def write_row(self, row: int, kv: KV, begin: int, end: int, at: int = 0) -> None:
        """Put positions ``begin..end-1`` of ``kv`` (per layer ``[kv_heads, positions, head_dim]``, as from
        ``read_row``) into a row that has room, from offset ``at`` on."""
        for buffer, layers in zip((self._keys, self._values), kv):
            buffer[:, row, :, at:at + end - begin] = torch.stack([t[:, begin:end] for t in layers])

    def copy_positions(self, source: int, source_at: int, target: int, target_at: int, count: int,
                       into: "SlotKV | None" = None) -> None:
        """Copy ``count`` positions of row ``source`` from offset ``source_at`` into row ``target`` of ``into``
        (this cache if None) at ``target_at``."""
        into = into or self
        for mine, theirs in ((self._keys, into._keys), (self._values, into._values)):
            theirs[:, target, :, target_at:target_at + count] = mine[:, source, :, source_at:source_at + count]

    def split_row(self, row: int, n: int, length: int) -> KV:
        """Take the first ``n`` positions of a row (of ``length``) out, as from ``read_row``; the rest of the row
        moves to its front."""
        taken = self.read_row(row, n)
        for buffer in (self._keys, self._values):
            buffer[:, row, :, :length - n] = buffer[:, row, :, n:length].clone()  # the ranges may overlap
        return taken

    def read_rows(self, rows: list[int], length: int) -> tuple[torch.Tensor, torch.Tensor]:
        """A copy of offsets ``0..length-1`` of these rows: keys and values ``[layers, len(rows), kv_heads, length,
        head_dim]``, one gather each however many rows (a GPU launches a kernel per tensor operation)."""
        index = torch.tensor(rows, device=self._keys.device)
        return self._keys[:, index, :, :length], self._values[:, index, :, :length]

    def write_rows(self, rows: list[int], kv: tuple[torch.Tensor, torch.Tensor]) -> None:
        """Put rows as from ``read_rows`` into these rows (which have room for them), from offset 0."""
        index, length = torch.tensor(rows, device=self._keys.device), kv[0].shape[3]
        for buffer, part in zip((self._keys, self._values), kv):
            buffer[:, index, :, :length] = part

    def move_rows(self, sources: list[int], targets: list[int], length: int) -> None:
        """Copy offsets ``0..length-1`` of rows ``sources[i]`` into rows ``targets[i]`` (none of them a source): row
        by row, view to view, with no copy in between (a long row of a large model is gigabytes)."""
        for source, target in zip(sources, targets):
            for buffer in (self._keys, self._values):
                buffer[:, target, :, :length] = buffer[:, source, :, :length]

    def segment(self, size: int) -> "Segment":
        """Rows ``0..size-1`` of this cache as a decode step from device inputs reads them (see :class:`Segment`)."""
        return Segment(list(self.keys), list(self.values), size)

    def prefill_view(self, row: int, start: int) -> "_PrefillView":
        return _PrefillView(self, row, start)

    def decode_view(self, lengths: torch.Tensor) -> "_DecodeView":
        return _DecodeView(self, lengths)


@dataclass(frozen=True)
class Segment:
    """Rows ``0..size-1`` of one cache in a decode step from device inputs (``runner._DecodePlan``): the buffers'
    per-layer views as they were when the step was planned. A CUDA graph holds those addresses; a graph replayed
    after its cache's buffers were replaced would write into freed memory, so ``graphs.DecodeGraphs`` never
    replays one (and its stand-in in the tests, replaying by running the plan again, goes wrong visibly)."""

    keys: list[torch.Tensor]
    values: list[torch.Tensor]
    size: int

    @property
    def capacity(self) -> int:
        return self.keys[0].shape[2]  # [rows, kv_heads, capacity, head_dim]


def _rows_for(rows: int, max_rows: int) -> int:
    """Rows allocated for ``rows``: the next power of two, at most ``max_rows``."""
    return min(1 << max(rows - 1, 0).bit_length(), max_rows)


def capacity_for(positions: int) -> int:
    """Positions allocated for ``positions``: the next power of two, at least 64."""
    return max(MIN_CAPACITY, 1 << max(positions - 1, 0).bit_length())


class BatchKV:
    """The running batch's KV cache, its rows in size classes: one :class:`SlotKV` per class. A row lives in the
    class of the smallest power of two (from 64 positions) that holds what it needs, and moves as it grows, so
    the memory rows take, and what attention reads of them each step, follow each row's own length: one agent
    reading a long document beside thirty chatting takes one long row, not thirty-one. The engine places rows
    (it knows what each sequence is about to write); this says which class fits and what classes cost.

    With ``classes`` off (for the transformers runner, and by default on a GPU, see ``EngineSettings.kv_classes``)
    one SlotKV, class ``0``, holds every row at the longest row's capacity."""

    def __init__(self, layers: int, max_rows: int, kv_heads: int, head_dim: int, dtype: torch.dtype,
                 device: torch.device, classes: bool) -> None:
        self.classes = classes
        self._new = lambda: SlotKV(layers, max_rows, kv_heads, head_dim, dtype, device)
        self.max_rows = max_rows
        self.bytes_per_position = 2 * layers * kv_heads * head_dim * dtype.itemsize
        self.caches: dict[int, SlotKV] = {}

    def class_of(self, positions: int) -> int:
        """The class of a row that needs ``positions``."""
        return capacity_for(positions) if self.classes else 0

    def cache(self, cls: int) -> SlotKV:
        """The cache of class ``cls``, made when first asked for."""
        if cls not in self.caches:
            self.caches[cls] = self._new()
        return self.caches[cls]

    def drop(self, cls: int) -> None:
        """Free the cache of a class that holds no rows any more (one class alone is kept: graphs hold it)."""
        if self.classes:
            del self.caches[cls]

    @property
    def nbytes(self) -> int:
        return sum(cache.nbytes for cache in list(self.caches.values()))  # a copy: status pages ask mid-step

    def bytes_for(self, needs: list[int]) -> int:
        """What the caches take holding rows that need these positions each."""
        if needs and not self.classes:  # one class: every row as long as the longest
            return self.bytes_of({capacity_for(max(needs)): len(needs)})
        return self.bytes_of(Counter(capacity_for(need) for need in needs))

    def bytes_of(self, rows: Mapping[int, int]) -> int:
        """What the caches take holding ``rows[capacity]`` rows of each capacity (``capacity_for`` their needs):
        a count kept up to date as rows join costs less than counting all the rows again for each."""
        if rows and not self.classes:
            rows = {max(rows): sum(rows.values())}
        return sum(_rows_for(n, self.max_rows) * capacity for capacity, n in rows.items()) * self.bytes_per_position


class _PrefillView:
    """What the model sees as its cache while one sequence's new tokens are written at ``start``."""

    def __init__(self, kv: SlotKV, row: int, start: int) -> None:
        self.kv, self.row, self.start = kv, row, start

    def update(self, key: torch.Tensor, value: torch.Tensor, layer_idx: int, *args: Any, **kwargs: Any):  # noqa: ANN201
        end = self.start + key.shape[2]
        k, v = self.kv.keys[layer_idx], self.kv.values[layer_idx]
        k[self.row, :, self.start:end] = key[0]
        v[self.row, :, self.start:end] = value[0]
        return k[self.row : self.row + 1, :, :end], v[self.row : self.row + 1, :, :end]

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return self.start


class _DecodeView:
    """What the model sees as its cache during a decode step of rows ``0..n-1``, row ``b`` writing at
    ``lengths[b]``."""

    def __init__(self, kv: SlotKV, lengths: torch.Tensor) -> None:
        self.kv, self.lengths = kv, lengths
        self.rows = torch.arange(len(lengths), device=lengths.device)
        self.span = int(lengths.max()) + 1

    def update(self, key: torch.Tensor, value: torch.Tensor, layer_idx: int, *args: Any, **kwargs: Any):  # noqa: ANN201
        k, v = self.kv.keys[layer_idx], self.kv.values[layer_idx]
        k[self.rows, :, self.lengths] = key[:, :, 0]
        v[self.rows, :, self.lengths] = value[:, :, 0]
        n = len(self.rows)
        return k[:n, :, : self.span], v[:n, :, : self.span]

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return self.span - 1
