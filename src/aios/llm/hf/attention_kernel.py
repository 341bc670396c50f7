"""Decode attention on a CPU in one C function (``attention_kernel.c``), compiled for a model's head size when
the model loads and called through ctypes.

The function writes each decode token's key and value into its cache row and attends over the row, all rows in
one call on torch's threads: 1.8-2.6x faster than the same attention in torch at 16-32 rows, where torch pays a
small-matrix product's overhead per row and key head; a decode step is 1.10-1.16x faster (BENCHMARKS.md, "Engine
speed against its targets (CPU)"). Where it cannot be built (no C compiler, a shape it does not take, not fp32),
:func:`load` raises :class:`KernelUnavailable` saying why, and the runner attends in torch.
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass

import torch

from aios.llm.hf.cbuild import KernelUnavailable, bind, build

LANES = 16  # floats in the kernel's vector type
MAX_GROUP = 16  # query heads per key head it keeps in registers
_P, _I = ctypes.c_void_p, ctypes.c_int64
_ARGUMENTS = (_I, _P, _P, _P, _P, _P, _I, _P, _I, _P, _I, _P, _P, _I, _I, _I, _I, _P, _P, _P, ctypes.c_int)


@dataclass
class DecodeRows:
    """The decode tokens of one step that attend in one cache: the i-th is token ``tokens[i]`` of the step's
    q/k/v, goes into cache row ``rows[i]`` at ``offsets[i]``, and its result to row ``written[i]`` of the
    output. Built once a step, used by every layer."""

    tokens: torch.Tensor
    rows: torch.Tensor
    offsets: torch.Tensor
    written: torch.Tensor
    stride: int  # room for one head's scores: the most positions a row attends to, rounded up to LANES
    threads: int
    scratch: torch.Tensor  # the scores, threads x group x stride floats
    checked: bool = False  # whether the tensors of a call were checked (every layer's are alike)


class DecodeAttention:
    """The compiled kernel for one head size (``head_dim``) and grouping (query heads per key head)."""

    def __init__(self, head_dim: int, group: int) -> None:
        self.head_dim, self.group = head_dim, group
        # -ffast-math lets the compiler vectorize the sums and the exponentials (glibc's vector expf); the kernel
        # never relies on infinities or NaN.
        library = build("attention_kernel.c", ("-ffast-math",), (("HEAD_DIM", head_dim), ("GROUP", group)))
        self._function = bind(library, "decode_attention", _ARGUMENTS)

    def rows(self, tokens: torch.Tensor, rows: torch.Tensor, offsets: torch.Tensor, written: torch.Tensor,
             longest: int) -> DecodeRows:
        """A step's decode tokens (int64 tensors on the CPU, see :class:`DecodeRows`); ``longest``: the most
        positions a row attends to (its offset + 1). The caller has checked that rows and offsets are within the
        cache."""
        threads, stride = torch.get_num_threads(), -(-longest // LANES) * LANES
        scratch = torch.empty(threads * self.group * stride, dtype=torch.float32)
        return DecodeRows(tokens, rows, offsets, written, stride, threads, scratch)

    def __call__(self, batch: DecodeRows, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, keys: torch.Tensor,
                 values: torch.Tensor, out: torch.Tensor, lse: torch.Tensor | None = None) -> None:
        """Write ``k``/``v`` (``[tokens, kv_heads, head_dim]``) into one layer's ``keys``/``values`` (``[rows,
        kv_heads, capacity, head_dim]``) at the batch's rows and offsets and attend with ``q`` (``[tokens, heads,
        head_dim]``); each of q/k/v may have any stride between tokens but must be contiguous within one. Results
        go to ``out`` (``[*, heads * head_dim]``) and, if given, each head's log-sum-exp of its scores to ``lse``
        (``[*, heads]``), at the batch's ``written`` rows."""
        if not batch.checked:
            self._check(batch, q, k, v, keys, values, out, lse)
            batch.checked = True
        self._function(len(batch.tokens), batch.tokens.data_ptr(), batch.rows.data_ptr(), batch.offsets.data_ptr(),
                       batch.written.data_ptr(), q.data_ptr(), q.stride(0), k.data_ptr(), k.stride(0),
                       v.data_ptr(), v.stride(0), keys.data_ptr(), values.data_ptr(), keys.stride(0),
                       keys.stride(1), keys.shape[1], batch.stride, out.data_ptr(),
                       None if lse is None else lse.data_ptr(), batch.scratch.data_ptr(), batch.threads)

    def _check(self, batch: DecodeRows, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, keys: torch.Tensor,
               values: torch.Tensor, out: torch.Tensor, lse: torch.Tensor | None) -> None:
        """The layouts the C function reads and writes blindly (a mistake here would corrupt memory)."""
        dim, kv_heads = self.head_dim, keys.shape[1]
        tensors = {"q": q, "k": k, "v": v, "keys": keys, "values": values, "out": out, "lse": lse}
        wrong = [name for name, t in tensors.items() if t is not None and (t.dtype != torch.float32 or t.is_cuda)]
        wrong += [name for name, t, heads in (("q", q, kv_heads * self.group), ("k", k, kv_heads), ("v", v, kv_heads))
                  if t.shape[1:] != (heads, dim) or t.stride()[1:] != (dim, 1)]
        if keys.shape[3] != dim or not keys.is_contiguous() or values.shape != keys.shape or not values.is_contiguous():
            wrong.append("keys/values")
        if not out.is_contiguous() or out.shape[1] != kv_heads * self.group * dim:
            wrong.append("out")
        if lse is not None and (not lse.is_contiguous() or lse.numel() != len(out) * kv_heads * self.group):
            wrong.append("lse")
        indices = (batch.tokens, batch.rows, batch.offsets, batch.written)
        if any(t.dtype != torch.int64 or not t.is_contiguous() or len(t) != len(batch.tokens) for t in indices):
            wrong.append("indices")
        if wrong:
            raise ValueError(f"decode attention kernel: unexpected layout of {', '.join(wrong)}")


def load(head_dim: int, group: int, dtype: torch.dtype) -> DecodeAttention:
    """The kernel for a model whose attention heads are ``head_dim`` wide, ``group`` query heads to a key head,
    with activations and KV in ``dtype``; raises :class:`KernelUnavailable` where it cannot be had."""
    if dtype != torch.float32:
        raise KernelUnavailable(f"it computes in float32, not {str(dtype).removeprefix('torch.')}")
    if head_dim % LANES:
        raise KernelUnavailable(f"head size {head_dim} is not a multiple of {LANES}")
    if group > MAX_GROUP:
        raise KernelUnavailable(f"{group} query heads per key head is more than {MAX_GROUP}")
    return DecodeAttention(head_dim, group)

