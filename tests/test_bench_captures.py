"""benchmarks/captures.py: how many CUDA graph captures a run needs, one KV class against size classes, counted on
a CPU with the graphs' stand-in for capture (a replay runs the step again)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import captures  # noqa: E402


def test_one_class_replays_the_warm_ups_graphs_and_classes_capture_more_for_rows_of_many_lengths(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Short prompts read in one step: one class keeps its buffers after the warm-up's generations end, and the
    run's first steps replay the warm-up's graph; size classes free a class's buffers once it empties, and
    capture again. A long prompt beside them, read 128 tokens a step, puts rows in several classes, whose
    shapes combine: more captures; and more still when agents arrive one after another. The tables go into
    their section of the given file, the command named."""
    out = tmp_path / "BENCHMARKS.md"
    out.write_text("# Benchmarks\n")
    argv = ["--agents", "16", "--tokens", "40", "--long-tokens", "300", "--prefill", "4096", "128", "--arrivals", "40",
            "--out", str(out)]
    captures.main(argv)
    rows = [line.split(" | ") for line in capsys.readouterr().out.splitlines() if line.startswith("| ")]
    rows, arrivals = rows[:4], rows[4:]
    assert [(row[0], row[1]) for row in rows] == [("| 16 × 32 tokens", "4,096"), ("| 16 × 32 tokens", "128"),
                                                  ("| 1 × 300 + 15 × 32 tokens", "4,096"),
                                                  ("| 1 × 300 + 15 × 32 tokens", "128")]
    counts = [(int(row[2]), int(row[3].rstrip(" |"))) for row in rows]
    assert counts[0][0] < counts[0][1], counts
    assert counts[3][1] > counts[3][0], counts
    # Agents arriving one after another: the same decode steps, and size classes capture more (every class's
    # buffers and rows make a step's shape; one class changes only as the longest row and the batch grow).
    assert [row[0] for row in arrivals] == ["| one class", "| size classes"]
    (steps, one), (same_steps, classes) = ((int(row[1]), int(row[2])) for row in arrivals)
    assert steps == same_steps > 0 and classes > one, arrivals
    text = out.read_text()
    assert text.startswith("# Benchmarks\n") and "<!-- kv-captures:begin -->" in text
    assert "benchmarks/captures.py --agents 16" in text and rows[3][0].lstrip("| ") in text


@pytest.mark.parametrize("argv, error", [
    (["--agents", "0"], "argument --agents: 0 is not a positive number"),
    (["--tokens", "-3"], "argument --tokens: -3 is not a positive number"),
    (["--prefill"], "argument --prefill: expected at least one argument"),
    (["--prefill", "many"], "argument --prefill: 'many' is not a whole number"),
    (["--long-tokens", "1.5"], "argument --long-tokens: '1.5' is not a whole number"),
    (["--arrivals", "none"], "argument --arrivals: 'none' is not a whole number"),
    (["--rows", "4"], "unrecognized arguments: --rows 4"),
])
def test_bad_flags_are_refused_naming_the_flag(argv: list[str], error: str,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        captures.main(argv)
    assert exit_.value.code == 2
    assert error in capsys.readouterr().err
