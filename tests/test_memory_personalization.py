"""Personalization on the embedded model, in a kernel process of its own with ``memory.auto_inject`` and
``memory.auto_extract`` on (the session's kernel keeps them off, the default): an agent's chat is answered
with its own memories at hand, another agent's is not, and each exchange is kept as a memory of its agent.

The kernel reads the model from the session's cache (its ``models`` directory is linked in), so nothing is
converted again."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator

import pytest

from aios import sdk
from conftest import KernelProcess, start_kernel, stop_kernel

CONFIG = "memory: {auto_inject: true, auto_extract: true, relevance_threshold: 0.3}\n"
QUESTION = [{"role": "user", "content": "What is the name of my cat?"}]


@pytest.fixture(scope="module")
def personal(kernel: KernelProcess, data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[KernelProcess]:
    own = tmp_path_factory.mktemp("personal")
    (own / "models").symlink_to(data_dir / "models", target_is_directory=True)
    (own / "config.yaml").write_text(CONFIG)
    env = {**os.environ, "AIOS_DATA_DIR": str(own), "AIOS_CONFIG": str(own / "config.yaml")}
    running = start_kernel([], env, own / "kernel.log")
    yield running
    stop_kernel(running)


def test_a_chat_is_answered_with_the_agents_own_memories_and_kept_as_a_new_one(personal: KernelProcess) -> None:
    url = personal.url
    sdk.create_memory("pets/owner", "The user has a cat called Miso.", base_url=url)
    sdk.create_memory("pets/owner", "The quarterly report is due on Friday.", base_url=url)
    mine = sdk.llm_chat("pets/owner", QUESTION, url, temperature=0.0, max_new_tokens=24)
    theirs = sdk.llm_chat("pets/stranger", QUESTION, url, temperature=0.0, max_new_tokens=24)
    assert "Miso" in mine.response_message and mine.error is None
    assert "Miso" not in theirs.response_message  # another agent's memories are never injected

    kept = sdk.search_memories("pets/owner", "name of my cat", 10, url, category="conversation").search_results
    (exchange,) = kept
    assert exchange.content == f"User: What is the name of my cat?\nAssistant: {mine.response_message}"
    assert exchange.note.extra == {"source": "auto_extract"}
    (other,) = sdk.search_memories("pets/stranger", "cat", 10, url).search_results
    assert other.content.startswith("User: What is the name of my cat?") and "Miso" not in other.content


def test_json_and_tool_calls_are_not_personalized(personal: KernelProcess) -> None:
    url = personal.url
    reply = sdk.llm_chat_with_json_output("pets/json", QUESTION, url, response_format={
        "type": "json_schema", "json_schema": {"name": "a", "schema": {
            "type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]}}},
        temperature=0.0, max_new_tokens=24)
    assert reply.error is None and isinstance(reply.json(), dict)
    assert sdk.search_memories("pets/json", "cat", 5, url).search_results == []  # nothing was kept
