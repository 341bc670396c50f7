"""Whether a row's product depends on the rows beside it: the embedded model's native fp32 weights packed for
MKL's GEMM (as the engine keeps them on a CPU with MKL) and as a plain ``x @ W``, for each projection shape of
the models measured, at several thread counts. For every shape, a row's result among R rows is compared bitwise
with its result among 300; the table gives the numbers of rows at which some differed. Prints a table and writes
it into BENCHMARKS.md (section "row-invariance").

    .venv/bin/python benchmarks/row_invariance.py [--threads 1 2 4 8 12 16]
"""

from __future__ import annotations

import argparse
import platform
import sys
from pathlib import Path

import torch

from aios.llm.hf.weights import MKL_PACK_ROWS
from report import write_section

# (outputs, inputs): the embedded model's projections and output layer, and a 1.7B model's.
SHAPES = [(960, 576), (576, 576), (3072, 576), (576, 1536), (49152, 576), (4096, 2048), (16384, 2048),
          (2048, 8192), (256, 256)]
ROWS = [1, 2, 3, 5, 8, 16, 17, 31, 32, 33, 64, 100, 128, 200]


def differing_rows(product: object, weight: torch.Tensor) -> list[int]:
    x = torch.randn(300, weight.shape[1], generator=torch.Generator().manual_seed(1))
    whole = product(x)  # type: ignore[operator]
    return [rows for rows in ROWS if not torch.equal(product(x[:rows].contiguous()), whole[:rows])]  # type: ignore[operator]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2, 4, 8, 12, 16])
    args = parser.parse_args()
    torch.manual_seed(0)
    weights = {shape: torch.randn(*shape) * 0.05 for shape in SHAPES}
    lines = ["## A row's product alone and among others", "",
             f"Machine: {platform.machine()}, torch {torch.__version__}; "
             f"`{' '.join(['.venv/bin/python', 'benchmarks/row_invariance.py', *sys.argv[1:]])}`. For each "
             f"projection shape (outputs × inputs) and thread count, the numbers of rows (of {ROWS}) at which a "
             "row's result differed bitwise from its result among 300 rows; – where none did.", "",
             "| threads | shape | packed for MKL (the engine's native weights) | plain `x @ W` |", "|---|---|---|---|"]
    for threads in args.threads:
        torch.set_num_threads(threads)
        for shape, weight in weights.items():
            packed = torch.ops.mkl._mkl_reorder_linear_weight(weight, MKL_PACK_ROWS)
            packed_product = lambda x: torch.ops.mkl._mkl_linear(x, packed, weight, None, len(x))  # noqa: E731
            plain = weight.t().contiguous()
            cells = [differing_rows(product, weight) for product in (packed_product, lambda x: x @ plain)]
            lines.append(f"| {threads} | {shape[0]} × {shape[1]} | "
                         + " | ".join(", ".join(map(str, rows)) or "–" for rows in cells) + " |")
            print(lines[-1], flush=True)
    write_section(Path(__file__).parents[1] / "BENCHMARKS.md", "row-invariance", "\n".join(lines))


if __name__ == "__main__":
    main()
