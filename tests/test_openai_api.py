"""The OpenAI-compatible API (``/v1``) of a real kernel (``aios serve`` on loopback, the embedded model), spoken
as raw HTTP: reply objects, streaming, tools and JSON under the grammar, errors, agents, hang-ups."""

from __future__ import annotations

import asyncio
import json
import socket
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import pytest

from conftest import KernelProcess, wait_until

MODEL = "HuggingFaceTB/SmolLM2-135M-Instruct"
CAPITAL = [{"role": "user", "content": "What is the capital of France?"}]
CITY = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
WEATHER = {"type": "function", "function": {"name": "get_weather", "description": "Current weather in a city.",
                                            "parameters": CITY}}


def chat(**fields: Any) -> dict[str, Any]:
    return {"model": MODEL, "messages": CAPITAL, "max_tokens": 12, "temperature": 0, **fields}


def events(reply: httpx.Response) -> list[Any]:
    """The data of each server-sent event; ``[DONE]`` kept as the string."""
    assert reply.headers["content-type"].startswith("text/event-stream")
    data = [line.removeprefix("data: ") for line in reply.text.split("\n\n") if line]
    return [item if item == "[DONE]" else json.loads(item) for item in data]


def test_models_lists_what_the_kernel_serves(kernel: KernelProcess) -> None:
    listing = kernel.client.get("/v1/models").json()
    assert listing["object"] == "list"
    assert [(m["id"], m["object"], m["owned_by"]) for m in listing["data"]] == [(MODEL, "model", "huggingface")]
    assert kernel.client.get(f"/v1/models/{MODEL}").json()["id"] == MODEL
    missing = kernel.client.get("/v1/models/no-such-model")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "model_not_found"


def test_a_chat_completion_is_an_openai_object(kernel: KernelProcess) -> None:
    reply = kernel.client.post("/v1/chat/completions", json=chat(max_tokens=24))
    assert reply.status_code == 200
    body = reply.json()
    assert body["object"] == "chat.completion" and body["id"].startswith("chatcmpl-") and body["model"] == MODEL
    (choice,) = body["choices"]
    assert choice["message"]["role"] == "assistant" and "Paris" in choice["message"]["content"]
    assert choice["finish_reason"] in ("stop", "length")
    usage = body["usage"]
    assert usage["prompt_tokens"] > 0 and 0 < usage["completion_tokens"] <= 24
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]


def test_max_tokens_cuts_with_finish_reason_length(kernel: KernelProcess) -> None:
    body = kernel.client.post("/v1/chat/completions", json=chat(
        messages=[{"role": "user", "content": "Write a long story about a dragon."}], max_completion_tokens=3)).json()
    assert body["choices"][0]["finish_reason"] == "length" and body["usage"]["completion_tokens"] == 3


def test_tools_are_called_with_arguments_that_fit_the_schema(kernel: KernelProcess) -> None:
    body = kernel.client.post("/v1/chat/completions", json=chat(
        messages=[{"role": "user", "content": "What is the weather in Paris?"}], tools=[WEATHER],
        tool_choice="required", max_tokens=60)).json()  # room to end by itself: in the last quarter it is ended
    choice = body["choices"][0]
    assert choice["finish_reason"] == "tool_calls" and choice["message"]["content"] is None
    assert choice["message"]["tool_calls"]
    for call in choice["message"]["tool_calls"]:
        assert call["type"] == "function" and call["id"] and call["function"]["name"] == "get_weather"
        jsonschema.validate(json.loads(call["function"]["arguments"]), CITY)  # a JSON string, as OpenAI's


def test_without_tokens_no_chat_is_made_as_the_administrator(kernel: KernelProcess) -> None:
    for reply in (kernel.client.post("/v1/chat/completions", json=chat(user="kernel/admin")),
                  kernel.client.post("/v1/chat/completions", json=chat(), headers={"X-AIOS-Agent": "kernel/admin"})):
        assert reply.status_code == 403, reply.text
        error = reply.json()["error"]
        assert error["type"] == "permission_error" and "the administrator's identity" in error["message"]


def test_a_prose_reply_where_tools_were_offered_ends_at_a_stop_string(kernel: KernelProcess) -> None:
    """Under tool_choice auto (what frameworks send) the model answers in prose here; the stop string cuts that
    prose as it would without tools."""
    ask = chat(messages=[{"role": "user", "content": "What is the weather in Paris?"}], tools=[WEATHER], max_tokens=16)
    full = kernel.client.post("/v1/chat/completions", json=ask).json()["choices"][0]
    assert "tool_calls" not in full["message"] and " is " in full["message"]["content"]
    stopped = kernel.client.post("/v1/chat/completions", json={**ask, "stop": " is"}).json()["choices"][0]
    assert stopped["message"]["content"] == full["message"]["content"][:full["message"]["content"].index(" is")]
    assert stopped["finish_reason"] == "stop"


def test_a_json_schema_response_format_gives_json_that_fits(kernel: KernelProcess) -> None:
    schema = {"type": "object", "properties": {"capital": {"type": "string"}, "population": {"type": "integer"}},
              "required": ["capital", "population"], "additionalProperties": False}
    body = kernel.client.post("/v1/chat/completions", json=chat(max_tokens=40, response_format={
        "type": "json_schema", "json_schema": {"name": "city", "schema": schema, "strict": True}})).json()
    jsonschema.validate(json.loads(body["choices"][0]["message"]["content"]), schema)


def test_a_structured_reply_cut_by_max_tokens_comes_back_as_it_is_with_finish_reason_length(
        kernel: KernelProcess) -> None:
    """As OpenAI answers it: a 5xx would make OpenAI's clients send the request again, to the same end."""
    for fields in ({"response_format": {"type": "json_object"}, "max_tokens": 3},
                   {"messages": [{"role": "user", "content": "Weather in Paris?"}], "tools": [WEATHER],
                    "tool_choice": "required", "max_tokens": 5}):
        reply = kernel.client.post("/v1/chat/completions", json=chat(**fields))
        assert reply.status_code == 200, reply.text
        (choice,) = reply.json()["choices"]
        assert choice["finish_reason"] == "length" and choice["message"]["content"]
        assert reply.json()["usage"]["completion_tokens"] == fields["max_tokens"]


@pytest.mark.parametrize(("response", "finish_reason"), [
    ({"finish_reason": "length", "tool_calls": [{"name": "f", "parameters": {}, "id": "call_1"}]}, "length"),
    ({"finish_reason": "kv_budget", "tool_calls": None}, "length"),
    ({"finish_reason": "stop", "tool_calls": [{"name": "f", "parameters": {}, "id": "call_1"}]}, "tool_calls"),
    ({"finish_reason": "stop", "tool_calls": []}, "stop"),
], ids=["calls-cut-short", "kv-budget", "calls", "prose"])
def test_a_reply_cut_short_finishes_with_length_even_with_tool_calls(response: dict[str, Any],
                                                                     finish_reason: str) -> None:
    from aios.server.openai_routes import _finish_reason

    assert _finish_reason(response) == finish_reason


def test_parallel_tool_calls_false_gives_one_call(kernel: KernelProcess) -> None:
    """Sampled with a seed that makes several calls without the bound (the grammar holds the array to one)."""
    time = {"type": "function", "function": {"name": "get_time", "description": "Current time in a city.",
                                             "parameters": CITY}}
    body = kernel.client.post("/v1/chat/completions", json=chat(
        messages=[{"role": "user", "content": "What is the weather and the time in Paris?"}], tools=[WEATHER, time],
        tool_choice="required", parallel_tool_calls=False, max_tokens=80, temperature=1.0, seed=0)).json()
    assert len(body["choices"][0]["message"]["tool_calls"]) == 1, body


def test_a_named_tool_choice_works_for_tools_in_the_bare_form(kernel: KernelProcess) -> None:
    bare = {"name": "get_weather", "description": "Current weather in a city.", "parameters": CITY}
    reply = kernel.client.post("/v1/chat/completions", json=chat(
        tools=[bare], tool_choice={"type": "function", "function": {"name": "get_weather"}}, max_tokens=2))
    assert reply.status_code == 200, reply.text


def test_response_format_holds_when_tool_choice_is_none(kernel: KernelProcess) -> None:
    body = kernel.client.post("/v1/chat/completions", json=chat(
        tools=[WEATHER], tool_choice="none", max_tokens=40,
        response_format={"type": "json_schema", "json_schema": {"name": "city", "schema": CITY}})).json()
    jsonschema.validate(json.loads(body["choices"][0]["message"]["content"]), CITY)


ANSWER = {"type": "object", "properties": {"answer": {"type": "string"}}, "required": ["answer"]}


@pytest.mark.parametrize("question", ["What is the capital of France?", "What is the weather in Paris?"])
def test_with_tools_under_auto_a_reply_without_calls_is_the_json_asked_for(kernel: KernelProcess,
                                                                          question: str) -> None:
    """An agent with tools and an output type (the OpenAI Agents SDK sends both): the reply calls a tool or is
    the JSON asked for, never prose (it was prose, which the agent could not read)."""
    body = kernel.client.post("/v1/chat/completions", json=chat(
        messages=[{"role": "user", "content": question}], tools=[WEATHER], max_tokens=60,
        response_format={"type": "json_schema", "json_schema": {"name": "answer", "schema": ANSWER}})).json()
    message = body["choices"][0]["message"]
    if message.get("tool_calls"):
        assert body["choices"][0]["finish_reason"] == "tool_calls"
        jsonschema.validate(json.loads(message["tool_calls"][0]["function"]["arguments"]), CITY)
    else:
        jsonschema.validate(json.loads(message["content"]), ANSWER)


def test_a_developer_message_is_the_system_prompt(kernel: KernelProcess) -> None:
    """The same prompt, token for token, as with a system message: no default system prompt of the template's,
    no second system message for the tools the kernel describes in it."""
    for tools in ({}, {"tools": [WEATHER]}):
        prompt_tokens = [kernel.client.post("/v1/chat/completions", json=chat(
            messages=[{"role": role, "content": "Be brief."}, *CAPITAL], max_tokens=1, **tools)).json()
            ["usage"]["prompt_tokens"] for role in ("system", "developer")]
        assert prompt_tokens[0] == prompt_tokens[1], (tools, prompt_tokens)


def test_fields_openai_marks_nullable_take_null_as_their_default(kernel: KernelProcess) -> None:
    nullable = ["n", "stream", "temperature", "top_p", "max_tokens", "stop", "seed", "tools", "tool_choice",
                "response_format", "stream_options", "user", "logprobs", "parallel_tool_calls", "frequency_penalty",
                "presence_penalty", "logit_bias", "top_logprobs", "store", "metadata", "service_tier"]
    reply = kernel.client.post("/v1/chat/completions", json=chat(max_completion_tokens=2,
                                                                 **dict.fromkeys(nullable)))
    assert reply.status_code == 200, reply.text
    assert reply.json()["object"] == "chat.completion"


def test_a_seed_makes_a_sampled_reply_reproducible(kernel: KernelProcess) -> None:
    ask = chat(messages=[{"role": "user", "content": "Name a colour."}], temperature=1.0, max_tokens=8, seed=1234)
    first, second = (kernel.client.post("/v1/chat/completions", json=ask).json() for _ in range(2))
    assert first["choices"][0]["message"]["content"] == second["choices"][0]["message"]["content"]


def test_a_stream_sends_deltas_then_the_finish_then_usage(kernel: KernelProcess) -> None:
    reply = kernel.client.post("/v1/chat/completions", json=chat(
        max_tokens=24, stream=True, stream_options={"include_usage": True}))
    items = events(reply)
    assert items[-1] == "[DONE]"
    *chunks, usage = items[:-1]
    assert all(c["object"] == "chat.completion.chunk" and c["id"] == usage["id"] for c in chunks)
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    texts = [c["choices"][0]["delta"].get("content") or "" for c in chunks]
    assert "Paris" in "".join(texts) and sum(1 for t in texts if t) > 1  # in pieces, not whole at the end
    assert chunks[-1]["choices"][0]["finish_reason"] in ("stop", "length")
    assert usage["choices"] == [] and 0 < usage["usage"]["completion_tokens"] <= 24


def test_a_stream_without_include_usage_sends_none(kernel: KernelProcess) -> None:
    items = events(kernel.client.post("/v1/chat/completions", json=chat(stream=True)))
    assert items[-1] == "[DONE]" and all("usage" not in c for c in items[:-1])


def test_a_streamed_tool_call_arrives_whole_at_the_end(kernel: KernelProcess) -> None:
    items = events(kernel.client.post("/v1/chat/completions", json=chat(
        messages=[{"role": "user", "content": "Weather in Rome?"}], tools=[WEATHER], tool_choice="required",
        max_tokens=40, stream=True)))
    deltas = [c["choices"][0]["delta"] for c in items[:-1]]
    (calls,) = [d["tool_calls"] for d in deltas if "tool_calls" in d]
    assert calls[0]["index"] == 0 and calls[0]["function"]["name"] == "get_weather"
    jsonschema.validate(json.loads(calls[0]["function"]["arguments"]), CITY)
    assert items[-2]["choices"][0]["finish_reason"] == "tool_calls"


def test_the_agent_is_the_user_field_or_the_header(kernel: KernelProcess) -> None:
    """Each request is a syscall of an agent; the kernel's log of syscalls is not exposed, so the agent is seen
    where the access layer uses it: an over-long name is refused, naming the header."""
    for headers, user in (({"X-AIOS-Agent": "openai/tester"}, None), ({}, "openai/user-field"), ({}, None)):
        reply = kernel.client.post("/v1/chat/completions", json=chat(**({"user": user} if user else {})),
                                   headers=headers)
        assert reply.status_code == 200
    long = kernel.client.post("/v1/chat/completions", json=chat(), headers={"X-AIOS-Agent": "a" * 300})
    assert long.status_code == 400 and "X-AIOS-Agent" in long.json()["error"]["message"]


def test_a_stream_refused_when_it_runs_is_an_http_error(kernel: KernelProcess) -> None:
    """A prompt longer than the model's context is found only once the syscall runs; nothing has been streamed
    yet, so the client gets the error with its status, not a 200 that ends in an error event."""
    reply = kernel.client.post("/v1/chat/completions", json=chat(
        messages=[{"role": "user", "content": "word " * 9000}], stream=True))
    assert reply.status_code == 400, reply.text[:300]
    assert reply.json()["error"]["type"] == "invalid_request_error" and "tokens" in reply.json()["error"]["message"]


def test_a_client_that_hangs_up_mid_stream_frees_its_slot(kernel: KernelProcess) -> None:
    body = json.dumps(chat(messages=[{"role": "user", "content": "Write a very long story about dragons."}],
                           max_tokens=2000, stream=True)).encode()
    host, port = kernel.url.removeprefix("http://").rsplit(":", 1)
    with socket.create_connection((host, int(port))) as raw:
        raw.sendall(f"POST /v1/chat/completions HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
                    f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
        raw.settimeout(120)
        received = b""
        while b"chat.completion.chunk" not in received:  # it is streaming (the headers may come alone first)
            data = raw.recv(65536)
            assert data, f"the connection closed before a chunk came: {received!r}"
            received += data
        wait_until(lambda: kernel.client.get("/status").json()["queues"]["llm"]["running"] == 1)
    wait_until(lambda: kernel.client.get("/status").json()["queues"]["llm"]["running"] == 0)
    assert "Exception in ASGI application" not in kernel.log.read_text()


BAD_BODIES = [
    (chat(model=7), 400, "model"),
    ({"messages": CAPITAL}, 400, "model"),
    (chat(model="no-such-model"), 404, "model"),
    (chat(messages=[]), 400, "messages"),
    (chat(user="a\x00b"), 400, "user"),  # NUL: no store keeps it
    (chat(messages=[{"role": "wizard", "content": "hi"}]), 400, "messages[0].role"),
    (chat(messages=[{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]), 400,
     "messages"),
    (chat(n=2), 400, "n"),
    (chat(seed=2**64, temperature=1.0), 400, "seed"),
    (chat(temperature="hot"), 400, "temperature"),
    (chat(temperature=3), 400, "temperature"),
    (chat(top_p=0), 400, "top_p"),
    (chat(max_tokens=0), 400, "max_tokens"),
    (chat(max_completion_tokens=10**6), 400, "max_completion_tokens"),
    (chat(stream="yes"), 400, "stream"),
    (chat(stream_options={"include_usage": "yes"}), 400, "stream_options.include_usage"),
    (chat(stop=[""]), 400, "stop"),
    (chat(stop=["."] * 17), 400, "stop"),
    (chat(stop="x" * 257), 400, "stop"),
    (chat(response_format={"type": "yaml"}), 400, "response_format"),
    (chat(response_format={"type": "json_schema", "json_schema": {"name": "x"}}), 400, "response_format"),
    (chat(tools=[{"type": "function", "function": {"description": "no name"}}]), 400, "tools"),
    (chat(tools=[WEATHER], tool_choice={"type": "function", "function": {"name": "get_time"}}), 400, "tool_choice"),
    (chat(tool_choice="required"), 400, "tool_choice"),
    (chat(tools=[WEATHER], tool_choice="sometimes"), 400, "tool_choice"),
    (chat(logprobs=True), 400, "logprobs"),
    (chat(user=""), 400, "user"),
    (chat(functions=[]), 400, "functions"),
    (chat(messages=[{"role": "user"}]), 400, "messages[0].content"),
    (chat(messages=[{"role": "user", "content": None}]), 400, "messages[0].content"),
    (chat(messages=[*CAPITAL, {"role": "assistant", "content": None, "tool_calls": "get_weather"}]), 400,
     "messages[1].tool_calls"),
    (chat(messages=[*CAPITAL, {"role": "assistant", "content": None, "tool_calls": [{"name": "get_weather"}]}]),
     400, "messages[1].tool_calls[0].id"),
    (chat(messages=[*CAPITAL, {"role": "tool", "content": "sunny"}]), 400, "messages[1].tool_call_id"),
    (chat(tools=[{"type": "web_search", "function": {"name": "search"}}]), 400, "tools"),
]


@pytest.mark.parametrize(("body", "status", "param"), BAD_BODIES, ids=[f"{p}-{i}" for i, (_, _, p) in
                                                                       enumerate(BAD_BODIES)])
def test_bad_requests_get_an_openai_error_naming_the_param(kernel: KernelProcess, body: dict[str, Any],
                                                          status: int, param: str) -> None:
    reply = kernel.client.post("/v1/chat/completions", json=body)
    assert reply.status_code == status, reply.text
    error = reply.json()["error"]
    assert error["param"] == param and error["type"] == "invalid_request_error"
    assert error["message"] and set(error) == {"message", "type", "param", "code"}


@pytest.mark.parametrize(("content", "what"), [
    (b"{not json", "not valid JSON"),
    (b"[1, 2]", "valid dictionary"),
    (b'{"model": "' + b"[" * 100 + b'"}', None),
])
def test_bodies_that_are_not_a_request_object_get_a_400(kernel: KernelProcess, content: bytes,
                                                        what: str | None) -> None:
    reply = kernel.client.post("/v1/chat/completions", content=content,
                               headers={"content-type": "application/json"})
    assert reply.status_code == 400 and reply.json()["error"]["type"] == "invalid_request_error"
    assert what is None or what in reply.json()["error"]["message"]


def test_an_assistant_turn_of_tool_calls_without_content_is_accepted(kernel: KernelProcess) -> None:
    calls = [{"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}]
    reply = kernel.client.post("/v1/chat/completions", json=chat(max_tokens=2, messages=[
        {"role": "user", "content": "Weather in Paris?"}, {"role": "assistant", "content": None, "tool_calls": calls},
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny"}]))
    assert reply.status_code == 200, reply.text


@pytest.mark.parametrize(("method", "path", "status"), [
    ("POST", "/v1/completions", 404), ("GET", "/v1/chat/completions", 405), ("DELETE", "/v1/models", 405)])
def test_unknown_routes_and_methods_under_v1_get_an_openai_error(kernel: KernelProcess, method: str, path: str,
                                                                 status: int) -> None:
    reply = kernel.client.request(method, path)
    assert reply.status_code == status
    error = reply.json()["error"]
    assert error["type"] == "invalid_request_error" and f"{method} {path}" in error["message"]
    assert "POST /v1/chat/completions" in error["message"]
    assert kernel.client.get("/no-such-route").json() == {"detail": "Not Found"}  # elsewhere, FastAPI's shape


def test_deep_nesting_and_oversized_bodies_are_refused_as_openai_errors(kernel: KernelProcess) -> None:
    deep = chat(metadata={"a": json.loads("[" * 80 + "]" * 80)})
    reply = kernel.client.post("/v1/chat/completions", json=deep)
    assert reply.status_code == 400 and "nested more than" in reply.json()["error"]["message"]
    huge = kernel.client.post("/v1/chat/completions", content=b" " * (65 << 20),
                              headers={"content-type": "application/json"})
    assert huge.status_code == 413 and "too large" in huge.json()["error"]["message"]


@pytest.mark.parametrize(("identity", "user", "header", "agent"), [
    ("alice", "bob", "carol", "alice"),  # an agent's token: its agent, whatever the request says
    ("admin", "bob", "carol", "bob"),  # the administrator's: as the request says
    ("admin", "dave", None, "dave"),
    (None, "bob", "carol", "bob"),
    (None, None, "carol", "carol"),
    (None, None, None, "openai-client"),
    (None, "dave", None, 401),  # dave has a token: a request without it cannot be dave's
    (None, None, "dave", 401),
])
def test_the_agent_is_the_token_s_else_the_user_field_else_the_header(identity: str | None, user: str | None,
                                                                      header: str | None, agent: str | int,
                                                                      tmp_path: Path) -> None:
    from types import SimpleNamespace

    from starlette.requests import Request

    from aios.access.manager import ADMIN, AccessManager
    from aios.config import AccessConfig
    from aios.server.openai_routes import OpenAIError, _agent

    access = AccessManager(AccessConfig(), tmp_path)
    asyncio.run(access.register("dave"))
    headers = [(b"x-aios-agent", header.encode())] if header else []
    scope = {"type": "http", "headers": headers, "state": {"identity": ADMIN if identity == "admin" else identity},
             "app": SimpleNamespace(state=SimpleNamespace(kernel=SimpleNamespace(access=access)))}
    if isinstance(agent, str):
        assert asyncio.run(_agent(Request(scope), user)) == agent
    else:
        with pytest.raises(OpenAIError, match="agent 'dave' has a token: requests as 'dave' must send it") as error:
            asyncio.run(_agent(Request(scope), user))
        assert error.value.status == agent and "API key" in str(error.value)
