"""Helpers for the memory tests: a kernel served on loopback from a thread of this process, on either store
(no model: every memory operation but agentic memory's model calls runs without one), and the exact bodies the
AIOS SDK posts."""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import httpx

from aios.config import load_config
from aios.embeddings import Embedder
from aios.kernel import Kernel
from conftest import ENVELOPE, served_in_thread

MEMORY_REPLY = {"response_class", "memory_id", "content", "metadata", "search_results", "success", "error",
                "status_code"}


def body(agent: str, operation: Any, params: Any) -> dict[str, Any]:
    """What the AIOS SDK posts: ``MemoryQuery(operation_type=..., params=...).model_dump()``."""
    return {"query_type": "memory", "agent_name": agent,
            "query_data": {"query_class": "memory", "operation_type": operation, "params": params}}


@dataclass
class MemoryServer:
    url: str
    client: httpx.Client
    kernel: Kernel
    backend: str

    def query(self, agent: str, operation: str, params: Any) -> dict[str, Any]:
        """The reply of a memory syscall that ran (HTTP 200), checked to have the AIOS shape."""
        reply = self.client.post("/query", json=body(agent, operation, params))
        assert reply.status_code == 200, reply.text
        envelope = reply.json()
        assert set(envelope) == ENVELOPE and set(envelope["response"]) == MEMORY_REPLY
        assert envelope["response"]["response_class"] == "memory" and len(envelope["start_times"]) == 1
        return envelope["response"]

    def ok(self, agent: str, operation: str, params: Any) -> dict[str, Any]:
        response = self.query(agent, operation, params)
        assert response["success"] and response["error"] is None and response["status_code"] == 200, response
        return response

    def add(self, agent: str, content: str, metadata: dict[str, Any] | None = None) -> str:
        return self.ok(agent, "add_memory", {"content": content, "metadata": metadata or {}})["memory_id"]

    def search(self, agent: str, query: str, k: int = 5, **filters: Any) -> list[dict[str, Any]]:
        return self.ok(agent, "retrieve_memory", {"content": query, "k": k, **filters})["search_results"]


def config_text(backend: str, dsn: str | None) -> str:
    memory = "memory: {backend: postgres, dsn: '%s'}" % dsn if backend == "postgres" else "memory: {}"
    return memory + "\n"


@contextmanager
def served_kernel(data: Path, config: str, embedder: Embedder, backend: str = "sqlite") -> Iterator[MemoryServer]:
    """A kernel without models on ``data`` with ``config`` (YAML), served on a free loopback port."""
    (data / "config.yaml").write_text(config)
    kernel = Kernel(load_config(data / "config.yaml", env={"AIOS_DATA_DIR": str(data)}), [], embedder=embedder)
    with served_in_thread(kernel) as url, httpx.Client(base_url=url, timeout=120) as client:
        yield MemoryServer(url, client, kernel, backend)


def dsn_for(backend: str, postgres: Callable[[], str] | None) -> str | None:
    return postgres() if backend == "postgres" and postgres is not None else None
