"""Shared fixtures: a temp data dir for the whole run, the embedded model loaded once, and a real kernel
server (``aios serve`` in a subprocess on a loopback port)."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import threading
import contextlib
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing in the tests may reach a model hub
# torch's threads sleep at once between operations, here and in the kernels the tests start: the suite shares its
# cores with kernels, agents and itself, where spinning (aios's default, aios.torch_threads) only holds cores.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

ENVELOPE = {"response", "start_times", "end_times", "waiting_times", "turnaround_times"}  # a /query reply's keys


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One data dir per test run: the embedded model is converted into it once and reused by every test."""
    path = tmp_path_factory.mktemp("aios-data")
    os.environ["AIOS_DATA_DIR"] = str(path)
    return path


def data_dir_of_its_own(shared: Path, path: Path) -> Path:
    """A data dir at ``path`` for one more kernel: a kernel's storage database is its data dir's alone, so a second
    kernel next to the shared test kernel needs its own. The converted model is shared by hard links (nothing
    copied, nothing converted again); a conversion in progress is left out."""
    path.mkdir(parents=True, exist_ok=True)
    if (shared / "models").is_dir():
        shutil.copytree(shared / "models", path / "models", copy_function=os.link,
                        ignore=shutil.ignore_patterns(".converting-*", "*.lock"))
    return path


@pytest.fixture(scope="session")
def config(data_dir: Path):  # noqa: ANN201
    from aios.config import load_config

    return load_config(env={"AIOS_DATA_DIR": str(data_dir)})


@pytest.fixture(scope="session")
def backend(config):  # noqa: ANN001, ANN201
    """The embedded model, loaded in this process (first load converts the GGUF into the cache)."""
    from aios.kernel import load_cores

    (core,) = load_cores(config)
    yield core
    core.close()


class KernelProcess:
    def __init__(self, process: subprocess.Popen[str], url: str, log: Path) -> None:
        self.process, self.url, self.log = process, url, log
        self.client = httpx.Client(base_url=url, timeout=httpx.Timeout(300.0, connect=10.0))

    def query(self, body: dict) -> httpx.Response:
        return self.client.post("/query", json=body)


def start_kernel(args: list[str], env: dict[str, str], log: Path) -> KernelProcess:
    """Run ``aios serve --port 0`` and wait for the line with its URL (its log goes to ``log``)."""
    with log.open("w") as log_file:
        process = subprocess.Popen(
            [sys.executable, "-m", "aios", "serve", "--port", "0", *args],
            stdout=subprocess.PIPE, stderr=log_file, text=True, env=env,
        )
    for line in process.stdout:  # type: ignore[union-attr]
        if line.startswith("AIOS kernel ready at "):
            return KernelProcess(process, line.split(" at ", 1)[1].strip(), log)
    process.wait()
    raise RuntimeError(f"kernel did not start (exit {process.returncode}):\n{log.read_text()}")


def wait_until(condition: Any, attempts: int = 200) -> None:
    """Re-check a condition that another process makes true (bounded; each check is an HTTP round trip)."""
    import time

    for _ in range(attempts):
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError("condition never became true")


def stop_kernel(kernel: KernelProcess) -> None:
    kernel.client.close()
    kernel.process.terminate()
    kernel.process.wait(timeout=30)


def refused_before_running(reply: httpx.Response, reply_fields: set[str]) -> dict[str, Any]:
    """The ``response`` of a ``/query`` whose syscall the kernel refused before it ran, checked: HTTP 200 (where an
    AIOS agent can read why), a reply of the shape ``reply_fields``, no scheduling slices."""
    assert reply.status_code == 200, reply.text
    envelope = reply.json()
    assert set(envelope) == ENVELOPE and set(envelope["response"]) == reply_fields and envelope["start_times"] == []
    return envelope["response"]


@contextmanager
def served_in_thread(kernel: Any, starting: contextlib.AbstractContextManager[Any] | None = None) -> Iterator[str]:
    """Serve an in-process Kernel on a free loopback port from a thread (so a test can reach into it, e.g. move
    a clock); yields its URL and stops it afterwards. ``starting``: a context the thread is started in (one that
    sets what the thread inherits)."""
    from aios.server import serve

    ready, box = threading.Event(), {}

    async def main() -> None:
        box["stop"], box["loop"] = asyncio.Event(), asyncio.get_running_loop()
        await serve(kernel, "127.0.0.1", 0, lambda url: (box.__setitem__("url", url), ready.set()), box["stop"])

    thread = threading.Thread(target=asyncio.run, args=(main(),), daemon=True)
    with starting or contextlib.nullcontext():
        thread.start()
    assert ready.wait(60), "the kernel did not start"
    try:
        yield box["url"]
    finally:
        box["loop"].call_soon_threadsafe(box["stop"].set)
        thread.join(60)


@pytest.fixture(scope="session")
def kernel(backend, data_dir: Path) -> Iterator[KernelProcess]:  # noqa: ANN001
    """A real kernel server on loopback, serving the embedded model (its cache is already warm)."""
    running = start_kernel([], {**os.environ, "AIOS_DATA_DIR": str(data_dir)}, data_dir / "kernel.log")
    yield running
    stop_kernel(running)


@pytest.fixture(scope="session")
def embedder():  # noqa: ANN201
    """The shared embedding model (all-MiniLM-L6-v2), loaded once for every test that embeds in this process."""
    from aios.embeddings import Embedder

    model = Embedder()
    yield model
    model.close()


@pytest.fixture(scope="session")
def postgres(tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201
    """A real PostgreSQL (with pgvector) from the pgserver package, on a socket in a temp dir; yields a function
    that makes a fresh database and returns its DSN. Skipped, with the reason shown, if it cannot start."""
    import uuid

    try:
        import pgserver
        import psycopg

        server = pgserver.get_server(tmp_path_factory.mktemp("pgdata"), cleanup_mode="stop")
    except Exception as exc:  # noqa: BLE001 - whatever stops it, the PostgreSQL tests say so and skip
        pytest.skip(f"PostgreSQL (pgserver) could not start here: {type(exc).__name__}: {exc}")

    def fresh_database() -> str:
        name = f"t{uuid.uuid4().hex[:12]}"
        with psycopg.connect(server.get_uri(), autocommit=True) as admin:
            admin.execute(f"CREATE DATABASE {name}")
        return server.get_uri(name)

    yield fresh_database
    server.cleanup()
