"""Decode steps in CUDA graphs: a step of B decode tokens is captured once per batch size and KV layout, then
replayed with new inputs, so the GPU runs the whole step without waiting for Python to launch each kernel.

A step qualifies when every chunk is one decode token of rows ``0..n-1`` and the rows hold at most one shared
start (``SharedKV``: agents with one long system prompt) among them: a batch that is only generating. Steps that
read prompt pieces run eagerly, and so do steps whose rows hold two different shared starts. ``n`` is padded up
to a power of two (the sizes the KV rows grow by, capped at ``max_batch``), so a KV layout has a handful of
graphs. The graphs hold the addresses of the KV buffers and of the shared start's: when the buffers are replaced
(``SlotKV.layout`` changes) or the rows hold another shared start, they are dropped and captured again as steps
need them (which rows hold the start is an input, so rows joining or leaving it change nothing). A step copies
its inputs in (one small copy) and waits on the GPU once, when the engine reads the sampled tokens; grammar
masks and sampling work on the logits the graph leaves.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from aios.llm.hf.kv import SharedKV, SlotKV

if TYPE_CHECKING:
    from aios.llm.hf.runner import Chunk, LlamaRunner


class CaptureFailed(RuntimeError):
    """A decode step could not be captured into a CUDA graph; the runner goes on eagerly."""


@dataclass
class _Graph:
    graph: torch.cuda.CUDAGraph
    inputs: torch.Tensor  # [4, B]: token ids, positions, row offsets, holds the base (see runner._DecodePlan)
    logits: torch.Tensor  # [B, vocab], written by each replay


class DecodeGraphs:
    def __init__(self, runner: "LlamaRunner") -> None:
        self.runner = runner
        self.pool: tuple[int, int] | None = None  # one memory pool for the graphs of a layout: they never run at once
        self.graphs: dict[int, _Graph] = {}
        self.captures = self.replays = 0
        self._kv: weakref.ref[SlotKV] | None = None  # the cache, and its layout, the graphs write into
        self._layout = -1
        self._base: SharedKV | None = None  # the shared start the graphs read (held: they hold its addresses)

    @staticmethod
    def takes(chunks: list["Chunk"], kv: SlotKV | None = None) -> bool:
        """Whether a step of ``chunks`` is a plain decode step of rows ``0..n-1`` of one cache (theirs, or
        ``kv`` for chunks that name none) holding at most one shared start."""
        return (bool(chunks)
                and all(len(chunk.ids) == 1 and chunk.wants_logits and chunk.row == row
                        for row, chunk in enumerate(chunks))
                and len({id(chunk.cache or kv) for chunk in chunks}) == 1
                and len({id(chunk.base) for chunk in chunks if chunk.base is not None}) <= 1)

    def run(self, chunks: list["Chunk"], kv: SlotKV) -> torch.Tensor:
        """The step's logits ``[n, vocab]`` (fp32), by replaying its batch size's graph (captured first if
        needed). The engine reserves rows for all running sequences, so ``kv.rows >= n``."""
        base = next((chunk.base for chunk in chunks if chunk.base is not None), None)
        if self._kv is None or self._kv() is not kv or self._layout != kv.layout or base is not self._base:
            self.graphs.clear()  # they write into buffers that are gone, or read another shared start
            # A new pool too: the old one goes with the last graph that used it, and cannot be used again.
            self.pool = None
            self._kv, self._layout, self._base = weakref.ref(kv), kv.layout, base
        n = len(chunks)
        size = min(1 << (n - 1).bit_length(), kv.rows)
        # Captures and replays run on the model's GPU, which need not be the thread's current one (cuda:1, say).
        with torch.cuda.device(kv.keys[0].device):
            graph = self.graphs.get(size) or self._capture(size, kv)
            graph.inputs.copy_(decode_inputs(chunks, size, kv.capacity))
            graph.graph.replay()
            self.replays += 1
            return graph.logits[:n].clone()  # the next replay overwrites the graph's own

    def _capture(self, size: int, kv: SlotKV) -> _Graph:
        device = kv.keys[0].device
        if self.pool is None:
            self.pool = torch.cuda.graph_pool_handle()
        # Every row a padding row while capturing: the warm-up run writes only KV that no sequence holds.
        inputs = decode_inputs([], size, kv.capacity).to(device)
        try:
            # A warm-up outside the capture lets the libraries pick their kernels and workspaces.
            stream = torch.cuda.Stream(device)
            stream.wait_stream(torch.cuda.current_stream(device))
            with torch.cuda.stream(stream):
                self.runner.decode(inputs, kv, self._base)
            torch.cuda.current_stream(device).wait_stream(stream)
            graph = torch.cuda.CUDAGraph()
            # thread_local: other threads (an embedding model, say) may use the GPU while the engine captures.
            with torch.cuda.graph(graph, pool=self.pool, capture_error_mode="thread_local"):
                logits = self.runner.decode(inputs, kv, self._base)
        except Exception as exc:
            raise CaptureFailed(f"capturing a decode step of {size} rows failed: {type(exc).__name__}: {exc}") from exc
        self.captures += 1
        self.graphs[size] = _Graph(graph, inputs, logits)
        return self.graphs[size]


def decode_inputs(chunks: list["Chunk"], size: int, capacity: int) -> torch.Tensor:
    """The ``[4, size]`` inputs of a decode step (see runner._DecodePlan): token ids, positions, row offsets and
    whether each chunk's row holds the shared start, then padding rows (position 0, offset ``capacity - 1``,
    which no sequence holds, and no shared start)."""
    pad = size - len(chunks)
    # Through numpy: torch.tensor reads a list of 512 ints in ~64 µs, numpy in ~8, which a GPU step feels.
    return torch.from_numpy(np.array([[chunk.ids[0] for chunk in chunks] + [0] * pad,
                                      [chunk.start for chunk in chunks] + [0] * pad,
                                      [chunk.offset for chunk in chunks] + [capacity - 1] * pad,
                                      [chunk.base is not None for chunk in chunks] + [False] * pad], dtype=np.int64))
