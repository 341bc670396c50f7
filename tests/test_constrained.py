"""Structured output with the real embedded model: grammar-constrained JSON and tool calls are always valid,
whatever the sampling; tool_choice is honoured; constrained generations batch and preempt like any other; and a
backend that does not constrain gets its replies checked and retried once."""

from __future__ import annotations

import asyncio
import json
import tempfile
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator
from test_engine import ask, engine_backend, run_with_rival

from aios.config import EMBEDDED_MODEL
from aios.kernel import Kernel
from aios.llm.core import GenerationRequest, SamplingParams
from aios.llm.handler import LLMQuery, LLMResponse
from aios.llm.hf import HfLocalBackend
from aios.llm.structured import json_spec, tool_call_spec
from aios.syscall import SyscallKind

WEATHER = {"type": "function", "function": {
    "name": "demo/get_weather", "description": "Get the current weather in a city",
    "parameters": {"type": "object", "properties": {
        "city": {"type": "string"}, "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
        "required": ["city"]}}}
EMAIL = {"type": "function", "function": {
    "name": "send_email", "description": "Send an email",
    "parameters": {"type": "object", "properties": {
        "to": {"type": "array", "items": {"type": "string"}, "minItems": 1}, "subject": {"type": "string"},
        "urgent": {"type": "boolean"}}, "required": ["to", "subject"]}}}
TIMER = {"type": "function", "function": {
    "name": "set_timer", "description": "Start a countdown timer",
    "parameters": {"type": "object", "properties": {"minutes": {"type": "integer", "minimum": 1, "maximum": 600}},
                   "required": ["minutes"]}}}
TOOLS = [WEATHER, EMAIL, TIMER]
SCHEMAS = {
    "person": {"type": "object", "properties": {
        "name": {"type": "string"}, "age": {"type": "integer", "minimum": 0, "maximum": 150},
        "address": {"type": "object", "properties": {"city": {"type": "string"}, "country": {"type": "string"}},
                    "required": ["city"]}}, "required": ["name", "age", "address"]},
    "sentiment": {"type": "object", "properties": {
        "label": {"enum": ["positive", "negative", "neutral"]}, "score": {"type": "number", "minimum": 0,
                                                                          "maximum": 1}},
        "required": ["label", "score"]},
    "cities": {"type": "array", "items": {"type": "string"}, "minItems": 2, "maxItems": 4},
}
PERSON_TEXT = [{"role": "user", "content": "Ada Lovelace was 36 and lived in London, England. Extract her details."}]


def user(text: str) -> list[dict[str, Any]]:
    return [{"role": "user", "content": text}]


def json_query(schema: dict[str, Any] | None, messages: list[dict[str, Any]], **fields: Any) -> LLMQuery:
    response_format = {"type": "json_object"} if schema is None else {
        "type": "json_schema", "json_schema": {"name": "answer", "schema": schema}}
    return LLMQuery(messages, action_type="chat_with_json_output", response_format=response_format,
                    max_new_tokens=fields.pop("max_new_tokens", 160), **fields)


def tool_query(messages: list[dict[str, Any]], tools: list[dict[str, Any]] = TOOLS, **fields: Any) -> LLMQuery:
    return LLMQuery(messages, action_type="chat_with_tool_call_output", tools=tools,
                    max_new_tokens=fields.pop("max_new_tokens", 120), **fields)


def run(config: Any, cores: list[Any], *queries: LLMQuery) -> list[LLMResponse]:
    """The queries through a kernel over ``cores`` (left open: they are shared by the module), with a data dir of
    its own (the shared one is the test kernel's)."""
    async def main(data_dir: str) -> list[LLMResponse]:
        kernel = Kernel(config.model_copy(update={"data_dir": Path(data_dir)}), cores)
        await kernel.start()
        try:
            syscalls = await asyncio.gather(*(kernel.call(SyscallKind.LLM, "test/structured", q) for q in queries))
        finally:
            await kernel.stop(close_cores=False)
        return [s.value for s in syscalls]

    with tempfile.TemporaryDirectory() as data_dir:
        return asyncio.run(main(data_dir))


def assert_valid_calls(response: LLMResponse, tools: list[dict[str, Any]]) -> None:
    assert response.error is None and response.status_code == 200, response.error
    assert response.tool_calls and response.response_message is None
    offered = {t["function"]["name"]: t["function"]["parameters"] for t in tools}
    for call in response.tool_calls:
        assert call["name"] in offered
        Draft202012Validator(offered[call["name"]]).validate(call["parameters"])


def test_constrained_json_parses_and_matches_the_schema_even_when_sampled(config: Any, backend: HfLocalBackend) -> None:
    """Greedy replies to three schemas are valid; so are sampled ones (temperature 1), unless a sampled string
    rambles past the token limit — then the reply is an explicit 502 that says so, never a silently bad value."""
    queries = [json_query(schema, PERSON_TEXT if name == "person" else user(
        "Is 'I loved this film' positive or negative?" if name == "sentiment" else "Name some cities in Italy."),
        temperature=t) for name, schema in SCHEMAS.items() for t in (0, 1, 1, 1, 1)]
    responses = run(config, [backend], *queries)
    for index, (query, response) in enumerate(zip(queries, responses)):
        if response.status_code == 502 and index % 5:  # a sampled one
            assert "cut off after" in response.error
            continue
        assert response.error is None
        Draft202012Validator(query.response_format["json_schema"]["schema"]).validate(
            json.loads(response.response_message))
    greedy_person = json.loads(responses[0].response_message)
    assert greedy_person["name"].startswith("Ada") and greedy_person["address"]["city"] == "London"


def test_json_object_mode_gives_an_object(config: Any, backend: HfLocalBackend) -> None:
    (response,) = run(config, [backend], json_query(None, user("What is the capital of France? Answer in JSON."), temperature=0))
    assert isinstance(json.loads(response.response_message), dict)


@pytest.mark.parametrize(("request_text", "tool"), [
    ("What's the weather in Paris?", "demo/get_weather"),
    ("Set a timer for 10 minutes.", "set_timer"),
])
def test_a_required_tool_call_names_an_offered_tool_with_valid_parameters(
    config: Any, backend: HfLocalBackend, request_text: str, tool: str
) -> None:
    greedy, *sampled = run(config, [backend], *(tool_query(user(request_text), temperature=t) for t in (0, 1, 1)))
    assert_valid_calls(greedy, TOOLS)
    assert greedy.tool_calls[0]["name"] == tool
    for response in sampled:  # valid too, unless a sampled string rambled past the limit, which is said
        if response.status_code == 502:
            assert "cut off after" in response.error
        else:
            assert_valid_calls(response, TOOLS)


def test_keywords_a_grammar_cannot_express_are_checked_instead_of_refused(config: Any,
                                                                         backend: HfLocalBackend) -> None:
    schema = {"type": "object", "properties": {"cities": {"type": "array", "items": {"type": "string"},
                                                          "uniqueItems": True, "minItems": 2, "maxItems": 3}},
              "required": ["cities"]}
    (response,) = run(config, [backend], json_query(schema, user("Name some cities in Italy."), temperature=0))
    if response.status_code == 200:
        cities = json.loads(response.response_message)["cities"]
        assert 2 <= len(cities) <= 3 and len(set(cities)) == len(cities)
    else:
        assert response.status_code == 502 and ("non-unique" in response.error or "cut off" in response.error)


def test_a_named_tool_choice_calls_that_tool(config: Any, backend: HfLocalBackend) -> None:
    choice = {"type": "function", "function": {"name": "set_timer"}}
    (response,) = run(config, [backend], tool_query(user("What's the weather in Paris?"), tool_choice=choice,
                                                    temperature=0))
    assert_valid_calls(response, TOOLS)
    assert {call["name"] for call in response.tool_calls} == {"set_timer"}


def test_auto_answers_in_prose_or_with_valid_calls_and_none_in_prose(config: Any, backend: HfLocalBackend) -> None:
    hello = user("Hello! How are you today?")
    auto_chat, auto_tool, none = run(
        config, [backend], LLMQuery(hello, tools=TOOLS, temperature=0, max_new_tokens=40),  # chat: auto by default
        tool_query(user("What's the weather in Paris?"), tool_choice="auto", temperature=0),
        tool_query(user("What's the weather in Paris?"), tool_choice="none", temperature=0, max_new_tokens=30))
    assert auto_chat.error is None and auto_chat.tool_calls == [] and auto_chat.response_message
    assert auto_tool.error is None
    if auto_tool.tool_calls:
        assert_valid_calls(auto_tool, TOOLS)
    else:
        assert auto_tool.response_message and not auto_tool.response_message.lstrip().startswith("[")
    assert none.error is None and none.tool_calls is None and none.response_message


def test_a_prose_answer_under_auto_is_left_as_it_is_near_the_token_limit(config: Any,
                                                                         backend: HfLocalBackend) -> None:
    """Only JSON is brought to an end early: prose that runs to the limit is cut there, not filled with quotes."""
    (response,) = run(config, [backend], LLMQuery(user("Tell me a long story about the sea."), tools=TOOLS,
                                                  temperature=0, max_new_tokens=40))
    assert response.tool_calls == [] and response.response_message.startswith("The sea")
    assert '""' not in response.response_message


def test_the_grammar_allows_several_calls_in_one_reply(backend: HfLocalBackend) -> None:
    constraint = backend.grammars.constraint(tool_call_spec(TOOLS, "required"))
    reply = ('[{"name":"demo__get_weather","parameters":{"city":"Paris"}},'
             '{"name":"set_timer","parameters":{"minutes":5}}]')
    assert all(constraint.accept(token) for token in backend.tokenizer.encode(reply))
    assert constraint.complete
    refused = backend.grammars.constraint(tool_call_spec(TOOLS, "required"))
    assert not all(refused.accept(t) for t in backend.tokenizer.encode('[{"name":"demo__get_weather", "p'))


def test_compiled_grammars_are_cached_per_schema(backend: HfLocalBackend) -> None:
    before = backend.grammars.cached
    spec = json_spec({"type": "object", "properties": {"cache_probe": {"type": "boolean"}}})
    first, second = backend.grammars.constraint(spec), backend.grammars.constraint(spec)
    assert backend.grammars.cached == before + 1 and first.matcher is not second.matcher


def constrained_request(max_new_tokens: int) -> GenerationRequest:
    request = GenerationRequest(PERSON_TEXT, SamplingParams(temperature=0, max_new_tokens=max_new_tokens))
    request.constraint = json_spec(SCHEMAS["person"])
    return request


def test_a_constrained_reply_running_out_of_tokens_is_closed_whole(backend: HfLocalBackend) -> None:
    """Near its token limit a constrained reply is brought to an end (strings, arrays, objects closed) rather
    than cut off: the JSON is valid, the story is short, and the generation says it hit the limit."""
    schema = {"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]}
    request = GenerationRequest(user("Describe the weather in Tokyo today in great detail."),
                                SamplingParams(temperature=0, max_new_tokens=40))
    request.constraint = json_spec(schema)
    result = backend.generate(request)
    assert result.finish_reason == "length" and result.completion_tokens <= 40
    assert json.loads(result.text)["text"].startswith("Today in Tokyo")


def test_stop_strings_do_not_cut_a_constrained_reply(backend: HfLocalBackend) -> None:
    request = constrained_request(200)
    request.sampling.stop = ['"', "}"]
    result = backend.generate(request)
    Draft202012Validator(SCHEMAS["person"]).validate(json.loads(result.text))


@pytest.mark.parametrize("quantum", [24, 5])
def test_a_preempted_constrained_generation_resumes_with_its_grammar_state(
    backend: HfLocalBackend, data_dir: Path, quantum: int
) -> None:
    """One slot, round-robin with a free-text rival: the grammar state waits with the suspended sequence (KV
    spilled to disk) and the reply is the one made without interruption, token for token."""
    alone = backend.generate(constrained_request(200))
    Draft202012Validator(SCHEMAS["person"]).validate(json.loads(alone.text))
    switched = engine_backend(data_dir, max_batch=1, policy="rr", quantum_tokens=quantum, snapshot_ram_mb=0)
    try:
        slices: list[bool] = []
        target = constrained_request(200)
        target.on_running = slices.append
        result = run_with_rival(switched, target, ask("Describe the ocean in great detail.", 500))
        assert result.text == alone.text
        assert slices.count(False) == (alone.completion_tokens - 1) // quantum
    finally:
        switched.close()


def test_constrained_and_free_sequences_share_a_batch_without_changing_each_other(backend: HfLocalBackend) -> None:
    free_alone = backend.generate(ask("Write a haiku about the sea."))
    constrained_alone = backend.generate(constrained_request(200))

    async def main() -> list[Any]:
        return list(await asyncio.gather(backend.complete(ask("Write a haiku about the sea.")),
                                         backend.complete(constrained_request(200))))

    free, constrained = asyncio.run(main())
    assert free.text == free_alone.text and constrained.text == constrained_alone.text


@pytest.fixture(scope="module")
def prompt_only(data_dir: Path) -> HfLocalBackend:
    """The embedded model with constraints off: structured replies only asked for in the prompt, like a backend
    that cannot constrain."""
    backend = HfLocalBackend(EMBEDDED_MODEL, data_dir=data_dir, structured_output="prompt")
    yield backend
    backend.close()


class Recorder:
    """Passes requests through to a real backend and keeps the messages of each (a spy, not a mock)."""

    def __init__(self, core: HfLocalBackend) -> None:
        self.core, self.prompts = core, []
        self.name, self.backend, self.constrains = core.name, core.backend, core.constrains
        self.max_prompt_chars = core.max_prompt_chars

    async def complete(self, request: GenerationRequest) -> Any:
        self.prompts.append(request.messages)
        return await self.core.complete(request)


def test_without_constraints_an_invalid_reply_is_retried_once_with_the_problem_shown(
    config: Any, prompt_only: HfLocalBackend
) -> None:
    """Asking for a number the schema forbids makes the prompt-only reply invalid: the model is shown why and
    tries again; a second failure is a clear 502 with the reply attached, never a silently invalid value."""
    schema = {"type": "object", "properties": {"year": {"type": "integer", "minimum": 3000}}, "required": ["year"]}
    recorder = Recorder(prompt_only)
    (response,) = run(config, [recorder], json_query(schema, user("In which year did World War II end?"),
                                                     temperature=0, max_new_tokens=40))
    assert len(recorder.prompts) == 2
    shown = recorder.prompts[1][-1]["content"]
    assert recorder.prompts[1][-2]["role"] == "assistant" and "not valid" in shown and "minimum" in shown
    if response.status_code == 200:
        assert json.loads(response.response_message)["year"] >= 3000
    else:
        assert response.status_code == 502 and "invalid twice" in response.error and response.response_message


def test_without_constraints_a_valid_reply_is_not_retried(config: Any, prompt_only: HfLocalBackend) -> None:
    recorder = Recorder(prompt_only)
    (response,) = run(config, [recorder], json_query(None, user("What is the capital of France? Answer in JSON."), temperature=0))
    assert response.error is None and isinstance(json.loads(response.response_message), dict)
    assert len(recorder.prompts) == 1
