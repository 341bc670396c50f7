"""The KV cache of the continuous batch: one row per running sequence, in per-layer buffers, and the prompt starts
that several sequences share, stored once.

Row ``i`` of every layer holds the keys and values of running sequence ``i``: its positions ``0..length-1``, or,
for a sequence that starts with a :class:`SharedKV` of ``n`` tokens, its positions ``n..length-1`` (row offset
``p - n`` holds position ``p``).
Rows are kept dense (``0..n-1``), so a step attends over plain slices of the buffers and nothing is gathered;
when a sequence leaves, the last row moves into its place. Rows and positions grow by doubling, only as far as
the sequences need; ``bytes_for`` says what a size would cost, so the engine can keep within its memory budget,
and the buffers are cut down again when they are over it or four times what the rows hold.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from aios.context import KV


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
    def __init__(self, layers: int, max_rows: int, kv_heads: int, head_dim: int, dtype: torch.dtype,
                 device: torch.device, rows: int = 1, capacity: int = 64) -> None:
        self.max_rows = max_rows
        shape = (min(rows, max_rows), kv_heads, capacity, head_dim)
        self.keys = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(layers)]
        self.values = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(layers)]
        self.bytes_per_position = 2 * layers * kv_heads * head_dim * self.keys[0].element_size()
        self.layout = 0  # counts the times the buffers were replaced (CUDA graphs hold their addresses)

    @property
    def rows(self) -> int:
        return self.keys[0].shape[0]

    @property
    def capacity(self) -> int:
        return self.keys[0].shape[2]

    @property
    def nbytes(self) -> int:
        return self.rows * self.capacity * self.bytes_per_position

    def bytes_for(self, rows: int, positions: int) -> int:
        """What buffers sized for ``rows`` rows of ``positions`` tokens take (sizes round up to powers of two)."""
        new_rows, new_capacity = self._shape(rows, positions)
        return new_rows * new_capacity * self.bytes_per_position

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
        keep_rows, keep_positions = min(self.rows, new_rows), min(self.capacity, new_capacity)
        self.layout += 1  # first: if an allocation below fails, graphs must not replay over what is left
        for buffers in (self.keys, self.values):
            for i, old in enumerate(buffers):
                new = old.new_zeros((new_rows, old.shape[1], new_capacity, old.shape[3]))
                new[:keep_rows, :, :keep_positions] = old[:keep_rows, :, :keep_positions]
                buffers[i] = new

    def _shape(self, rows: int, positions: int) -> tuple[int, int]:
        new_rows, new_capacity = 1, 64
        while new_rows < min(rows, self.max_rows):
            new_rows = min(new_rows * 2, self.max_rows)
        while new_capacity < positions:
            new_capacity *= 2
        return new_rows, new_capacity

    def read_row(self, row: int, end: int, begin: int = 0) -> KV:
        """A copy of offsets ``begin..end-1`` of a row, per layer ``[kv_heads, end-begin, head_dim]``."""
        return ([k[row, :, begin:end].clone() for k in self.keys],
                [v[row, :, begin:end].clone() for v in self.values])

    def write_row(self, row: int, kv: KV, begin: int, end: int, at: int = 0) -> None:
        """Put positions ``begin..end-1`` of ``kv`` (per layer ``[kv_heads, positions, head_dim]``, as from
        ``read_row``) into a row that has room, from offset ``at`` on."""
        for buffers, source in zip((self.keys, self.values), kv):
            for buffer, tensor in zip(buffers, source):
                buffer[row, :, at:at + end - begin].copy_(tensor[:, begin:end])

    def copy_positions(self, source: int, source_at: int, target: int, target_at: int, count: int) -> None:
        """Copy ``count`` positions of row ``source`` from offset ``source_at`` into row ``target`` at
        ``target_at``."""
        for buffers in (self.keys, self.values):
            for buffer in buffers:
                buffer[target, :, target_at:target_at + count] = buffer[source, :, source_at:source_at + count]

    def split_row(self, row: int, n: int, length: int) -> KV:
        """Take the first ``n`` positions of a row (of ``length``) out, as from ``read_row``; the rest of the row
        moves to its front."""
        taken = self.read_row(row, n)
        for buffers in (self.keys, self.values):
            for buffer in buffers:
                buffer[row, :, :length - n] = buffer[row, :, n:length].clone()  # the ranges may overlap
        return taken

    def move_row(self, source: int, target: int, length: int) -> None:
        for buffers in (self.keys, self.values):
            for buffer in buffers:
                buffer[target, :, :length] = buffer[source, :, :length]

    def prefill_view(self, row: int, start: int) -> "_PrefillView":
        return _PrefillView(self, row, start)

    def decode_view(self, lengths: torch.Tensor) -> "_DecodeView":
        return _DecodeView(self, lengths)


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
