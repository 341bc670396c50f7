"""Prompt folding for the Hugging Face backend: put tools and response formats into the prompt, and read tool
calls and JSON back out of whatever shape a local model writes them in.

Local chat templates often have no ``tools`` slot and local models follow no single tool-call syntax, so the
kernel describes tools (or the wanted JSON) in the system prompt and decodes replies leniently. Tool names go to
a model as ``author__name`` (most templates and models reject ``/`` in function names) and come back as
``author/name``. Everything here is pure Python: no model, no tokenizer, so it is cheap to test exhaustively.
"""

from __future__ import annotations

import copy
import json
import re
import uuid
from typing import Any, Iterator

_DECODER = json.JSONDecoder()
_JSON_START = re.compile(r"[\[{]")
# Fence content, after an optional info string such as ``json`` or ``tool_call``.
_FENCE = re.compile(r"```[\w+-]*[ \t]*\n?(.*?)```", re.DOTALL)
# Qwen/Hermes tags; an unclosed tag (generation cut off by max tokens) runs to the end of the text.
_TOOL_CALL_TAG = re.compile(r"<tool_call>(.*?)(?:</tool_call>|\Z)", re.DOTALL)
# Reasoning models (Qwen3, DeepSeek-R1) think aloud first; JSON sketched while thinking is not the answer.
_THINK = re.compile(r"<think>.*?</think>", re.DOTALL)
_SPECIAL_MARKERS = ("<|python_tag|>", "<|eom_id|>", "<|eot_id|>")

_SCHEMA_TYPES = frozenset({"object", "array", "string", "number", "integer", "boolean", "null"})
_SCHEMA_KEYWORDS = ("properties", "items", "anyOf", "oneOf", "allOf", "$ref", "enum", "const", "$schema")
# Keys a call object may carry besides its arguments; an object with others and no arguments is data, not a call.
_CALL_KEYS = frozenset({"name", "id", "type", "index"})
_EXCERPT_CHARS = 200


# --- tool names -------------------------------------------------------------------------------------------------


def slash_to_double_underscore(name: str) -> str:
    """``author/name`` -> ``author__name``: the form a model sees, since ``/`` is not a valid function name."""
    return name.replace("/", "__")


def double_underscore_to_slash(name: str) -> str:
    """``author__name`` -> ``author/name``: turns a name the model wrote back into the AIOS tool name."""
    return name.replace("__", "/")


# --- tools ------------------------------------------------------------------------------------------------------


def tools_for_model(tools: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """OpenAI function tools with model-safe names, from the OpenAI form or AIOS's bare
    ``{"name", "description", "parameters"}`` form, so templates and prompts see one shape.

    Raises ValueError naming the index of a tool that is not usable; the input is not modified.
    """
    if not isinstance(tools, list):
        raise ValueError(f"tools must be a list, got {type(tools).__name__}")
    return [_tool_for_model(index, tool) for index, tool in enumerate(tools)]


def tool_names(tools: list[dict[str, Any]]) -> dict[str, str]:
    """Each tool's model-safe name mapped to its name as offered, so a call reads back under exactly the name
    it was offered by (``get__weather`` stays ``get__weather``). Raises ValueError naming both tools when two
    would reach the model under one name (``a/b`` beside ``a__b``, or the same name twice)."""
    names: dict[str, str] = {}
    for tool in tools_for_model(tools):
        model_name = tool["function"]["name"]
        original = offered_name(tools[len(names)])
        if model_name in names:
            if names[model_name] == original:
                raise ValueError(f"two tools are named {original!r}; tool names must be unique")
            raise ValueError(f"tools {names[model_name]!r} and {original!r} would both reach the model as "
                             f"{model_name!r} ('/' is written '__'); rename one of them")
        names[model_name] = original
    return names


def offered_name(tool: dict[str, Any]) -> str:
    """The name a tool was offered by, in the OpenAI form or AIOS's bare one (a tool ``tools_for_model`` took)."""
    return tool.get("function", tool)["name"]


def _tool_for_model(index: int, tool: Any) -> dict[str, Any]:
    if not isinstance(tool, dict):
        raise ValueError(f"tool {index} must be an object, got {type(tool).__name__}")
    if tool.get("type", "function") != "function":  # OpenAI's other kinds (custom, web search) are not callable here
        raise ValueError(f"tool {index} has type {tool['type']!r}: only 'function' tools are supported")
    function = tool.get("function", tool)
    if not isinstance(function, dict):
        raise ValueError(f"tool {index}: 'function' must be an object, got {type(function).__name__}")
    name = function.get("name")
    if not isinstance(name, str) or not name:
        raise ValueError(f"tool {index} needs a non-empty string 'name' (inside 'function' for OpenAI tools)")
    parameters = function.get("parameters")
    if parameters is None:
        parameters = {"type": "object", "properties": {}}
    if not isinstance(parameters, dict):
        raise ValueError(f"tool {index} ({name}): 'parameters' must be a JSON Schema object")
    description = function.get("description")
    return {
        "type": "function",
        "function": {
            "name": slash_to_double_underscore(name),
            "description": description if isinstance(description, str) else "",
            "parameters": copy.deepcopy(parameters),
        },
    }


def merge_messages_with_tools(
    messages: list[dict[str, Any]], tools: list[dict[str, Any]], otherwise: str = "text"
) -> list[dict[str, Any]]:
    """New messages with the tools and how to call them folded into the system prompt, for chat templates that
    have no ``tools`` slot. ``otherwise``: what a reply that calls no tool may be — ``text``, ``json`` (the
    JSON that the messages ask for), or ``call`` (none: a reply without a call will not do, ``tool_choice``
    required). An empty tool list adds nothing. The input is not modified."""
    if not tools:
        return copy.deepcopy(messages)
    described = json.dumps(tools_for_model(tools), separators=(",", ":"), ensure_ascii=False)
    instruction = (
        f"You can call these tools:\n{described}\n"
        "To call tools, reply with ONLY a JSON array of calls and no other text, using the exact tool names "
        'given above, like: [{"name": "tool_name", "parameters": {"argument": "value"}}]\n'
        + _WITHOUT_A_CALL[otherwise]
    )
    return _with_system_note(messages, instruction)


_WITHOUT_A_CALL = {"call": "Reply with a call.",
                   "text": "If no tool fits the request, answer normally in plain text.",
                   "json": "If no tool fits the request, answer with the JSON asked for."}


# --- response formats -------------------------------------------------------------------------------------------


def merge_messages_with_response_format(
    messages: list[dict[str, Any]], response_format: dict[str, Any] | None
) -> list[dict[str, Any]]:
    """New messages with an instruction to answer in JSON (matching the schema when one is given) folded into
    the system prompt, since local models have no constrained JSON mode here.

    ``None`` and ``{"type": "json_object"}`` ask for any JSON object; ``{"type": "text"}`` returns an unchanged
    copy. Raises ValueError naming the problem for a format it cannot use. The input is not modified.
    """
    kind, schema = _requested_output(response_format)
    if kind == "text":
        return copy.deepcopy(messages)
    if schema is None:
        instruction = "Answer with ONLY a JSON object and no other text: no explanation, no code fence."
    elif isinstance(schema.get("properties"), dict):
        # Small models echo a raw schema back; a filled-in-the-blanks skeleton of it they answer correctly.
        instruction = f"Answer with ONLY a JSON object of this form, filled in with the answer: {json_skeleton(schema)}"
    else:
        instruction = (
            "Answer with ONLY a JSON value that matches this JSON Schema and no other text: no explanation, "
            f"no code fence.\n{json.dumps(schema, separators=(',', ':'), ensure_ascii=False)}"
        )
    return _with_system_note(messages, instruction)


def wants_json_output(response_format: dict[str, Any] | None) -> bool:
    """Whether this response format asks for JSON (everything but ``{"type": "text"}``)."""
    return _requested_output(response_format)[0] == "json"


def requested_schema(response_format: dict[str, Any] | None) -> dict[str, Any] | None:
    """The JSON Schema a response format asks the reply to match; ``None`` for any JSON object (or text)."""
    return _requested_output(response_format)[1]


def json_reply_prefix(response_format: dict[str, Any] | None) -> str:
    """The start of a reply in this format, written for the model so that it begins the right JSON value.

    Prefilling the assistant's turn like this is what makes prompt-only JSON work on small models."""
    kind, schema = _requested_output(response_format)
    if kind == "text":
        return ""
    if schema is None or schema.get("type") == "object" or isinstance(schema.get("properties"), dict):
        return '{"'
    return "[" if schema.get("type") == "array" else ""


def json_skeleton(schema: dict[str, Any]) -> str:
    """A JSON-like template of a schema's shape, e.g. ``{"city": "<string>", "size": <integer>}``."""
    if isinstance(schema.get("enum"), list):
        return "<one of " + " | ".join(json.dumps(v, ensure_ascii=False) for v in schema["enum"]) + ">"
    properties = schema.get("properties")
    if isinstance(properties, dict):
        fields = (f"{json.dumps(k, ensure_ascii=False)}: {json_skeleton(v if isinstance(v, dict) else {})}"
                  for k, v in properties.items())
        return "{" + ", ".join(fields) + "}"
    kind = schema.get("type")
    if kind == "array":
        items = schema.get("items")
        return "[" + (json_skeleton(items) if isinstance(items, dict) else "<value>") + ", ...]"
    if kind == "string":
        return '"<string>"'
    return f"<{kind}>" if isinstance(kind, str) else "<value>"


def _requested_output(response_format: Any) -> tuple[str, dict[str, Any] | None]:
    """``("text", None)``, ``("json", None)`` for any object, or ``("json", schema)``; ValueError otherwise."""
    if response_format is None:
        return "json", None
    if not isinstance(response_format, dict):
        raise ValueError(f"response_format must be an object, got {type(response_format).__name__}")
    kind = response_format.get("type")
    if kind == "text":
        return "text", None
    if kind == "json_object":
        return "json", None
    if kind == "json_schema":
        return "json", _json_schema_of(response_format)
    if _looks_like_schema(response_format):
        return "json", response_format
    if kind is None:
        raise ValueError("response_format needs a 'type' ('json_object', 'json_schema' or 'text') or a JSON Schema")
    raise ValueError(
        f"response_format type {kind!r} is not one of 'json_object', 'json_schema', 'text' (nor a JSON Schema type)"
    )


def _json_schema_of(response_format: dict[str, Any]) -> dict[str, Any]:
    spec = response_format.get("json_schema")
    if not isinstance(spec, dict):
        raise ValueError("response_format of type 'json_schema' needs a 'json_schema' object with a 'schema'")
    schema = spec.get("schema")
    if not isinstance(schema, dict):
        raise ValueError("response_format 'json_schema' needs 'schema' to be a JSON Schema object")
    return schema


def _looks_like_schema(value: dict[str, Any]) -> bool:
    """A bare JSON Schema passed as the response format (some AIOS agents do this)."""
    kind = value.get("type")
    if isinstance(kind, str):
        return kind in _SCHEMA_TYPES
    if isinstance(kind, list) and kind:
        return all(isinstance(k, str) and k in _SCHEMA_TYPES for k in kind)
    return kind is None and any(key in value for key in _SCHEMA_KEYWORDS)


def _with_system_note(messages: list[dict[str, Any]], note: str) -> list[dict[str, Any]]:
    """A deep copy of the messages with ``note`` appended to a leading system message, or in a new one first."""
    merged = copy.deepcopy(messages)
    if merged and isinstance(merged[0], dict) and merged[0].get("role") == "system":
        merged[0]["content"] = _append_text(merged[0].get("content"), note)
    else:
        merged.insert(0, {"role": "system", "content": note})
    return merged


def _append_text(content: Any, note: str) -> Any:
    """Content plus the note: a string grows, a list of content parts gets one more text part."""
    if isinstance(content, list):
        return [*content, {"type": "text", "text": note}]
    text = content if isinstance(content, str) else ""
    return f"{text}\n\n{note}" if text else note


# --- decoding tool calls ----------------------------------------------------------------------------------------


def decode_hf_tool_calls(text: str) -> list[dict[str, Any]]:
    """Tool calls in a model's reply, as ``{"name": "author/name", "parameters": {...}, "id": "call_..."}``.

    Local models write calls in many shapes: a JSON array or a single call, inside code fences or
    ``<tool_call>`` tags, after ``<|python_tag|>``, with prose around them, with ``arguments`` (possibly a
    JSON-encoded string) for ``parameters``, nested OpenAI ``{"function": ...}`` or ``{"tool_calls": [...]}``.
    The most explicit place wins: tags, then fences, then the whole text. Never raises: a reply without calls
    (the model answered in prose) gives ``[]``.
    """
    if not isinstance(text, str):
        return []
    text = _strip_reasoning(text)
    for values in _json_sources(text):
        calls = [call for value in values for item in _call_items(value) if (call := _as_call(item)) is not None]
        if calls:
            return calls
    return []


def _strip_reasoning(text: str) -> str:
    return _THINK.sub("", text)


def _json_sources(text: str) -> Iterator[list[Any]]:
    """JSON values grouped by where they were written, most explicit first: tags, code fences, anywhere."""
    yield [value for chunk in _TOOL_CALL_TAG.findall(text) for value in _embedded_json(chunk)]
    yield [value for chunk in _FENCE.findall(text) for value in _embedded_json(chunk)]
    for marker in _SPECIAL_MARKERS:
        text = text.replace(marker, "\n")
    yield list(_embedded_json(text))


def _embedded_json(text: str) -> Iterator[Any]:
    """Each outermost JSON object or array in the text, left to right, found by trying to decode at every
    ``{`` or ``[`` (prose brackets simply fail to decode and are skipped)."""
    position = 0
    while (match := _JSON_START.search(text, position)) is not None:
        try:
            value, position = _DECODER.raw_decode(text, match.start())
        except json.JSONDecodeError:
            position = match.start() + 1
            continue
        yield value


def _call_items(value: Any) -> list[Any]:
    """The candidate calls in one JSON value: an array's items, a ``tool_calls`` wrapper's list, or itself."""
    if isinstance(value, dict) and isinstance(value.get("tool_calls"), list):
        return value["tool_calls"]
    return value if isinstance(value, list) else [value]


def _as_call(item: Any) -> dict[str, Any] | None:
    """The call an object stands for, or None when it is not one (no string name, unusable arguments)."""
    if not isinstance(item, dict):
        return None
    if isinstance(item.get("function"), dict):
        item = item["function"]
    name = item.get("name")
    if not isinstance(name, str) or not name.strip():
        return None
    parameters = _parameters_of(item)
    if parameters is None:
        return None
    return {"name": double_underscore_to_slash(name.strip()), "parameters": parameters, "id": new_call_id()}


def _parameters_of(item: dict[str, Any]) -> dict[str, Any] | None:
    """The call's arguments as a dict, or None when the object is not a usable call.

    An object with neither ``parameters`` nor ``arguments`` is a call without arguments only when it has no
    other data keys: ``{"name": "Alice", "age": 3}`` is an answer, not a call to a tool named Alice.
    """
    key = "parameters" if item.get("parameters") is not None else "arguments"
    if item.get(key) is None:
        return {} if set(item) <= _CALL_KEYS | {"parameters", "arguments"} else None
    parameters = item[key]
    if isinstance(parameters, str):
        parameters = _decode_argument_string(parameters)
    return parameters if isinstance(parameters, dict) else None


def _decode_argument_string(arguments: str) -> Any:
    """OpenAI-style ``"arguments": "{\\"city\\": \\"Paris\\"}"``; an empty string means no arguments."""
    if not arguments.strip():
        return {}
    try:
        return json.loads(arguments)
    except json.JSONDecodeError:
        return None


def new_call_id() -> str:
    return f"call_{uuid.uuid4().hex[:24]}"


# --- JSON output ------------------------------------------------------------------------------------------------


def extract_json(text: str) -> Any:
    """The JSON value in a model's reply for JSON-output mode: the whole text, else a code fence's content,
    else the first object or array embedded in prose (models add chatter despite being told not to).

    Raises ValueError with a short excerpt of the reply when none parses.
    """
    if not isinstance(text, str):
        raise ValueError(f"the reply must be text, got {type(text).__name__}")
    text = _strip_reasoning(text)
    for candidate in (text, *_FENCE.findall(text)):
        try:
            return json.loads(candidate)
        except json.JSONDecodeError:
            pass
    for value in _embedded_json(text):
        return value
    raise ValueError(f"no JSON value found in the reply: {_excerpt(text)}" if text.strip() else "the reply is empty")


def _excerpt(text: str) -> str:
    """The start of the text, quoted and cut to about 200 characters, for error messages."""
    stripped = text.strip()
    if len(stripped) <= _EXCERPT_CHARS:
        return repr(stripped)
    return repr(stripped[:_EXCERPT_CHARS]) + "…"
