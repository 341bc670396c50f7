"""The KV cache of the continuous batch: one row per running sequence, in per-layer buffers.

Row ``i`` of every layer holds the keys and values of running sequence ``i`` at positions ``0..length-1``.
Rows are kept dense (``0..n-1``), so a step attends over plain slices of the buffers and nothing is gathered;
when a sequence leaves, the last row moves into its place. Capacity (positions per row) grows by doubling.
"""

from __future__ import annotations

from typing import Any

import torch


class SlotKV:
    def __init__(self, layers: int, rows: int, kv_heads: int, head_dim: int, dtype: torch.dtype,
                 device: torch.device, capacity: int = 256) -> None:
        shape = (rows, kv_heads, capacity, head_dim)
        self.keys = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(layers)]
        self.values = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(layers)]

    @property
    def capacity(self) -> int:
        return self.keys[0].shape[2]

    def reserve(self, positions: int) -> None:
        """Make every row able to hold ``positions`` tokens (copies the buffers when they grow)."""
        if positions <= self.capacity:
            return
        capacity = self.capacity
        while capacity < positions:
            capacity *= 2
        for buffers in (self.keys, self.values):
            for i, old in enumerate(buffers):
                new = old.new_zeros((old.shape[0], old.shape[1], capacity, old.shape[3]))
                new[:, :, : old.shape[2]] = old
                buffers[i] = new

    def read_row(self, row: int, length: int) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """A copy of the first ``length`` positions of a row, per layer ``[kv_heads, length, head_dim]``."""
        return ([k[row, :, :length].clone() for k in self.keys], [v[row, :, :length].clone() for v in self.values])

    def write_row(self, row: int, kv: tuple[list[torch.Tensor], list[torch.Tensor]], length: int) -> None:
        """Put the first ``length`` positions of ``kv`` (as from ``read_row``) into a row."""
        self.reserve(length)
        for buffers, source in zip((self.keys, self.values), kv):
            for buffer, tensor in zip(buffers, source):
                buffer[row, :, :length].copy_(tensor[:, :length])

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
