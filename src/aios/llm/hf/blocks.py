"""Native weights held as the GGUF blocks they exactly are, and multiplied by a C kernel (``blocks_kernel.c``).

A model read from a quantized GGUF file (the embedded model is one) has fp32 weights that are each ``q * d + m``
for a small integer q and one pair (d, m) per block of 32 inputs: Q4_1 (q in 0..15) for the embedded model's
layers, Q8_0 (q in -127..127, m = 0) for its embedding. :func:`exact_blocks` finds such a layout from the fp32
weights alone and keeps it only if it gives back every weight bit for bit, so the model computed is the same fp32
model. The kernel restores a block of weights at a time into a buffer in cache and multiplies in fp32; it reads
3/16 (4 bits) or 5/16 (8 bits) of fp32's bytes, which is what bounds a decode step: on the embedded model, with
AVX-512, a step is 1.5-3x faster than with fp32 packed for MKL at 1-32 rows, and a prompt is read about as fast
(BENCHMARKS.md, "Weight formats of the engine's runner"); its AVX2 build gives the same bits, somewhat slower.
Each output's sum runs in the same order whatever the number of rows, so a row's result never depends on the
rows beside it.
"""

from __future__ import annotations

import ctypes
import threading
from dataclasses import dataclass

import torch

from aios.llm.hf.cbuild import KernelUnavailable, bind, build

GROUP = 32  # inputs per block (Q4_1's and Q8_0's)
# Why the kernel is unavailable on a CPU without the vector instructions it is written for (ARM, say): the status
# says so, and the tests that need the kernel's exactness skip there on this, not on other failures.
NEEDS_SIMD = "the block kernel needs AVX-512, or AVX2 with FMA"
PANEL = 32  # outputs the kernel computes together
_P, _I = ctypes.c_void_p, ctypes.c_int64
_ARGUMENTS = (_I, _I, _I, _P, _P, _P, ctypes.c_int, _P, _P, ctypes.c_int)
# Weights searched at a time: the search's temporaries (a few times this, in fp32) stay small beside a model.
_WEIGHTS_AT_ONCE = 1 << 22


@dataclass(frozen=True, eq=False)
class Blocks:
    """A weight ``[out, in]`` as blocks: ``q`` (uint8, two 4-bit values a byte, or int8) in the kernel's layout
    (outputs in panels of ``PANEL``, each panel's inputs in order) and ``scales`` ``[panels, in / GROUP, 2,
    PANEL]`` (d, then m, for each output of a panel)."""

    bits: int  # 4 or 8
    q: torch.Tensor
    scales: torch.Tensor
    out_features: int
    in_features: int

    @property
    def kind(self) -> str:
        return "q4_1" if self.bits == 4 else "q8_0"

    def rows(self, ids: torch.Tensor) -> torch.Tensor:
        """Weights of outputs ``ids``, ``[len(ids), in]`` fp32, bit for bit the weights these blocks were found
        in (an embedding tied to this layer looks its tokens up here)."""
        panel, column = ids // PANEL, ids % PANEL
        if self.bits == 4:
            q = (self.q[panel, :, column % (PANEL // 2)] >> (column // (PANEL // 2) * 4)[:, None]) & 15
        else:
            q = self.q[panel, :, column]
        scale, low = self.scales[panel, :, 0, column], self.scales[panel, :, 1, column]
        blocks = self.in_features // GROUP
        return _restored(q.view(len(ids), blocks, GROUP), scale, low).view(len(ids), self.in_features)


def exact_blocks(weight: torch.Tensor) -> Blocks | None:
    """``weight`` (fp32 ``[out, in]`` on the CPU) as Q4_1 or Q8_0 blocks, if one of them gives back every weight
    exactly; else ``None``. A matrix that is neither is usually told by its first outputs."""
    out_features, in_features = weight.shape
    if (weight.dtype != torch.float32 or weight.device.type != "cpu" or not out_features or not in_features
            or out_features % PANEL or in_features % GROUP):
        return None
    outputs = max(PANEL, _WEIGHTS_AT_ONCE // in_features)
    for bits in (4, 8):
        parts = []
        for start in range(0, out_features, outputs):
            part = _found(weight[start:start + outputs], bits)
            if part is None:
                break
            parts.append(part)
        else:
            q, scale, low = (torch.cat(pieces) for pieces in zip(*parts))
            return Blocks(bits, _panels(q, bits), _scale_panels(scale, low), out_features, in_features)
    return None


def _found(weight: torch.Tensor, bits: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None:
    """``(q, d, m)`` with ``weight == q * d + m`` in every block, d a half-precision value (so that q * d is exact
    in fp32, and the kernel's fused multiply-add gives the same weight), or ``None``. Q4_1 stores a block's
    smallest weight as m and its range over 15 as d; Q8_0 its largest magnitude over 127 as d, m = 0."""
    blocks = weight.reshape(len(weight), -1, GROUP)
    if bits == 4:
        low, top, levels = blocks.amin(dim=2), blocks.amax(dim=2), 15
        scale = ((top - low) / levels).half().float()
    else:
        low, levels = blocks.new_zeros(blocks.shape[:2]), 127
        scale = (blocks.abs().amax(dim=2) / levels).half().float()
    if not (scale.isfinite().all() and low.isfinite().all()):  # NaN or infinite weights, or d beyond float16
        return None
    q = ((blocks - low[..., None]) / scale.clamp(min=torch.finfo(torch.float32).tiny)[..., None]).round()
    q = q.clamp(0 if bits == 4 else -levels, levels)
    # Bit for bit: == would take a weight of -0.0 for the +0.0 that q * d + m gives.
    if not torch.equal(_restored(q, scale, low).view(torch.int32), blocks.contiguous().view(torch.int32)):
        return None
    return q.to(torch.uint8 if bits == 4 else torch.int8).view(weight.shape), scale, low


def _restored(q: torch.Tensor, scale: torch.Tensor, low: torch.Tensor) -> torch.Tensor:
    """``q * d + m`` per block (``q`` ``[outputs, blocks, GROUP]``), as the kernel computes it."""
    return q.float() * scale[..., None] + low[..., None]


def _panels(q: torch.Tensor, bits: int) -> torch.Tensor:
    """``[out, in]`` values as ``[panels, in, PANEL]`` bytes; 4-bit ones two to a byte, output j of a panel in
    the low half of byte j and output j + 16 in the high half."""
    out_features, in_features = q.shape
    panels = q.view(out_features // PANEL, PANEL, in_features).transpose(1, 2)
    if bits == 8:
        return panels.contiguous()
    half = PANEL // 2
    return (panels[..., :half] | (panels[..., half:] << 4)).contiguous()


def _scale_panels(scale: torch.Tensor, low: torch.Tensor) -> torch.Tensor:
    """``[out, blocks]`` d and m as ``[panels, blocks, 2, PANEL]``."""
    out_features, blocks = scale.shape
    per_panel = [t.reshape(out_features // PANEL, PANEL, blocks).transpose(1, 2) for t in (scale, low)]
    return torch.stack(per_panel, dim=2).contiguous()


class BlockProducts:
    """The compiled kernel: ``x @ W.T`` for weights held as :class:`Blocks`. Raises
    :class:`~aios.llm.hf.cbuild.KernelUnavailable` where it cannot be built here. Safe to call from several
    threads: each has its own scratch."""

    def __init__(self) -> None:
        # No contraction: every multiply-add the kernel fuses it fuses explicitly, the same in each inlined copy.
        library = build("blocks_kernel.c", ("-ffp-contract=off",))
        if not bind(library, "block_kernel_built", (), ctypes.c_int)():
            raise KernelUnavailable(f"{NEEDS_SIMD}, which the C compiler's target lacks")
        self._function = bind(library, "block_matmul", _ARGUMENTS)
        self._local = threading.local()

    def __call__(self, x: torch.Tensor, blocks: Blocks) -> torch.Tensor:
        """``x``: fp32 ``[rows, in]`` on the CPU; the result is fp32 ``[rows, out]``."""
        if x.dtype != torch.float32 or x.device.type != "cpu" or x.dim() != 2 or x.shape[1] != blocks.in_features:
            raise ValueError(f"block products take fp32 [rows, {blocks.in_features}] CPU activations, not "
                             f"{str(x.dtype).removeprefix('torch.')} {list(x.shape)} on {x.device.type}")
        x, threads = x.contiguous(), torch.get_num_threads()
        y = x.new_empty(len(x), blocks.out_features)
        scratch = self._scratch(threads * blocks.in_features * PANEL)  # a restored panel per thread
        self._function(len(x), blocks.out_features, blocks.in_features, x.data_ptr(), blocks.q.data_ptr(),
                       blocks.scales.data_ptr(), blocks.bits, y.data_ptr(), scratch.data_ptr(), threads)
        return y

    def _scratch(self, floats: int) -> torch.Tensor:
        """This thread's buffer of at least ``floats`` floats, kept between calls (allocating it each call costs
        page faults); torch aligns CPU tensors to 64 bytes."""
        scratch = getattr(self._local, "scratch", None)
        if scratch is None or scratch.numel() < floats:
            scratch = self._local.scratch = torch.empty(floats, dtype=torch.float32)
        return scratch
