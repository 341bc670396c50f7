"""The element-wise work around a Llama-family layer's matrix products: the residual add with the RMS norm after
it, the rotary embedding of queries and keys, and SwiGLU's gate.

:class:`Elementwise` does it in torch, on any device and dtype. :class:`KernelElementwise` does it on a CPU in one
C call each (``elementwise_kernel.c``, compiled when the model loads, like the other kernels): torch spends about
ten operations on an RMS norm alone, each paying its dispatch, and inside a decode step of 16 rows these small
operations took longer than attention; in C a decode step is 1.12-1.21x faster at 1-32 rows (BENCHMARKS.md,
"Engine speed against its targets (CPU)"). Each row is computed the same whatever the rows beside it.
"""

from __future__ import annotations

import ctypes

import torch
import torch.nn.functional as F

from aios.llm.hf.cbuild import bind, build, built_or_why

_P, _I = ctypes.c_void_p, ctypes.c_int64


class Elementwise:
    """In torch."""

    def __init__(self, eps: float) -> None:
        self.eps = eps

    def add_norm(self, x: torch.Tensor, y: torch.Tensor | None,
                 weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``x + y`` (``x`` itself where ``y`` is None; ``[tokens, hidden]`` each), and its RMS norm times
        ``weight``. ``x`` may be updated in place: use the sum returned."""
        if y is not None:
            x = x + y
        return x, F.rms_norm(x, weight.shape, weight, self.eps)

    def rotate(self, qkv: torch.Tensor, heads: int, head_dim: int, cos: torch.Tensor,
               sin: torch.Tensor) -> torch.Tensor:
        """The first ``heads`` heads of ``qkv`` (``[tokens, *]``: the queries, then the keys) turned by the
        rotary embedding of their token's position (``cos``, ``sin``: ``[tokens, head_dim]``), as ``[tokens,
        heads, head_dim]``; ``qkv`` may be updated in place."""
        x = qkv[:, :heads * head_dim].view(-1, heads, head_dim)
        half = head_dim // 2
        rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
        return x * cos[:, None] + rotated * sin[:, None]

    def gate(self, gate_up: torch.Tensor) -> torch.Tensor:
        """``silu(gate) * up`` of ``gate_up`` (``[tokens, 2 * intermediate]``: the gate, then the up
        projection)."""
        gate, up = gate_up.chunk(2, dim=-1)
        return F.silu(gate) * up


class KernelElementwise(Elementwise):
    """In C, for fp32 activations on a CPU. Raises :class:`~aios.llm.hf.cbuild.KernelUnavailable` where the kernel
    cannot be built."""

    def __init__(self, eps: float) -> None:
        super().__init__(eps)
        # Fast math: glibc's vector expf for the gate (and the CPU's reciprocal square root for the norm).
        library = build("elementwise_kernel.c", ("-ffast-math",))
        self._add_norm = bind(library, "add_rms_norm", (_I, _I, _P, _P, _P, ctypes.c_float, _P, ctypes.c_int))
        self._rotate = bind(library, "rotate", (_I, _I, _I, _I, _P, _P, _P, ctypes.c_int))
        self._gate = bind(library, "gate", (_I, _I, _P, _P, ctypes.c_int))

    def add_norm(self, x: torch.Tensor, y: torch.Tensor | None,
                 weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if x.dim() != 2:
            raise ValueError(f"the norm takes [tokens, hidden] rows, not {list(x.shape)}")
        x = _checked(x, x.shape)
        if y is not None:
            y = _checked(y, x.shape)
        weight = _checked(weight, x.shape[1:])
        normed = torch.empty_like(x)
        self._add_norm(x.shape[0], x.shape[1], x.data_ptr(), None if y is None else y.data_ptr(), weight.data_ptr(),
                       self.eps, normed.data_ptr(), torch.get_num_threads())
        return x, normed

    def rotate(self, qkv: torch.Tensor, heads: int, head_dim: int, cos: torch.Tensor,
               sin: torch.Tensor) -> torch.Tensor:
        if qkv.dim() != 2 or qkv.shape[1] < heads * head_dim or head_dim % 2:
            raise ValueError(f"the rotary embedding of {heads} heads of {head_dim} needs an even head size and "
                             f"[tokens, at least {heads * head_dim}] rows, not {list(qkv.shape)}")
        tokens = len(qkv)
        qkv = _checked(qkv, qkv.shape)
        cos, sin = _checked(cos, (tokens, head_dim)), _checked(sin, (tokens, head_dim))
        self._rotate(tokens, qkv.shape[1], heads, head_dim, qkv.data_ptr(), cos.data_ptr(), sin.data_ptr(),
                     torch.get_num_threads())
        return qkv[:, :heads * head_dim].view(tokens, heads, head_dim)

    def gate(self, gate_up: torch.Tensor) -> torch.Tensor:
        tokens, width = len(gate_up), gate_up.shape[-1] // 2
        gate_up = _checked(gate_up, (tokens, 2 * width))
        out = gate_up.new_empty(tokens, width)
        self._gate(tokens, width, gate_up.data_ptr(), out.data_ptr(), torch.get_num_threads())
        return out


def _checked(t: torch.Tensor, shape: tuple[int, ...] | torch.Size) -> torch.Tensor:
    """``t`` as the kernel reads it: fp32 on the CPU, of ``shape``, contiguous (a copy where it is not)."""
    if t.dtype != torch.float32 or t.device.type != "cpu" or t.shape != shape:
        raise ValueError(f"the element-wise kernel takes fp32 {list(shape)} CPU tensors, not "
                         f"{str(t.dtype).removeprefix('torch.')} {list(t.shape)} on {t.device.type}")
    return t.contiguous()


def load(eps: float, device: torch.device, dtype: torch.dtype) -> tuple[Elementwise, str]:
    """The element-wise work for activations in ``dtype`` on ``device``: in C where it can be (a CPU, fp32, a C
    compiler), else in torch; and the status's word on which (``c-kernel``, ``torch (why)``, ``torch``)."""
    if device.type != "cpu" or dtype != torch.float32:
        return Elementwise(eps), "torch"
    ops, status = built_or_why(lambda: KernelElementwise(eps), "element-wise work")
    return ops if ops is not None else Elementwise(eps), status
