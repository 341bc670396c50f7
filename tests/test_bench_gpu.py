"""benchmarks/gpu.py, the device machine's script, run here on the CPU in each of its modes. A session lent a GPU
has minutes on it: none to spend on a script that a change to the engine broke. On a CPU its checks compare the
engine batched with alone and preempted with uninterrupted, and check the grammar; "CUDA graphs == eager" runs
eagerly on both sides here. What CUDA graphs do is checked on the GPU, by the same script."""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import gpu  # noqa: E402


def test_the_device_checks_pass_on_a_cpu(backend: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    backend.tokenizer.save_pretrained(tmp_path)  # the device machine gets the embedded tokenizer this way too
    passed = gpu.check(gpu.parse(["--device", "cpu", "--check", "--quick", "--tokenizer", str(tmp_path)]))
    report = capsys.readouterr().out
    assert passed, report
    checks = [line.removeprefix("PASS  ").split(" (")[0] for line in report.splitlines() if line.startswith("PASS")]
    assert checks == ["batched greedy == alone", "CUDA graphs == eager", "preempted",
                      "sampled replies the same in two runs for the same seeds, and not the greedy ones",
                      "agents sharing a 96-token start: CUDA graphs == eager",
                      "agents of 96 and 32 tokens, KV in size classes: CUDA graphs == eager",
                      "two engines decoding at once each get the replies of one alone",
                      "grammar-constrained replies under CUDA graphs are whole JSON of their schema"]


def test_the_device_benchmark_and_profile_run_on_a_cpu(capsys: pytest.CaptureFixture[str]) -> None:
    tables: list[str] = []
    with torch.inference_mode():
        quick = gpu.parse(["--device", "cpu", "--quick", "--no-compiled"])
        quick.concurrency = [2]  # one row shows the script's work; each N builds three models
        gpu.measure(quick, tables.append)
        gpu.profile_steps(gpu.parse(["--device", "cpu", "--profile", "--concurrency", "4", "--tokens", "8"]))
    rows = [line for line in tables[-1].splitlines() if line.startswith("| 135M")]
    assert [row.split(" | ")[1] for row in rows] == ["2"]
    assert all(float(row.split(" | ")[2]) > 0 for row in rows)  # the engine's tokens/s
    out = capsys.readouterr().out
    decode = re.search(r"decode steps: (\d+)", out)
    assert decode is not None and int(decode.group(1)) > 0
    parts = re.search(r"by part \(ms each\): forward call ([\d.]+), sampling ([\d.]+), "
                      r"the engine's own work ([\d.]+)", out)
    assert parts is not None and all(float(ms) > 0 for ms in parts.groups()), out


def test_the_size_classes_benchmark_runs_on_a_cpu_and_classes_run_more_agents_in_one_budget() -> None:
    """A 256-token prompt beside three short ones in 50 MB of KV (fp32 on a CPU: 46 KB a position): as one class,
    every row as long as the long one's 512 positions, 23.5 MB each, so they cannot all run at once; in size
    classes they can. With short prompts alone both run all four."""
    tables: list[str] = []
    with torch.inference_mode():
        gpu.measure_classes(gpu.parse(["--device", "cpu", "--quick", "--classes", "--kv-budget-mb", "50"]),
                            tables.append)
    rows = [line.split(" | ") for line in tables[-1].splitlines() if line.startswith("| 4 × 32") or
            line.startswith("| 1 × 256")]
    assert [row[1] for row in rows] == ["one class", "size classes"] * 2
    assert all(float(row[2]) > 0 for row in rows)  # tokens/s
    assert [int(row[4]) for row in rows[:2]] == [4, 4]  # running at once, short prompts
    one_class, classes = (int(row[4]) for row in rows[2:])  # a long prompt beside short ones
    assert one_class < classes == 4, tables[-1]
    assert all(float(row[5]) <= 50 for row in rows)  # KV peak MB, within the budget


def test_the_decode_step_compiles_into_one_graph_on_the_code_paths_a_gpu_runs(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """`gpu.py --compile` compiles the runner's decode step before CUDA graphs capture it. Here, on a GPU's code
    paths (element-wise work and attention in torch, weights neither in blocks nor packed for MKL; a small random
    model): the step traces into one graph without a break, writes its KV in place, and gives the eager step's
    logits."""
    import torch._dynamo

    from aios.llm.hf import weights
    from aios.llm.hf.cbuild import build
    from aios.llm.hf.elementwise import Elementwise
    from aios.llm.hf.graphs import decode_inputs
    from aios.llm.hf.kv import SlotKV
    from aios.llm.hf.runner import Chunk, make_runner

    monkeypatch.setenv("CC", "/nonexistent/cc")
    monkeypatch.setattr(weights, "_mkl_packed", lambda weight: None)
    build.cache_clear()
    try:
        shape = dict(hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=2,
                     num_key_value_heads=1)
        runner = make_runner(gpu.random_model(shape, "cpu"), "native")
    finally:
        build.cache_clear()
    assert runner.kernel is None and type(runner.ops) is Elementwise
    assert all(linear.native_t is not None for linear in runner.linears[1:])  # (the tied output layer: plain)
    eager_decode = runner.decode
    with torch.inference_mode():
        kv = SlotKV(2, 4, runner.kv_heads, runner.head_dim, runner.dtype, runner.device, rows=4)
        runner.forward([Chunk(row, [5 + row, 7, 9], 0) for row in range(4)], kv)
        inputs = decode_inputs([([Chunk(row, [3 + row], 3) for row in range(3)], 4, kv.capacity)])
        expected = eager_decode(inputs, [kv.segment(4)]).clone()
        written = kv.read_row(1, 4)
        kv.keys[0][:, :, 3] = 0  # the step writes its keys again: compiled, it must write into the buffer
        explained = torch._dynamo.explain(eager_decode)(inputs, [kv.segment(4)])
        assert (explained.graph_count, explained.graph_break_count) == (1, 0), explained.break_reasons
        kv.keys[0][:, :, 3] = 0
        # compile_decode raises dynamo's limits for the process of a benchmark; a test gives them back.
        with torch._dynamo.config.patch(recompile_limit=8, fail_on_recompile_limit_hit=False):
            try:
                gpu.compile_decode(runner)
                logits = runner.decode(inputs, [kv.segment(4)])
            finally:
                torch._dynamo.reset()  # compiled entries of the step's code would count in later compiles
        torch.testing.assert_close(logits, expected, atol=1e-5, rtol=1e-5)
        assert torch.equal(kv.read_row(1, 4)[0][0], written[0][0])


@pytest.mark.parametrize(("argv", "error"), [
    (["--kv-budget-mb", "lots"], "argument --kv-budget-mb: invalid int value: 'lots'"),
    (["--concurrency"], "argument --concurrency: expected at least one argument"),
    (["--compile", "yes"], "unrecognized arguments: yes"),
])
def test_the_device_script_refuses_bad_flags_saying_which(argv: list[str], error: str,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        gpu.parse(argv)
    assert error in capsys.readouterr().err


def test_an_engine_of_the_device_script_takes_only_the_decode_modes_it_names() -> None:
    with pytest.raises(ValueError, match="decode: 'fast' is not one of graphs, compiled, eager"):
        gpu.new_engine(None, "fast")


def test_the_host_step_benchmark_times_each_part_of_a_decode_step() -> None:
    import step_host

    with torch.inference_mode():
        step, parts, admitting = step_host.measure(rows=4, tokens=8)
    assert step > 0 and admitting > 0
    assert set(parts) == set(step_host.PARTS) and all(spent > 0 for spent in parts.values()), parts
