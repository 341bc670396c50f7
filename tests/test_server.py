"""The AIOS-compatible HTTP API of a real kernel (``aios serve`` on loopback, the embedded model)."""

from __future__ import annotations

import json
import socket
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from conftest import KernelProcess, wait_until

CAPITAL = [{"role": "user", "content": "What is the capital of France?"}]
WEATHER_TOOL = {"type": "function", "function": {
    "name": "demo/get_weather", "description": "Get the current weather for a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}


def llm(query_data: dict[str, Any], agent: str = "test/agent") -> dict[str, Any]:
    return {"agent_name": agent, "query_type": "llm", "query_data": query_data}


def assert_envelope(body: dict[str, Any], slices: int = 1) -> dict[str, Any]:
    """The documented envelope, field by field; returns its response."""
    assert set(body) == {"response", "start_times", "end_times", "waiting_times", "turnaround_times"}
    assert set(body["response"]) == {"response_class", "response_message", "tool_calls", "finished", "error",
                                     "status_code", "finish_reason", "usage"}
    assert body["response"]["response_class"] == "llm"
    assert body["response"]["finished"] == (body["response"]["finish_reason"] == "stop")
    for key in ("start_times", "end_times", "waiting_times", "turnaround_times"):
        assert len(body[key]) == slices and all(isinstance(t, float) for t in body[key]), key
    for start, end, waiting, turnaround in zip(body["start_times"], body["end_times"], body["waiting_times"],
                                                body["turnaround_times"]):
        assert start <= end and 0 <= waiting <= turnaround
        assert start > 1.7e9  # Unix seconds
    return body["response"]


def test_chat_reply_matches_the_envelope_and_mentions_paris(kernel: KernelProcess) -> None:
    reply = kernel.query(llm({"messages": CAPITAL, "action_type": "chat", "temperature": 0, "max_new_tokens": 24}))
    assert reply.status_code == 200
    response = assert_envelope(reply.json())
    assert "Paris" in response["response_message"]
    assert response["tool_calls"] is None and response["finished"] is True
    assert response["error"] is None and response["status_code"] == 200


def test_the_aios_sdk_request_shape_is_served(kernel: KernelProcess) -> None:
    """What the AIOS SDK sends: query_class, llms with name+backend and sampling settings inside."""
    reply = kernel.query(llm({
        "query_class": "llm", "messages": CAPITAL, "action_type": "chat", "message_return_type": "text",
        "llms": [{"name": "HuggingFaceTB/SmolLM2-135M-Instruct", "backend": "huggingface",
                  "temperature": 0, "max_tokens": 24}],
        "tools": None,
    }))
    assert reply.status_code == 200
    assert "Paris" in assert_envelope(reply.json())["response_message"]


def test_json_output_returns_parseable_json(kernel: KernelProcess) -> None:
    schema = {"type": "object", "properties": {"city": {"type": "string"}, "country": {"type": "string"}},
              "required": ["city", "country"]}
    reply = kernel.query(llm({
        "messages": [{"role": "user", "content": "Which city and country? I spent a week in Rome, Italy."}],
        "action_type": "chat_with_json_output", "temperature": 0, "max_new_tokens": 40,
        "response_format": {"type": "json_schema", "json_schema": {"name": "place", "schema": schema}},
    }))
    response = assert_envelope(reply.json())
    assert response["error"] is None, response
    value = json.loads(response["response_message"])
    assert isinstance(value, dict) and value.get("city") == "Rome"


def test_json_object_mode_returns_a_json_object(kernel: KernelProcess) -> None:
    reply = kernel.query(llm({"messages": CAPITAL, "message_return_type": "json", "temperature": 0,
                              "max_new_tokens": 24}))
    response = assert_envelope(reply.json())
    assert isinstance(json.loads(response["response_message"]), dict)


@pytest.mark.parametrize("action", ["chat_with_tool_call_output", "tool_use"])
def test_tool_actions_return_valid_calls_to_offered_tools(kernel: KernelProcess, action: str) -> None:
    """The calls come back, not run (call_tool runs them: tests/test_tools_http.py)."""
    reply = kernel.query(llm({
        "messages": [{"role": "user", "content": "What is the weather like in Paris right now?"}],
        "action_type": action, "tools": [WEATHER_TOOL], "temperature": 0, "max_new_tokens": 40,
    }))
    response = assert_envelope(reply.json())
    assert response["error"] is None and response["status_code"] == 200
    assert response["response_message"] is None
    assert response["tool_calls"]  # the 135M model sometimes repeats the call: each one is valid
    for call in response["tool_calls"]:
        assert (call["name"], call["parameters"]) == ("demo/get_weather", {"city": "Paris"})
        assert call["id"].startswith("call_")


def test_tool_choice_none_answers_in_prose(kernel: KernelProcess) -> None:
    reply = kernel.query(llm({
        "messages": [{"role": "user", "content": "What is the weather like in Paris right now?"}],
        "action_type": "chat_with_tool_call_output", "tools": [WEATHER_TOOL], "tool_choice": "none",
        "temperature": 0, "max_new_tokens": 16,
    }))
    response = assert_envelope(reply.json())
    assert response["error"] is None and response["tool_calls"] is None and response["response_message"]


def test_status_routes_have_the_aios_shapes(kernel: KernelProcess) -> None:
    status = kernel.client.get("/status").json()
    assert status["status"] == "ok" and status["message"] == "All core components are active."
    assert "inactive_components" not in status
    assert status["llms"][0]["name"] == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert status["queues"]["llm"]["policy"] == "fifo"
    assert status["llms"][0]["max_batch"] == 16
    assert status["llms"][0]["engine"]["prefill_chunk"] == 512  # not configured: a CPU's default
    assert kernel.client.get("/core/status").json() == {
        "llms": "active", "memory": "active", "storage": "active", "tool": "active", "scheduler": "active",
        "factory": "active"}
    listed = kernel.client.get("/core/llms/list").json()
    assert listed == {"status": "success", "llms": [
        {"name": "HuggingFaceTB/SmolLM2-135M-Instruct", "backend": "huggingface", "max_batch": 16,
         "prefix_cache_mb": 256, "kv_budget_mb": 4096, "weights": "native",
         "structured_output": "grammar"}]}


def problems(detail: Any) -> str:
    """An error's detail as a person reads it: each validation error as ``where: what``."""
    if isinstance(detail, str):
        return detail
    return "; ".join(".".join(map(str, d["loc"])) + ": " + d["msg"] for d in detail)


def _nested(depth: int) -> dict[str, Any]:
    """A schema of ``depth`` objects, each inside the last: 2 JSON levels per object."""
    schema: dict[str, Any] = {"type": "string"}
    for _ in range(depth):
        schema = {"type": "object", "properties": {"a": schema}}
    return schema


def _nested_list(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = [value]
    return value


BAD_QUERIES = [
    # (id, body, HTTP status, text the error must contain)
    ("no-agent", {"query_type": "llm", "query_data": {"messages": CAPITAL}}, 422, "agent_name"),
    ("empty-agent", {"agent_name": "", "query_type": "llm", "query_data": {"messages": CAPITAL}}, 422, "agent_name"),
    ("nul-in-agent", {"agent_name": "a\x00b", "query_type": "memory", "query_data": {"operation_type": "add_memory",
     "params": {"content": "x"}}}, 422, "an agent's name cannot hold the NUL character"),
    ("unknown-query-type", {"agent_name": "a", "query_type": "gpu", "query_data": {}}, 422, "query_type"),
    ("query-data-not-object", {"agent_name": "a", "query_type": "llm", "query_data": []}, 422, "query_data"),
    ("no-messages", llm({}), 422, "messages"),
    # A value of the right type outside its field's range is refused in the envelope, as AIOS answers it.
    ("empty-messages", llm({"messages": []}), 400,
     "llm request: messages: List should have at least 1 item after validation, not 0"),
    ("bad-role", llm({"messages": [{"role": "robot", "content": "hi"}]}), 422, "role"),
    ("message-not-object", llm({"messages": ["hi"]}), 422, "messages"),
    ("negative-temperature", llm({"messages": CAPITAL, "temperature": -1}), 400,
     "llm request: temperature: Input should be greater than or equal to 0, not -1"),
    ("temperature-too-high", llm({"messages": CAPITAL, "temperature": 2.5}), 400,
     "llm request: temperature: Input should be less than or equal to 2, not 2.5"),
    ("range-and-type-wrong", llm({"messages": CAPITAL, "temperature": -1, "top_p": "x"}), 422, "top_p"),
    ("temperature-string", llm({"messages": CAPITAL, "temperature": "hot"}), 422, "temperature"),
    ("zero-top-p", llm({"messages": CAPITAL, "top_p": 0}), 400, "llm request: top_p: Input should be greater than 0"),
    ("zero-max-tokens", llm({"messages": CAPITAL, "max_new_tokens": 0}), 400, "max_new_tokens: Input should be"),
    ("huge-max-tokens", llm({"messages": CAPITAL, "max_new_tokens": 10**9}), 400,
     "max_new_tokens: Input should be less than or equal to 32768, not 1000000000"),
    ("empty-stop", llm({"messages": CAPITAL, "stop": [""]}), 422, "stop"),
    ("image-part", llm({"messages": [{"role": "user", "content": [
        {"type": "text", "text": "What is this?"}, {"type": "image_url", "image_url": {"url": "data:,"}}]}]}), 422,
     "messages: Value error, messages[0]: only text content parts are supported (this kernel runs text models), "
     "got a part of type 'image_url'"),
    ("too-many-stops", llm({"messages": CAPITAL, "stop": [str(n) for n in range(17)]}), 422,
     "stop: Value error, at most 16 stop strings, not 17"),
    ("stop-too-long", llm({"messages": CAPITAL, "stop": "x" * 257}), 422,
     "stop: Value error, a stop string may be at most 256 characters long, not 257"),
    ("unknown-action", llm({"messages": CAPITAL, "action_type": "dance"}), 422, "action_type"),
    ("priority-too-high", llm({"messages": CAPITAL, "priority": 10**6}), 400, "llm request: priority: Input should be"),
    ("typo-field", llm({"messages": CAPITAL, "temprature": 0}), 422, "temprature"),
    ("bad-return-type", llm({"messages": CAPITAL, "message_return_type": "xml"}), 422, "message_return_type"),
    ("bad-response-format", llm({"messages": CAPITAL, "response_format": {"type": "yaml"}}), 422, "response_format"),
    ("schema-missing", llm({"messages": CAPITAL, "response_format": {"type": "json_schema"}}), 422,
     "response_format"),
    ("tool-without-name", llm({"messages": CAPITAL, "tools": [{"type": "function", "function": {}}]}), 422, "tools"),
    ("tools-action-without-tools", llm({"messages": CAPITAL, "action_type": "chat_with_tool_call_output"}), 400,
     "needs a non-empty 'tools' list"),
    ("unknown-model", llm({"messages": CAPITAL, "llms": [{"name": "gpt-9"}]}), 404, "no configured model matches"),
    ("model-wrong-backend", llm({"messages": CAPITAL, "llms": [{"name": "HuggingFaceTB/SmolLM2-135M-Instruct",
                                                                 "backend": "openai"}]}), 404, "configured:"),
    ("llm-entry-bad-temperature", llm({"messages": CAPITAL, "llms": [{"name": "HuggingFaceTB/SmolLM2-135M-Instruct",
                                                                       "temperature": -3}]}), 400,
     "llms entry 'HuggingFaceTB/SmolLM2-135M-Instruct': temperature must be a number from 0 to 2, got -3"),
    ("llm-entry-temperature-string", llm({"messages": CAPITAL, "llms": [
        {"name": "HuggingFaceTB/SmolLM2-135M-Instruct", "temperature": "hot"}]}), 400,
     "temperature must be a number from 0 to 2, got 'hot'"),
    ("llm-entry-temperature-too-high", llm({"messages": CAPITAL, "llms": [
        {"name": "HuggingFaceTB/SmolLM2-135M-Instruct", "temperature": 99}]}), 400, "got 99"),
    ("llm-entry-top-p-zero", llm({"messages": CAPITAL, "llms": [
        {"name": "HuggingFaceTB/SmolLM2-135M-Instruct", "top_p": 0}]}), 400,
     "top_p must be a number above 0 and at most 1, got 0"),
    ("llm-entry-max-tokens-fraction", llm({"messages": CAPITAL, "llms": [
        {"name": "HuggingFaceTB/SmolLM2-135M-Instruct", "max_tokens": 5.5}]}), 400,
     "max_tokens must be a whole number from 1 to 32768, got 5.5"),
    ("llm-entry-max-tokens-float", llm({"messages": CAPITAL, "llms": [
        {"name": "HuggingFaceTB/SmolLM2-135M-Instruct", "max_tokens": 5.0}]}), 400, "got 5.0"),
    ("llm-entry-max-tokens-huge", llm({"messages": CAPITAL, "llms": [
        {"name": "HuggingFaceTB/SmolLM2-135M-Instruct", "max_tokens": 10 ** 400}]}), 400, "got 1000000000000"),
    ("llm-entry-temperature-huge", llm({"messages": CAPITAL, "llms": [
        {"name": "HuggingFaceTB/SmolLM2-135M-Instruct", "temperature": 10 ** 400}]}), 400, "temperature must be"),
    ("llm-entry-max-tokens-zero", llm({"messages": CAPITAL, "llms": [
        {"name": "HuggingFaceTB/SmolLM2-135M-Instruct", "max_tokens": 0}]}), 400, "got 0"),
    ("llm-entry-max-tokens-true", llm({"messages": CAPITAL, "llms": [
        {"name": "HuggingFaceTB/SmolLM2-135M-Instruct", "max_tokens": True}]}), 400, "got True"),
    ("deeply-nested-response-format", llm({"messages": CAPITAL, "response_format": _nested(400)}), 422,
     "response_format"),
    ("memory-without-content", {"agent_name": "a", "query_type": "memory", "query_data": {
        "operation_type": "add_memory"}}, 422, "query_data.params.content: is required for 'add_memory'"),
    ("storage-without-operation", {"agent_name": "a", "query_type": "storage", "query_data": {}}, 422,
     "operation_type"),
    ("tool-calls-empty", {"agent_name": "a", "query_type": "tool", "query_data": {"tool_calls": []}}, 400,
     "tool request: tool_calls: List should have at least 1 item"),
    ("tool-calls-without-list", {"agent_name": "a", "query_type": "tool", "query_data": {"tool_calls": {}}}, 422,
     "tool_calls"),
    ("call-tool-without-tools", llm({"messages": CAPITAL, "action_type": "call_tool"}), 400, "'tools' list"),
    ("tool-choice-unknown", llm({"messages": CAPITAL, "tools": [WEATHER_TOOL], "tool_choice": "sometimes"}), 422,
     "tool_choice must be 'auto', 'required', 'none'"),
    ("tool-choice-number", llm({"messages": CAPITAL, "tools": [WEATHER_TOOL], "tool_choice": 1}), 422, "tool_choice"),
    ("tool-choice-no-name", llm({"messages": CAPITAL, "tools": [WEATHER_TOOL],
                                 "tool_choice": {"type": "function", "function": {}}}), 422, "tool_choice"),
    ("tool-choice-not-offered", llm({"messages": CAPITAL, "tools": [WEATHER_TOOL], "tool_choice": {
        "type": "function", "function": {"name": "demo/teleport"}}}), 400, "'demo/teleport', which is not one of"),
    ("tool-choice-without-tools", llm({"messages": CAPITAL, "tool_choice": "required"}), 400,
     "tool_choice was given without 'tools'"),
    ("tool-parameters-bad-schema", llm({"messages": CAPITAL, "tools": [{"type": "function", "function": {
        "name": "t", "parameters": {"type": "object", "required": "city"}}}]}), 400,
     "tool 't' parameters is not a valid JSON Schema at required"),
    ("response-schema-invalid", llm({"messages": CAPITAL, "response_format": {"type": "json_schema", "json_schema": {
        "name": "x", "schema": {"type": "object", "properties": {"a": {"type": "text"}}}}}}), 400,
     "response_format schema is not a valid JSON Schema at properties/a/type"),
    # Numbers must be JSON numbers of the right kind: nothing is coerced.
    ("max-tokens-string", llm({"messages": CAPITAL, "max_new_tokens": "16"}), 422, "max_new_tokens"),
    ("max-tokens-true", llm({"messages": CAPITAL, "max_new_tokens": True}), 422, "max_new_tokens"),
    ("max-tokens-fraction", llm({"messages": CAPITAL, "max_new_tokens": 16.5}), 422, "max_new_tokens"),
    ("temperature-true", llm({"messages": CAPITAL, "temperature": True}), 422, "temperature"),
    ("temperature-numeric-string", llm({"messages": CAPITAL, "temperature": "0.5"}), 422, "temperature"),
    ("priority-string", llm({"messages": CAPITAL, "priority": "5"}), 422, "priority"),
    ("seed-string", llm({"messages": CAPITAL, "seed": "7"}), 422, "seed"),
    ("seed-fraction", llm({"messages": CAPITAL, "seed": 7.5}), 422, "seed"),
    ("seed-past-64-bits", llm({"messages": CAPITAL, "temperature": 1.0, "seed": 2**64}), 400,
     "seed: Input should be less than or equal to 18446744073709551615"),
    ("seed-below-64-bits", llm({"messages": CAPITAL, "temperature": 1.0, "seed": -(2**63) - 1}), 400,
     "seed: Input should be greater than or equal to -9223372036854775808"),
    # Nesting is refused the same way at every depth past the limit, naming where.
    ("schema-65-levels", llm({"messages": CAPITAL, "response_format": _nested(32)}), 422,
     "query_data.response_format.properties.a: nested more than 64 levels deep"),
    ("schema-100-levels", llm({"messages": CAPITAL, "response_format": _nested(50)}), 422, "nested more than 64"),
    ("message-extra-deep", llm({"messages": [{"role": "user", "content": "hi", "x": _nested_list(200)}]}), 422,
     "query_data.messages.0.x: nested more than 64"),
    ("tools-deep", llm({"messages": CAPITAL, "tools": [{"name": "t", "parameters": _nested(40)}]}), 422,
     "query_data.tools.0.parameters: nested more than 64"),
    ("self-referential-schema", llm({"messages": CAPITAL, "response_format": {"type": "json_schema", "json_schema": {
        "name": "x", "schema": {"$ref": "#"}}}}), 400, "has no finite JSON value"),
    ("required-property-refers-to-its-object", llm({"messages": CAPITAL, "response_format": {
        "type": "object", "properties": {"self": {"$ref": "#"}}, "required": ["self"]}}), 400,
     "has no finite JSON value"),
    ("self-referential-tool", llm({"messages": CAPITAL, "tools": [{"name": "t", "parameters": {"$ref": "#"}}],
                                   "action_type": "tool_use"}), 400, "tool 't' parameters has no finite JSON value"),
    ("tool-names-clash", llm({"messages": CAPITAL, "tools": [{"name": "a/b"}, {"name": "a__b"}]}), 400,
     "tools 'a/b' and 'a__b' would both reach the model as 'a__b'"),
    ("tool-named-twice", llm({"messages": CAPITAL, "tools": [{"name": "clock"}, {"name": "clock"}]}), 400,
     "two tools are named 'clock'"),
    ("prompt-too-long", llm({"messages": [{"role": "user", "content": "a" * 700_000}]}), 400,
     "the prompt is 700,000 characters, more than model HuggingFaceTB/SmolLM2-135M-Instruct can take"),
]


@pytest.mark.parametrize(("body", "status", "text"), [b[1:] for b in BAD_QUERIES], ids=[b[0] for b in BAD_QUERIES])
def test_bad_queries_get_a_clear_error_and_the_kernel_keeps_serving(
    kernel: KernelProcess, body: dict[str, Any], status: int, text: str
) -> None:
    """A malformed body is an HTTP 422; anything refused after it parsed is HTTP 200 with the envelope's error
    and status_code, which is the only way an AIOS agent (its SDK raises on any other status) learns why."""
    reply = kernel.query(body)
    if status == 422:
        assert reply.status_code == 422, reply.text
        assert text in problems(reply.json()["detail"])
    else:
        assert reply.status_code == 200, reply.text
        refused = reply.json()
        assert refused["response"]["status_code"] == status and text in refused["response"]["error"]
        assert refused["response"]["response_class"] == body["query_type"] and refused["start_times"] == []
    # Nothing was queued or leaked, and the next good request is served.
    assert kernel.client.get("/status").json()["queues"]["llm"] == {"policy": "fifo", "queued": 0, "running": 0}
    good = kernel.query(llm({"messages": CAPITAL, "temperature": 0, "max_new_tokens": 2}))
    assert good.status_code == 200 and good.json()["response"]["error"] is None


def _raw_llm(query_data: str) -> bytes:
    return ('{"agent_name": "a", "query_type": "llm", "query_data": ' + query_data + "}").encode()


RAW_BODIES = [
    # (id, body, text the 422 must contain)
    ("empty", b"", ""),
    ("not-json", b"not json", "JSON decode error"),
    ("truncated", b'{"agent_name": "a", "query_type": "llm", "query_data": {', "JSON decode error"),
    ("json-array", b"[1, 2]", ""),
    ("nan-temperature", _raw_llm('{"messages": [{"role": "user", "content": "hi"}], "temperature": NaN}'),
     "finite number"),
    ("infinite-max-tokens", _raw_llm('{"messages": [{"role": "user", "content": "hi"}], "max_new_tokens": Infinity}'),
     "max_new_tokens"),
    ("nan-in-a-message", _raw_llm('{"messages": [{"role": "user", "content": "hi", "weight": NaN}]}'),
     "query_data.messages.0.weight: not a finite number (it reads as nan"),
    ("infinity-in-tool-parameters", b'{"agent_name": "a", "query_type": "tool", "query_data": {"tool_calls": '
     b'[{"name": "aios/convert_units", "parameters": {"value": -Infinity, "from_unit": "m", "to_unit": "km"}}]}}',
     "query_data.tool_calls.0.parameters.value: not a finite number (it reads as -inf"),
    ("nan-in-tool-parameters-as-text", b'{"agent_name": "a", "query_type": "tool", "query_data": {"tool_calls": '
     b'[{"name": "aios/convert_units", "parameters": "{\\"value\\": NaN, \\"from_unit\\": \\"m\\", '
     b'\\"to_unit\\": \\"km\\"}"}]}}', "parameters: Value error, is a string whose JSON at value is not a "
     "finite number"),
    ("number-past-a-double", _raw_llm('{"messages": [{"role": "user", "content": "hi", "weight": 1e400}]}'),
     "numbers beyond ±1.8e308 are refused"),
    ("lone-surrogate", _raw_llm('{"messages": [{"role": "user", "content": "hi \\ud800 there"}]}'),
     "query_data.messages.0.content: not valid Unicode text"),
    ("lone-surrogate-in-tool", _raw_llm('{"messages": [{"role": "user", "content": "hi"}], '
                                        '"tools": [{"name": "t", "description": "\\udfff"}]}'),
     "query_data.tools.0.description: not valid Unicode"),
    ("nested-1000", _raw_llm('{"messages": [{"role": "user", "content": "hi", "x": ' + "[" * 1000 + "]" * 1000 + "}]}"),
     "nested more than 64 levels deep"),
    ("nested-100000", _raw_llm('{"messages": ' + "[" * 100_000 + "]" * 100_000 + "}"),
     "nested more than 64 levels deep"),
    ("integer-of-5000-digits", _raw_llm('{"messages": [{"role": "user", "content": "hi"}], "max_new_tokens": '
                                        + "9" * 5000 + "}"), "a number in the body has more than 4300 digits"),
    ("not-utf8", _raw_llm('{"messages": [{"role": "user", "content": "cafe"}]}').replace(b"cafe", b"caf\xe9"),
     "not UTF-8 text"),
]


@pytest.mark.parametrize(("raw", "text"), [b[1:] for b in RAW_BODIES], ids=[b[0] for b in RAW_BODIES])
def test_a_body_that_is_no_json_object_a_kernel_can_take_gets_422_naming_why(
        kernel: KernelProcess, raw: bytes, text: str) -> None:
    reply = kernel.client.post("/query", content=raw, headers={"content-type": "application/json"})
    assert reply.status_code == 422, reply.text
    assert text in problems(reply.json()["detail"])
    assert kernel.client.get("/status").json()["queues"]["llm"] == {"policy": "fifo", "queued": 0, "running": 0}


def test_a_body_over_the_size_limit_is_refused_before_it_is_read(kernel: KernelProcess) -> None:
    """9 MB and 100 MB against the default 8 MB limit, declared up front or sent in chunks: 413 naming the
    limit, and the kernel goes on serving."""
    hundred = kernel.client.post("/query", content=b"x" * (100 << 20), headers={"content-type": "application/json"})
    assert hundred.status_code == 413 and "(100.0 MB)" in hundred.json()["detail"]
    body = llm({"messages": [{"role": "user", "content": "a" * (9 << 20)}]})
    declared = kernel.client.post("/query", json=body)
    assert declared.status_code == 413 and "server.max_body_mb" in declared.json()["detail"]
    encoded = json.dumps(body).encode()
    chunked = kernel.client.post("/query", content=(encoded[i:i + (1 << 20)] for i in range(0, len(encoded), 1 << 20)),
                                 headers={"content-type": "application/json"})
    assert chunked.status_code == 413 and "at most 8 MB" in chunked.json()["detail"]
    good = kernel.query(llm({"messages": CAPITAL, "temperature": 0, "max_new_tokens": 24}))
    assert "Paris" in good.json()["response"]["response_message"]


def _address(kernel: KernelProcess) -> str:
    return kernel.url.split("//", 1)[1]


# (method, path, headers other than the kernel's own address, body): what a web page can make a browser send.
WEB_PAGES = [
    ("rebinding", "POST", "/query", {"host": "attacker.example:{port}"}, None, 403, "for 'attacker.example:{port}'"),
    ("rebinding-to-a-lan-address", "GET", "/status", {"host": "192.168.1.7:{port}"}, None, 403, "a loopback address"),
    ("form-posted-from-a-site", "POST", "/agents/1/cancel", {"origin": "http://evil.example",
     "content-type": "application/x-www-form-urlencoded"}, b"", 403, "the web page at 'http://evil.example'"),
    ("text-plain-to-v1", "POST", "/v1/chat/completions",
     {"origin": "http://evil.example", "content-type": "text/plain"},
     json.dumps({"model": "x", "messages": CAPITAL}).encode(), 403, "the web page at 'http://evil.example'"),
    ("sandboxed-page", "POST", "/query", {"origin": "null"}, b"{}", 403, "the web page at 'null'"),
    ("another-port-of-this-machine", "POST", "/query", {"origin": "http://127.0.0.1:1"}, b"{}", 403, "web page"),
]


@pytest.mark.parametrize(("method", "path", "headers", "body", "code", "detail"), [w[1:] for w in WEB_PAGES],
                         ids=[w[0] for w in WEB_PAGES])
def test_requests_that_web_pages_make_behind_the_users_back_are_refused(
        kernel: KernelProcess, method: str, path: str, headers: dict[str, str], body: bytes | None, code: int,
        detail: str) -> None:
    """A kernel on loopback without tokens: a page on another site cannot post to it (its Origin is not the
    kernel's), nor read it by pointing its own name at 127.0.0.1 (its Host is not a loopback name)."""
    port = kernel.url.rsplit(":", 1)[1]
    sent = {name: value.format(port=port) for name, value in headers.items()}
    reply = kernel.client.request(method, path, headers=sent, content=body)
    assert reply.status_code == code, reply.text
    said = reply.json()["error"]["message"] if path.startswith("/v1/") else reply.json()["detail"]
    assert detail.format(port=port) in said


def test_the_kernels_own_names_and_pages_are_served(kernel: KernelProcess) -> None:
    port = kernel.url.rsplit(":", 1)[1]
    for host in (_address(kernel), f"localhost:{port}", f"[::1]:{port}"):
        assert kernel.client.get("/status", headers={"host": host}).status_code == 200, host
    own_page = {"origin": kernel.url, "host": _address(kernel)}  # what the web UI's fetches send
    reply = kernel.client.post("/query", headers=own_page, json=llm({"messages": CAPITAL, "max_new_tokens": 4}))
    assert reply.status_code == 200, reply.text


def _rss_kb(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS:")))


def test_memory_returns_to_its_level_after_large_requests(kernel: KernelProcess) -> None:
    """Ten prompts of 4 MB (under the body limit, over what the model can take): each is refused by its length
    before anything tokenizes it, and the kernel's resident memory ends within 10% of where it began."""
    huge = llm({"messages": [{"role": "user", "content": "word " * (4 << 18)}]})
    kernel.query(llm({"messages": CAPITAL, "temperature": 0, "max_new_tokens": 4}))
    before = _rss_kb(kernel.process.pid)
    for _ in range(10):
        refused = kernel.query(huge).json()["response"]
        assert refused["status_code"] == 400 and "characters, more than model" in refused["error"]
    after = _rss_kb(kernel.process.pid)
    assert after <= before * 1.1, (before, after)


@pytest.mark.parametrize("name", ["get__weather", "demo/get_weather", "a__b/c", "weather"])
def test_a_tool_call_comes_back_under_exactly_the_name_the_tool_was_offered_by(kernel: KernelProcess,
                                                                               name: str) -> None:
    tool = {"name": name, "description": "Get the current weather for a city.",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}
    reply = kernel.query(llm({"messages": [{"role": "user", "content": "What is the weather in Paris?"}],
                              "tools": [tool], "action_type": "tool_use", "temperature": 0, "max_new_tokens": 40}))
    calls = assert_envelope(reply.json())["tool_calls"]
    assert [call["name"] for call in calls] == [name] * len(calls) and calls


def test_a_tiny_temperature_beside_another_generation_is_served_greedily(kernel: KernelProcess) -> None:
    def ask(temperature: float) -> dict[str, Any]:
        return kernel.query(llm({"messages": CAPITAL, "temperature": temperature, "max_new_tokens": 24})).json()

    with ThreadPoolExecutor(3) as pool:
        replies = list(pool.map(ask, [1e-300, 0.7, 0]))
    assert all(assert_envelope(r)["error"] is None for r in replies)
    assert replies[0]["response"]["response_message"] == replies[2]["response"]["response_message"]
    assert "Paris" in ask(0)["response"]["response_message"]


def test_messages_that_do_not_fit_the_chat_template_fail_inside_the_envelope(kernel: KernelProcess) -> None:
    """A template error is the syscall's failure, reported in the envelope, not a crash."""
    reply = kernel.query(llm({"messages": [{"role": "user", "content": {"nested": "object"}}]}))
    assert reply.status_code == 422  # content must be text or content parts
    reply = kernel.query(llm({"messages": [{"role": "user", "content": [{"type": "text", "text": "Say hi."}]}],
                              "temperature": 0, "max_new_tokens": 4}))
    assert reply.status_code == 200 and reply.json()["response"]["response_message"]


def test_sixteen_concurrent_agents_all_complete(kernel: KernelProcess) -> None:
    def agent(n: int) -> dict[str, Any]:
        question = [{"role": "user", "content": f"Give me one word that rhymes with number {n}."}]
        reply = kernel.query(llm({"messages": question, "temperature": 0, "max_new_tokens": 6}, agent=f"load/{n}"))
        assert reply.status_code == 200
        return reply.json()

    with ThreadPoolExecutor(16) as pool:
        bodies = list(pool.map(agent, range(16)))
    responses = [assert_envelope(body) for body in bodies]
    assert all(r["finish_reason"] in ("stop", "length") and r["error"] is None and r["response_message"]
               for r in responses)
    # The model decodes them together (continuous batching): some ran at the same time.
    spans = sorted((b["start_times"][0], b["end_times"][0]) for b in bodies)
    assert any(next_start < prev_end for (_, prev_end), (next_start, _) in zip(spans, spans[1:]))


def test_a_client_that_hangs_up_cancels_its_syscall(kernel: KernelProcess) -> None:
    """A long generation whose client disconnects is cancelled, so the next request does not wait for it."""
    body = json.dumps(llm({"messages": [{"role": "user", "content": "Write a very long story about dragons."}],
                           "temperature": 0, "max_new_tokens": 2000})).encode()
    host, port = kernel.url.removeprefix("http://").rsplit(":", 1)
    with socket.create_connection((host, int(port))) as raw:
        raw.sendall(f"POST /query HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
                    f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
        wait_until(lambda: kernel.client.get("/status").json()["queues"]["llm"]["running"] == 1)
    wait_until(lambda: kernel.client.get("/status").json()["queues"]["llm"]["running"] == 0)
    reply = kernel.query(llm({"messages": CAPITAL, "temperature": 0, "max_new_tokens": 24}))
    assert "Paris" in reply.json()["response"]["response_message"]
    assert "Exception in ASGI application" not in kernel.log.read_text()  # a hang-up is not an error


def test_round_robin_records_one_envelope_slice_per_turn_on_the_model(data_dir, tmp_path) -> None:  # noqa: ANN001
    """A kernel with one slot and rr: two generations take turns, and the envelope lists every slice."""
    import os

    from conftest import data_dir_of_its_own, start_kernel, stop_kernel

    config = tmp_path / "rr.yaml"
    config.write_text("llms: {models: [{name: HuggingFaceTB/SmolLM2-135M-Instruct, max_batch: 1}]}\n"
                      "scheduler: {policy: rr, quantum_tokens: 4}\n")
    own = data_dir_of_its_own(data_dir, tmp_path / "data")
    rr = start_kernel(["--config", str(config)], {**os.environ, "AIOS_DATA_DIR": str(own)}, tmp_path / "rr.log")
    try:
        def ask(content: str) -> dict[str, Any]:
            return rr.query(llm({"messages": [{"role": "user", "content": content}], "temperature": 0,
                                 "max_new_tokens": 16})).json()

        with ThreadPoolExecutor(2) as pool:
            first, second = pool.map(ask, ["Write a story about a cat.", "Write a story about a dog."])
        for body in (first, second):
            slices = len(body["start_times"])
            assert slices >= 2  # 16 tokens in slices of 4, alternating with the other generation
            assert_envelope(body, slices=slices)
            assert body["start_times"] == sorted(body["start_times"])
            assert all(end <= nxt for end, nxt in zip(body["end_times"], body["start_times"][1:]))
        engine = rr.client.get("/status").json()["llms"][0]["engine"]
        assert engine["policy"] == "rr" and engine["preemptions"] >= 2 and engine["snapshots"] == 0
    finally:
        stop_kernel(rr)
