"""Output specs and reply checking (no model): what a JSON or tool-call reply must be, and how a reply that is
not that is reported."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from jsonschema import Draft202012Validator, ValidationError

from aios.llm.hf.grammar import LARGEST_EXACT, closed
from aios.llm.structured import (
    MAX_CALLS,
    InvalidReply,
    ProseGate,
    calls_or_answer,
    complete_calls,
    json_spec,
    parse_reply,
    retry_message,
    tool_call_spec,
)

WEATHER = {"type": "function", "function": {"name": "demo/get_weather", "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}, "unit": {"enum": ["c", "f"]}}, "required": ["city"]}}}
CLOCK = {"name": "clock", "description": "the time"}  # AIOS's bare form, no parameters
TOOLS = [WEATHER, CLOCK]  # as an agent offers them
def _nested(depth: int) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "string"}
    for _ in range(depth):
        schema = {"type": "object", "properties": {"a": schema}}
    return schema


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
    ("[]", "calls no tool"),
    ('[{"name": "demo__get_weather", "parameters": {}}]', "'city' is a required property"),
    ('[{"name": "demo__get_weather", "parameters": {"city": "Paris", "unit": "k"}}]', "'k' is not one of"),
    ('[{"name": "teleport", "parameters": {}}]', r"call 0 names 'teleport', which is not one of the tools to call "
                                                 r"\(demo/get_weather, clock\)"),
    ('[{"name": "demo__get_weather"}]', "'city' is a required property"),  # the seed reads it as no arguments
    ('[{"name": ["clock"], "parameters": {}}]', "calls no tool"),
    ('[{"name": "clock", "parameters": {}', "not valid JSON"),
], ids=["prose", "empty", "missing-required", "bad-enum", "unknown-tool", "no-parameters", "name-not-text",
                                   "truncated"])
def test_a_required_tool_call_that_is_not_valid_says_why(text: str, problem: str) -> None:
    with pytest.raises(InvalidReply, match=problem):
        parse_reply(tool_call_spec(TOOLS, "required"), text)


def test_calls_may_use_a_tools_short_name_where_it_is_unambiguous() -> None:
    spec = tool_call_spec(TOOLS, "required")
    reply = parse_reply(spec, json.dumps([call("get_weather", city="Oslo")]))
    assert reply.tool_calls[0]["name"] == "demo/get_weather"
    twins = [WEATHER, {"name": "other/get_weather"}]
    with pytest.raises(InvalidReply, match="not one of the tools"):
        parse_reply(tool_call_spec(twins, "required"), json.dumps([call("get_weather", city="Oslo")]))


def test_calls_in_other_shapes_starting_with_a_bracket_are_still_read() -> None:
    spec = tool_call_spec(TOOLS, "required")
    for text in ('[{"name": "demo/get_weather", "parameters": {"city": "Oslo"}}]',  # the slash name
                 '[{"name": "demo__get_weather", "arguments": "{\\"city\\": \\"Oslo\\"}"}]',  # OpenAI's arguments
                 '[{"name": "demo__get_weather", "parameters": {"city": "Oslo"}}] I called it.'):  # prose after
        assert parse_reply(spec, text).tool_calls[0]["parameters"] == {"city": "Oslo"}, text


def test_tools_with_local_definitions_keep_them_inside_the_calls_schema() -> None:
    """A pydantic model's nested model comes as ``$defs`` + ``$ref``: the refs must still resolve once the
    parameters sit inside the array of calls (the grammar compiles that whole schema)."""
    booking = {"name": "book", "parameters": {"type": "object", "$defs": {"Guest": {
        "type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]}},
        "properties": {"guest": {"$ref": "#/$defs/Guest"}}, "required": ["guest"]}}
    spec = tool_call_spec([booking, CLOCK], "required")
    assert spec.schema["$defs"] == {"book.Guest": booking["parameters"]["$defs"]["Guest"]}
    Draft202012Validator(spec.schema).validate([call("book", guest={"name": "Ada"})])
    with pytest.raises(ValidationError):
        Draft202012Validator(spec.schema).validate([call("book", guest={})])
    assert parse_reply(spec, json.dumps([call("book", guest={"name": "Ada"})])).tool_calls[0]["name"] == "book"


def test_auto_accepts_prose_or_valid_calls_but_not_invalid_calls() -> None:
    spec = tool_call_spec(TOOLS, "auto")
    prose = parse_reply(spec, "I cannot check the weather.")
    assert prose.tool_calls == [] and prose.text == "I cannot check the weather."
    assert parse_reply(spec, json.dumps([call("clock")])).tool_calls[0]["name"] == "clock"
    with pytest.raises(InvalidReply):
        parse_reply(spec, json.dumps([call("clock", extra=1), call("nope")]))


def test_under_auto_with_a_json_answer_a_reply_is_calls_or_that_json_never_prose() -> None:
    spec = calls_or_answer(tool_call_spec(TOOLS, "auto"), json_spec(PERSON))
    assert parse_reply(spec, json.dumps([call("clock")])).tool_calls[0]["name"] == "clock"
    answer = parse_reply(spec, '{"name": "Ada", "age": 36}')
    assert (answer.value, answer.tool_calls) == ({"name": "Ada", "age": 36}, [])
    for reply, problem in [("Ada is 36.", "the reply is not JSON"), ('{"age": -1}', "'name' is a required property")]:
        with pytest.raises(InvalidReply, match=problem):
            parse_reply(spec, reply)
    whole = Draft202012Validator(spec.whole_schema)  # what the grammar holds the reply to: both, nothing else
    assert whole.is_valid([call("clock")]) and whole.is_valid({"name": "Ada"}) and not whole.is_valid("Ada")
    assert spec.key != tool_call_spec(TOOLS, "auto").key  # a grammar of its own


def test_with_a_json_answer_an_array_answer_and_a_models_own_call_format_are_read() -> None:
    """An answer whose schema is an array starts like the calls do; a model's own call format (a chat template's
    ``<tool_call>``, where no grammar holds the reply) is calls, not a failed answer."""
    numbers = {"type": "array", "items": {"type": "integer"}}
    spec = calls_or_answer(tool_call_spec(TOOLS, "auto"), json_spec(numbers))
    assert parse_reply(spec, "[1, 2, 3]", constrained=True).value == [1, 2, 3]
    own = '<tool_call>\n{"name": "clock", "arguments": {}}\n</tool_call>'
    assert parse_reply(calls_or_answer(tool_call_spec(TOOLS, "auto"), json_spec(PERSON)), own).tool_calls[0][
        "name"] == "clock"
    with pytest.raises(InvalidReply, match="not JSON"):
        parse_reply(spec, "three numbers", constrained=True)


def test_definitions_of_the_tools_and_of_the_answer_both_resolve_and_may_not_clash() -> None:
    booking = {"name": "book", "parameters": {"type": "object", "$defs": {"Guest": PERSON},
                                              "properties": {"guest": {"$ref": "#/$defs/Guest"}}, "required": ["guest"]}}
    answer = {"type": "object", "$defs": {"Reason": {"type": "string", "minLength": 3}},
              "properties": {"why": {"$ref": "#/$defs/Reason"}}, "required": ["why"]}
    whole = Draft202012Validator(calls_or_answer(tool_call_spec([booking], "auto"), json_spec(answer)).whole_schema)
    assert whole.is_valid([call("book", guest={"name": "Ada"})]) and whole.is_valid({"why": "because"})
    assert not whole.is_valid({"why": "no"}) and not whole.is_valid([call("book", guest={})])
    clashing = {**answer, "$defs": {**answer["$defs"], "book.Guest": {"type": "string"}}}
    with pytest.raises(ValueError, match="both define \\$defs/book.Guest, differently"):
        calls_or_answer(tool_call_spec([booking], "auto"), json_spec(clashing))


@pytest.mark.parametrize(("text", "before"), [
    ('[{"name": "a", "parameters": {}}, {"name": "b", "parameters": {"x": "cut', '[{"name": "a", "parameters": {}}]'),
    (' [ {"name": "a", "parameters": {}} ,\n {"na', '[{"name": "a", "parameters": {}}]'),
    ('[{"name": "a", "parameters": {}}, {"name": "b", "parameters": {}}]',
     '[{"name": "a", "parameters": {}}, {"name": "b", "parameters": {}}]'),
    ('[{"name": "a", "par', None),
    ("[", None),
    ("I will call a tool.", None),
], ids=["cut-in-the-second", "blanks", "whole", "cut-in-the-first", "just-begun", "prose"])
def test_the_calls_complete_before_a_cut_are_found(text: str, before: str | None) -> None:
    assert complete_calls(text) == before


QUOTED_CALL = 'Here it is:\n```json\n{"name": "demo__get_weather", "parameters": {"town": "Paris"}}\n```'


@pytest.mark.parametrize("constrained", [True, False], ids=["grammar", "prompt-only"])
def test_under_auto_prose_quoting_json_like_a_call_is_prose(constrained: bool) -> None:
    """The user asked for JSON that happens to look like a call (one that fits no tool's schema): an answer,
    not a failed call to retry and then fail."""
    reply = parse_reply(tool_call_spec(TOOLS, "auto"), QUOTED_CALL, constrained=constrained)
    assert reply.tool_calls == [] and reply.text == QUOTED_CALL


def test_under_a_grammar_only_the_bare_array_is_a_call() -> None:
    """The grammar lets a reply be the array of calls or prose; a call quoted inside prose is part of the prose
    there, while a prompt-only reply is read leniently and the call in it is made."""
    fenced = '```json\n{"name": "demo__get_weather", "parameters": {"city": "Oslo"}}\n```'
    spec = tool_call_spec(TOOLS, "auto")
    assert parse_reply(spec, fenced, constrained=True).tool_calls == []
    assert parse_reply(spec, fenced, constrained=False).tool_calls[0]["parameters"] == {"city": "Oslo"}
    with pytest.raises(InvalidReply, match="calls no tool"):
        parse_reply(tool_call_spec(TOOLS, "required"), fenced, constrained=True)


@pytest.mark.parametrize(("parallel", "most"), [(False, 1), (True, MAX_CALLS)], ids=["one-call", "parallel"])
def test_the_calls_a_grammar_allows_are_bounded(parallel: bool, most: int) -> None:
    """``parallel_tool_calls: false`` allows one call; otherwise a small model under the grammar that repeats a
    call stops at the bound instead of at its token limit."""
    validator = Draft202012Validator(tool_call_spec(TOOLS, "required", parallel=parallel).schema)
    validator.validate([call("clock")] * most)
    with pytest.raises(ValidationError, match="too long"):
        validator.validate([call("clock")] * (most + 1))


def test_a_call_repeated_in_a_reply_is_read_once() -> None:
    spec = tool_call_spec(TOOLS, "required")
    repeated = [call("clock"), call("demo__get_weather", city="Oslo"), call("clock"), call("get_weather", city="Oslo")]
    calls = parse_reply(spec, json.dumps(repeated)).tool_calls
    assert [(c["name"], c["parameters"]) for c in calls] == [("clock", {}), ("demo/get_weather", {"city": "Oslo"})]


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
    ({"properties": {"a": {"$ref": "#/$defs/missing"}}}, "$ref '#/$defs/missing' points at nothing"),
    ({"properties": {"a": {"$ref": "https://example.com/a.json"}}}, "only local references"),
    (_nested(150), "at properties/a/properties/a: nested more than 64 levels deep"),
    ({"type": "number", "maximum": float("inf")}, "at maximum: not a finite number"),
], ids=["bad-type", "required-not-list", "nested-bad-type", "bad-minimum", "dangling-ref", "remote-ref", "deep",
        "infinite-maximum"])
def test_an_invalid_schema_is_refused_naming_where(schema: dict[str, Any], problem: str) -> None:
    with pytest.raises(ValueError, match="response_format schema") as caught:
        json_spec(schema)
    assert problem in str(caught.value)
    bad_tool = {"type": "function", "function": {"name": "t", "parameters": schema}}
    with pytest.raises(ValueError, match="tool 't' parameters"):
        tool_call_spec([bad_tool], "required")


@pytest.mark.parametrize("kind", ["string", "integer", "array", ["object", "null"]])
def test_a_tool_whose_parameters_are_not_an_object_is_refused(kind: Any) -> None:
    tool = {"type": "function", "function": {"name": "t", "parameters": {"type": kind}}}
    with pytest.raises(ValueError, match=re.escape(f"tool 't' parameters must describe an object (type: object), "
                                                   f"not type {kind!r}")):
        tool_call_spec([tool], "auto")
    assert tool_call_spec([{**tool, "function": {"name": "t", "parameters": {"type": ["object"]}}}], "auto")


@pytest.mark.parametrize(("reply", "problem"), [
    ('[{"name": "t", "parameters": "a"}]', "call 0 (t): the parameters are not a JSON object"),
    ('[{"name": "t", "parameters": {"by": NaN}}]', "call 0 (t): the parameters do not match the schema at by: not a "
                                                   "finite number"),
    ('<tool_call>{"name": "t", "arguments": {"by": Infinity}}</tool_call>', "at by: not a finite number"),
])
def test_a_call_whose_parameters_no_client_could_read_is_an_invalid_reply(reply: str, problem: str) -> None:
    """A schema without a type allows a string; JSON Schema takes NaN for a number: neither is a call an agent
    can read (nor a reply the kernel can write)."""
    spec = tool_call_spec([{"type": "function", "function": {"name": "t", "parameters": {}}}], "required")
    with pytest.raises(InvalidReply, match=re.escape(problem)):
        parse_reply(spec, reply)


def test_a_json_reply_holding_nan_is_an_invalid_reply() -> None:
    with pytest.raises(InvalidReply, match=re.escape("the reply does not match the schema at x: not a finite number")):
        parse_reply(json_spec({"type": "object"}), '{"x": NaN}')


def test_a_schema_that_names_an_older_draft_is_read_in_that_draft() -> None:
    pair = {"$schema": "http://json-schema.org/draft-07/schema#", "type": "array",
            "items": [{"type": "string"}, {"type": "integer"}]}  # draft-07 tuple form
    assert parse_reply(json_spec(pair), '["a", 1]').value == ["a", 1]
    with pytest.raises(InvalidReply):
        parse_reply(json_spec(pair), '[1, "a"]')


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


@pytest.mark.parametrize("schema", [
    {"allOf": [{"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a"]},
               {"type": "object", "properties": {"b": {"type": "string"}}, "required": ["b"]}]},
    {"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a", "b"]},
    {"type": "object", "$ref": "#/$defs/base", "properties": {"a": {"type": "string"}},
     "$defs": {"base": {"type": "object", "properties": {"b": {"type": "string"}}}}},
], ids=["all-of-parts", "required-beyond-properties", "ref-sibling"])
def test_objects_whose_keys_come_from_elsewhere_stay_open(schema: dict[str, Any]) -> None:
    tight = closed(schema)
    assert "additionalProperties" not in tight
    assert all("additionalProperties" not in part for part in tight.get("allOf", []))


@pytest.mark.parametrize(("number", "expected"), [
    ({"type": "integer", "minimum": 10**16}, {"type": "integer", "minimum": 10**16}),
    ({"type": "number", "maximum": -(10**17)}, {"type": "number", "maximum": -(10**17)}),
    ({"type": "integer", "exclusiveMinimum": 0}, {"type": "integer", "exclusiveMinimum": 0,
                                                  "maximum": LARGEST_EXACT}),
    ({"type": ["integer", "null"]}, {"type": ["integer", "null"], "minimum": -LARGEST_EXACT,
                                     "maximum": LARGEST_EXACT}),
], ids=["above-the-bound", "below-the-bound", "exclusive", "type-list"])
def test_number_bounds_never_contradict_the_schemas_own(number: dict[str, Any], expected: dict[str, Any]) -> None:
    assert closed(number) == expected


@pytest.mark.parametrize("name", ["get__weather", "a/b", "a__b/c", "x___y", "plain"])
def test_a_call_reads_back_under_exactly_the_name_its_tool_was_offered_by(name: str) -> None:
    spec = tool_call_spec([{"name": name}], "required")
    model_name = name.replace("/", "__")
    assert parse_reply(spec, json.dumps([call(model_name)])).tool_calls[0]["name"] == name


@pytest.mark.parametrize(("tools", "problem"), [
    ([{"name": "a/b"}, {"name": "a__b"}], "tools 'a/b' and 'a__b' would both reach the model as 'a__b'"),
    ([{"name": "clock"}, {"type": "function", "function": {"name": "clock"}}], "two tools are named 'clock'"),
], ids=["slash-and-underscores", "same-name-twice"])
def test_tools_whose_names_clash_are_refused_naming_both(tools: list[dict[str, Any]], problem: str) -> None:
    with pytest.raises(ValueError, match=re.escape(problem)):
        tool_call_spec(tools, "required")


@pytest.mark.parametrize(("pieces", "passed"), [
    (["The capital", " is Paris."], ["The capital", " is Paris."]),  # prose: every piece, as it comes
    (["  ", "\n", "Hi", " there"], ["  \nHi", " there"]),  # blanks are held until the first character
    (['[{"name"', ': "x"}]'], []),  # a JSON array of calls: read whole, nothing streamed
    (['{"name": "x"}'], []),  # one call as an object
    (["<tool_call>", "{}"], []),  # a tagged call
    ([" ", "[1]"], []),
])
def test_under_tool_choice_auto_prose_streams_and_calls_do_not(pieces: list[str], passed: list[str]) -> None:
    streamed: list[str] = []
    gate = ProseGate(streamed.append)
    for piece in pieces:
        gate(piece)
    assert streamed == passed
