"""API backends (OpenAI-compatible): structured output goes to the provider natively, and the kernel still
checks what comes back, retrying once with the problem shown.

The provider here is a MOCK: a scripted OpenAI-compatible server on loopback, because the real APIs are paid and
unreachable from the test machine. Everything on our side is real: HTTP, the backend, the kernel, the handler.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import tempfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Iterator
from urllib.parse import urlsplit

import pytest

from aios.config import load_config
from aios.errors import ConfigError
from aios.kernel import Kernel, load_cores
from aios.llm.handler import LLMQuery, LLMResponse
from aios.llm.openai_compat import OpenAICompatBackend
from aios.syscall import Syscall, SyscallKind
from aios.urls import parse_service_url
from conftest import start_kernel, stop_kernel

WEATHER = {"type": "function", "function": {"name": "demo/get_weather", "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}
PERSON = {"type": "object", "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
          "required": ["name", "age"]}
ASK = [{"role": "user", "content": "What's the weather in Paris?"}]


def completion(content: str | None = None, calls: list[tuple[str, str]] | None = None,
               finish: str = "stop") -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": content}
    if calls:
        message["tool_calls"] = [{"id": f"call_{i}", "type": "function", "function": {"name": n, "arguments": a}}
                                 for i, (n, a) in enumerate(calls)]
    return {"id": "cmpl", "object": "chat.completion", "choices": [{"index": 0, "message": message,
                                                                     "finish_reason": finish}],
            "usage": {"prompt_tokens": 12, "completion_tokens": 7}}


class Provider:
    """The mock provider: answers each POST /v1/chat/completions with the next scripted (status, body) and
    keeps what it was sent."""

    def __init__(self) -> None:
        self.script: list[tuple[int, dict[str, Any]]] = []
        self.received: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self.paths: list[str] = []  # with the query string
        self.stream: list[str] | None = None  # pieces of a reply to stream as server-sent events, when asked to
        provider = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                length = int(self.headers["Content-Length"])
                provider.received.append(json.loads(self.rfile.read(length)))
                provider.headers.append(dict(self.headers))
                provider.paths.append(self.path)
                routed = urlsplit(self.path).path == "/v1/chat/completions"
                if routed and provider.stream is not None and provider.received[-1].get("stream"):
                    self._stream(provider.stream)
                    return
                status, body = provider.script.pop(0) if routed else (404, {})
                streamed = isinstance(body, str)  # a scripted stream of server-sent events, sent as it is
                data = body.encode() if streamed else json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "text/event-stream" if streamed else "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _stream(self, pieces: list[str]) -> None:
                chunks = [{"choices": [{"index": 0, "delta": {"content": piece}}]} for piece in pieces]
                chunks.append({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
                events = "".join(f"data: {json.dumps({'id': 'c', 'object': 'chat.completion.chunk', **chunk})}\n\n"
                                 for chunk in chunks) + "data: [DONE]\n\n"
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Content-Length", str(len(events.encode())))
                self.end_headers()
                self.wfile.write(events.encode())

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def provider() -> Iterator[Provider]:
    running = Provider()
    yield running
    running.server.shutdown()
    running.server.server_close()


def call(provider_url: str, query: LLMQuery, api_key: str | None = "sk-test") -> Syscall:
    async def main(data_dir: str) -> Syscall:
        url = parse_service_url(f"{provider_url}/v1")
        config = load_config(env={"AIOS_DATA_DIR": data_dir})
        kernel = Kernel(config, [OpenAICompatBackend("gpt-test", "vllm", url, api_key=api_key)])
        await kernel.start()
        try:
            return await kernel.call(SyscallKind.LLM, "test/api", query)
        finally:
            await kernel.stop()

    with tempfile.TemporaryDirectory() as data_dir:  # a kernel of its own: never the user's data dir
        return asyncio.run(main(data_dir))


def answer(provider_url: str, query: LLMQuery) -> LLMResponse:
    syscall = call(provider_url, query)
    assert syscall.error is None, syscall.error
    return syscall.value


def test_tool_calls_go_to_the_provider_natively_and_come_back_as_calls(provider: Provider) -> None:
    provider.script = [(200, completion(calls=[("demo__get_weather", '{"city": "Paris"}')], finish="tool_calls"))]
    response = answer(provider.url, LLMQuery(ASK, action_type="chat_with_tool_call_output", tools=[WEATHER]))
    assert [(c["name"], c["parameters"]) for c in response.tool_calls] == [("demo/get_weather", {"city": "Paris"})]
    sent = provider.received[0]
    assert sent["model"] == "gpt-test" and sent["messages"] == ASK  # no tools folded into the prompt
    assert [t["function"]["name"] for t in sent["tools"]] == ["demo__get_weather"]
    assert sent["tool_choice"] == {"type": "function", "function": {"name": "demo__get_weather"}}  # one tool
    assert provider.headers[0]["Authorization"] == "Bearer sk-test"


def test_a_providers_call_whose_arguments_hold_nan_is_no_valid_call(provider: Provider) -> None:
    """NaN is not JSON: a call that holds it is an invalid reply (asked again, once), never one the kernel then
    cannot write."""
    scale = {"type": "function", "function": {"name": "demo/scale", "parameters": {
        "type": "object", "properties": {"by": {"type": "number"}}, "required": ["by"]}}}
    provider.script = [(200, completion(calls=[("demo__scale", '{"by": NaN}')], finish="tool_calls")),
                       (200, completion(calls=[("demo__scale", '{"by": 2}')], finish="tool_calls"))]
    response = answer(provider.url, LLMQuery(ASK, action_type="chat_with_tool_call_output", tools=[scale]))
    assert [(c["name"], c["parameters"]) for c in response.tool_calls] == [("demo/scale", {"by": 2})]
    assert len(provider.received) == 2


@pytest.mark.parametrize(("choice", "sent"), [(None, "required"), ("auto", "auto"), (
    {"type": "function", "function": {"name": "clock"}}, {"type": "function", "function": {"name": "clock"}})])
def test_tool_choice_reaches_the_provider(provider: Provider, choice: Any, sent: Any) -> None:
    provider.script = [(200, completion(calls=[("clock", "{}")]))]
    answer(provider.url, LLMQuery(ASK, action_type="chat_with_tool_call_output", tools=[WEATHER, {"name": "clock"}],
                                  tool_choice=choice))
    assert provider.received[0]["tool_choice"] == sent


@pytest.mark.parametrize("parallel", [True, False])
def test_parallel_tool_calls_false_reaches_the_provider(provider: Provider, parallel: bool) -> None:
    provider.script = [(200, completion(calls=[("clock", "{}")]))]
    answer(provider.url, LLMQuery(ASK, action_type="chat_with_tool_call_output", tools=[WEATHER, {"name": "clock"}],
                                  parallel_tool_calls=parallel))
    assert provider.received[0].get("parallel_tool_calls", "not sent") == ("not sent" if parallel else False)


def test_tools_and_a_json_answer_go_to_the_provider_together(provider: Provider) -> None:
    provider.script = [(200, completion('{"city": "Paris"}'))]
    reply = answer(provider.url, LLMQuery(ASK, tools=[WEATHER], response_format={"type": "json_object"}))
    sent = provider.received[0]
    assert (sent["tool_choice"], sent["response_format"]) == ("auto", {"type": "json_object"})
    assert json.loads(reply.response_message) == {"city": "Paris"} and reply.tool_calls == []


def test_json_goes_to_the_provider_as_its_response_format(provider: Provider) -> None:
    provider.script = [(200, completion('{"name": "Ada", "age": 36}'))]
    response = answer(provider.url, LLMQuery(ASK, action_type="chat_with_json_output", response_format={
        "type": "json_schema", "json_schema": {"name": "person", "schema": PERSON}}))
    assert json.loads(response.response_message) == {"name": "Ada", "age": 36}
    assert provider.received[0]["response_format"] == {"type": "json_schema",
                                                       "json_schema": {"name": "reply", "schema": PERSON}}


def test_an_invalid_provider_reply_is_retried_once_with_the_problem_shown(provider: Provider) -> None:
    provider.script = [(200, completion('{"name": "Ada"}')), (200, completion('{"name": "Ada", "age": 36}'))]
    response = answer(provider.url, LLMQuery(ASK, action_type="chat_with_json_output", response_format=PERSON))
    assert json.loads(response.response_message) == {"name": "Ada", "age": 36}
    retry = provider.received[1]["messages"]
    assert retry[-2] == {"role": "assistant", "content": '{"name": "Ada"}'}
    assert "'age' is a required property" in retry[-1]["content"]


def test_a_provider_reply_invalid_twice_is_a_clear_502(provider: Provider) -> None:
    provider.script = [(200, completion(calls=[("demo__get_weather", '{"town": "Paris"}')]))] * 2
    response = answer(provider.url, LLMQuery(ASK, action_type="chat_with_tool_call_output", tools=[WEATHER]))
    assert response.status_code == 502 and len(provider.received) == 2
    assert "invalid twice" in response.error and "'city' is a required property" in response.error


@pytest.mark.parametrize(("status", "body", "code", "message"), [
    (401, {"error": {"message": "Incorrect API key provided"}}, 502, "answered 401: Incorrect API key provided"),
    (400, {"object": "error", "message": "This model's maximum context length is 4096 tokens"}, 400,
     "answered 400: This model's maximum context length is 4096 tokens"),
    (429, {"error": {"message": "Rate limit reached"}}, 429, "answered 429: Rate limit reached"),
    (500, {"detail": "boom"}, 502, "answered 500: boom"),
    (503, ["not", "an", "object"], 502, 'answered 503: ["not", "an", "object"]'),
    (200, {"choices": []}, 502, "not a chat completion"),
    (200, {"choices": [{"message": None}]}, 502, "not a chat completion"),
], ids=["refused", "too-long", "rate-limited", "server-error", "odd-body", "no-choices", "null-message"])
def test_provider_failures_fail_the_syscall_with_what_the_provider_said(
    provider: Provider, status: int, body: Any, code: int, message: str
) -> None:
    provider.script = [(status, body)]
    syscall = call(provider.url, LLMQuery(ASK))
    assert syscall.error is not None and syscall.error.status_code == code and message in str(syscall.error)


def test_calls_an_agent_feeds_back_reach_the_provider_in_its_own_shape(provider: Provider) -> None:
    provider.script = [(200, completion("It is sunny in Paris."))]
    history = [*ASK, {"role": "assistant", "content": None, "tool_calls": [
        {"name": "demo/get_weather", "parameters": {"city": "Paris"}, "id": "call_1"}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny"}]
    answer(provider.url, LLMQuery(history))
    assert provider.received[0]["messages"][1]["tool_calls"] == [{"id": "call_1", "type": "function", "function": {
        "name": "demo__get_weather", "arguments": '{"city": "Paris"}'}}]
    assert provider.received[0]["max_tokens"] == 1000  # a vllm server: max_tokens (openai: max_completion_tokens)


def sse(*chunks: Any) -> str:
    return "".join(f"data: {c if isinstance(c, str) else json.dumps(c)}\n\n" for c in chunks)


def delta(text: str, finish: str | None = None) -> dict[str, Any]:
    return {"choices": [{"index": 0, "delta": {"content": text}, "finish_reason": finish}]}


def test_a_streamed_chat_passes_each_provider_delta_on(provider: Provider) -> None:
    provider.script = [(200, sse(delta("The capital"), delta(" is Paris."), delta("", "length"),
                                 {"choices": [], "usage": {"prompt_tokens": 9, "completion_tokens": 5}}, "[DONE]"))]
    pieces: list[str] = []
    reply = answer(provider.url, LLMQuery(ASK, on_text=pieces.append))
    assert pieces == ["The capital", " is Paris."] and reply.response_message == "The capital is Paris."
    assert reply.finish_reason == "length" and reply.usage == {"prompt_tokens": 9, "completion_tokens": 5}
    assert provider.received[0]["stream"] is True and provider.received[0]["stream_options"] == {"include_usage": True}


@pytest.mark.parametrize(("stream", "fragment"), [
    (sse(delta("Hi"), {"error": {"message": "the server is overloaded"}}), "the server is overloaded"),
    (sse("{not json"), "not a chat completion"),
    (sse({"choices": "nonsense"}), "not a chat completion"),
], ids=["error-event", "not-json", "odd-choices"])
def test_a_broken_provider_stream_fails_the_syscall_clearly(provider: Provider, stream: str, fragment: str) -> None:
    provider.script = [(200, stream)]
    syscall = call(provider.url, LLMQuery(ASK, on_text=lambda text: None))
    assert syscall.error is not None and syscall.error.status_code == 502 and fragment in str(syscall.error)


def test_a_structured_request_is_never_streamed(provider: Provider) -> None:
    provider.script = [(200, completion(None, [("demo__get_weather", '{"city": "Paris"}')]))]
    reply = answer(provider.url, LLMQuery(ASK, tools=[WEATHER], action_type="tool_use", on_text=lambda text: None))
    assert reply.tool_calls and "stream" not in provider.received[0]


def test_an_unreachable_provider_is_named() -> None:
    syscall = call("http://127.0.0.1:9", LLMQuery(ASK))
    assert syscall.error is not None and "cannot reach the vllm backend at http://127.0.0.1:9/v1" in str(syscall.error)


def test_a_kernel_serving_an_api_model_answers_over_http_and_never_shows_its_key(
    provider: Provider, tmp_path: Any
) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(f"llms:\n  models:\n    - {{name: gpt-test, backend: vllm, hostname: '{provider.url}', "
                      f"api_key: sk-secret-123}}\n")
    kernel = start_kernel(["--config", str(config)], {**os.environ, "AIOS_DATA_DIR": str(tmp_path)},
                          tmp_path / "kernel.log")
    try:
        provider.script = [(200, completion(calls=[("demo__get_weather", '{"city": "Oslo"}')]))]
        reply = kernel.query({"agent_name": "t/api", "query_type": "llm", "query_data": {
            "messages": ASK, "action_type": "chat_with_tool_call_output", "tools": [WEATHER]}})
        assert reply.json()["response"]["tool_calls"][0]["parameters"] == {"city": "Oslo"}
        assert provider.headers[0]["Authorization"] == "Bearer sk-secret-123"
        for route in ("/core/llms/list", "/status"):
            page = kernel.client.get(route)
            assert page.status_code == 200 and "sk-secret-123" not in page.text and "gpt-test" in page.text
        assert kernel.client.get("/core/llms/list").json()["llms"] == [
            {"name": "gpt-test", "backend": "vllm", "hostname": provider.url}]
    finally:
        stop_kernel(kernel)


def test_api_models_load_from_the_aios_config_layout(tmp_path: Any) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("llms:\n  models:\n    - {name: gpt-4o-mini, backend: openai}\n"
                    "    - {name: qwen, backend: vllm, hostname: 'http://localhost:8091'}\n"
                    "api_keys: {openai: from-file}\n")
    openai, vllm = load_cores(load_config(path, env={}))
    assert (openai.base_url, vllm.base_url) == ("https://api.openai.com/v1", "http://localhost:8091/v1")
    assert openai._client.headers["Authorization"] == "Bearer from-file"
    assert "Authorization" not in vllm._client.headers
    (from_env, _) = load_cores(load_config(path, env={"OPENAI_API_KEY": "from-env"}))
    assert from_env._client.headers["Authorization"] == "Bearer from-env"


# One secret per place a credential can come from; each must be used and never shown.
SECRETS = {"user": "alice-user-3b", "password": "hunter2-pw-4d", "token": "tok-query-8a6f",
           "model_key": "sk-model-key-5f3a", "section_key": "sk-section-key-7c1d", "env_key": "sk-env-key-9e2b"}


def _closed_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_credentials_from_every_source_are_used_and_never_shown(provider: Provider, tmp_path: Any) -> None:
    """Secrets planted in a hostname's user info and query, a model's api_key, api_keys.<backend> and
    $OPENAI_API_KEY: the provider receives them (basic auth, the query on the right path), and none appears in
    /status, /core/llms/list, an error envelope, a refusal or the kernel's log."""
    closed = f"http://127.0.0.1:{_closed_port()}"
    host = provider.url.removeprefix("http://")
    config = tmp_path / "config.yaml"
    config.write_text(
        "llms:\n  models:\n"
        f"    - {{name: via-userinfo, backend: vllm, hostname: 'http://{SECRETS['user']}:{SECRETS['password']}@{host}"
        f"/?token={SECRETS['token']}'}}\n"
        f"    - {{name: via-model-key, backend: vllm, hostname: '{closed}', api_key: {SECRETS['model_key']}}}\n"
        f"    - {{name: via-section, backend: sglang, hostname: '{closed}/v1?token={SECRETS['token']}'}}\n"
        f"    - {{name: via-env, backend: openai, hostname: '{closed}'}}\n"
        f"api_keys: {{sglang: {SECRETS['section_key']}}}\n")
    env = {**os.environ, "AIOS_DATA_DIR": str(tmp_path), "OPENAI_API_KEY": SECRETS["env_key"]}
    kernel = start_kernel(["--config", str(config)], env, tmp_path / "kernel.log")
    shown: list[str] = []
    try:
        provider.script = [(200, completion("Sunny."))]
        ask = lambda model: kernel.query({"agent_name": "t/keys", "query_type": "llm", "query_data": {  # noqa: E731
            "messages": ASK, "llms": [{"name": model}]}})
        assert ask("via-userinfo").json()["response"]["response_message"] == "Sunny."
        credentials = base64.b64encode(f"{SECRETS['user']}:{SECRETS['password']}".encode()).decode()
        assert provider.headers[0]["Authorization"] == f"Basic {credentials}"
        assert provider.paths == [f"/v1/chat/completions?token={SECRETS['token']}"]
        for model in ("via-model-key", "via-section", "via-env"):
            failed = ask(model).json()["response"]
            assert failed["status_code"] == 502 and "cannot reach" in failed["error"]
            shown.append(failed["error"])
        assert "?token=***" in shown[1]
        shown.append(ask("no-such-model").text)
        shown += [kernel.client.get(route).text for route in ("/status", "/core/llms/list", "/core/status")]
        assert "http://***@" in kernel.client.get("/core/llms/list").text
    finally:
        stop_kernel(kernel)
    shown.append(kernel.log.read_text())
    for text in shown:
        for secret in SECRETS.values():
            assert secret not in text


def test_a_config_error_about_a_hostname_never_shows_its_credentials(tmp_path: Any) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(f"llms: {{models: [{{name: m, backend: vllm, hostname: "
                      f"'ftp://{SECRETS['user']}:{SECRETS['password']}@example.org/?token={SECRETS['token']}'}}]}}\n")
    with pytest.raises(ConfigError) as caught:
        load_config(config, env={})
    assert "must be an http(s) URL" in str(caught.value) and "ftp://***@example.org?token=***" in str(caught.value)
    assert not any(secret in str(caught.value) for secret in SECRETS.values())


@pytest.mark.parametrize(("hostname", "api_root"), [
    ("http://h:8000", "http://h:8000/v1"),
    ("http://h:8000/", "http://h:8000/v1"),
    ("http://h:8000/v1", "http://h:8000/v1"),
    ("http://h:8000/proxy/v1/", "http://h:8000/proxy/v1"),
    ("http://h:8000?key=abc", "http://h:8000/v1"),
    ("http://u:p@h:8000/base?key=abc", "http://h:8000/base/v1"),
], ids=["bare", "slash", "v1", "path-v1", "query", "userinfo-path-query"])
def test_the_api_root_is_the_hostname_path_plus_v1_never_after_the_query(tmp_path: Any, hostname: str,
                                                                        api_root: str) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(f"llms: {{models: [{{name: m, backend: vllm, hostname: '{hostname}'}}]}}\n")
    assert load_config(config, env={}).llms.models[0].api_url.base == api_root
