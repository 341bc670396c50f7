"""Linear-layer weights in the formats the engine's own runner can compute with.

Decoding multiplies a few rows of activations by every weight of the model, so a decode step is bound by how
many bytes of weights it reads (and, on a CPU, by how well its kernels do with few rows). A format is chosen per
model (``llms.models[].weights``):

- ``native``: the weights in the dtype the model was loaded in (fp32 on a CPU); the reference. On a CPU, fp32
  weights that are exactly GGUF blocks (a model read from a Q4_1 or Q8_0 file) are held as those blocks and
  multiplied by a C kernel (:mod:`aios.llm.hf.blocks`): the same values, under a fifth of the bytes (Q4_1), the
  fastest decode steps of all formats here at 1-32 rows (prompts: bf16's and int8's), and a row's result independent
  of the batch. Other weights: on a CPU with MKL (torch's x86 builds) they are packed once into the layout of MKL's
  GEMM (``cblas_sgemm_pack``), whose product gives a row bitwise the same result whatever the number of rows, with
  up to 8 threads (every projection shape of the embedded model and a 1.7B one, ``benchmarks/row_invariance.py``; a
  tiny one, 96 × 128, differed at one row; with 12 threads or more MKL splits some products of a few rows over its
  threads, and they differ). That is on Intel's CPUs; on AMD's EPYC the rows past the last group of four differ,
  so there the rows go in groups of four (zeros fill the last), which the kernel measures once (``mkl_row_multiple``).
  Plain ``x @ W`` takes another kernel for one row, and for the larger shapes rounds
  differently at most numbers of rows. So a sequence's logits do not depend on what it is batched with. It is also
  faster with several rows (decode steps of the embedded model at 8-32 rows 1.05-1.09× plain; at one row and reading
  a prompt 0.97-0.98×: ``benchmarks/weights.py``). Elsewhere, and for a layer whose rows an embedding looks up, they
  are kept as [in, out]; such a tied output layer's products go in groups of rows too, measured on it
  (``plain_row_multiple``), so that a reply's logits do not depend on its batch there either.
- ``bf16``: half the bytes. On a CPU whose oneDNN has bfloat16 kernels (AMX or AVX512-BF16) the weights are
  prepacked into oneDNN's blocked layout once, and each product runs as one oneDNN call (plain ``F.linear`` in
  bf16 was slower than fp32 at one row, and a third slower than the packed call at 8-32 rows).
- ``int8``: weight-only int8 with one scale per output channel (activations stay bfloat16), a quarter of the
  bytes. Its kernel is fast for a handful of rows; with many rows its kernel is slower than bf16's, so above
  ``INT8_ROWS`` rows the same int8 weights are multiplied in bf16 (dequantized once: int8 and bf16 together
  take three quarters of native fp32's memory). The model is the same either way; the rounding of the two
  kernels differs, so a greedy reply can depend on how many rows its step had.
- ``int4``: weight-only 4-bit, in groups of ``INT4_GROUP`` inputs with a scale and a zero each (activations
  stay bfloat16), an eighth of the bytes: the fewest of any format. It is the layout of a Q4_1 GGUF file, so
  a model loaded from one (the embedded model is) gets its own 4-bit values back, only its scales rounded to
  bfloat16; any other model is quantized to it (round to nearest). Its kernel computes every row the same way
  whatever the number of rows, so the weights never make a reply depend on its batch.

The compact formats stay choices, not the default: their products round each input and result to bfloat16.
For bf16 and int8, which kernel oneDNN picks depends on the number of rows, so a greedy reply can change with
what it was batched with. int4 does not, but bfloat16 rounding still magnifies the last-bit differences of
attention computed along another path (a prompt read after a prefix-cache hit or a shared start, or a
generation resumed after preemption): such a reply can differ from the same prompt read whole (fp32 results
differ only in their last bits, which has not changed a reply in the tests).
"""

from __future__ import annotations

import functools
import logging
from typing import Any, Callable, Literal

import torch
import torch.nn.functional as F

from aios.llm.hf.blocks import BlockProducts, exact_blocks

log = logging.getLogger(__name__)

WeightFormat = Literal["native", "bf16", "int8", "int4"]
CPU_FORMATS = frozenset({"int8", "int4"})  # their kernels are the CPU's

# Above this many rows, int8 weights are multiplied through their bf16 copy: measured on this project's 2-core
# AVX512/AMX machine (benchmarks/profile_step.py), the int8 kernel wins at 1-8 rows and bf16 from 16 on.
INT8_ROWS = 8
# int4 weights: inputs per scale and zero (Q4_1's block). The kernel also needs outputs in multiples of 16.
INT4_GROUP = 32
INT4_OUT_MULTIPLE = 16
# oneDNN picks its blocked layout for a batch size; the engine's steps have 1 to a few dozen rows.
PACK_ROWS = 16
# MKL packs for a number of rows too; every number of rows then multiplies alike (measured: packed for 16, 64
# or 512 rows, the same results; for 64 as fast as any from 1 to 64 rows, and prompts' 512 rows as fast as plain).
MKL_PACK_ROWS = 64


class FormatError(ValueError):
    """A weight that the chosen format cannot hold."""


def mkl_packs(weight: torch.Tensor) -> bool:
    """Whether ``weight`` (native) is packed for MKL's GEMM: fp32 on a CPU, with a torch built with MKL (whose
    private packing ops are there)."""
    return (weight.device.type == "cpu" and weight.dtype == torch.float32 and torch.backends.mkl.is_available()
            and hasattr(torch.ops.mkl, "_mkl_reorder_linear_weight"))


def _mkl_packed(weight: torch.Tensor) -> torch.Tensor | None:
    """``weight`` packed for MKL's GEMM, or ``None`` where it cannot be. MKL asks for a buffer several times the
    weight's size and writes only the weight's size of it: the rest is address space, never memory, but a machine
    that counts address space (overcommit off, a ulimit) may refuse it; the weight then stays plain."""
    if not mkl_packs(weight):
        return None
    try:
        return torch.ops.mkl._mkl_reorder_linear_weight(weight, MKL_PACK_ROWS)
    except RuntimeError as exc:
        log.warning("native weights stay unpacked: MKL's packing failed (%s)", exc)
        return None


@functools.cache
def mkl_row_multiple(threads: int) -> int | None:
    """In groups of how many rows MKL's packed GEMM must be given activations, on this CPU with ``threads``
    threads, for each row's result to be the same whatever rows are beside it: 1 where any number will do
    (Intel's CPUs, up to 8 threads), 4 on AMD's EPYC (rows past the last group of four go through another kernel,
    whose last bits differ); None where no group of up to 16 rows does. Measured once per thread count, on a
    product of the embedded model's size (every shape measured behaves alike: ``benchmarks/row_invariance.py``)."""
    numbers = torch.Generator().manual_seed(0)
    weight, x = torch.randn(576, 576, generator=numbers), torch.randn(48, 576, generator=numbers)
    packed = _mkl_packed(weight)
    if packed is None:
        return None
    multiple = _row_multiple(_mkl_product(packed, weight.new_empty(1).expand(weight.shape)), x, (1, 2, 4, 8, 16))
    if multiple is None:
        log.warning("MKL's products depend on the rows beside them here (%d threads): a greedy reply may change "
                    "with its batch", threads)
    return multiple


_PLAIN_MULTIPLES: dict[tuple[Any, ...], int | None] = {}


def plain_row_multiple(weight_t: torch.Tensor) -> int | None:
    """The same for a plain ``x @ W`` by this ``[in, out]`` matrix (a tied output layer's, which must give its
    rows back to the embedding, so it is not packed): 2 on Intel's CPUs at such shapes (one row takes another
    kernel), 4 on AMD's EPYC (rows past the last group of four, as for packed weights); None where no group of up
    to 4 rows does. Measured on the matrix itself, once per shape and thread count: products of 1 to 15 rows
    against one of 16 (0.4 s for the embedded model's output layer, 1.4 s for one of 152k tokens, on 2 cores)."""
    key = (tuple(weight_t.shape), weight_t.dtype, weight_t.device, torch.get_num_threads())
    if key not in _PLAIN_MULTIPLES:
        x = torch.randn(16, weight_t.shape[0], generator=torch.Generator().manual_seed(0)).to(weight_t)
        _PLAIN_MULTIPLES[key] = _row_multiple(lambda rows: rows @ weight_t, x, (1, 2, 4))
    return _PLAIN_MULTIPLES[key]


def _row_multiple(product: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor,
                  multiples: tuple[int, ...]) -> int | None:
    """The smallest of ``multiples`` for which each of the first rows of ``x`` (as many as ``x`` has, less one),
    multiplied in groups of it, gives what it gives among all of ``x`` (whose rows are a multiple of each)."""
    whole = product(x)
    for multiple in multiples:
        if all(torch.equal(_in_groups(x[:rows], multiple, product), whole[:rows]) for rows in range(1, len(x))):
            return multiple
    return None


def _mkl_product(packed: torch.Tensor, shape: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
    # Rows must be the last argument: for another count the op multiplies by the placeholder instead.
    return lambda x: torch.ops.mkl._mkl_linear(x, packed, shape, None, len(x))


def _in_groups(x: torch.Tensor, multiple: int, product: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """``product(x)``, given rows in groups of ``multiple`` (zeros fill the last)."""
    rows = len(x)
    whole = -(-rows // multiple) * multiple
    if whole != rows:
        x = torch.cat([x, x.new_zeros(whole - rows, x.shape[1])])
    return product(x)[:rows]


def onednn_bf16() -> bool:
    """Whether this CPU runs bfloat16 matrix products in hardware through oneDNN (AMX or AVX512-BF16)."""
    return torch.backends.mkldnn.is_available() and bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


class Linear:
    """``y = x @ W.T (+ bias)`` for activations ``x`` of shape ``[rows, in]``; the result has ``x``'s dtype."""

    def __init__(self, weight: torch.Tensor, fmt: WeightFormat, bias: torch.Tensor | None = None,
                 lookup: bool = False, block_kernel: BlockProducts | None = None) -> None:
        """``lookup``: an embedding tied to this layer looks its tokens up here (:meth:`weight_rows`), so native
        weights stay a plain matrix (MKL's packed layout gives no rows back) unless they are blocks.
        ``block_kernel``: the CPU kernel for native weights that are exactly GGUF blocks
        (:mod:`aios.llm.hf.blocks`); with it, such weights are held as their blocks."""
        weight = weight.detach()
        self.out_features, self.in_features = weight.shape
        self.bias = None if bias is None else bias.detach()
        self.native_t = self.mkl = None
        self.rows_in_groups: int | None = None  # native products go in groups of this many rows (row invariance)
        self.block_kernel = block_kernel if fmt == "native" else None
        self.blocks = exact_blocks(weight) if self.block_kernel is not None else None
        if fmt == "native" and self.blocks is None:
            packed = None if lookup else _mkl_packed(weight)
            if packed is not None:  # the call reads only the weight's shape from its second argument
                self.mkl = _mkl_product(packed, weight.new_empty(1).expand(weight.shape))
                self.rows_in_groups = mkl_row_multiple(torch.get_num_threads())
            else:
                # As [in, out]: MKL multiplies a few rows by it faster than by [out, in] (a decode step of the
                # embedded model at 1-32 rows: 1.07-1.2x), with the same results from 16 rows on.
                self.native_t = weight.t().contiguous()
                if lookup and weight.device.type == "cpu":  # the output layer: its logits must not depend on
                    self.rows_in_groups = plain_row_multiple(self.native_t)  # the batch (a GPU's others do)
        self.int8 = self.int4 = None
        self.scales: torch.Tensor | None = None  # int8: one per output; int4: (scale, zero) per group and output
        if fmt == "int4":
            self.int4, self.scales = _int4_pack(*int4_groups(weight))
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

    @property
    def row_invariant(self) -> bool:
        """Whether a row's result is bitwise the same whatever the number of rows multiplied with it: native
        weights in blocks, or multiplied in groups of rows where some group makes it so (packed for MKL; plain,
        for a tied output layer). Other plain weights round differently at most numbers of rows."""
        return self.blocks is not None or self.rows_in_groups is not None

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.blocks is not None:
            y = self.block_kernel(x, self.blocks)
            return y if self.bias is None else y + self.bias
        if self.mkl is not None:
            assert x.dim() == 2, "packed weights take [rows, in] activations"
            y = _in_groups(x, self.rows_in_groups or 1, self.mkl)
            return y if self.bias is None else y + self.bias
        if self.native_t is not None:
            return _in_groups(x, self.rows_in_groups, self._plain) if self.rows_in_groups else self._plain(x)
        if self.int4 is not None:
            y = torch._weight_int4pack_mm_for_cpu(x.to(torch.bfloat16), self.int4, INT4_GROUP, self.scales)
        elif self.int8 is not None and x.shape[0] <= INT8_ROWS:
            y = torch._weight_int8pack_mm(x.to(torch.bfloat16), self.int8, self.scales)
        elif self.packed is not None:
            y = torch.ops.mkldnn._linear_pointwise(x.to(torch.bfloat16), self.packed, None, "none", [], "")
        else:
            y = F.linear(x.to(torch.bfloat16), self.bf16)
        y = y.to(x.dtype)
        # The bias is added in the activations' dtype: rounding it to bf16 would only add error.
        return y if self.bias is None else y + self.bias

    def _plain(self, x: torch.Tensor) -> torch.Tensor:
        return x @ self.native_t if self.bias is None else torch.addmm(self.bias, x, self.native_t)

    def weight_rows(self, ids: torch.Tensor) -> torch.Tensor:
        """Rows ``ids`` of a native weight, ``[len(ids), in]``: an embedding tied to this output layer looks its
        tokens up here, so the model holds that matrix once."""
        if self.blocks is not None:
            return self.blocks.rows(ids)
        if self.native_t is None:
            raise TypeError("this layer's weights give no rows back: make it with lookup=True")
        return self.native_t[:, ids].t().contiguous()


def int4_groups(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(q, scale, low)``: ``weight ≈ q * scale + low`` per group of ``INT4_GROUP`` inputs, q in 0..15.

    The grid spans each group's minimum to its maximum, as Q4_1 quantizes, so weights that came from a Q4_1
    file come back to their own 4-bit values."""
    out_features, in_features = weight.shape
    if in_features % INT4_GROUP or out_features % INT4_OUT_MULTIPLE:
        raise FormatError(f"int4 weights need inputs in multiples of {INT4_GROUP} and outputs in multiples of "
                          f"{INT4_OUT_MULTIPLE}; this projection has {in_features} inputs and {out_features} outputs")
    groups = weight.float().reshape(out_features, -1, INT4_GROUP)
    low = groups.amin(dim=2)
    scale = ((groups.amax(dim=2) - low) / 15).clamp(min=torch.finfo(torch.float32).tiny)
    q = ((groups - low[..., None]) / scale[..., None]).round().clamp(0, 15).to(torch.int32)
    return q.reshape(weight.shape), scale, low


def _int4_pack(q: torch.Tensor, scale: torch.Tensor, low: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The kernel's packed 4-bit weights, and its ``[groups, out, (scale, zero)]`` table: it computes
    ``(q - 8) * scale + zero``, so zero = low + 8 × scale."""
    scales = torch.stack([scale.t(), (low + 8 * scale).t()], dim=2).to(torch.bfloat16).contiguous()
    return torch._convert_weight_to_int4pack_for_cpu(q, 2), scales
