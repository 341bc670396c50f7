"""Decode attention on a CPU in one C function (``attention_kernel.c``), compiled for a model's head size when
the model loads and called through ctypes.

The function writes each decode token's key and value into its cache row and attends over the row, all rows in
one call on torch's threads: 2-2.6x faster than the same attention in torch at 16-32 rows, where torch pays a
small-matrix product's overhead per row and key head (``benchmarks/profile.md``). Where it cannot be built (no C
compiler, a head size it does not take, not fp32), :func:`load` raises :class:`KernelUnavailable` saying why,
and the runner attends in torch.
"""

from __future__ import annotations

import ctypes
import functools
import os
import shlex
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch

SOURCE = Path(__file__).with_name("attention_kernel.c")
# -march=native: the library is built on the machine that runs it. -ffast-math lets the compiler vectorize the
# sums and the exponentials (glibc's vector expf); the kernel never relies on infinities or NaN.
FLAGS = ("-O3", "-march=native", "-ffast-math", "-fopenmp", "-shared", "-fPIC")
LANES = 16  # floats in the kernel's vector type
MAX_GROUP = 16  # query heads per key head it keeps in registers
COMPILE_TIMEOUT_S = 120
_P, _I = ctypes.c_void_p, ctypes.c_int64
_ARGUMENTS = [_I, _P, _P, _P, _P, _P, _I, _P, _I, _P, _I, _P, _P, _I, _I, _I, _I, _P, _P, _P, ctypes.c_int]


class KernelUnavailable(Exception):
    """The kernel cannot serve this model here; the message says why."""


@dataclass
class DecodeRows:
    """The decode tokens of one step that attend in one cache: the i-th is token ``tokens[i]`` of the step's
    q/k/v, goes into cache row ``rows[i]`` at ``offsets[i]``, and its result to row ``written[i]`` of the
    output. Built once a step, used by every layer."""

    tokens: torch.Tensor
    rows: torch.Tensor
    offsets: torch.Tensor
    written: torch.Tensor
    longest: int  # the most positions a row attends to
    scratch: torch.Tensor  # the scores, per thread


class DecodeAttention:
    """The compiled kernel for one head size (``head_dim``) and grouping (query heads per key head)."""

    def __init__(self, head_dim: int, group: int) -> None:
        self.head_dim, self.group = head_dim, group
        self._function = _build(head_dim, group)

    def rows(self, tokens: torch.Tensor, rows: torch.Tensor, offsets: torch.Tensor, written: torch.Tensor,
             longest: int) -> DecodeRows:
        """A step's decode tokens (int64 tensors on the CPU, see :class:`DecodeRows`)."""
        scratch = torch.empty(torch.get_num_threads() * self.group * longest)
        return DecodeRows(tokens, rows, offsets, written, longest, scratch)

    def __call__(self, batch: DecodeRows, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, keys: torch.Tensor,
                 values: torch.Tensor, out: torch.Tensor, lse: torch.Tensor | None = None) -> None:
        """Write ``k``/``v`` (``[tokens, kv_heads, head_dim]``) into one layer's ``keys``/``values`` (``[rows,
        kv_heads, capacity, head_dim]``) at the batch's rows and offsets and attend with ``q`` (``[tokens, heads,
        head_dim]``); each of q/k/v may have any stride between tokens but must be contiguous within one. Results
        go to ``out`` (``[*, heads * head_dim]``) and, if given, each head's log-sum-exp of its scores to ``lse``
        (``[*, heads]``), at the batch's ``written`` rows."""
        threads = len(batch.scratch) // (self.group * batch.longest)
        self._function(len(batch.tokens), batch.tokens.data_ptr(), batch.rows.data_ptr(), batch.offsets.data_ptr(),
                       batch.written.data_ptr(), q.data_ptr(), q.stride(0), k.data_ptr(), k.stride(0),
                       v.data_ptr(), v.stride(0), keys.data_ptr(), values.data_ptr(), keys.stride(0),
                       keys.stride(1), keys.shape[1], batch.longest, out.data_ptr(),
                       None if lse is None else lse.data_ptr(), batch.scratch.data_ptr(), threads)


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


@functools.cache
def _build(head_dim: int, group: int) -> ctypes._CFuncPtr:
    """Compile the kernel for one shape (a fraction of a second; once per process and shape) and load it."""
    compiler = shlex.split(os.environ.get("CC") or "cc")
    with tempfile.TemporaryDirectory(prefix="aios-attention-") as folder:
        library = Path(folder) / "attention_kernel.so"
        command = [*compiler, *FLAGS, f"-DHEAD_DIM={head_dim}", f"-DGROUP={group}", "-o", str(library),
                   str(SOURCE), "-lm"]
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=COMPILE_TIMEOUT_S)
        except OSError as exc:
            raise KernelUnavailable(f"cannot run the C compiler {compiler[0]!r}: {exc.strerror or exc} "
                                    "(set CC to one)") from exc
        except subprocess.TimeoutExpired as exc:
            raise KernelUnavailable(f"the C compiler {compiler[0]!r} took over {COMPILE_TIMEOUT_S} s") from exc
        if done.returncode != 0:
            lines = (done.stderr or done.stdout).strip().splitlines()
            raise KernelUnavailable(f"the C compiler {compiler[0]!r} failed: "
                                    f"{lines[-1] if lines else f'exit status {done.returncode}'}")
        # Loaded after torch: the kernel's OpenMP library is the one torch already loaded (same soname), so it
        # runs on torch's threads. The file can go once loaded.
        function = ctypes.CDLL(str(library)).decode_attention
    function.argtypes, function.restype = _ARGUMENTS, None
    return function
