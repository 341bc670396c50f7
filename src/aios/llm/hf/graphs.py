"""Decode steps in CUDA graphs: a step of decode tokens is captured once per shape, then replayed with new inputs,
so the GPU runs the whole step without waiting for Python to launch each kernel.

A step qualifies when every chunk is one decode token and the chunks of each cache (a size class of the batch's
KV, ``kv.BatchKV``) are its rows ``0..n-1``, in order, one cache after the other, holding at most one shared
start (``SharedKV``: agents with one long system prompt) among them: a batch that is only generating. Steps that
read prompt pieces run eagerly, and so do steps whose rows hold two different shared starts.

A step's shape is, for each of its caches, the cache's capacity and its rows padded up to a power of two (the
sizes the rows grow by, capped at the cache's rows), so a layout has a handful of graphs. A graph holds the
addresses of the KV buffers it was captured over (and of the shared start's): it is replayed only while those
buffers are in place (``SlotKV.layout``), and all graphs are dropped when the rows hold another shared start
(which rows hold it is an input, so rows joining or leaving it change nothing). At most ``MAX_GRAPHS`` are kept,
the least recently used going first. A step copies its inputs in (one small copy) and waits on the GPU once,
when the engine reads the sampled tokens; grammar masks and sampling work on the logits the graph leaves.
"""

from __future__ import annotations

import threading
import time
import weakref
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import numpy as np
import torch

from aios.llm.hf.kv import SharedKV, SlotKV

if TYPE_CHECKING:
    from aios.llm.hf.runner import Chunk, LlamaRunner

# Graphs kept at once: with size classes a few classes' shapes combine, and old combinations are seldom met
# again. A graph keeps little of its own (its inputs; its logits go to one buffer that all share).
MAX_GRAPHS = 32
# One capture at a time in the process: the engines of several models (one thread each) may capture at once.
_CAPTURING = threading.Lock()


class CaptureFailed(RuntimeError):
    """A decode step could not be captured into a CUDA graph; the runner goes on eagerly."""


class Capture(Protocol):
    """How a step is captured and replayed: into CUDA graphs (:class:`CudaCapture`), or a stand-in."""

    def scope(self, device: torch.device) -> AbstractContextManager[object]: ...

    def capture(self, run: Callable[[], torch.Tensor], device: torch.device) -> tuple[Callable[[], None],
                                                                                      torch.Tensor]:
        """``run`` captured: a replay of it, and the tensor its replays write their result into."""
        ...

    def forget(self) -> None:
        """No graph is left: memory kept for them may go."""
        ...


class CudaCapture:
    """Captures into CUDA graphs that share one memory pool: a step's graphs never run at once, nothing of a
    graph's own outlives its replay (its logits go to a buffer outside the pool, which the engine copies out
    before the next replay), so each may use the memory of the others. Each captures on a stream of its own, on
    its model's GPU: torch's default capture stream is one for the whole process, made on whichever GPU captured
    first."""

    def __init__(self) -> None:
        self.pool: tuple[int, int] | None = None
        self.stream: torch.cuda.Stream | None = None

    def scope(self, device: torch.device) -> AbstractContextManager[object]:
        # Captures and replays run on the model's GPU, which need not be the thread's current one (cuda:1, say).
        return torch.cuda.device(device)

    def capture(self, run: Callable[[], torch.Tensor], device: torch.device) -> tuple[Callable[[], None],
                                                                                      torch.Tensor]:
        if self.pool is None:
            self.pool = torch.cuda.graph_pool_handle()
        if self.stream is None:
            self.stream = torch.cuda.Stream(device)
        current = torch.cuda.current_stream(device)
        with _CAPTURING:
            try:
                # A warm-up outside the capture lets the libraries pick their kernels and workspaces.
                self.stream.wait_stream(current)
                with torch.cuda.stream(self.stream):
                    run()
                current.wait_stream(self.stream)
                graph = torch.cuda.CUDAGraph()
                # thread_local: other threads (an embedding model, say) may use the GPU while the engine captures.
                with torch.cuda.graph(graph, pool=self.pool, stream=self.stream, capture_error_mode="thread_local"):
                    logits = run()
            finally:
                torch.cuda.set_stream(current)  # a capture that failed can leave its stream the thread's
        return graph.replay, logits

    def forget(self) -> None:
        # A new pool for the next graphs: the old one goes with the last graph that used it, and cannot be reused.
        self.pool = None


class Rerun:
    """Stands in for CUDA graph capture where there is no GPU (the tests, and ``benchmarks/captures.py``, which
    counts captures): a replay runs the captured step again over the KV buffers it was captured over
    (``kv.Segment``), as a graph replays its kernels over their addresses, and writes its logits into the same
    tensor. A replay over buffers since replaced would compute from stale KV and write where no row reads, and
    the replies would go wrong."""

    def scope(self, device: torch.device) -> AbstractContextManager[object]:
        return nullcontext()

    def capture(self, run: Callable[[], torch.Tensor], device: torch.device) -> tuple[Callable[[], None],
                                                                                      torch.Tensor]:
        logits = run()

        def replay() -> None:
            logits.copy_(run())

        return replay, logits

    def forget(self) -> None:
        pass


@dataclass
class _Graph:
    replay: Callable[[], None]
    inputs: torch.Tensor  # [4, B]: token ids, positions, row offsets, holds the base (see runner._DecodePlan)
    logits: torch.Tensor  # [B, vocab], written by each replay (rows of DecodeGraphs.logits)
    over: list[tuple[weakref.ref[SlotKV], int]]  # the caches it writes into, and their layouts then

    def holds(self, caches: list[SlotKV]) -> bool:
        """Whether it was captured over these caches' buffers as they are now."""
        return (len(caches) == len(self.over) and all(ref() is cache for (ref, _), cache in zip(self.over, caches))
                and self.current())

    def current(self) -> bool:
        """Whether the caches it writes into are all still there, with the buffers it was captured over."""
        return all((cache := ref()) is not None and layout == cache.layout for ref, layout in self.over)


class DecodeGraphs:
    def __init__(self, runner: "LlamaRunner", capture: Capture | None = None) -> None:
        self.runner = runner
        self.capturer: Capture = capture or CudaCapture()
        # By shape: ((capacity, padded rows) per cache); in use order, the most recently used last.
        self.graphs: dict[tuple[tuple[int, int], ...], _Graph] = {}
        self.captures = self.replays = 0
        self.capture_s = 0.0  # time spent capturing
        self._base: SharedKV | None = None  # the shared start the graphs read (held: they hold its addresses)
        # Where every graph leaves its logits, outside the graphs' pool: a graph's own logits are then scratch
        # that the next capture reuses, not [rows, vocab] kept per graph. Each step copies its rows out before
        # the next replay.
        self.logits: torch.Tensor | None = None

    def stats(self) -> dict[str, int | float]:
        """For the status: captures and replays so far, the seconds spent capturing, the graphs kept now."""
        return {"captures": self.captures, "replays": self.replays, "capture_s": round(self.capture_s, 3),
                "kept": len(self.graphs)}

    @staticmethod
    def takes(chunks: list["Chunk"], kv: SlotKV | None = None) -> bool:
        """Whether a step of ``chunks`` is a plain decode step: one token each, the chunks of each cache (theirs,
        or ``kv`` for chunks that name none) its rows ``0..n-1`` in order, one cache after the other, holding at
        most one shared start."""
        return _decode_groups(chunks, kv) is not None

    def run(self, chunks: list["Chunk"], kv: SlotKV | None = None) -> torch.Tensor | None:
        """The step's logits ``[n, vocab]`` (fp32), by replaying the graph of its shape (captured first if
        needed); None for a step that is not a plain decode step (see :meth:`takes`), which runs eagerly. The
        engine reserves rows for all running sequences, so each cache has rows for its chunks."""
        groups = _decode_groups(chunks, kv)
        if groups is None:
            return None
        base = next((chunk.base for chunk in chunks if chunk.base is not None), None)
        if base is not self._base:  # the graphs read another shared start
            self._drop()
            self._base = base
        caches = [cache for cache, _ in groups]
        sizes = [min(1 << (len(group) - 1).bit_length(), cache.rows) for cache, group in groups]
        shape = tuple((cache.capacity, size) for cache, size in zip(caches, sizes))
        device = caches[0].keys[0].device
        with self.capturer.scope(device):
            graph = self.graphs.pop(shape, None)
            if graph is None or not graph.holds(caches):
                graph = None  # first: a stale graph's memory goes back to the pool before the next capture
                graph = self._capture(caches, sizes, device)
            self.graphs[shape] = graph  # the most recently used, last
            graph.inputs.copy_(decode_inputs([(group, size, cache.capacity)
                                              for (cache, group), size in zip(groups, sizes)]))
            graph.replay()
            self.replays += 1
            # A copy of the real rows' logits: the next replay (of any graph) overwrites them.
            if len(groups) == 1:
                return graph.logits[:len(chunks)].clone()
            rows, start = [], 0
            for (_, group), size in zip(groups, sizes):
                rows.append(graph.logits[start:start + len(group)])
                start += size
            return torch.cat(rows)

    def _capture(self, caches: list[SlotKV], sizes: list[int], device: torch.device) -> _Graph:
        rows = sum(sizes)
        if self.logits is None or len(self.logits) < rows:
            self._drop()  # graphs that write into a smaller buffer (a step's sizes add up to < 2 * max_rows)
            self.logits = torch.empty(max(rows, 2 * caches[0].max_rows), self.runner.lm_head.out_features,
                                      dtype=torch.float32, device=device)
        # Graphs over buffers that are gone go now (their memory is the pool's again); then the least used.
        self.graphs = {shape: graph for shape, graph in self.graphs.items() if graph.current()}
        while len(self.graphs) >= MAX_GRAPHS:
            del self.graphs[next(iter(self.graphs))]
        if not self.graphs:
            self.capturer.forget()
        segments = [cache.segment(size) for cache, size in zip(caches, sizes)]
        # Every row a padding row while capturing: the warm-up run writes only KV that no sequence holds.
        inputs = decode_inputs([([], size, cache.capacity) for cache, size in zip(caches, sizes)]).to(device)
        # As captured: a replay reads no attribute again (a graph would not see it change).
        out, base, decode = self.logits[:rows], self._base, self.runner.decode

        def step() -> torch.Tensor:
            return out.copy_(decode(inputs, segments, base))

        began = time.perf_counter()
        try:
            replay, logits = self.capturer.capture(step, device)
        except Exception as exc:
            raise CaptureFailed(f"capturing a decode step of {sum(sizes)} rows failed: "
                                f"{type(exc).__name__}: {exc}") from exc
        self.captures += 1
        self.capture_s += time.perf_counter() - began
        return _Graph(replay, inputs, logits, [(weakref.ref(cache), cache.layout) for cache in caches])

    def _drop(self) -> None:
        self.graphs.clear()
        self.capturer.forget()


def _decode_groups(chunks: list["Chunk"], kv: SlotKV | None) -> list[tuple[SlotKV, list["Chunk"]]] | None:
    """The chunks of a plain decode step (see ``DecodeGraphs.takes``) by cache, in order; None for another step."""
    if not chunks or len({id(chunk.base) for chunk in chunks if chunk.base is not None}) > 1:
        return None
    groups: list[tuple[SlotKV, list["Chunk"]]] = []
    for chunk in chunks:
        cache = chunk.cache or kv
        if not groups or groups[-1][0] is not cache:
            groups.append((cache, []))
        groups[-1][1].append(chunk)
    plain = (len({id(cache) for cache, _ in groups}) == len(groups)  # no cache comes back after another
             and all(len(chunk.ids) == 1 and chunk.wants_logits and chunk.row == row
                     for _, group in groups for row, chunk in enumerate(group)))
    return groups if plain else None


def decode_inputs(segments: list[tuple[list["Chunk"], int, int]]) -> torch.Tensor:
    """The ``[4, B]`` inputs of a decode step (see runner._DecodePlan) over segments given as (their chunks, size,
    capacity of their cache): per segment, the token ids, positions, row offsets and whether each chunk's row
    holds the shared start, then padding rows up to its size (position 0, offset ``capacity - 1``, which no
    sequence holds, and no shared start)."""
    ids: list[int] = []
    positions: list[int] = []
    offsets: list[int] = []
    holds: list[bool] = []
    for chunks, size, capacity in segments:
        pad = size - len(chunks)
        ids += [chunk.ids[0] for chunk in chunks] + [0] * pad
        positions += [chunk.start for chunk in chunks] + [0] * pad
        offsets += [chunk.offset for chunk in chunks] + [capacity - 1] * pad
        holds += [chunk.base is not None for chunk in chunks] + [False] * pad
    # Through numpy: torch.tensor reads a list of 512 ints in ~64 µs, numpy in ~8, which a GPU step feels.
    return torch.from_numpy(np.array([ids, positions, offsets, holds], dtype=np.int64))
