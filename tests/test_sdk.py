"""The agent SDK against a real kernel: typed replies, the one error type, and its bad-input table."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from typing import Any, Callable

import pytest
from pydantic import BaseModel, field_validator

from aios.sdk import (
    AIOSError,
    LLMResponse,
    kernel_url,
    llm_chat,
    llm_chat_with_json_output,
    llm_chat_with_tool_call_output,
)
from conftest import KernelProcess

CAPITAL = [{"role": "user", "content": "What is the capital of France?"}]
TOOL = {"name": "demo/get_weather", "description": "Get the weather for a city.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}


def test_importing_the_sdk_loads_no_heavy_library() -> None:
    code = "import sys, aios.sdk; print(json.dumps(sorted(m for m in ('torch', 'transformers', 'fastapi', 'uvicorn') if m in sys.modules)))"
    result = subprocess.run([sys.executable, "-c", "import json; " + code], capture_output=True, text=True, check=True)
    assert json.loads(result.stdout) == []


def test_llm_chat_returns_a_typed_reply_with_timings(kernel: KernelProcess) -> None:
    reply = llm_chat("sdk/chat", CAPITAL, kernel.url, temperature=0, max_new_tokens=24)
    assert isinstance(reply, LLMResponse)
    assert "Paris" in reply.response_message and reply.tool_calls is None
    assert reply.finished and reply.status_code == 200 and reply.error is None
    assert len(reply.timings.start_times) == 1 and 0 <= reply.timings.waiting <= reply.timings.turnaround


def test_the_kernel_url_comes_from_the_environment(kernel: KernelProcess, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIOS_KERNEL_URL", kernel.url + "/")
    assert kernel_url() == kernel.url
    assert llm_chat("sdk/env", CAPITAL, temperature=0, max_new_tokens=4).status_code == 200
    monkeypatch.delenv("AIOS_KERNEL_URL")
    assert kernel_url() == "http://localhost:8000"


def test_json_output_parses(kernel: KernelProcess) -> None:
    reply = llm_chat_with_json_output("sdk/json", CAPITAL, kernel.url, response_format={"type": "json_object"},
                                      temperature=0, max_new_tokens=24)
    assert isinstance(reply.json(), dict)


def test_tool_call_output_gives_typed_calls_to_the_offered_tool(kernel: KernelProcess) -> None:
    reply = llm_chat_with_tool_call_output("sdk/tools", [{"role": "user", "content": "Weather in Paris?"}], [TOOL],
                                           kernel.url, temperature=0, max_new_tokens=32)
    assert reply.response_message is None and reply.tool_calls
    for call in reply.tool_calls:
        assert call.name == "demo/get_weather" and isinstance(call.parameters, dict) and call.id


def test_tool_choice_auto_lets_the_model_answer_in_prose(kernel: KernelProcess) -> None:
    reply = llm_chat_with_tool_call_output("sdk/tools", [{"role": "user", "content": "Hello! How are you?"}], [TOOL],
                                           kernel.url, tool_choice="auto", temperature=0, max_new_tokens=24)
    assert reply.tool_calls == [] and reply.response_message


class Place(BaseModel):
    city: str
    country: str


def test_a_pydantic_response_format_gives_an_instance(kernel: KernelProcess) -> None:
    place = llm_chat_with_json_output("sdk/json", [{"role": "user", "content": "I spent a week in Rome, Italy."}],
                                      kernel.url, response_format=Place, temperature=0, max_new_tokens=40)
    assert isinstance(place, Place) and place.city == "Rome"


class ShoutedPlace(BaseModel):
    city: str

    @field_validator("city")
    @classmethod
    def _upper(cls, city: str) -> str:
        if not city.isupper():
            raise ValueError("city must be in capitals")
        return city


def test_a_reply_that_fails_a_pydantic_validator_raises_naming_it(kernel: KernelProcess) -> None:
    """A validator is more than the JSON Schema says, so the reply can match the schema and still not fit."""
    with pytest.raises(AIOSError) as caught:
        llm_chat_with_json_output("sdk/json", [{"role": "user", "content": "I spent a week in Rome, Italy."}],
                                  kernel.url, response_format=ShoutedPlace, temperature=0, max_new_tokens=40)
    assert caught.value.status_code == 502 and "does not fit ShoutedPlace" in caught.value.message
    assert "city must be in capitals" in caught.value.message


def test_a_response_format_class_that_is_not_pydantic_is_refused() -> None:
    with pytest.raises(TypeError, match="pydantic model class, not dict"):
        llm_chat_with_json_output("sdk/json", CAPITAL, "http://127.0.0.1:9", response_format=dict)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


BAD_CALLS: list[tuple[str, Callable[[str], Any], int, str]] = [
    ("unreachable-kernel", lambda url: llm_chat("a", CAPITAL, f"http://127.0.0.1:{_free_port()}"), 0,
     "cannot reach the kernel"),
    ("bad-temperature", lambda url: llm_chat("a", CAPITAL, url, temperature=-1), 400,
     "llm request: temperature: Input should be greater than or equal to 0, not -1"),
    ("zero-max-tokens", lambda url: llm_chat("a", CAPITAL, url, max_new_tokens=0), 400, "max_new_tokens"),
    ("empty-agent-name", lambda url: llm_chat("", CAPITAL, url), 422, "agent_name"),
    ("no-messages", lambda url: llm_chat("a", [], url), 400, "messages: List should have at least 1 item"),
    ("bad-role", lambda url: llm_chat("a", [{"role": "bot", "content": "x"}], url), 422, "role"),
    ("unknown-model", lambda url: llm_chat("a", CAPITAL, url, llms=[{"name": "nope"}]), 404, "nope"),
    ("bad-response-format", lambda url: llm_chat_with_json_output("a", CAPITAL, url, response_format={"type": "x"}),
     422, "response_format"),
    ("no-tools", lambda url: llm_chat_with_tool_call_output("a", CAPITAL, [], url), 400, "tools"),
    ("tool-without-name", lambda url: llm_chat_with_tool_call_output("a", CAPITAL, [{"description": "x"}], url),
     422, "name"),
    ("bad-tool-choice", lambda url: llm_chat_with_tool_call_output("a", CAPITAL, [TOOL], url, tool_choice="maybe"),
     422, "tool_choice"),
    ("tool-choice-not-offered", lambda url: llm_chat_with_tool_call_output(
        "a", CAPITAL, [TOOL], url, tool_choice={"type": "function", "function": {"name": "x/y"}}), 400, "'x/y'"),
    ("invalid-schema", lambda url: llm_chat_with_json_output("a", CAPITAL, url, response_format={
        "type": "object", "properties": {"n": {"type": "integer", "minimum": "zero"}}}), 400,
     "not a valid JSON Schema at properties/n/minimum"),
]


@pytest.mark.parametrize(("call", "status", "text"), [b[1:] for b in BAD_CALLS], ids=[b[0] for b in BAD_CALLS])
def test_bad_sdk_calls_raise_one_error_type_with_status_and_message(
    kernel: KernelProcess, call: Callable[[str], Any], status: int, text: str
) -> None:
    with pytest.raises(AIOSError) as caught:
        call(kernel.url)
    assert caught.value.status_code == status
    assert text in caught.value.message
    assert llm_chat("sdk/after", CAPITAL, kernel.url, temperature=0, max_new_tokens=2).finish_reason == "length"


def test_a_syscall_that_fails_inside_raises_with_the_reply_attached(kernel: KernelProcess) -> None:
    """A JSON request whose reply cannot be complete (cut after two tokens) fails with 502 and keeps the raw text."""
    schema = {"type": "json_schema", "json_schema": {"name": "s", "schema": {"type": "string"}}}
    with pytest.raises(AIOSError) as caught:
        llm_chat_with_json_output("sdk/json", CAPITAL, kernel.url, response_format=schema, temperature=0,
                                  max_new_tokens=2)
    assert caught.value.status_code == 502 and "cut off after 2 tokens (max_new_tokens=2" in caught.value.message
    assert caught.value.response.response_message is not None


def test_sdk_runs_in_a_fresh_process_with_only_the_environment(kernel: KernelProcess) -> None:
    script = ("from aios.sdk import llm_chat; "
              "print(llm_chat('sdk/proc', [{'role': 'user', 'content': 'What is the capital of France?'}], "
              "temperature=0, max_new_tokens=24).response_message)")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                            env={**os.environ, "AIOS_KERNEL_URL": kernel.url}, check=True)
    assert "Paris" in result.stdout
