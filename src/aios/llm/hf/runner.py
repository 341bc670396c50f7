"""Model runners: one forward pass over the chunks of one engine step, writing their KV into the batch's cache.

A step hands the runner a list of :class:`Chunk`: each is some new tokens of one sequence (one decode token, a
whole prompt, or a piece of a long one), placed after the ``start`` tokens of its row already in the cache. The
runner computes them all in one pass and returns the next-token logits of the chunks that want them.

- :class:`LlamaRunner` runs Llama-family models (Llama, Mistral, Qwen2, SmolLM, ...) with its own forward pass:
  the projections of every chunk's tokens go through the matrix products together (so prompts admitted in one
  step are prefilled together, and a long prompt's chunk rides along with the decode tokens), weights are fused
  (q/k/v, gate/up) and kept in the model's chosen format (:mod:`aios.llm.hf.weights`), and attention reads the
  cache in place. About a dozen tensor operations per layer, against several dozen through transformers.
- :class:`TransformersRunner` runs any other model through its transformers module: decode tokens of the first
  rows together, every other chunk one at a time.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import logging

import numpy as np
import torch
import torch.nn.functional as F

from aios.errors import BadRequest
from aios.llm.hf.attention_kernel import DecodeAttention, DecodeRows, load as load_kernel
from aios.llm.hf.blocks import BlockProducts
from aios.llm.hf.cbuild import built_or_why
from aios.llm.hf.elementwise import Elementwise, load as load_elementwise
from aios.llm.hf.graphs import CaptureFailed, DecodeGraphs
from aios.llm.hf.kv import Segment, SharedKV, SlotKV
from aios.llm.hf.weights import CPU_FORMATS, FormatError, Linear, WeightFormat

log = logging.getLogger(__name__)

# Architectures whose decoder layers are Llama's: pre-norm RMSNorm, rotary q/k, GQA attention, SwiGLU MLP.
LLAMA_FAMILY = frozenset({"llama", "mistral", "qwen2"})
# Rotary embeddings whose tables depend only on the position (not on the sequence length), so they can be
# computed once for every position.
STATIC_ROPE = frozenset({"default", "linear", "llama3"})


@dataclass
class Chunk:
    """New tokens of the sequence in cache row ``row``, at positions ``start .. start+len(ids)-1``. A sequence
    that starts with shared KV (``base``) attends to it too, and keeps only the positions after it in its row."""

    row: int
    ids: list[int]
    start: int
    wants_logits: bool = True  # False for a piece of a prompt that is not its end
    base: SharedKV | None = None
    cache: SlotKV | None = None  # the cache its row is in (the engine's size class); None: the step's ``kv``

    @property
    def offset(self) -> int:
        """Where in its row the first new token goes."""
        return self.start - (len(self.base) if self.base is not None else 0)


class LlamaRunner:
    name = "llama"
    attends_shared = True  # takes chunks with a ``base``

    def __init__(self, model: Any, weights: WeightFormat) -> None:
        config = model.config
        self.config, self.weights, self.device = config, weights, model.device
        self.dtype = model.dtype  # activations and KV: fp32 on CPU, the model's half precision on CUDA
        self.heads, self.kv_heads, self.head_dim = config.num_attention_heads, *_kv_shape(config)
        self.eps = config.rms_norm_eps
        inner = model.model
        self.norm = inner.norm.weight.detach()
        block_kernel, why_not = _block_kernel(weights, self.device, self.dtype)
        self.layers = [_Layer(layer, weights, block_kernel) for layer in inner.layers]
        # The output layer stays in the model's dtype: rounding it moves the top token more than rounding all
        # the rest (measured on the embedded model: bf16 everywhere changed 4 of 8 greedy replies within 48
        # tokens, bf16 but the output layer 1 of 8).
        # An embedding tied to the output layer is looked up in it: the model holds that matrix once.
        tied = model.lm_head.weight.data_ptr() == inner.embed_tokens.weight.data_ptr()
        self.lm_head = Linear(model.lm_head.weight, "native", lookup=tied, block_kernel=block_kernel)
        self.embedding = None if tied else inner.embed_tokens.weight.detach()
        # How the weights are multiplied, for the status: the block kernel (and how many matrices it holds) or
        # torch, and why.
        self.products = why_not or _described_blocks(self.linears)
        positions = torch.arange(config.max_position_embeddings, device=self.device)
        cos, sin = inner.rotary_emb(self.norm[None], positions[None])
        self.cos, self.sin = cos[0], sin[0]  # [positions, head_dim]
        # The norms, the rotary embedding and the gate: in C on a CPU where it can be built, else in torch.
        self.ops: Elementwise
        self.ops, self.elementwise = load_elementwise(self.eps, self.device, self.dtype)
        # Decode steps replay CUDA graphs on a GPU; anything else (a CPU, prompt pieces, shared starts) runs eagerly.
        self.graphs = DecodeGraphs(self) if self.device.type == "cuda" else None
        self.group_pieces = self.device.type == "cuda"  # see _Plan
        self.decode_mode = "cuda-graphs" if self.graphs is not None else f"eager ({self.device.type})"
        # On a CPU, decode tokens attend in a C kernel where one can be built for this model (else in torch).
        self.kernel: DecodeAttention | None = None
        self.attention = "torch"
        if self.device.type == "cpu":
            self.kernel, self.attention = built_or_why(
                lambda: load_kernel(self.head_dim, self.heads // self.kv_heads, self.dtype), "decode attention")

    @property
    def linears(self) -> list[Linear]:
        """Every weight matrix the runner multiplies by: the output layer, then each layer's."""
        return [self.lm_head, *(linear for layer in self.layers for linear in layer)]

    @staticmethod
    def supports(model: Any) -> str | None:
        """Why this runner cannot run ``model`` (``None`` if it can)."""
        config = model.config
        if config.model_type not in LLAMA_FAMILY:
            return f"architecture {config.model_type!r} is not in the Llama family"
        rope = getattr(config, "rope_parameters", None) or getattr(config, "rope_scaling", None) or {}
        if rope.get("rope_type", rope.get("type", "default")) not in STATIC_ROPE:
            return f"rotary embedding type {rope.get('rope_type')!r} depends on the sequence length"
        if getattr(config, "sliding_window", None) and getattr(config, "use_sliding_window", True):
            return "sliding-window attention"
        if getattr(config, "hidden_act", "silu") != "silu" or getattr(config, "mlp_bias", False):
            return "its MLP is not SwiGLU without bias"
        if len({str(p.device) for p in model.parameters()}) > 1:
            return "it is split over several devices"
        return None

    def forward(self, chunks: list[Chunk], kv: SlotKV | None = None) -> torch.Tensor:
        """Next-token logits (fp32, one row per chunk that wants them, in order) after computing ``chunks``, each
        in its own cache's row (``kv`` for those that name none)."""
        if self.graphs is not None:
            try:
                logits = self.graphs.run(chunks, kv)
                if logits is not None:
                    return logits
            except CaptureFailed as exc:
                log.warning("decode steps run eagerly from now on: %s", exc)
                self.run_eagerly(str(exc))
        return self._run(_Plan(chunks, kv, self.device, self.dtype, self.group_pieces, self.kernel))

    def run_eagerly(self, why: str) -> None:
        """No more CUDA graphs: every step runs eagerly, and the status says ``why``."""
        self.graphs, self.decode_mode = None, f"eager ({why})"

    def decode(self, inputs: torch.Tensor, segments: list[Segment], base: SharedKV | None = None) -> torch.Tensor:
        """Logits of a decode step of the rows of ``segments`` (rows ``0..size-1`` of a cache each, one after the
        other) whose inputs are on the device (``inputs``: see :class:`_DecodePlan`), the rows that hold ``base``
        attending to it too. Every shape depends only on the segments and ``base``, so a CUDA graph captures it
        once and replays it with new inputs."""
        return self._run(_DecodePlan(inputs, segments, self.dtype, base, self.heads // self.kv_heads))

    def _run(self, plan: "_Plan | _DecodePlan") -> torch.Tensor:
        ops = self.ops
        x = self.lm_head.weight_rows(plan.ids) if self.embedding is None else self.embedding[plan.ids]
        cos, sin = self.cos[plan.positions], self.sin[plan.positions]
        q_size, kv_size = self.heads * self.head_dim, self.kv_heads * self.head_dim
        pending = None  # the last sublayer's output: added to x where the next norm reads it
        for index, layer in enumerate(self.layers):
            x, h = ops.add_norm(x, pending, layer.norm1)
            qkv = layer.qkv(h)
            # Queries and keys sit side by side in the fused output: one rotation turns both.
            qk = ops.rotate(qkv, self.heads + self.kv_heads, self.head_dim, cos, sin)
            q, k = qk[:, :self.heads], qk[:, self.heads:]
            v = qkv[:, q_size + kv_size:].view(-1, self.kv_heads, self.head_dim)
            x, h = ops.add_norm(x, layer.o(plan.attend(q, k, v, index)), layer.norm2)
            pending = layer.down(ops.gate(layer.gate_up(h)))
        _, x = ops.add_norm(x[plan.logit_rows], pending[plan.logit_rows], self.norm)
        if len(x) == 1 and not self.lm_head.row_invariant:
            # A plain matrix that no group of rows makes row-invariant (see Linear) is still multiplied by a
            # single row with another kernel than by several: it goes as two, as a batch's rows do.
            return self.lm_head(x.expand(2, -1))[:1].float()
        return self.lm_head(x).float()


class _Layer:
    def __init__(self, layer: Any, weights: WeightFormat, block_kernel: BlockProducts | None) -> None:
        attention, mlp = layer.self_attn, layer.mlp
        projections = (attention.q_proj, attention.k_proj, attention.v_proj)
        biases = [p.bias for p in projections]
        bias = torch.cat([b.detach() for b in biases]) if all(b is not None for b in biases) else None
        fused_qkv = torch.cat([p.weight.detach() for p in projections])
        self.qkv = Linear(fused_qkv, weights, bias, block_kernel=block_kernel)
        self.o = Linear(attention.o_proj.weight, weights, block_kernel=block_kernel)
        fused_gate_up = torch.cat([mlp.gate_proj.weight.detach(), mlp.up_proj.weight.detach()])
        self.gate_up = Linear(fused_gate_up, weights, block_kernel=block_kernel)
        self.down = Linear(mlp.down_proj.weight, weights, block_kernel=block_kernel)
        self.norm1 = layer.input_layernorm.weight.detach()
        self.norm2 = layer.post_attention_layernorm.weight.detach()

    def __iter__(self) -> Iterator[Linear]:
        return iter((self.qkv, self.o, self.gate_up, self.down))


def _block_kernel(weights: WeightFormat, device: torch.device,
                  dtype: torch.dtype) -> tuple[BlockProducts | None, str | None]:
    """The kernel for native fp32 weights that are exactly GGUF blocks, where it can be built (a CPU with a C
    compiler); else ``None`` and the status's word on how the weights are multiplied instead."""
    if weights != "native" or device.type != "cpu" or dtype != torch.float32:
        return None, "torch"
    kernel, status = built_or_why(BlockProducts, "multiplying native weights")
    return kernel, None if kernel is not None else status


def _described_blocks(linears: list[Linear]) -> str:
    """How many weight matrices the block kernel multiplies, by block format: ``c-kernel (exact blocks: 210 q4_1,
    1 q8_0 of 211 matrices)``."""
    kinds = Counter(linear.blocks.kind for linear in linears if linear.blocks is not None)
    if not kinds:
        return "torch (no weight matrix is exactly a GGUF block format)"
    counts = ", ".join(f"{count} {kind}" for kind, count in sorted(kinds.items()))
    return f"c-kernel (exact blocks: {counts} of {len(linears)} matrices)"


class _Plan:
    """Where each chunk's tokens sit in the step's flat token list, and how attention reads and writes the cache.

    Chunks of one token (decode steps, and prompts with one token left after prefix reuse) attend together, one
    batched call per cache over its rows ``0 .. rows-1`` (:class:`_Singles`), and the rows that start with the
    same shared KV attend to it in one more call, its keys read once for all of them. Longer chunks (prompt
    pieces) attend one by one over their own shared KV and row; with ``group_pieces`` (on a GPU, where each call
    is a kernel launch per layer) those without a shared start attend together in padded calls
    (:class:`_Pieces`), grouped by cache and length. On a CPU each piece goes alone: there a call costs little
    beside the arithmetic, and a piece's attention is then computed the same way whatever it is read with (int4
    weights keep every reply the same batched).
    """

    def __init__(self, chunks: list[Chunk], kv: SlotKV | None, device: torch.device, dtype: torch.dtype,
                 group_pieces: bool = False, kernel: DecodeAttention | None = None) -> None:
        ids, positions, logit_rows = [], [], []
        singles: dict[int, tuple[SlotKV, list[tuple[int, Chunk]]]] = {}  # by cache: (offset in the list, chunk)
        self.runs: list[tuple[int, Chunk, SlotKV]] = []
        for chunk in chunks:
            offset, cache = len(ids), chunk.cache or kv
            assert cache is not None, "a chunk names no cache and the step has none"
            ids += chunk.ids
            positions += range(chunk.start, chunk.start + len(chunk.ids))
            if len(chunk.ids) == 1:
                singles.setdefault(id(cache), (cache, []))[1].append((offset, chunk))
            else:
                self.runs.append((offset, chunk, cache))
            if chunk.wants_logits:
                logit_rows.append(len(ids) - 1)
        self.tokens = len(ids)
        self.ids, self.positions, self.logit_rows = (_longs(values, device) for values in (ids, positions, logit_rows))
        self.singles = [_Singles(cache, group, device, dtype, kernel) for cache, group in singles.values()]
        self.pieces: list[_Pieces] = []
        if group_pieces:
            self.pieces = [_Pieces(group, device) for group in _similar([r for r in self.runs if r[1].base is None])]
            self.runs = [run for run in self.runs if run[1].base is not None]

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, layer: int) -> torch.Tensor:
        """Write ``k``/``v`` ([tokens, kv_heads, dim]) into the caches' ``layer`` and attend; returns
        ``[tokens, heads*dim]``."""
        out = torch.empty(self.tokens, q.shape[1] * q.shape[2], dtype=q.dtype, device=q.device)
        for singles in self.singles:
            singles.attend(q, k, v, layer, out)
        for pieces in self.pieces:
            pieces.attend(q, k, v, layer, out)
        for offset, chunk, cache in self.runs:
            keys, values = cache.keys[layer], cache.values[layer]
            n = len(chunk.ids)
            begin, end = chunk.offset, chunk.offset + n
            keys[chunk.row, :, begin:end] = k[offset:offset + n].transpose(0, 1)
            values[chunk.row, :, begin:end] = v[offset:offset + n].transpose(0, 1)
            seen_keys, seen_values = keys[chunk.row:chunk.row + 1, :, :end], values[chunk.row:chunk.row + 1, :, :end]
            if chunk.base is not None:  # a prompt's piece is read once: a copy of the shared keys costs little
                seen_keys = torch.cat((chunk.base.keys[layer][None], seen_keys), dim=2)
                seen_values = torch.cat((chunk.base.values[layer][None], seen_values), dim=2)
            query = q[offset:offset + n].transpose(0, 1).unsqueeze(0)
            attended = F.scaled_dot_product_attention(query, seen_keys, seen_values,
                                                      attn_mask=_causal(chunk.start, n, q.device), enable_gqa=True)
            out[offset:offset + n] = attended[0].transpose(0, 1).reshape(n, -1)
        return out


class _Singles:
    """The one-token chunks whose rows are in one cache, attending together: in the C kernel where the runner has
    one (each over its own row's positions), else in one batched torch call over the cache's rows ``0 .. rows-1``
    (rows of longer chunks, with a dummy query, to position 0 only)."""

    def __init__(self, cache: SlotKV, singles: list[tuple[int, Chunk]], device: torch.device,
                 dtype: torch.dtype, kernel: DecodeAttention | None = None) -> None:
        self.cache, self.kernel = cache, kernel
        offsets = [offset for offset, _ in singles]
        rows = [chunk.row for _, chunk in singles]
        starts = [chunk.offset for _, chunk in singles]  # where in its row each token goes
        self.rows = max(rows) + 1
        self.span = max(starts) + 1
        # The common case: the chunks are next to each other in the step, rows 0..n-1 in order; then no scatter
        # is needed.
        self.first = offsets[0]
        self.dense = (rows == list(range(len(rows))) and len(rows) == self.rows
                      and offsets == list(range(self.first, self.first + len(rows))))
        self.offsets, self.single_rows, self.starts = (_longs(values, device) for values in (offsets, rows, starts))
        sharing: dict[int, tuple[SharedKV, list[int]]] = {}
        for _, chunk in singles:
            if chunk.base is not None:
                sharing.setdefault(id(chunk.base), (chunk.base, []))[1].append(chunk.row)
        self.shared = [(base, _longs(rows, device), None) for base, rows in sharing.values()]
        if kernel is not None:
            # The kernel writes where it is told: what torch's indexing would refuse must be refused here.
            if min(rows) < 0 or min(starts) < 0 or self.rows > cache.rows or self.span > cache.capacity:
                raise IndexError(f"decode tokens outside their cache: rows {min(rows)}..{self.rows - 1} of "
                                 f"{cache.rows}, offsets {min(starts)}..{self.span - 1} of {cache.capacity}")
            # Results go straight to the step's output, or by row where they are merged with shared KV first.
            written = self.single_rows if self.shared else self.offsets
            self.batch: DecodeRows = kernel.rows(self.offsets, self.single_rows, self.starts, written, self.span)
            return
        row_starts = torch.zeros(self.rows, dtype=torch.long, device=device)
        row_starts[self.single_rows] = self.starts
        visible = torch.arange(self.span, device=device)[None, :] <= row_starts[:, None]
        self.bias = torch.zeros(visible.shape, dtype=dtype, device=device).masked_fill_(~visible, -torch.inf)
        self.bias = self.bias.view(self.rows, 1, 1, self.span)

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, layer: int, out: torch.Tensor) -> None:
        keys, values = self.cache.keys[layer], self.cache.values[layer]
        if self.kernel is not None and not self.shared:
            self.kernel(self.batch, q, k, v, keys, values, out)
            return
        if self.kernel is not None:
            own = q.new_empty(self.rows, q.shape[1] * q.shape[2])
            lse = q.new_zeros(self.rows, q.shape[1], 1)
            self.kernel(self.batch, q, k, v, keys, values, own, lse)
            # A normalized result is the unnormalized one over the exp of its log-sum-exp: maximum lse, total 1.
            kv_heads, dim = keys.shape[1], keys.shape[3]
            parts = (lse.view(self.rows, kv_heads, -1, 1), torch.ones_like(lse).view(self.rows, kv_heads, -1, 1),
                     own.view(self.rows, kv_heads, -1, dim))
            attended = _with_shared(self._queries(q).view(self.rows, kv_heads, -1, dim), parts, self.shared, layer)
        else:
            tokens = slice(self.first, self.first + self.rows) if self.dense else self.offsets
            keys[self.single_rows, :, self.starts] = k[tokens]
            values[self.single_rows, :, self.starts] = v[tokens]
            grouped, scores = _row_scores(self._queries(q), keys, self.span, self.bias)
            seen = values[:self.rows, :, :self.span]
            if self.shared:
                attended = _with_shared(grouped, _softmax_parts(scores, seen), self.shared, layer)
            else:
                attended = scores.softmax(dim=-1) @ seen
        if self.dense:
            out[self.first:self.first + self.rows] = attended.reshape(self.rows, -1)
        else:
            out[self.offsets] = attended.reshape(self.rows, -1)[self.single_rows]

    def _queries(self, q: torch.Tensor) -> torch.Tensor:
        """The queries by cache row, ``[rows, heads, dim]`` (zeros in rows without a token here)."""
        if self.dense:
            return q[self.first:self.first + self.rows]
        query = q.new_zeros(self.rows, q.shape[1], q.shape[2])
        query[self.single_rows] = q[self.offsets]
        return query


def _softmax_parts(scores: torch.Tensor, values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Attention over one set of keys as the parts that merge with another's (as flash attention merges blocks):
    the scores' maximum, the sum of their exponentials shifted by it, and the values weighted by those."""
    top = scores.amax(dim=-1, keepdim=True)
    weights = (scores - top).exp()
    return top, weights.sum(dim=-1, keepdim=True), weights @ values


def _with_shared(grouped: torch.Tensor, own: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
                 shared: list[tuple[SharedKV, torch.Tensor, torch.Tensor | None]], layer: int) -> torch.Tensor:
    """Attention over each row's own cache (``own``: its parts, see :func:`_softmax_parts`) and, for the rows
    that start with shared KV, over that too. Each part's softmax is taken on its own and the parts are merged by
    their maxima and sums: the shared keys are read once for all the rows that share them, where a copy in
    every row would be read once per row. ``shared`` holds, for each shared start, the rows that attend to it
    and a bias added to their scores over it (``[1, rows * group, 1]``, or None)."""
    top, total, out = own
    kv_heads, group, dim = grouped.shape[1:]
    for base, rows, bias in shared:
        n = len(rows)
        # The queries of all the sharing rows under each key head, as one matrix: [kv_heads, n * group, dim].
        query = grouped[rows].transpose(0, 1).reshape(kv_heads, n * group, dim)
        shared_scores = query @ base.keys[layer].transpose(-1, -2) * dim ** -0.5
        if bias is not None:
            shared_scores = shared_scores + bias
        per_row = lambda t: t.view(kv_heads, n, group, -1).transpose(0, 1)  # noqa: E731
        shared_top, shared_total, shared_out = map(per_row, _softmax_parts(shared_scores, base.values[layer]))
        new_top = torch.maximum(top[rows], shared_top)
        own_scale, shared_scale = (top[rows] - new_top).exp(), (shared_top - new_top).exp()
        out[rows] = out[rows] * own_scale + shared_out * shared_scale
        total[rows] = total[rows] * own_scale + shared_total * shared_scale
    return out / total


class _Pieces:
    """Prompt pieces of one step (chunks of several tokens, each in its own row, no shared start) attending in
    one call: the queries padded to the longest piece (a padding slot repeats its piece's last token, and its
    output is dropped), each piece over its own row up to the furthest end among them, masked causally."""

    def __init__(self, group: list[tuple[int, Chunk, SlotKV]], device: torch.device) -> None:
        self.cache = group[0][2]  # one cache for all (see _similar)
        runs = [(offset, chunk) for offset, chunk, _ in group]
        lengths = [len(chunk.ids) for _, chunk in runs]
        self.count, self.length = len(runs), max(lengths)
        self.span = max(chunk.offset + n for (_, chunk), n in zip(runs, lengths))
        slots = [[min(i, n - 1) for i in range(self.length)] for n in lengths]  # each query slot's token
        tensor = lambda values: _longs(values, device)  # noqa: E731
        self.tokens = tensor([offset + i for (offset, _), n in zip(runs, lengths) for i in range(n)])
        self.write_rows = tensor([chunk.row for (_, chunk), n in zip(runs, lengths) for _ in range(n)])
        self.write_at = tensor([chunk.offset + i for (_, chunk), n in zip(runs, lengths) for i in range(n)])
        self.slots = tensor([offset + i for (offset, _), row in zip(runs, slots) for i in row])
        self.valid = tensor([p * self.length + i for p, n in enumerate(lengths) for i in range(n)])
        self.rows = tensor([chunk.row for _, chunk in runs])
        at = tensor([[chunk.offset + i for i in row] for (_, chunk), row in zip(runs, slots)])  # [count, length]
        self.mask = (torch.arange(self.span, device=device) <= at[:, :, None]).unsqueeze(1)

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, layer: int, out: torch.Tensor) -> None:
        keys, values = self.cache.keys[layer], self.cache.values[layer]
        keys[self.write_rows, :, self.write_at] = k[self.tokens]
        values[self.write_rows, :, self.write_at] = v[self.tokens]
        query = q[self.slots].view(self.count, self.length, q.shape[1], q.shape[2]).transpose(1, 2)
        seen_keys, seen_values = keys[self.rows, :, :self.span], values[self.rows, :, :self.span]
        attended = F.scaled_dot_product_attention(query, seen_keys, seen_values, attn_mask=self.mask,
                                                  enable_gqa=True)
        out[self.tokens] = attended.transpose(1, 2).reshape(self.count * self.length, -1)[self.valid]


def _similar(runs: list[tuple[int, Chunk, SlotKV]]) -> list[list[tuple[int, Chunk, SlotKV]]]:
    """``runs`` (offset, chunk, its cache) in groups that attend together: pieces of one cache, by length, a
    group growing while its padded attention (pieces × longest × furthest end) stays within 1.5 times the work of
    each piece alone (its length × its end). A call saved is worth little on a CPU, where attention is
    arithmetic; on a GPU it is a launch per layer."""
    groups: list[list[tuple[int, Chunk, SlotKV]]] = []
    alone = furthest = 0
    for run in sorted(runs, key=lambda run: (id(run[2]), len(run[1].ids), run[1].offset)):
        n, end = len(run[1].ids), run[1].offset + len(run[1].ids)
        if (groups and groups[-1][0][2] is run[2]
                and 2 * (len(groups[-1]) + 1) * n * max(furthest, end) <= 3 * (alone + n * end)):
            groups[-1].append(run)
            alone, furthest = alone + n * end, max(furthest, end)
        else:
            groups.append([run])
            alone, furthest = n * end, end
    return groups


class _DecodePlan:
    """A decode step of the rows of ``segments``, one token each, from ``inputs`` on the device: ``[4, B]`` token
    ids, their positions, the offsets in their rows where their KV goes, and whether each row starts with
    ``base`` (a shared start all its holders attend to), the segments' rows one after the other (``B`` is the
    sum of their sizes). Attention reads every position of a segment's rows, masked to the offsets up to each
    token's own, so no shape depends on the sequences' lengths or on which rows hold the base.

    A row that only pads a segment to its size has position 0, offset ``capacity - 1`` and no base: no sequence
    holds that offset (the engine reserves a position past the longest row), and the row's output is dropped."""

    logit_rows = slice(None)

    def __init__(self, inputs: torch.Tensor, segments: list[Segment], dtype: torch.dtype, base: SharedKV | None,
                 group: int) -> None:
        self.ids, self.positions, offsets, holds = inputs
        device, rows = inputs.device, len(self.ids)
        # Per segment: where its rows begin in the step, its buffers, its rows' indices and offsets, the mask.
        self.parts: list[tuple[int, Segment, torch.Tensor, torch.Tensor, torch.Tensor]] = []
        begin = 0
        for segment in segments:
            size, capacity = segment.size, segment.capacity
            at = offsets[begin:begin + size]
            visible = torch.arange(capacity, device=device)[None, :] <= at[:, None]
            bias = torch.zeros(visible.shape, dtype=dtype, device=device).masked_fill_(~visible, -torch.inf)
            self.parts.append((begin, segment, torch.arange(size, device=device), at, bias.view(size, 1, 1, capacity)))
            begin += size
        self.shared: list[tuple[SharedKV, torch.Tensor, torch.Tensor | None]] = []
        if base is not None:
            # Rows without the base see none of it: a score far below any real one (not -inf, which would make
            # a row's shared maximum -inf and its weights NaN; half the dtype's lowest, so that adding a score
            # cannot overflow) leaves it a weight of exactly 0 after merging.
            far = torch.finfo(dtype).min / 2
            apart = torch.zeros(rows, dtype=dtype, device=device).masked_fill_(holds == 0, far)
            self.shared = [(base, torch.arange(rows, device=device),
                            apart.repeat_interleave(group).view(1, rows * group, 1))]

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, layer: int) -> torch.Tensor:
        attended, grouped, own = [], [], []
        for begin, segment, rows, at, bias in self.parts:
            size = segment.size
            keys, values = segment.keys[layer], segment.values[layer]
            keys[rows, :, at] = k[begin:begin + size]
            values[rows, :, at] = v[begin:begin + size]
            queries, scores = _row_scores(q[begin:begin + size], keys, keys.shape[2], bias)
            if self.shared:  # merged with the shared start's below, over all the step's rows at once
                grouped.append(queries)
                own.append(_softmax_parts(scores, values[:size]))
            else:
                attended.append((scores.softmax(dim=-1) @ values[:size]).reshape(size, -1))
        if self.shared:
            parts = own[0] if len(own) == 1 else tuple(torch.cat(part) for part in zip(*own))
            queries = grouped[0] if len(grouped) == 1 else torch.cat(grouped)
            return _with_shared(queries, parts, self.shared, layer).reshape(len(q), -1)
        return attended[0] if len(attended) == 1 else torch.cat(attended)


def _row_scores(query: torch.Tensor, keys: torch.Tensor, span: int,
                bias: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Attention scores of one query per cache row (``query``: ``[rows, heads, dim]``) over the first ``span``
    positions of rows ``0..rows-1``: plain matrix products, each key head's query heads grouped under it (at 16
    rows twice as fast as scaled_dot_product_attention on a CPU). Returns the grouped queries
    ``[rows, kv_heads, group, dim]`` and the scores ``[rows, kv_heads, group, span]``."""
    rows, kv_heads, dim = len(query), keys.shape[1], keys.shape[3]
    grouped = query.view(rows, kv_heads, -1, dim)
    return grouped, grouped @ keys[:rows, :, :span].transpose(-1, -2) * dim ** -0.5 + bias


def _longs(values: list[int] | list[list[int]], device: torch.device) -> torch.Tensor:
    """An int64 tensor of ``values`` on ``device``. Through numpy: ``torch.tensor`` reads a list of 512 ints in
    ~64 µs, numpy in ~8; a GPU step of 128 rows, or a prompt step's thousands of positions, feels it."""
    return torch.from_numpy(np.array(values, dtype=np.int64)).to(device)


def _causal(start: int, n: int, device: torch.device) -> torch.Tensor:
    """New token ``i`` (at position ``start+i``) sees every cached position and the new tokens up to itself."""
    return torch.arange(start + n, device=device)[None, :] <= torch.arange(start, start + n, device=device)[:, None]


class TransformersRunner:
    """Any causal LM, through its transformers module and the cache views of :class:`SlotKV`."""

    name = "transformers"
    attends_shared = False  # the module sees a row as the whole cache: sequences never get a ``base`` here
    decode_mode = "eager (transformers)"
    attention = products = elementwise = "transformers"

    def __init__(self, model: Any) -> None:
        self.model, self.config, self.device, self.dtype = model, model.config, model.device, model.dtype
        self.kv_heads, self.head_dim = _kv_shape(model.config)
        self.weights = "native"

    def forward(self, chunks: list[Chunk], kv: SlotKV | None = None) -> torch.Tensor:
        # The engine keeps one cache for this runner (no size classes: the module sees one cache).
        kv = kv or chunks[0].cache
        assert kv is not None and all(chunk.cache in (None, kv) for chunk in chunks)
        # One-token chunks of rows 0, 1, 2, ... decode together; any other chunk runs alone.
        batched = 0
        while batched < len(chunks) and chunks[batched].row == batched and len(chunks[batched].ids) == 1:
            batched += 1
        logits = []
        if batched:
            wanted = [i for i, chunk in enumerate(chunks[:batched]) if chunk.wants_logits]
            logits.append(self._decode(chunks[:batched], kv)[wanted])
        for chunk in chunks[batched:]:
            alone = self._prefill(chunk, kv)
            if chunk.wants_logits:
                logits.append(alone)
        return torch.cat(logits) if logits else torch.empty(0, self.config.vocab_size, device=self.device)

    def _decode(self, chunks: list[Chunk], kv: SlotKV) -> torch.Tensor:
        ids = _longs([c.ids for c in chunks], self.device)
        lengths = _longs([c.start for c in chunks], self.device)
        view = kv.decode_view(lengths)
        mask = torch.arange(view.span, device=self.device)[None, :] <= lengths[:, None]
        return self._call(ids, lengths[:, None], mask.view(len(chunks), 1, 1, -1), view)

    def _prefill(self, chunk: Chunk, kv: SlotKV) -> torch.Tensor:
        n = len(chunk.ids)
        ids = _longs([chunk.ids], self.device)
        positions = torch.arange(chunk.start, chunk.start + n, device=self.device)
        mask = _causal(chunk.start, n, self.device).view(1, 1, n, -1)
        return self._call(ids, positions[None], mask, kv.prefill_view(chunk.row, chunk.start))

    def _call(self, ids: torch.Tensor, positions: torch.Tensor, mask: torch.Tensor, cache: Any) -> torch.Tensor:
        out = self.model(input_ids=ids, position_ids=positions, attention_mask=mask, past_key_values=cache,
                         use_cache=True, logits_to_keep=1)
        return out.logits[:, -1, :].float()


Runner = LlamaRunner | TransformersRunner


def _kv_shape(config: Any) -> tuple[int, int]:
    """``(kv_heads, head_dim)`` of a model's attention."""
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    return config.num_key_value_heads, head_dim


def make_runner(model: Any, weights: WeightFormat) -> Runner:
    """The engine's runner for ``model``: its own Llama-family forward pass where it applies, else transformers
    in the model's own dtype (``weights`` other than native is then refused)."""
    if weights in CPU_FORMATS and model.device.type != "cpu":
        raise BadRequest(f"weights: {weights} is a CPU format; use native or bf16 on a GPU")
    why_not = LlamaRunner.supports(model)
    if why_not is None:
        try:
            runner = LlamaRunner(model, weights)
        except FormatError as exc:
            raise BadRequest(f"weights: {weights} cannot hold this model ({exc}); use native, bf16 or int8") from exc
        # The runner holds the weights in its own layout now; free the module's copies.
        for module in (model.model.embed_tokens, model.model.layers, model.lm_head):
            module.to("meta")
        return runner
    if weights != "native":
        raise BadRequest(f"weights: {weights} needs a Llama-family model; this one cannot use it ({why_not}); "
                         "use weights: native")
    log.info("the engine runs this model through transformers: %s", why_not)
    return TransformersRunner(model)
