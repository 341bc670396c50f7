"""Structured output: what a reply must be (JSON matching a schema, or tool calls), and checking that it is.

An :class:`OutputSpec` is backend-neutral. A backend that can constrain decoding (the Hugging Face engine, with
a grammar) makes the reply valid by construction; for any other, the LLM handler checks the reply with
:func:`parse_reply`, retries once with the problem shown to the model, and otherwise returns a clear error.

Tool calls are written as a compact JSON array, ``[{"name": "author__name", "parameters": {...}}]`` — the
form ``merge_messages_with_tools`` asks for — so prompt-only and constrained decoding read the same way.
"""

from __future__ import annotations

import json
from json.decoder import WHITESPACE  # the blanks JSON allows between values
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Iterable, Iterator

from jsonschema import Draft202012Validator
from jsonschema.validators import validator_for
from jsonschema.exceptions import SchemaError, best_match

from aios.jsonvalues import json_problem, not_an_object
from aios.llm.prompting import (
    decode_hf_tool_calls,
    extract_json,
    new_call_id,
    slash_to_double_underscore,
    tool_names,
    tools_for_model,
)

ANY_OBJECT: dict[str, Any] = {"type": "object"}
TOOL_CHOICES = ("auto", "required", "none")
# The most calls a grammar lets one reply make (OpenAI names no number): under an unbounded one a small model
# that repeats a call goes on until its token limit (88 identical calls were seen). An agent that needs more
# makes them over several turns.
MAX_CALLS = 8


class ProseGate:
    """Streaming for a reply that may be prose or tool calls (``tool_choice: auto``): its pieces reach ``on_text``
    once its first character shows prose, and none do if it shows a call — a JSON array or object, or a tag —
    which is read whole. (Under a grammar prose cannot start with those; without one, a reply read as prose
    that starts otherwise is prose too.)"""

    CALL_STARTS = ("[", "{", "<")

    def __init__(self, on_text: Callable[[str], None]) -> None:
        self._on_text, self._held, self._prose = on_text, "", None

    def __call__(self, piece: str) -> None:
        if self._prose is None:
            self._held += piece
            start = self._held.lstrip()
            if not start:
                return
            self._prose = not start.startswith(self.CALL_STARTS)
            piece, self._held = self._held, ""
        if self._prose:
            self._on_text(piece)


class InvalidReply(ValueError):
    """The reply does not have the required structure; the message says how, for the user and the model."""


@dataclass(frozen=True)
class OutputSpec:
    """The reply is JSON matching ``schema``; with ``allow_text`` it may instead be prose that does not start
    like JSON (``tool_choice: auto``). For a list of tool calls, ``tools`` maps each callable tool's
    model-safe name to its parameters schema, ``names`` maps it to the name the tool was offered by, and
    ``aliases`` maps short names the calls may use to model-safe names; ``answer``, when set, is the JSON a
    reply that calls no tool must be instead of prose (``tool_choice: auto`` with a JSON ``response_format``)."""

    schema: dict[str, Any]
    allow_text: bool = False
    tools: dict[str, dict[str, Any]] | None = None
    names: dict[str, str] = field(default_factory=dict)
    aliases: dict[str, str] = field(default_factory=dict)
    answer: dict[str, Any] | None = None

    @property
    def whole_schema(self) -> dict[str, Any]:
        """What the whole reply matches: ``schema``, or it or ``answer``."""
        return self.schema if self.answer is None else either(self.schema, self.answer)

    @property
    def without_a_call(self) -> str:
        """What a reply that calls no tool may be: ``text`` (``auto``), ``json`` (the answer) or ``call`` (no
        such reply will do)."""
        return "json" if self.answer is not None else "text" if self.allow_text else "call"

    @property
    def key(self) -> str:
        """A stable text form, for caching compiled grammars."""
        return json.dumps([self.whole_schema, self.allow_text], sort_keys=True, separators=(",", ":"))


@dataclass(frozen=True)
class Reply:
    """A reply read against its spec: the JSON value, or the tool calls (empty for prose under ``auto``)."""

    text: str
    value: Any = None
    tool_calls: list[dict[str, Any]] | None = None


def calls_or_answer(calls: OutputSpec, answer: OutputSpec) -> OutputSpec:
    """Tool calls under ``auto`` (``calls``), where a reply that calls none is the JSON ``answer`` asks for,
    not prose. Raises ValueError naming a definition both schemas give differently."""
    either(calls.schema, answer.schema)  # what it refuses is refused now (a 400), not when the grammar is built
    return replace(calls, allow_text=False, answer=answer.schema)


def either(first: dict[str, Any], second: dict[str, Any]) -> dict[str, Any]:
    """A schema matching what matches ``first`` or ``second``. Their definitions move to the root, where their
    references (``#/$defs/...``, ``#/definitions/...``) point."""
    parts, hoisted = [], {}
    for schema in (first, second):
        part = dict(schema)
        for key in ("$defs", "definitions"):
            for name, definition in (part.pop(key, None) or {}).items():
                if hoisted.setdefault(key, {}).setdefault(name, definition) != definition:
                    raise ValueError(f"the response_format schema and the tools' parameters both define {key}/{name}, "
                                     "differently: rename one")
        parts.append(part)
    return {"anyOf": parts, **hoisted}


def json_spec(schema: dict[str, Any] | None) -> OutputSpec:
    """A spec for a JSON reply: matching ``schema``, or any JSON object when it is ``None``.

    Raises ValueError naming the problem when ``schema`` is not a valid JSON Schema."""
    if schema is None:
        return OutputSpec(ANY_OBJECT)
    check_schema(schema, "response_format schema")
    return OutputSpec(schema)


def tool_call_spec(tools: list[dict[str, Any]], tool_choice: Any, parallel: bool = True) -> OutputSpec | None:
    """A spec for a reply of tool calls. ``tools`` are the tools as offered (OpenAI function tools or AIOS's
    bare form); ``tool_choice`` is ``required``, ``auto``, ``none`` (no spec: plain text) or
    ``{"type": "function", "function": {"name": ...}}``; ``parallel`` false lets the grammar allow one call
    (OpenAI's ``parallel_tool_calls``), else up to ``MAX_CALLS``. Raises ValueError naming a bad choice, a bad schema
    or two tools whose names clash."""
    names = tool_names(tools)
    choice = tool_choice_of(tool_choice)
    if choice == "none":
        return None
    offered = {tool["function"]["name"]: tool["function"]["parameters"] for tool in tools_for_model(tools)}
    for name, parameters in offered.items():
        check_schema(parameters, f"tool {names[name]!r} parameters")
        if (why := not_an_object(parameters)) is not None:
            raise ValueError(f"tool {names[name]!r} parameters {why}")
    if choice not in TOOL_CHOICES:
        name = next((n for n, original in names.items() if original == choice), choice)
        if name not in offered:
            raise ValueError(f"tool_choice names {choice!r}, which is not one of the offered tools")
        offered = {name: offered[name]}
    aliases = _short_names(offered)
    spellings = {name: [name, *(alias for alias, full in aliases.items() if full == name)] for name in offered}
    definitions: dict[str, Any] = {}
    calls = [_call_schema(spellings[name], _hoisted(name, parameters, definitions))
             for name, parameters in offered.items()]
    items = calls[0] if len(calls) == 1 else {"anyOf": calls}
    schema = {"type": "array", "items": items, "minItems": 1, "maxItems": MAX_CALLS if parallel else 1,
              **({"$defs": definitions} if definitions else {})}
    return OutputSpec(schema, allow_text=choice == "auto", tools=offered, names=names, aliases=aliases)


def _hoisted(tool: str, parameters: dict[str, Any], definitions: dict[str, Any]) -> dict[str, Any]:
    """A tool's parameters schema with its local definitions moved into ``definitions`` (the root ``$defs`` of
    the calls schema, under names prefixed by the tool) and its ``#/$defs/X`` references pointed there, so that
    they still resolve once the schema sits inside the array of calls."""
    local = {**parameters.get("definitions", {}), **parameters.get("$defs", {})}
    if not local:
        return parameters
    renamed = {f"#/{key}/{name}": f"#/$defs/{tool}.{name}" for key in ("$defs", "definitions") for name in local}

    def rewrite(node: Any) -> Any:
        if isinstance(node, list):
            return [rewrite(item) for item in node]
        if not isinstance(node, dict):
            return node
        return {k: renamed.get(v, v) if k == "$ref" and isinstance(v, str) else rewrite(v) for k, v in node.items()}

    for name, definition in local.items():
        definitions[f"{tool}.{name}"] = rewrite(definition)
    return rewrite({k: v for k, v in parameters.items() if k not in ("$defs", "definitions")})


def _short_names(offered: dict[str, Any]) -> dict[str, str]:
    """``get_weather`` for ``demo__get_weather`` where no other tool would have it: small models asked to call
    ``demo__get_weather`` start writing ``get``, and a grammar that allowed only the full name would push them
    to another tool. The call is read back under the full name."""
    shorts: dict[str, list[str]] = {}
    for name in offered:
        if "__" in name:
            shorts.setdefault(name.rsplit("__", 1)[1], []).append(name)
    return {short: names[0] for short, names in shorts.items() if short and len(names) == 1 and short not in offered}


def tool_choice_of(tool_choice: Any) -> str:
    """``auto`` / ``required`` / ``none``, or the name of the one tool to call. Raises ValueError otherwise."""
    if tool_choice in TOOL_CHOICES:
        return tool_choice
    if isinstance(tool_choice, dict) and tool_choice.get("type") == "function":
        function = tool_choice.get("function")
        if isinstance(function, dict) and isinstance(function.get("name"), str) and function["name"]:
            return function["name"]
    raise ValueError(
        "tool_choice must be 'auto', 'required', 'none' or {\"type\": \"function\", \"function\": {\"name\": ...}}, "
        f"got {tool_choice!r}"
    )


def _call_schema(names: list[str], parameters: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {"name": {"enum": names}, "parameters": parameters},
        "required": ["name", "parameters"],
        "additionalProperties": False,
    }


def check_schema(schema: Any, what: str) -> None:
    """Raise ValueError naming ``what`` when ``schema`` is not a usable JSON Schema."""
    if not isinstance(schema, dict):
        raise ValueError(f"{what} must be a JSON Schema object, got {type(schema).__name__}")
    # First, and without recursing: the checks below recurse, and how deep they may go depends on the process
    # (compiling a model with torch raises Python's recursion limit for good).
    problem = json_problem(schema)
    if problem is not None:
        path, why = problem
        raise ValueError(f"{what}{_at(path)}: {why}")
    try:
        validator_for(schema, default=Draft202012Validator).check_schema(schema)
        _check_references(schema, schema, what)
        if not _has_finite_value(schema):
            raise ValueError(f"{what} has no finite JSON value: it only refers to itself ($ref) without anything "
                             "to stop at, so no reply could ever match it")
    except SchemaError as exc:
        raise ValueError(f"{what} is not a valid JSON Schema{_at(exc.path)}: {exc.message}") from None
    except RecursionError:
        raise ValueError(f"{what} is nested too deeply") from None


def _check_references(node: Any, root: dict[str, Any], what: str) -> None:
    """Every ``$ref`` points inside the schema (``#/...``) at something there: nothing is fetched, and a reply is
    never checked against a schema that cannot be resolved."""
    if isinstance(node, list):
        for item in node:
            _check_references(item, root, what)
        return
    if not isinstance(node, dict):
        return
    ref = node.get("$ref")
    if isinstance(ref, str):
        if not ref.startswith("#"):
            raise ValueError(f"{what}: $ref {ref!r} points outside the schema; only local references (#/...) work")
        target = _resolve(root, ref)
        if not isinstance(target, (dict, bool)):
            raise ValueError(f"{what}: $ref {ref!r} points at nothing in the schema")
    for value in node.values():
        _check_references(value, root, what)


def _has_finite_value(root: dict[str, Any]) -> bool:
    """Whether some finite JSON value matches the schema. A ``$ref`` cycle with no way out (``{"$ref": "#"}``,
    or a required property that refers back to its object) matches nothing, yet a grammar for it would let a
    model generate until its token limit. Computed as a least fixed point: every subschema starts out as
    matching nothing, and passes over all of them mark those that match something, until nothing changes."""
    nodes = list(_subschemas(root))
    finite: dict[int, bool] = {id(node): False for node in nodes}

    def ok(node: Any) -> bool:
        return node is not False if isinstance(node, bool) else finite.get(id(node), True)

    changed = True
    while changed:
        changed = False
        for node in nodes:
            if not finite[id(node)] and _finite_with(node, root, ok):
                finite[id(node)] = changed = True
    return finite[id(root)]


def _finite_with(node: dict[str, Any], root: dict[str, Any], ok: Any) -> bool:
    """Whether ``node`` has a finite value, given ``ok`` for its subschemas."""
    ref = node.get("$ref")
    if isinstance(ref, str) and not ok(_resolve(root, ref)):
        return False
    if not all(ok(sub) for sub in node.get("allOf", [])):
        return False
    if any(isinstance(node.get(key), list) and not any(ok(sub) for sub in node[key]) for key in ("anyOf", "oneOf")):
        return False
    kinds = node.get("type")
    kinds = [kinds] if isinstance(kinds, str) else kinds if isinstance(kinds, list) else None
    if kinds is None or any(kind not in ("object", "array") for kind in kinds):
        return True  # a scalar (or, with no type, any value that ignores the object and array keywords)
    return any(_container_finite(node, kind, ok) for kind in kinds)


def _container_finite(node: dict[str, Any], kind: str, ok: Any) -> bool:
    if kind == "array":
        if not isinstance(node.get("minItems"), int) or node["minItems"] < 1:
            return True  # [] will do
        prefix = node.get("prefixItems", [])
        return all(ok(sub) for sub in prefix[: node["minItems"]]) and ok(node.get("items", True))
    properties = node.get("properties", {})
    extra = node.get("additionalProperties", True)
    return all(ok(properties.get(name, extra)) for name in node.get("required", []))


def _subschemas(node: Any) -> Iterator[dict[str, Any]]:
    """Every object in the schema that could be a subschema (visited without recursion: a schema may be deep)."""
    stack = [node]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            yield item
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)


def _resolve(root: dict[str, Any], ref: str) -> Any:
    target: Any = root
    for part in filter(None, ref[1:].split("/")):
        part = part.replace("~1", "/").replace("~0", "~")
        target = target.get(part) if isinstance(target, dict) else None
    return target


def parse_reply(spec: OutputSpec, text: str, constrained: bool = False) -> Reply:
    """Read a reply against its spec. ``constrained``: it was decoded under the spec's grammar, so tool calls
    are the bare JSON array it allows, and under ``auto`` anything else is prose. Otherwise it is read as
    leniently as the seed's decoders (code fences, prose around the JSON, other tool-call shapes) so that
    prompt-only output is judged fairly. Raises :class:`InvalidReply` saying what is wrong with it."""
    if spec.tools is not None:
        return _tool_reply(spec, text, constrained)
    return Reply(text=text, value=_answer(spec.schema, text))


def _answer(schema: dict[str, Any], text: str) -> Any:
    """The JSON value of a reply that must match ``schema``."""
    try:
        value = extract_json(text)
    except ValueError as exc:
        raise InvalidReply(f"the reply is not JSON: {exc}") from None
    _validate(schema, value)
    return value


def _tool_reply(spec: OutputSpec, text: str, constrained: bool) -> Reply:
    """The calls in a reply; with an ``answer``, a reply that holds none must be that JSON (which may itself be
    an array, or arrive after a model's own call format where nothing constrained it)."""
    if spec.answer is None:
        return _calls_reply(spec, text, constrained)
    try:
        return _calls_reply(spec, text, constrained)
    except InvalidReply as no_calls:
        try:
            return Reply(text=text, value=_answer(spec.answer, text), tool_calls=[])
        except InvalidReply as no_answer:
            raise (no_calls if text.strip().startswith("[") else no_answer) from None


def _calls_reply(spec: OutputSpec, text: str, constrained: bool) -> Reply:
    """The calls in a reply. Under ``auto`` a reply that does not start as the instructed array of calls is
    prose unless it holds valid calls: an answer may quote JSON that looks like a call (the user asked for
    some), and that is no reason to fail it or to retry."""
    stripped = text.strip()
    prose_allowed = spec.allow_text and not stripped.startswith("[")
    found = _instructed_calls(stripped)
    if found is None and not constrained:  # read as leniently as the seed: fences, tags, "arguments", prose around
        found = [{"name": slash_to_double_underscore(c["name"]), "parameters": c["parameters"]}
                 for c in decode_hf_tool_calls(text)]
    if found:
        try:
            return Reply(text=text, tool_calls=_checked_calls(spec, found))
        except InvalidReply:
            if not prose_allowed:
                raise
    elif not prose_allowed:
        raise InvalidReply(_why_no_calls(stripped))
    return Reply(text=text, tool_calls=[])


def _checked_calls(spec: OutputSpec, found: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The calls found in a reply, under the names their tools were offered by, each distinct one once. Their
    number is not cut to ``maxItems`` here: a grammar holds them to it, and where none did, the one that set a
    limit reports the calls past it (``operate_file``)."""
    resolved = distinct_calls([{"name": spec.aliases.get(c["name"], slash_to_double_underscore(c["name"])),
                                "parameters": c["parameters"]} for c in found])
    _check_calls(spec, resolved)
    return [{"name": spec.names[c["name"]], "parameters": c["parameters"], "id": new_call_id()} for c in resolved]


def _instructed_calls(text: str) -> list[dict[str, Any]] | None:
    """The calls when the text is exactly the instructed (and constrained) JSON array of {"name", "parameters"}."""
    if not text.startswith("["):
        return None
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        return None
    if isinstance(value, list) and value and all(
            isinstance(c, dict) and set(c) == {"name", "parameters"} and isinstance(c["name"], str) for c in value):
        return value
    return None


def _why_no_calls(text: str) -> str:
    if text.startswith("["):
        try:
            json.loads(text)
        except json.JSONDecodeError as exc:
            return f"the tool-call array is not valid JSON ({exc.msg} at character {exc.pos})"
    return "the reply calls no tool, and a tool call is required"


def _check_calls(spec: OutputSpec, calls: list[dict[str, Any]]) -> None:
    """Each call (its model-safe name, its parameters) names an offered tool and has parameters that match its
    schema; the message says which does not."""
    assert spec.tools is not None
    for index, call in enumerate(calls):
        name, parameters = call["name"], call["parameters"]
        if name not in spec.tools:
            offered = ", ".join(spec.names[n] for n in spec.tools)
            raise InvalidReply(f"call {index} names {name!r}, which is not one of the tools to call ({offered})")
        if not isinstance(parameters, dict):  # whatever the schema allows: agents read a call's parameters by name
            raise InvalidReply(f"call {index} ({spec.names[name]}): the parameters are not a JSON object")
        _validate(spec.tools[name], parameters,
                  f"call {index} ({spec.names[name]}): the parameters do not match the schema")


def _validate(schema: dict[str, Any], value: Any, mismatch: str = "the reply does not match the schema") -> None:
    problem = json_problem(value)  # NaN reads as a number to a schema, but no reply holding it can be written
    if problem is not None:
        path, why = problem
        raise InvalidReply(f"{mismatch}{_at(path)}: {why}")
    error = best_match(validator_for(schema, default=Draft202012Validator)(schema).iter_errors(value))
    if error is not None:
        raise InvalidReply(f"{mismatch}{_at(error.absolute_path)}: {error.message}")


def _at(path: Iterable[Any]) -> str:
    """Where in a JSON value a problem is, for a message: `` at properties/a`` (nothing at its root)."""
    where = "/".join(map(str, path))
    return f" at {where}" if where else ""


def retry_message(spec: OutputSpec, problem: str) -> dict[str, str]:
    """The user turn that shows the model why its reply was refused, for one more try."""
    wanted = "JSON" if spec.tools is None else "a JSON array of tool calls, or the JSON answer asked for" \
        if spec.answer is not None else "a JSON array of tool calls"
    return {"role": "user", "content": f"That reply was not valid: {problem}. Reply again with ONLY {wanted} "
                                       f"that matches the required schema, and no other text."}


def complete_calls(text: str) -> str | None:
    """Of a reply cut short inside a JSON array (of calls), the array of the items complete before the cut; None
    when it is not such a reply or none is complete."""
    stripped, decoder, items = text.strip(), json.JSONDecoder(), []
    if not stripped.startswith("["):
        return None
    at = 1
    while True:
        at = WHITESPACE.match(stripped, at).end()
        try:
            item, at = decoder.raw_decode(stripped, at)
        except ValueError:
            break
        items.append(item)
        at = WHITESPACE.match(stripped, at).end()
        if stripped[at:at + 1] != ",":
            break
        at += 1
    return json.dumps(items, ensure_ascii=False) if items else None


def distinct_calls(tool_calls: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The calls, each distinct one (name and parameters) once, in order: small models repeat a call, and
    running it again would be an action nobody asked for (a second write, a second message sent). Every reply's
    calls are read through it."""
    seen, distinct = set(), []
    for call in tool_calls:
        key = json.dumps([call["name"], call["parameters"]], sort_keys=True)
        if key not in seen:
            seen.add(key)
            distinct.append(call)
    return distinct
