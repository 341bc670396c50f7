"""benchmarks/peers.py's report: how rounds become the table (nothing here builds or runs llama.cpp)."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from peers import FP32, KERNEL, Q4_1, Round, median_ratio, prompt, table  # noqa: E402


def rounds_at(concurrency: int, rates: dict[str, list[float]]) -> list[Round]:
    """Rounds of one second each, interleaved as the benchmark runs them, with the given tokens/s."""
    count = len(rates[KERNEL])
    return [Round(server, concurrency, 1.0, [int(rates[server][i])], [0.5]) for i in range(count)
            for server in (KERNEL, FP32, Q4_1)]


def test_a_ratio_compares_each_round_with_the_peer_run_beside_it() -> None:
    # The machine slows down in the third round: per-round ratios see through it, a ratio of medians does not.
    rounds = rounds_at(4, {KERNEL: [10, 30, 20], FP32: [20, 30, 80], Q4_1: [10, 10, 10]})
    assert median_ratio(rounds, KERNEL, FP32, 4) == 0.5
    assert median_ratio(rounds, KERNEL, Q4_1, 4) == 2.0


def test_the_table_has_a_row_per_concurrency_with_rates_ratios_and_kernel_tokens() -> None:
    rounds = rounds_at(1, {KERNEL: [10], FP32: [30], Q4_1: [60]}) + rounds_at(4, {KERNEL: [40], FP32: [80],
                                                                                   Q4_1: [50]})
    rows = table(rounds, [1, 4]).splitlines()[2:]
    assert rows == ["| 1 | 10.0 | 30.0 | 60.0 | 0.33 | 0.17 | 0.50 / 0.50 / 0.50 | 10.0 |",
                    "| 4 | 40.0 | 80.0 | 50.0 | 0.50 | 0.80 | 0.50 / 0.50 / 0.50 | 40.0 |"]


def test_every_request_of_a_round_of_32_has_its_own_prompt() -> None:
    assert len({prompt(i) for i in range(32)}) == 32
