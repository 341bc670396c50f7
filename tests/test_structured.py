"""Output specs and reply checking (no model): what a JSON or tool-call reply must be, and how a reply that is
not that is reported."""

from __future__ import annotations

import json
from typing import Any

import pytest

from aios.llm.hf.grammar import LARGEST_EXACT, closed
from aios.llm.prompting import tools_for_model
from aios.llm.structured import InvalidReply, json_spec, parse_reply, retry_message, tool_call_spec, tool_choice_of

WEATHER = {"type": "function", "function": {"name": "demo/get_weather", "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}, "unit": {"enum": ["c", "f"]}}, "required": ["city"]}}}
CLOCK = {"name": "clock", "description": "the time"}  # AIOS's bare form, no parameters
TOOLS = tools_for_model([WEATHER, CLOCK])
PERSON = {"type": "object", "properties": {"name": {"type": "string"}, "age": {"type": "integer", "minimum": 0}},
          "required": ["name"]}


def call(name: str, **parameters: Any) -> dict[str, Any]:
    return {"name": name, "parameters": parameters}


def test_required_tool_calls_read_back_with_slash_names_and_ids() -> None:
    spec = tool_call_spec(TOOLS, "required")
    reply = parse_reply(spec, json.dumps([call("demo__get_weather", city="Paris"), call("clock")]))
    assert [(c["name"], c["parameters"]) for c in reply.tool_calls] == [("demo/get_weather", {"city": "Paris"}),
                                                                         ("clock", {})]
    assert all(c["id"].startswith("call_") for c in reply.tool_calls)


@pytest.mark.parametrize(("text", "problem"), [
    ("It is sunny.", "calls no tool"),
    ("[]", "non-empty JSON array of tool calls"),
    ('[{"name": "demo__get_weather", "parameters": {}}]', "'city' is a required property"),
    ('[{"name": "demo__get_weather", "parameters": {"city": "Paris", "unit": "k"}}]', "'k' is not one of"),
    ('[{"name": "teleport", "parameters": {}}]', r"call 0 names 'teleport', which is not one of the tools to call "
                                                 r"\(demo/get_weather, clock\)"),
    ('[{"name": "clock"}]', 'call 0 must be an object with exactly "name" and "parameters"'),
    ('[{"name": "clock", "parameters": {}', "not valid JSON"),
], ids=["prose", "empty", "missing-required", "bad-enum", "unknown-tool", "no-parameters", "truncated"])
def test_a_required_tool_call_that_is_not_valid_says_why(text: str, problem: str) -> None:
    with pytest.raises(InvalidReply, match=problem):
        parse_reply(tool_call_spec(TOOLS, "required"), text)


def test_calls_may_use_a_tools_short_name_where_it_is_unambiguous() -> None:
    spec = tool_call_spec(TOOLS, "required")
    reply = parse_reply(spec, json.dumps([call("get_weather", city="Oslo")]))
    assert reply.tool_calls[0]["name"] == "demo/get_weather"
    twins = tools_for_model([WEATHER, {"name": "other/get_weather"}])
    with pytest.raises(InvalidReply, match="not one of the tools"):
        parse_reply(tool_call_spec(twins, "required"), json.dumps([call("get_weather", city="Oslo")]))


def test_auto_accepts_prose_or_valid_calls_but_not_invalid_calls() -> None:
    spec = tool_call_spec(TOOLS, "auto")
    prose = parse_reply(spec, "I cannot check the weather.")
    assert prose.tool_calls == [] and prose.text == "I cannot check the weather."
    assert parse_reply(spec, json.dumps([call("clock")])).tool_calls[0]["name"] == "clock"
    with pytest.raises(InvalidReply):
        parse_reply(spec, json.dumps([call("clock", extra=1), call("nope")]))


def test_prompt_only_calls_in_other_shapes_are_read_and_checked() -> None:
    """The seed's lenient decoding still applies: fences and ``arguments`` are fine, a bad argument is not."""
    spec = tool_call_spec(TOOLS, "required")
    fenced = '```json\n{"name": "demo__get_weather", "arguments": "{\\"city\\": \\"Oslo\\"}"}\n```'
    assert parse_reply(spec, fenced).tool_calls[0]["parameters"] == {"city": "Oslo"}
    with pytest.raises(InvalidReply, match="required property"):
        parse_reply(spec, 'Sure: {"name": "demo__get_weather", "arguments": {}}')


def test_a_named_tool_choice_allows_only_that_tool() -> None:
    spec = tool_call_spec(TOOLS, {"type": "function", "function": {"name": "demo/get_weather"}})
    assert not spec.allow_text
    assert parse_reply(spec, json.dumps([call("demo__get_weather", city="Rome")])).tool_calls
    with pytest.raises(InvalidReply):
        parse_reply(spec, json.dumps([call("clock")]))


def test_tool_choice_none_means_a_plain_text_reply() -> None:
    assert tool_call_spec(TOOLS, "none") is None


@pytest.mark.parametrize(("choice", "problem"), [
    ("always", "tool_choice must be"),
    ({"type": "function"}, "tool_choice must be"),
    ({"type": "function", "function": {"name": ""}}, "tool_choice must be"),
    ({"function": {"name": "clock"}}, "tool_choice must be"),
    (3, "tool_choice must be"),
    ({"type": "function", "function": {"name": "teleport"}}, "'teleport', which is not one of the offered tools"),
], ids=["unknown-word", "no-function", "empty-name", "no-type", "number", "not-offered"])
def test_bad_tool_choices_are_refused_with_the_accepted_forms(choice: Any, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        tool_call_spec(TOOLS, choice)


@pytest.mark.parametrize(("schema", "problem"), [
    ({"type": "objekt"}, "is not valid under any of the given schemas"),
    ({"type": "object", "required": "name"}, "at required"),
    ({"type": "object", "properties": {"a": {"type": 5}}}, "at properties/a/type"),
    ({"type": "integer", "minimum": "zero"}, "at minimum"),
], ids=["bad-type", "required-not-list", "nested-bad-type", "bad-minimum"])
def test_an_invalid_schema_is_refused_naming_where(schema: dict[str, Any], problem: str) -> None:
    with pytest.raises(ValueError, match="response_format schema is not a valid JSON Schema") as caught:
        json_spec(schema)
    assert problem in str(caught.value)
    bad_tool = {"type": "function", "function": {"name": "t", "parameters": schema}}
    with pytest.raises(ValueError, match="tool 't' parameters is not a valid JSON Schema"):
        tool_call_spec(tools_for_model([bad_tool]), "required")


def test_json_replies_are_checked_against_the_schema() -> None:
    spec = json_spec(PERSON)
    assert parse_reply(spec, '{"name": "Ada", "age": 36}').value == {"name": "Ada", "age": 36}
    assert parse_reply(spec, 'Here: ```json\n{"name": "Ada"}\n```').value == {"name": "Ada"}  # seed leniency
    with pytest.raises(InvalidReply, match="at age: -1 is less than the minimum of 0"):
        parse_reply(spec, '{"name": "Ada", "age": -1}')
    with pytest.raises(InvalidReply, match="not JSON"):
        parse_reply(spec, "Ada is 36.")
    with pytest.raises(InvalidReply, match="is not of type 'object'"):
        parse_reply(json_spec(None), "[1, 2]")


def test_the_retry_message_shows_the_problem() -> None:
    message = retry_message(json_spec(PERSON), "the reply is not JSON")
    assert message["role"] == "user" and "the reply is not JSON" in message["content"]


def test_grammars_close_objects_and_bound_numbers_without_touching_the_given_schema() -> None:
    schema = {"type": "object", "properties": {
        "properties": {"type": "object", "properties": {"n": {"type": "number"}}},  # a field named "properties"
        "tags": {"type": "array", "items": {"type": "object", "properties": {"k": {"type": "integer", "minimum": 1}}}},
        "free": {"type": "object", "additionalProperties": True, "properties": {}},
    }}
    tight = closed(schema)
    assert tight["additionalProperties"] is False
    assert tight["properties"]["properties"]["additionalProperties"] is False
    assert "additionalProperties" not in tight["properties"]  # the map of fields is not a schema
    assert tight["properties"]["properties"]["properties"]["n"] == {
        "type": "number", "minimum": -LARGEST_EXACT, "maximum": LARGEST_EXACT}
    assert tight["properties"]["tags"]["items"]["properties"]["k"] == {
        "type": "integer", "minimum": 1, "maximum": LARGEST_EXACT}
    assert tight["properties"]["free"]["additionalProperties"] is True
    assert "additionalProperties" not in schema  # the caller's schema is unchanged
