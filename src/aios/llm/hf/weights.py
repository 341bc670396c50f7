"""Linear-layer weights in the formats the engine's own runner can compute with.

Decoding multiplies a few rows of activations by every weight of the model, so a decode step is bound by how
many bytes of weights it reads (and, on a CPU, by how well its kernels do with few rows). A format is chosen per
model (``llms.models[].weights``):

- ``native``: the weights in the dtype the model was loaded in (fp32 on a CPU); the reference.
- ``bf16``: half the bytes. On a CPU whose oneDNN has bfloat16 kernels (AMX or AVX512-BF16) the weights are
  prepacked into oneDNN's blocked layout once, and each product runs as one oneDNN call (plain ``F.linear`` in
  bf16 was slower than fp32 at one row, and a third slower than the packed call at 8-32 rows).
- ``int8``: weight-only int8 with one scale per output channel (activations stay bfloat16), a quarter of the
  bytes. The fastest for a handful of rows; with many rows its kernel is slower than bf16's, so above
  ``INT8_ROWS`` rows the same int8 weights are multiplied in bf16 (dequantized once: int8 and bf16 together
  take three quarters of native fp32's memory). The model is the same either way; the rounding of the two
  kernels differs, so a greedy reply can depend on how many rows its step had.

The compact formats stay choices, not the default: their products round each result to bfloat16, and which
kernel oneDNN picks depends on the number of rows, so a greedy reply can change with what it was batched with
(fp32 results differ only in their last bits, which has not changed a reply in the tests).
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F

WeightFormat = Literal["native", "bf16", "int8"]

# Above this many rows, int8 weights are multiplied through their bf16 copy: measured on this project's 2-core
# AVX512/AMX machine (benchmarks/profile_step.py), the int8 kernel wins at 1-8 rows and bf16 from 16 on.
INT8_ROWS = 8
# oneDNN picks its blocked layout for a batch size; the engine's steps have 1 to a few dozen rows.
PACK_ROWS = 16


def onednn_bf16() -> bool:
    """Whether this CPU runs bfloat16 matrix products in hardware through oneDNN (AMX or AVX512-BF16)."""
    return torch.backends.mkldnn.is_available() and bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


class Linear:
    """``y = x @ W.T (+ bias)`` for activations ``x`` of shape ``[rows, in]``; the result has ``x``'s dtype."""

    def __init__(self, weight: torch.Tensor, fmt: WeightFormat, bias: torch.Tensor | None = None) -> None:
        weight = weight.detach()
        self.out_features = weight.shape[0]
        self.bias = None if bias is None else bias.detach()
        self.native = weight.contiguous() if fmt == "native" else None
        self.int8 = self.scales = None
        bf16 = weight.to(torch.bfloat16).contiguous() if fmt == "bf16" else None
        if fmt == "int8":
            scales = weight.float().abs().amax(dim=1).clamp(min=1e-8) / 127
            self.int8 = (weight.float() / scales[:, None]).round().clamp(-127, 127).to(torch.int8).contiguous()
            self.scales = scales.to(torch.bfloat16)
            bf16 = (self.int8.float() * self.scales.float()[:, None]).to(torch.bfloat16).contiguous()
        # Either the oneDNN-packed bf16 weights (CPU with bf16 kernels) or plain ones, never both in memory.
        self.packed = self.bf16 = None
        if bf16 is not None and bf16.device.type == "cpu" and onednn_bf16():
            self.packed = torch.ops.mkldnn._reorder_linear_weight(bf16, PACK_ROWS)
        else:
            self.bf16 = bf16

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.native is not None:
            return F.linear(x, self.native, self.bias)
        if self.int8 is not None and x.shape[0] <= INT8_ROWS:
            y = torch._weight_int8pack_mm(x.to(torch.bfloat16), self.int8, self.scales)
        elif self.packed is not None:
            y = torch.ops.mkldnn._linear_pointwise(x.to(torch.bfloat16), self.packed, None, "none", [], "")
        else:
            y = F.linear(x.to(torch.bfloat16), self.bf16)
        y = y.to(x.dtype)
        # The bias is added in the activations' dtype: rounding it to bf16 would only add error.
        return y if self.bias is None else y + self.bias
