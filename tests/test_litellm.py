"""The LiteLLM core: requests in the OpenAI shape through LiteLLM, native tools and JSON, streaming, keys never
shown, and provider failures that fail one syscall with a clear message — retried with backoff only where another
try can help — while the kernel keeps serving its other models.

The provider is a MOCK where one must answer (the scripted OpenAI-compatible server of test_openai_compat, spoken
to through LiteLLM's ``openai`` provider): real APIs are paid and unreachable here. LiteLLM, HTTP and the kernel
are real; so is the unreachable provider (a loopback port nobody listens on).
"""

from __future__ import annotations

import asyncio
import json
import re
import tempfile
from pathlib import Path
from typing import Any

import pytest

from aios.config import load_config
from aios.errors import BadRequest, ConfigError, KernelError
from aios.kernel import Kernel, load_cores
from aios.llm.core import GenerationRequest, SamplingParams
from aios.llm.handler import LLMQuery
from aios.llm.litellm_backend import LiteLLMBackend
from aios.syscall import Syscall, SyscallKind
from test_openai_compat import ASK, WEATHER, Provider, completion, provider  # noqa: F401 - the fixture
from test_routing import closed_port

KEY = "sk-litellm-secret-6b2e"


def through_litellm(provider_url: str, retries: int = 2) -> LiteLLMBackend:
    return LiteLLMBackend("gpt-test", "openai", api_key=KEY, api_base=f"{provider_url}/v1", retries=retries,
                          backoff_s=0.01)


def calls(cores: list[Any], *queries: LLMQuery) -> list[Syscall]:
    """The queries, one after another, through a kernel of its own over ``cores`` (left open: shared)."""
    async def main(data_dir: str) -> list[Syscall]:
        kernel = Kernel(load_config(env={"AIOS_DATA_DIR": data_dir}), cores)
        await kernel.start()
        try:
            return [await kernel.call(SyscallKind.LLM, "test/litellm", query) for query in queries]
        finally:
            await kernel.stop(close_cores=False)

    with tempfile.TemporaryDirectory() as data_dir:
        return asyncio.run(main(data_dir))


def test_chat_tools_and_json_go_natively_through_litellm(provider: Provider) -> None:
    provider.script = [(200, completion("Hello there.")),
                       (200, completion(calls=[("demo__get_weather", '{"city": "Paris"}')])),
                       (200, completion('{"name": "Ada", "age": 36}'))]
    schema = {"type": "object", "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
              "required": ["name", "age"]}
    chat, tools, person = calls([through_litellm(provider.url)], LLMQuery(ASK),
                                LLMQuery(ASK, action_type="chat_with_tool_call_output", tools=[WEATHER]),
                                LLMQuery(ASK, action_type="chat_with_json_output", response_format={
                                    "type": "json_schema", "json_schema": {"name": "p", "schema": schema}}))
    assert chat.value.response_message == "Hello there."
    assert tools.value.tool_calls[0]["name"] == "demo/get_weather"
    assert tools.value.tool_calls[0]["parameters"] == {"city": "Paris"}
    assert json.loads(person.value.response_message) == {"name": "Ada", "age": 36}
    sent_tools, sent_json = provider.received[1], provider.received[2]
    assert sent_tools["tools"][0]["function"]["name"] == "demo__get_weather" and sent_tools["model"] == "gpt-test"
    assert sent_json["response_format"]["json_schema"]["schema"] == schema
    assert {name.lower(): value for name, value in provider.headers[0].items()}["authorization"] == f"Bearer {KEY}"


@pytest.mark.parametrize(("script", "tries", "status", "said"), [
    ([(429, {"error": {"message": "slow down"}}), (200, completion("ok"))], 2, None, None),
    ([(503, {"error": {"message": "overloaded"}}), (502, {}), (200, completion("ok"))], 3, None, None),
    ([(500, {"error": {"message": "boom"}})] * 3, 3, 502, "boom"),
    ([(429, {"error": {"message": "quota exceeded"}})] * 3, 3, 429, "quota exceeded"),
    ([(401, {"error": {"message": f"Incorrect API key provided: {KEY}"}})], 1, 502, "Incorrect API key"),
    ([(400, {"error": {"message": "context too long"}})], 1, 400, "context too long"),
], ids=["rate-limit-then-ok", "5xx-then-ok", "5xx-every-time", "rate-limit-every-time", "bad-key", "bad-request"])
def test_provider_failures_are_retried_only_where_it_helps_and_named(
    provider: Provider, script: list[Any], tries: int, status: int | None, said: str | None
) -> None:
    provider.script = list(script)
    (syscall,) = calls([through_litellm(provider.url)], LLMQuery(ASK))
    assert len(provider.received) == tries
    if status is None:
        assert syscall.error is None and syscall.value.response_message == "ok"
        return
    message = str(syscall.error)
    assert syscall.error.status_code == status and said in message
    assert "provider openai, model gpt-test" in message and KEY not in message


def test_an_unreachable_provider_fails_its_syscall_at_once_and_the_local_model_serves_on(backend: Any) -> None:
    unreachable = LiteLLMBackend("claude-test", "anthropic", api_key=KEY, api_base=f"http://127.0.0.1:{closed_port()}")
    ask = [{"role": "user", "content": "What is the capital of France?"}]
    remote, local = calls([unreachable, backend], LLMQuery(ask, llms=[{"name": "claude-test"}]),
                          LLMQuery(ask, llms=[{"name": backend.name}], temperature=0, max_new_tokens=12))
    message = str(remote.error)
    assert f"provider anthropic, model claude-test: cannot connect at {unreachable._api_base}" in message
    assert remote.error.status_code == 502 and KEY not in message
    assert local.error is None and "Paris" in local.value.response_message


def test_a_reply_streams_in_pieces(provider: Provider) -> None:
    """The mock answers in OpenAI's server-sent events, as a provider streaming a reply does."""
    provider.stream = ["The capital", " of France", " is Paris."]
    core = through_litellm(provider.url)

    async def main() -> list[str]:
        request = GenerationRequest(ASK, SamplingParams(max_new_tokens=20))
        return [piece async for piece in core.stream(request)]

    assert asyncio.run(main()) == ["The capital", " of France", " is Paris."]
    assert provider.received[0]["stream"] is True


@pytest.mark.parametrize(("provider", "refused"), [
    ("anthropic", "set ANTHROPIC_API_KEY in the kernel's environment, api_keys.anthropic in the config"),
    ("groq", "set GROQ_API_KEY"),
    ("bedrock", None),  # AWS's credentials may come from files: not refused here
], ids=["anthropic", "groq", "bedrock"])
def test_a_provider_model_without_its_api_key_is_refused_when_added(monkeypatch: pytest.MonkeyPatch, provider: str,
                                                                      refused: str | None) -> None:
    """Added without a key (the README's `aios models add claude-sonnet-4-5 --backend anthropic`, with no key
    set), it was served, and every syscall routed to it failed: with the embedded model beside it, every other."""
    for name in ("ANTHROPIC_API_KEY", "GROQ_API_KEY", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(name, raising=False)
    if refused is None:
        LiteLLMBackend("some-model", provider)
        return
    with pytest.raises(BadRequest, match=f"model 'some-model' \\({provider}\\) has no API key: {refused}"):
        LiteLLMBackend("some-model", provider)
    monkeypatch.setenv(f"{provider.upper()}_API_KEY", "from-the-environment")
    LiteLLMBackend("some-model", provider)
    LiteLLMBackend("some-model", provider, api_key="given")


def test_litellm_providers_load_from_the_config_with_keys_from_api_keys(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("llms:\n  models:\n    - {name: claude-x, backend: anthropic}\n"
                    "    - {name: llama-3, backend: groq, api_key: own-key-1234}\napi_keys: {anthropic: section-key-5678}\n")
    claude, llama = load_cores(load_config(path, env={"AIOS_DATA_DIR": str(tmp_path)}))
    assert (claude._api_key, llama._api_key) == ("section-key-5678", "own-key-1234")
    assert claude.describe() == {"name": "claude-x", "backend": "anthropic", "via": "litellm",
                                 "structured_output": "provider"}
    path.write_text("llms:\n  models:\n    - {name: m, backend: no_such_provider}\n")
    unknown = load_config(path, env={"AIOS_DATA_DIR": str(tmp_path)})  # reading a file needs no LiteLLM
    with pytest.raises(KernelError, match="backend 'no_such_provider' is not a LiteLLM provider"):
        load_cores(unknown)
    with pytest.raises(ConfigError, match=f"^{re.escape(str(path))}: llms.models.0.backend: backend 'no_such_provider' "
                       "is not a LiteLLM provider"):  # a kernel about to start says so with the file and field
        load_config(path, env={"AIOS_DATA_DIR": str(tmp_path)}, check_providers=True)
