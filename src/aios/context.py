"""Snapshots of suspended generations, so a preempted one resumes without recomputing anything.

A snapshot is the KV cache of one sequence (per layer: ``[kv_heads, length, head_dim]`` keys and values);
token ids, partial text and the sampler's RNG stay with the sequence object itself. Snapshots live in RAM up to
``ram_bytes``; beyond that the oldest are spilled to files and read back on restore. A snapshot is freed when
it is restored or discarded (its generation was cancelled while suspended).

Spilled files go into a directory of this store's own under ``spill_root``, leased (see ``aios.leases``) so
that a kernel starting after this one was killed removes them.
"""

from __future__ import annotations

import itertools
import logging
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from aios.leases import SNAPSHOTS, Lease

log = logging.getLogger(__name__)

KV = tuple[list[torch.Tensor], list[torch.Tensor]]  # (keys per layer, values per layer)


@dataclass
class _Snapshot:
    kv: KV | None  # None once spilled
    nbytes: int
    path: Path | None = None


class ContextStore:
    def __init__(self, ram_bytes: int, spill_root: Path) -> None:
        self.ram_bytes, self.spill_root = ram_bytes, spill_root
        self._snapshots: OrderedDict[int, _Snapshot] = OrderedDict()  # oldest first
        self._ids = itertools.count(1)
        self._spill_lease: Lease | None = None  # taken at the first spill
        self.in_ram = 0
        self.spilled = 0  # snapshots ever written to disk (for status pages and tests)

    def close(self) -> None:
        """Free every snapshot and remove the spill directory."""
        self._snapshots.clear()
        self.in_ram = 0
        if self._spill_lease is not None:
            self._spill_lease.release()
            self._spill_lease = None

    def save(self, kv: KV) -> int:
        """Keep a copy-free reference to ``kv`` (the caller hands over fresh tensors); returns its handle."""
        handle = next(self._ids)
        nbytes = sum(t.numel() * t.element_size() for tensors in kv for t in tensors)
        self._snapshots[handle] = _Snapshot(kv, nbytes)
        self.in_ram += nbytes
        self._spill_over_budget()
        return handle

    def restore(self, handle: int) -> KV:
        """The snapshot's KV, freeing it from the store."""
        snapshot = self._snapshots.pop(handle)
        if snapshot.kv is not None:
            self.in_ram -= snapshot.nbytes
            return snapshot.kv
        assert snapshot.path is not None
        try:
            tensors = load_file(snapshot.path)
        finally:  # read or not (a damaged file), it is of no more use
            snapshot.path.unlink(missing_ok=True)
        layers = len(tensors) // 2
        return [tensors[f"k{i}"] for i in range(layers)], [tensors[f"v{i}"] for i in range(layers)]

    def discard(self, handle: int) -> None:
        snapshot = self._snapshots.pop(handle, None)
        if snapshot is None:
            return
        if snapshot.kv is not None:
            self.in_ram -= snapshot.nbytes
        elif snapshot.path is not None:
            try:
                snapshot.path.unlink(missing_ok=True)
            except OSError:  # a leftover file in the spill dir is no reason to fail anything
                log.warning("could not remove %s", snapshot.path)

    def __len__(self) -> int:
        return len(self._snapshots)

    def _spill_over_budget(self) -> None:
        for handle, snapshot in self._snapshots.items():
            if self.in_ram <= self.ram_bytes:
                return
            if snapshot.kv is None:
                continue
            try:
                snapshot.path = self._spill(handle, snapshot.kv)
            except (OSError, SafetensorError) as exc:  # a full disk: they stay in RAM, over budget, not lost
                log.warning("could not spill a suspended generation's KV to disk (%s); keeping it in RAM", exc)
                return
            snapshot.kv = None
            self.in_ram -= snapshot.nbytes
            self.spilled += 1
            log.debug("spilled snapshot %s (%d bytes) to %s", handle, snapshot.nbytes, snapshot.path)

    def _spill(self, handle: int, kv: KV) -> Path:
        """Write a snapshot's KV into a file of the spill directory; a file only partly written is removed."""
        if self._spill_lease is None:
            self._spill_lease = Lease(self.spill_root, SNAPSHOTS[1])
        path = self._spill_lease.path / f"snapshot-{handle}.safetensors"
        keys, values = kv
        # Each its own copy: a snapshot's layers may be views of one tensor, which safetensors refuses.
        tensors = {**{f"k{i}": t.cpu().clone() for i, t in enumerate(keys)},
                   **{f"v{i}": t.cpu().clone() for i, t in enumerate(values)}}
        try:
            save_file(tensors, path)
        except SafetensorError:
            path.unlink(missing_ok=True)
            raise
        return path
