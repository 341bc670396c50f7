"""Prompt folding and reply decoding for local models: tool names, tools and response formats in the system
prompt, tool calls and JSON read back from the shapes real models write. Pure Python: no model is loaded."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from aios.llm.prompting import (
    decode_hf_tool_calls,
    double_underscore_to_slash,
    extract_json,
    json_reply_prefix,
    json_skeleton,
    merge_messages_with_response_format,
    merge_messages_with_tools,
    slash_to_double_underscore,
    tools_for_model,
    wants_json_output,
)

WEATHER = {"city": "Paris"}
Call = tuple[str, dict[str, Any]]


def names_and_parameters(text: str) -> list[Call]:
    return [(call["name"], call["parameters"]) for call in decode_hf_tool_calls(text)]


# --- tool names -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("slash", "underscore"),
    [
        pytest.param("author/name", "author__name", id="author-and-name"),
        pytest.param("example/arxiv_search", "example__arxiv_search", id="single-underscores-kept"),
        pytest.param("get_weather", "get_weather", id="no-author"),
    ],
)
def test_tool_names_round_trip_between_slash_and_double_underscore(slash: str, underscore: str) -> None:
    assert slash_to_double_underscore(slash) == underscore
    assert double_underscore_to_slash(underscore) == slash
    assert double_underscore_to_slash(slash_to_double_underscore(slash)) == slash


# --- tools_for_model --------------------------------------------------------------------------------------------

BARE_TOOL = {
    "name": "demo/get_weather",
    "description": "Weather for a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}
OPENAI_TOOL = {"type": "function", "function": copy.deepcopy(BARE_TOOL)}
EXPECTED_TOOL = {
    "type": "function",
    "function": {**copy.deepcopy(BARE_TOOL), "name": "demo__get_weather"},
}


@pytest.mark.parametrize("tool", [pytest.param(BARE_TOOL, id="bare-aios"), pytest.param(OPENAI_TOOL, id="openai")])
def test_tools_for_model_gives_openai_function_form_with_model_names(tool: dict[str, Any]) -> None:
    before = copy.deepcopy(tool)
    assert tools_for_model([tool]) == [EXPECTED_TOOL]
    assert tool == before


def test_tools_for_model_fills_missing_description_and_parameters() -> None:
    (tool,) = tools_for_model([{"name": "ping"}])
    assert tool["function"] == {"name": "ping", "description": "", "parameters": {"type": "object", "properties": {}}}


def test_tools_for_model_output_does_not_share_parameters_with_the_input() -> None:
    tool = copy.deepcopy(BARE_TOOL)
    tools_for_model([tool])[0]["function"]["parameters"]["properties"].clear()
    assert tool["parameters"]["properties"] == BARE_TOOL["parameters"]["properties"]


def test_tools_for_model_is_idempotent_so_backends_may_convert_again() -> None:
    once = tools_for_model([BARE_TOOL])
    assert tools_for_model(once) == once


@pytest.mark.parametrize(
    ("tools", "problem"),
    [
        pytest.param([{"description": "no name"}], "tool 0 needs a non-empty string 'name'", id="missing-name"),
        pytest.param([BARE_TOOL, {"name": 3}], "tool 1 needs a non-empty string 'name'", id="number-name"),
        pytest.param([{"type": "function", "function": {}}], "tool 0 needs", id="openai-without-name"),
        pytest.param([{"name": ""}], "tool 0 needs a non-empty", id="empty-name"),
        pytest.param(["get_weather"], "tool 0 must be an object", id="string-tool"),
        pytest.param([{"function": "get_weather"}], "tool 0: 'function' must be an object", id="string-function"),
        pytest.param([{"name": "x", "parameters": []}], "tool 0 (x): 'parameters' must be", id="list-parameters"),
        pytest.param({"name": "x"}, "tools must be a list", id="not-a-list"),
        pytest.param([{"type": "web_search", "function": {"name": "x"}}], "tool 0 has type 'web_search': only "
                     "'function' tools are supported", id="not-a-function-tool"),
    ],
)
def test_tools_for_model_rejects_unusable_tools_naming_index_and_problem(tools: Any, problem: str) -> None:
    with pytest.raises(ValueError, match=problem.replace("(", r"\(").replace(")", r"\)")):
        tools_for_model(tools)


# --- merging into the system prompt -----------------------------------------------------------------------------

USER_ONLY = [{"role": "user", "content": "Weather in Paris?"}]
WITH_SYSTEM = [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Weather in Paris?"}]


@pytest.mark.parametrize(
    "messages", [pytest.param(USER_ONLY, id="no-system"), pytest.param(WITH_SYSTEM, id="existing-system")]
)
def test_merge_with_tools_puts_tools_and_call_format_in_the_system_message(messages: list[dict[str, Any]]) -> None:
    before = copy.deepcopy(messages)
    tools = [copy.deepcopy(BARE_TOOL)]
    merged = merge_messages_with_tools(messages, tools)

    assert messages == before and tools == [BARE_TOOL]
    assert merged is not messages and len(merged) == 2
    system = merged[0]
    assert system["role"] == "system"
    assert json.dumps(tools_for_model(tools), separators=(",", ":")) in system["content"]
    assert '[{"name": "tool_name", "parameters": {' in system["content"]
    assert "ONLY a JSON array" in system["content"] and "plain text" in system["content"]
    assert merged[1] == before[-1]


def test_merge_with_tools_appends_to_an_existing_system_prompt() -> None:
    system = merge_messages_with_tools(WITH_SYSTEM, [BARE_TOOL])[0]["content"]
    assert system.startswith("You are terse.\n\n") and "demo__get_weather" in system


def test_merge_with_tools_keeps_list_content_parts_as_a_list() -> None:
    messages = [{"role": "system", "content": [{"type": "text", "text": "Be kind."}]}, *USER_ONLY]
    before = copy.deepcopy(messages)
    content = merge_messages_with_tools(messages, [BARE_TOOL])[0]["content"]
    assert content[0] == {"type": "text", "text": "Be kind."} and "demo__get_weather" in content[1]["text"]
    assert messages == before


def test_merge_with_no_tools_adds_nothing() -> None:
    assert merge_messages_with_tools(USER_ONLY, []) == USER_ONLY


SCHEMA = {"type": "object", "properties": {"answer": {"type": "string"}}, "required": ["answer"]}


@pytest.mark.parametrize(
    "messages", [pytest.param(USER_ONLY, id="no-system"), pytest.param(WITH_SYSTEM, id="existing-system")]
)
@pytest.mark.parametrize(
    ("response_format", "shape_in_prompt"),
    [
        pytest.param(None, None, id="none"),
        pytest.param({"type": "json_object"}, None, id="json-object"),
        pytest.param({"type": "json_schema", "json_schema": {"name": "a", "schema": SCHEMA}},
                     '{"answer": "<string>"}', id="json-schema"),
        pytest.param(SCHEMA, '{"answer": "<string>"}', id="bare-schema"),
        pytest.param({"properties": {"n": {"type": "integer"}}}, '{"n": <integer>}', id="bare-schema-without-type"),
        pytest.param({"type": ["array", "null"]}, '{"type":["array","null"]}', id="bare-schema-type-list"),
    ],
)
def test_merge_with_response_format_asks_for_json_in_the_system_message(
    messages: list[dict[str, Any]], response_format: dict[str, Any] | None, shape_in_prompt: str | None
) -> None:
    before, format_before = copy.deepcopy(messages), copy.deepcopy(response_format)
    merged = merge_messages_with_response_format(messages, response_format)

    assert messages == before and response_format == format_before
    assert len(merged) == 2 and merged[0]["role"] == "system" and merged[1] == before[-1]
    assert "ONLY a JSON" in merged[0]["content"]
    if messages[0]["role"] == "system":
        assert merged[0]["content"].startswith("You are terse.\n\n")
    if shape_in_prompt is not None:
        assert shape_in_prompt in merged[0]["content"]


@pytest.mark.parametrize(
    ("schema", "skeleton"),
    [
        pytest.param(SCHEMA, '{"answer": "<string>"}', id="flat-object"),
        pytest.param({"type": "object", "properties": {"loc": {"type": "object", "properties": {
            "lat": {"type": "number"}}}, "tags": {"type": "array", "items": {"type": "string"}}}},
            '{"loc": {"lat": <number>}, "tags": ["<string>", ...]}', id="nested-object-and-array"),
        pytest.param({"type": "object", "properties": {"unit": {"enum": ["c", "f"]}}},
                     '{"unit": <one of "c" | "f">}', id="enum"),
        pytest.param({}, "<value>", id="untyped"),
    ],
)
def test_json_skeleton_shows_the_shape_of_a_schema(schema: dict[str, Any], skeleton: str) -> None:
    assert json_skeleton(schema) == skeleton


@pytest.mark.parametrize(
    ("response_format", "prefix"),
    [
        pytest.param(None, '{"', id="default-object"),
        pytest.param({"type": "json_object"}, '{"', id="json-object"),
        pytest.param({"type": "json_schema", "json_schema": {"name": "a", "schema": SCHEMA}}, '{"', id="object-schema"),
        pytest.param({"type": "array", "items": {"type": "integer"}}, "[", id="array-schema"),
        pytest.param({"type": "string"}, "", id="string-schema"),
        pytest.param({"type": "text"}, "", id="text"),
    ],
)
def test_json_reply_prefix_starts_the_value_the_format_asks_for(response_format: Any, prefix: str) -> None:
    assert json_reply_prefix(response_format) == prefix


@pytest.mark.parametrize(
    ("response_format", "wanted"),
    [(None, True), ({"type": "json_object"}, True), ({"type": "text"}, False), (SCHEMA, True)],
    ids=["none", "json-object", "text", "schema"],
)
def test_only_the_text_format_does_not_ask_for_json(response_format: Any, wanted: bool) -> None:
    assert wants_json_output(response_format) is wanted


def test_merge_with_text_response_format_returns_an_unchanged_copy() -> None:
    merged = merge_messages_with_response_format(WITH_SYSTEM, {"type": "text"})
    assert merged == WITH_SYSTEM and merged is not WITH_SYSTEM and merged[0] is not WITH_SYSTEM[0]


@pytest.mark.parametrize(
    ("response_format", "problem"),
    [
        pytest.param("json", "response_format must be an object, got str", id="string"),
        pytest.param(["json_object"], "response_format must be an object, got list", id="list"),
        pytest.param({"type": "json_schema"}, "needs a 'json_schema' object", id="json-schema-missing"),
        pytest.param({"type": "json_schema", "json_schema": {"name": "a"}}, "'schema' to be a JSON Schema object",
                     id="json-schema-without-schema"),
        pytest.param({"type": "json_schema", "json_schema": {"schema": "{}"}}, "'schema' to be a JSON Schema",
                     id="json-schema-string-schema"),
        pytest.param({"type": "yaml"}, "type 'yaml' is not one of", id="unknown-type"),
        pytest.param({}, "needs a 'type'", id="empty-object"),
    ],
)
def test_merge_with_response_format_rejects_unusable_formats_naming_the_problem(
    response_format: Any, problem: str
) -> None:
    with pytest.raises(ValueError, match=problem):
        merge_messages_with_response_format(USER_ONLY, response_format)


# --- decoding tool calls ----------------------------------------------------------------------------------------

TOOL_CALL_SHAPES = [
    pytest.param('[{"name": "get_weather", "parameters": {"city": "Paris"}}]',
                 [("get_weather", WEATHER)], id="json-array"),
    pytest.param('{"name": "get_weather", "parameters": {"city": "Paris"}}',
                 [("get_weather", WEATHER)], id="single-object"),
    pytest.param('```json\n[{"name": "get_weather", "parameters": {"city": "Paris"}}]\n```',
                 [("get_weather", WEATHER)], id="json-code-fence"),
    pytest.param('```\n{"name": "get_weather", "parameters": {"city": "Paris"}}\n```',
                 [("get_weather", WEATHER)], id="bare-code-fence"),
    pytest.param('<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>',
                 [("get_weather", WEATHER)], id="qwen-tool-call-tag"),
    pytest.param('<tool_call>{"name": "a", "arguments": {}}</tool_call>\n<tool_call>{"name": "b", "arguments": '
                 '{"x": 1}}</tool_call>', [("a", {}), ("b", {"x": 1})], id="several-tool-call-tags"),
    pytest.param('<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}',
                 [("get_weather", WEATHER)], id="unclosed-tool-call-tag"),
    pytest.param('Sure! I will check the weather.\n[{"name": "get_weather", "parameters": {"city": "Paris"}}]\n'
                 "Let me know if you need more.", [("get_weather", WEATHER)], id="prose-around-array"),
    pytest.param('{"name": "get_weather", "arguments": "{\\"city\\": \\"Paris\\"}"}',
                 [("get_weather", WEATHER)], id="arguments-as-json-string"),
    pytest.param('{"name": "ping", "arguments": ""}', [("ping", {})], id="arguments-empty-string"),
    pytest.param('[{"id": "call_1", "type": "function", "function": {"name": "get_weather", '
                 '"arguments": "{\\"city\\": \\"Paris\\"}"}}]', [("get_weather", WEATHER)], id="openai-nested"),
    pytest.param('{"tool_calls": [{"function": {"name": "a", "arguments": {}}}, {"name": "b", "parameters": {}}]}',
                 [("a", {}), ("b", {})], id="tool-calls-wrapper"),
    pytest.param('<|python_tag|>{"name": "get_weather", "parameters": {"city": "Paris"}}<|eom_id|>',
                 [("get_weather", WEATHER)], id="llama3-python-tag"),
    pytest.param('{"type": "function", "name": "get_weather", "parameters": {"city": "Paris"}}',
                 [("get_weather", WEATHER)], id="llama32-typed-object"),
    pytest.param('{"name": "a", "parameters": {"x": 1}}\n{"name": "b", "parameters": {"y": 2}}',
                 [("a", {"x": 1}), ("b", {"y": 2})], id="one-object-per-line"),
    pytest.param('{"name": "a", "parameters": {}}; {"name": "b", "parameters": {}}',
                 [("a", {}), ("b", {})], id="semicolon-separated"),
    pytest.param('[TOOL_CALLS] [{"name": "get_weather", "arguments": {"city": "Paris"}}]',
                 [("get_weather", WEATHER)], id="mistral-tool-calls-marker"),
    pytest.param('[{"name": "demo__get_weather", "parameters": {"city": "Paris"}}]',
                 [("demo/get_weather", WEATHER)], id="double-underscore-name-to-slash"),
    pytest.param('{"name": "get_time"}', [("get_time", {})], id="missing-parameters"),
    pytest.param('{"name": "get_time", "parameters": null}', [("get_time", {})], id="null-parameters"),
    pytest.param('[{"name": "a", "parameters": [1, 2]}, {"name": "b", "parameters": {}}]',
                 [("b", {})], id="list-parameters-item-skipped"),
    pytest.param('[{"name": "get_weather", "parameters": {"city": "Paris"}}, {"description": "no name"}]',
                 [("get_weather", WEATHER)], id="nameless-item-skipped"),
    pytest.param('<think>Maybe {"name": "wrong", "parameters": {}}? No.</think>\n'
                 '{"name": "get_weather", "parameters": {"city": "Paris"}}',
                 [("get_weather", WEATHER)], id="reasoning-block-ignored"),
    pytest.param('I found [1] a tool.\n```json\n{"name": "get_weather", "parameters": {"city": "Paris"}}\n```',
                 [("get_weather", WEATHER)], id="fence-preferred-over-prose"),
    pytest.param('{"name": "search", "parameters": {"query": "a {curly} [bracket] \\"quote\\""}}',
                 [("search", {"query": 'a {curly} [bracket] "quote"'})], id="brackets-inside-strings"),
]


@pytest.mark.parametrize(("text", "expected"), TOOL_CALL_SHAPES)
def test_decode_reads_calls_from_real_world_output_shapes(text: str, expected: list[Call]) -> None:
    assert names_and_parameters(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("", id="empty"),
        pytest.param("   \n", id="whitespace"),
        pytest.param("The weather in Paris is sunny today.", id="prose"),
        pytest.param("Use [brackets] and {braces} freely.", id="prose-with-brackets"),
        pytest.param('{"name": "get_weather", "parameters": {"city": "Paris"', id="truncated-json"),
        pytest.param('[{"name": "get_weather", "parameters": ', id="truncated-array"),
        pytest.param('{"name": "get_weather", "arguments": "{not json"}', id="broken-arguments-string"),
        pytest.param('{"name": "get_weather", "parameters": "Paris"}', id="string-parameters"),
        pytest.param('{"city": "Paris"}', id="object-without-name"),
        pytest.param('{"name": 42, "parameters": {}}', id="number-name"),
        pytest.param('{"name": "Alice", "age": 31}', id="data-object-with-a-name-field"),
        pytest.param("[1, 2, 3]", id="array-of-numbers"),
        pytest.param("```python\nprint('hi')\n```", id="code-fence-without-json"),
        pytest.param("<tool_call></tool_call>", id="empty-tool-call-tag"),
    ],
)
def test_decode_returns_no_calls_for_prose_empty_or_broken_output(text: str) -> None:
    assert decode_hf_tool_calls(text) == []


def test_decode_never_raises_on_non_text() -> None:
    assert decode_hf_tool_calls(None) == []  # type: ignore[arg-type]


def test_decoded_calls_have_unique_string_ids() -> None:
    text = '[{"name": "a", "parameters": {}}, {"name": "a", "parameters": {}}, {"name": "b", "parameters": {}}]'
    ids = [call["id"] for call in decode_hf_tool_calls(text) + decode_hf_tool_calls(text)]
    assert len(ids) == 6 and len(set(ids)) == 6
    assert all(isinstance(i, str) and i.startswith("call_") for i in ids)


def test_decoded_call_has_exactly_name_parameters_and_id() -> None:
    (call,) = decode_hf_tool_calls('{"id": "x", "type": "function", "name": "a", "arguments": {"k": "v"}}')
    assert set(call) == {"name", "parameters", "id"} and call["parameters"] == {"k": "v"}


def test_a_tool_name_survives_the_trip_through_prompt_and_reply() -> None:
    (tool,) = tools_for_model([{"name": "example/arxiv_search"}])
    reply = json.dumps([{"name": tool["function"]["name"], "parameters": {"q": "llm"}}])
    assert names_and_parameters(reply) == [("example/arxiv_search", {"q": "llm"})]


# --- extract_json -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param('{"answer": "Paris"}', {"answer": "Paris"}, id="whole-object"),
        pytest.param('  [1, 2]\n', [1, 2], id="whole-array-with-whitespace"),
        pytest.param("42", 42, id="whole-scalar"),
        pytest.param('```json\n{"answer": "Paris"}\n```', {"answer": "Paris"}, id="json-fence"),
        pytest.param('Here you go:\n```\n[{"a": 1}]\n```\nDone.', [{"a": 1}], id="bare-fence-with-prose"),
        pytest.param('The answer is {"answer": "Paris"} as requested.', {"answer": "Paris"}, id="object-in-prose"),
        pytest.param('Result: [true, false] and {"x": 1}', [True, False], id="first-value-in-prose"),
        pytest.param('Hmm {not json} but {"ok": true}', {"ok": True}, id="skips-broken-braces"),
        pytest.param('<think>draft {"answer": "?"}</think>{"answer": "Paris"}', {"answer": "Paris"},
                     id="reasoning-block-ignored"),
    ],
)
def test_extract_json_finds_the_value_in_the_reply(text: str, expected: Any) -> None:
    assert extract_json(text) == expected


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        pytest.param("", "the reply is empty", id="empty"),
        pytest.param("Paris is the capital.", "no JSON value found in the reply: 'Paris is the capital.'", id="prose"),
        pytest.param('{"answer": "Par', "no JSON value found", id="truncated"),
    ],
)
def test_extract_json_raises_naming_the_problem_when_nothing_parses(text: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        extract_json(text)


def test_extract_json_error_excerpt_is_truncated() -> None:
    with pytest.raises(ValueError) as error:
        extract_json("word " * 500)
    assert len(str(error.value)) < 300 and str(error.value).endswith("…")
