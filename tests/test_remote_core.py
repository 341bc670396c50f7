"""A real remote core, not a mock: a second ``aios serve`` process whose model is reached by the first through
the second's OpenAI-compatible ``/v1`` (the ``vllm`` backend, as for any OpenAI-compatible server; and LiteLLM's
``hosted_vllm`` provider). Chat, tools, JSON and streaming pass through both kernels; the back kernel's grammar
makes the structured replies valid."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Iterator

import jsonschema
import pytest

from conftest import KernelProcess, data_dir_of_its_own, start_kernel, stop_kernel

MODEL = "HuggingFaceTB/SmolLM2-135M-Instruct"
CAPITAL = [{"role": "user", "content": "What is the capital of France?"}]
CITY = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
TOOL = {"type": "function", "function": {"name": "get_weather", "parameters": CITY}}


def front_kernel(model: str, data_dir: Path, home: Path) -> KernelProcess:
    """A kernel whose one model is ``model`` (a YAML flow mapping), with a data dir of its own."""
    config = home / "config.yaml"
    config.write_text(f"llms: {{models: [{model}]}}\n")
    own = data_dir_of_its_own(data_dir, home / "data")
    return start_kernel(["--config", str(config)], {**os.environ, "AIOS_DATA_DIR": str(own)}, home / "front.log")


@pytest.fixture(scope="module")
def front(kernel: KernelProcess, data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[KernelProcess]:
    """A kernel whose one model is the shared test kernel's, over HTTP."""
    running = front_kernel(f"{{name: {MODEL}, backend: vllm, hostname: '{kernel.url}'}}", data_dir,
                           tmp_path_factory.mktemp("front"))
    yield running
    stop_kernel(running)


def ask(front: KernelProcess, **query_data: Any) -> dict[str, Any]:
    reply = front.query({"agent_name": "front/agent", "query_type": "llm",
                         "query_data": {"messages": CAPITAL, "temperature": 0, "max_new_tokens": 24, **query_data}})
    assert reply.status_code == 200
    return reply.json()


def test_the_front_kernel_serves_the_remote_model(front: KernelProcess) -> None:
    (model,) = front.client.get("/status").json()["llms"]
    assert model["backend"] == "vllm" and model["structured_output"] == "provider"
    response = ask(front)["response"]
    assert "Paris" in response["response_message"] and response["usage"]["completion_tokens"] > 0


def test_tool_calls_pass_through_both_kernels(front: KernelProcess) -> None:
    response = ask(front, messages=[{"role": "user", "content": "Weather in Paris?"}], tools=[TOOL],
                   action_type="chat_with_tool_call_output", max_new_tokens=40)["response"]
    assert response["error"] is None and response["tool_calls"]
    for call in response["tool_calls"]:
        assert call["name"] == "get_weather"
        jsonschema.validate(call["parameters"], CITY)


def test_json_passes_through_both_kernels(front: KernelProcess) -> None:
    schema = {"type": "object", "properties": {"capital": {"type": "string"}}, "required": ["capital"]}
    response = ask(front, action_type="chat_with_json_output", max_new_tokens=40,
                   response_format={"type": "json_schema", "json_schema": {"name": "c", "schema": schema}})["response"]
    assert response["error"] is None
    jsonschema.validate(json.loads(response["response_message"]), schema)


def test_a_stream_passes_through_both_kernels(front: KernelProcess) -> None:
    """The front kernel asks the back one for a stream and hands each delta on as it arrives."""
    reply = front.client.post("/v1/chat/completions", json={
        "model": MODEL, "messages": CAPITAL, "max_tokens": 24, "temperature": 0, "stream": True,
        "stream_options": {"include_usage": True}})
    items = [item.removeprefix("data: ") for item in reply.text.split("\n\n") if item]
    assert items[-1] == "[DONE]"
    chunks = [json.loads(item) for item in items[:-1]]
    texts = [c["choices"][0]["delta"].get("content") for c in chunks if c["choices"]]
    assert sum(1 for t in texts if t) > 1 and "Paris" in "".join(t or "" for t in texts)
    assert chunks[-1]["usage"]["completion_tokens"] > 0  # the back kernel's count, passed on


def test_an_unreachable_back_kernel_fails_the_syscall_and_the_front_keeps_serving(
        front: KernelProcess, data_dir: Path, tmp_path: Path) -> None:
    lonely = front_kernel(f"{{name: {MODEL}, backend: vllm, hostname: 'http://127.0.0.1:9'}}", data_dir, tmp_path)
    try:
        for _ in range(2):
            response = ask(lonely)["response"]
            assert response["status_code"] == 502 and "cannot reach the vllm backend" in response["error"]
    finally:
        stop_kernel(lonely)


def test_a_litellm_core_reaches_the_second_kernel(kernel: KernelProcess, data_dir: Path, tmp_path: Path) -> None:
    """LiteLLM's OpenAI-compatible provider (``hosted_vllm``) pointed at the back kernel: chat and tool calls."""
    litellm_front = front_kernel(f"{{name: {MODEL}, backend: hosted_vllm, hostname: '{kernel.url}/v1'}}", data_dir,
                                 tmp_path)
    try:
        (model,) = litellm_front.client.get("/status").json()["llms"]
        assert model["backend"] == "hosted_vllm"
        assert "Paris" in ask(litellm_front)["response"]["response_message"]
        response = ask(litellm_front, messages=[{"role": "user", "content": "Weather in Paris?"}], tools=[TOOL],
                       action_type="chat_with_tool_call_output", max_new_tokens=40)["response"]
        assert response["error"] is None and [call["name"] for call in response["tool_calls"]][:1] == ["get_weather"]
        jsonschema.validate(response["tool_calls"][0]["parameters"], CITY)
    finally:
        stop_kernel(litellm_front)
