"""The agent SDK against a real kernel: typed replies, the one error type, and its bad-input table."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable

import pytest
from pydantic import BaseModel, field_validator

from aios.sdk import (
    AIOSError,
    LLMResponse,
    create_dir,
    create_file,
    create_memory,
    delete_dir,
    file_history,
    get_tool,
    grant_permission,
    kernel_url,
    list_agents,
    list_dir,
    list_memories,
    llm_chat,
    llm_chat_with_json_output,
    llm_chat_with_tool_call_output,
    llm_operate_file,
    read_file,
    rollback_file,
    submit_agent,
    wait_agent,
    write_file,
)
from conftest import KernelProcess

CAPITAL = [{"role": "user", "content": "What is the capital of France?"}]
TOOL = {"name": "demo/get_weather", "description": "Get the weather for a city.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}


def test_importing_the_sdk_loads_no_heavy_library() -> None:
    code = "import sys, aios.sdk; print(json.dumps(sorted(m for m in ('torch', 'transformers', 'fastapi', 'uvicorn') if m in sys.modules)))"
    result = subprocess.run([sys.executable, "-c", "import json; " + code], capture_output=True, text=True, check=True)
    assert json.loads(result.stdout) == []


def test_llm_chat_returns_a_typed_reply_with_timings_and_token_usage(kernel: KernelProcess) -> None:
    reply = llm_chat("sdk/chat", CAPITAL, kernel.url, temperature=0, max_new_tokens=24)
    assert isinstance(reply, LLMResponse)
    assert "Paris" in reply.response_message and reply.tool_calls is None
    assert reply.finished and reply.status_code == 200 and reply.error is None
    assert len(reply.timings.start_times) == 1 and 0 <= reply.timings.waiting <= reply.timings.turnaround
    assert reply.usage is not None and reply.usage["prompt_tokens"] > 0 and 0 < reply.usage["completion_tokens"] <= 24


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
    ("list-memories-zero", lambda url: list_memories("a", 0, 0, url), 400, "params.k"),
    ("list-memories-negative-offset", lambda url: list_memories("a", 5, -1, url), 400, "params.offset"),
    ("owner-not-granted", lambda url: file_history("a", "x.txt", url, owner="sdk/nobody-granted"), 403,
     "has no read permission on files:sdk/nobody-granted"),
    ("owner-empty", lambda url: create_dir("a", "d", url, owner=""), 400, "params.owner"),
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


# A file tool as a Cerebrum agent passes it to llm_operate_file (the kernel offers its own file tools instead).
CEREBRUM_FILE_TOOL = {"name": "file_writer", "description": "Write a file.",
                      "parameters": {"type": "object", "properties": {"file_path": {"type": "string"}}}}


def test_llm_operate_file_takes_cerebrums_argument_order(kernel: KernelProcess) -> None:
    """Cerebrum's ``llm_operate_file(agent_name, messages, tools, base_url, llms)``, positionally."""
    reply = llm_operate_file("sdk/operator", [{"role": "user", "content": "Create a file named notes.txt"}],
                             [CEREBRUM_FILE_TOOL], kernel.url, None, max_new_tokens=48)
    assert [operation.name for operation in reply.operations] == ["create_file"]
    assert read_file("sdk/operator", "notes.txt", kernel.url).content == ""


def test_llm_operate_file_still_takes_the_kernel_url_third(kernel: KernelProcess) -> None:
    """This SDK's earlier order put ``base_url`` third: such a call still reaches that kernel (which refuses the
    empty messages, before any model runs)."""
    for earlier in ([kernel.url], [kernel.url, [{"name": "no-such-model"}]]):  # with llms fourth, too
        with pytest.raises(AIOSError) as caught:
            llm_operate_file("sdk/operator", [], *earlier)
        assert caught.value.status_code == 400 and "messages: List should have at least 1" in caught.value.message


def test_storage_functions_reach_another_agents_files_with_owner(kernel: KernelProcess) -> None:
    owner, helper = "sdk/owner", "sdk/helper"
    write_file(owner, "plan.txt", "v1", kernel.url)
    write_file(owner, "plan.txt", "v2", kernel.url)
    grant_permission(owner, f"files:{owner}", helper, "write", kernel.url)
    create_dir(helper, "drafts", kernel.url, owner=owner)
    create_file(helper, "drafts/empty.txt", kernel.url, owner=owner)
    rollback_file(helper, "plan.txt", 1, kernel.url, owner=owner)
    assert [v.version for v in file_history(helper, "plan.txt", kernel.url, owner=owner).versions] == [3, 2, 1]
    delete_dir(helper, "drafts", True, kernel.url, owner=owner)
    assert read_file(owner, "plan.txt", kernel.url).content == "v1"  # each change was made in the owner's files
    assert [entry.name for entry in list_dir(owner, "", False, kernel.url).entries] == ["plan.txt"]


def test_list_memories_pages_through_the_agents_memories_newest_first(kernel: KernelProcess) -> None:
    agent = "sdk/lister"
    made = [create_memory(agent, f"note {i}", None, kernel.url).memory_id for i in range(3)]
    first = list_memories(agent, 2, 0, kernel.url).search_results
    rest = list_memories(agent, 2, 2, kernel.url).search_results
    assert [r.memory_id for r in first + rest] == made[::-1]
    assert all(r.score is None for r in first + rest)  # a list ranks nothing


def test_get_tool_names_close_matches_for_a_tool_the_kernel_lacks(kernel: KernelProcess) -> None:
    assert get_tool("aios/calculator", kernel.url).name == "aios/calculator"
    with pytest.raises(AIOSError) as caught:
        get_tool("aios/calcuator", kernel.url)
    assert caught.value.status_code == 404 and "aios/calculator" in caught.value.message


@pytest.mark.parametrize("name", ["calculator", "", "aios/", "/calculator", "aios/calculator/extra"],
                         ids=["no-author", "empty", "no-name", "empty-author", "two-slashes"])
def test_get_tool_refuses_a_name_not_of_the_form_author_slash_name(kernel: KernelProcess, name: str) -> None:
    with pytest.raises(AIOSError) as caught:
        get_tool(name, kernel.url)
    assert caught.value.status_code == 0
    assert f"tool name must be author/name (such as 'aios/calculator'), not {name!r}" in caught.value.message


def test_list_agents_reports_each_runs_time_limit(kernel: KernelProcess) -> None:
    echo = Path(__file__).parent / "fixtures" / "agents" / "echo"
    execution_id = submit_agent(str(echo), "timed", kernel.url, time_limit_s=45)
    assert wait_agent(execution_id, kernel.url).status == "completed"
    (process,) = [p for p in list_agents(kernel.url) if p.execution_id == execution_id]
    assert process.time_limit_s == 45
