"""Memory across real kernel processes (``aios serve`` on loopback): memories survive a kernel that is killed and
started again; two kernels on one PostgreSQL database see each other's memories, with 20 agents writing through
both at once; and agentic memory whose model cannot be reached stores the plain note and says why.

These kernels have no local model: their one model is an OpenAI-compatible server that is not running (nothing
listens on port 9), so they start in seconds, and every model call fails the way a down provider does."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from aios import sdk
from conftest import KernelProcess, start_kernel, stop_kernel

DOWN_MODEL = "llms: {models: [{name: remote-model, backend: openai, hostname: 'http://127.0.0.1:9'}]}\n"


def kernel_on(data: Path, memory: str, log: str) -> KernelProcess:
    data.mkdir(parents=True, exist_ok=True)
    (data / "config.yaml").write_text(DOWN_MODEL + memory)
    env = {**os.environ, "AIOS_DATA_DIR": str(data), "AIOS_CONFIG": str(data / "config.yaml")}
    return start_kernel([], env, data / log)


@pytest.fixture
def kernels() -> Iterator[Callable[..., KernelProcess]]:
    """Starts kernels (``kernel_on``'s arguments) and stops those still running at the end."""
    started: list[KernelProcess] = []

    def start(*args: Any) -> KernelProcess:
        started.append(kernel_on(*args))
        return started[-1]

    yield start
    for running in started:
        if running.process.poll() is None:
            stop_kernel(running)


def test_memories_survive_a_kernel_killed_and_started_again(tmp_path: Path, kernels) -> None:  # noqa: ANN001
    first = kernels(tmp_path, "memory: {}\n", "first.log")
    agent = "durable/agent"
    kept = sdk.create_memory(agent, "The garage door opener code is 7319.", {"tags": ["home"]}, first.url)
    changed = sdk.create_memory(agent, "Tomas prefers aisle seats.", base_url=first.url)
    sdk.update_memory(agent, changed.memory_id, "Tomas prefers window seats on long flights.", base_url=first.url)
    dropped = sdk.create_memory(agent, "A note to forget.", base_url=first.url)
    sdk.delete_memory(agent, dropped.memory_id, first.url)
    first.process.send_signal(signal.SIGKILL)  # no clean shutdown: what was answered must already be on disk
    first.process.wait(30)

    second = kernels(tmp_path, "memory: {}\n", "second.log")
    assert sdk.get_memory(agent, kept.memory_id, second.url).note.tags == ["home"]
    again = sdk.get_memory(agent, changed.memory_id, second.url)
    assert again.content == "Tomas prefers window seats on long flights." and len(again.note.evolution_history) == 1
    with pytest.raises(sdk.AIOSError) as gone:
        sdk.get_memory(agent, dropped.memory_id, second.url)
    assert gone.value.status_code == 404
    found = sdk.search_memories(agent, "What opens the garage?", 1, second.url).search_results
    assert [r.memory_id for r in found] == [kept.memory_id]


def test_agentic_memory_with_its_model_down_stores_the_plain_note_and_says_why(tmp_path: Path,
                                                                                kernels) -> None:  # noqa: ANN001
    kernel = kernels(tmp_path, "memory: {}\n", "kernel.log")
    agent = "degraded/agent"
    reply = sdk.create_agentic_memory(agent, "Max the dog needs his vaccination shots next month.",
                                      {"tags": ["pets"]}, kernel.url)
    assert reply.success and reply.error is None and reply.status_code == 200
    assert reply.agentic["analysed"] is False and reply.agentic["linked"] == []
    (problem,) = reply.agentic["problems"]
    assert problem.startswith("note construction: the model call failed: cannot reach the openai backend at "
                              "http://127.0.0.1:9") and problem.endswith("stored as a plain note")
    stored = sdk.get_memory(agent, reply.memory_id, kernel.url).note
    assert (stored.tags, stored.keywords, stored.context, stored.links) == (["pets"], [], "", [])
    assert "agentic" not in sdk.get_memory(agent, reply.memory_id, kernel.url).metadata  # a report, not stored


def test_two_kernels_on_one_postgres_database_share_every_memory(tmp_path: Path, kernels,
                                                                 postgres) -> None:  # noqa: ANN001
    config = "memory: {backend: postgres, dsn: '%s'}\n" % postgres()
    one, two = kernels(tmp_path / "one", config, "one.log"), kernels(tmp_path / "two", config, "two.log")
    agent = "shared/agent"
    written = sdk.create_memory(agent, "The conference in Vienna runs from May 5 to May 8.", base_url=one.url)
    assert sdk.get_memory(agent, written.memory_id, two.url).content == written.content
    sdk.update_memory(agent, written.memory_id, metadata={"tags": ["travel"]}, base_url=two.url)
    assert sdk.search_memories(agent, "When is the event in Austria?", 1, one.url,
                               tags=["travel"]).search_results[0].memory_id == written.memory_id
    sdk.delete_memory(agent, written.memory_id, one.url)
    with pytest.raises(sdk.AIOSError) as gone:
        sdk.get_memory(agent, written.memory_id, two.url)
    assert gone.value.status_code == 404

    def write(n: int) -> tuple[str, set[tuple[str, str]]]:
        agent, url = f"shared/agent-{n:02d}", (one, two)[n % 2].url
        texts = [f"agent {n} fact {i}: the locker code is {n}{i}{n}" for i in range(5)]
        return agent, {(sdk.create_memory(agent, text, base_url=url).memory_id, text) for text in texts}

    with ThreadPoolExecutor(20) as pool:
        written_by = dict(pool.map(write, range(20)))
    for agent, notes in written_by.items():  # every note, through either kernel
        for kernel in (one, two):
            found = sdk.search_memories(agent, "locker code fact", 100, kernel.url).search_results
            assert {(r.memory_id, r.content) for r in found} == notes


def test_serve_with_a_memory_database_it_cannot_open_stops_with_one_line(tmp_path: Path) -> None:
    (tmp_path / "config.yaml").write_text(
        DOWN_MODEL + "memory: {backend: postgres, dsn: 'postgresql://nobody@127.0.0.1:9/none?connect_timeout=5'}\n")
    result = subprocess.run([sys.executable, "-m", "aios", "serve", "--config", str(tmp_path / "config.yaml"),
                             "--port", "0"], capture_output=True, text=True, timeout=300,
                            env={**os.environ, "AIOS_DATA_DIR": str(tmp_path)})
    assert result.returncode == 1 and result.stdout == ""
    line = result.stderr.strip().splitlines()[-1]  # after the log of what start-up did first
    assert line.startswith("aios: memory: cannot open the postgres store: ") and "127.0.0.1" in line
    assert "Traceback" not in result.stderr
