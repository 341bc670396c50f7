"""The LLM syscall handler: turns an LLM query into a prompt, runs it on a core, and shapes the reply.

``prepare`` runs when the syscall is submitted, so a request the kernel cannot serve (unknown model, action not
built yet, missing tools) is refused before it queues; ``__call__`` runs when the scheduler gives it its turn.
"""

from __future__ import annotations

import asyncio
import json
import math
import reprlib
from dataclasses import dataclass, field, replace
from typing import Any, Awaitable, Callable, Protocol

from aios.errors import BadRequest, NotAvailable
from aios.llm.core import Generation, GenerationRequest, LLMCore, SamplingParams, on_loop
from aios.llm.prompting import (
    json_reply_prefix,
    merge_messages_with_response_format,
    requested_schema,
    tool_names,
    tools_for_model,
    wants_json_output,
)
from aios.llm.router import Route, Router
from aios.llm.routing import query_kind
from aios.llm.structured import (
    InvalidReply,
    OutputSpec,
    ProseGate,
    Reply,
    calls_or_answer,
    complete_calls,
    json_spec,
    parse_reply,
    retry_message,
    tool_call_spec,
)
from aios.syscall import Syscall

# tool_use: the AIOS SDK's name for chat_with_tool_call_output. call_tool also runs the calls (the tool manager).
TOOL_ACTIONS = ("chat_with_tool_call_output", "tool_use", "call_tool")
ACTIONS = ("chat", "chat_with_json_output", *TOOL_ACTIONS, "operate_file")


@dataclass
class LLMQuery:
    """An LLM syscall's payload. Sampling fields left ``None`` come from the chosen ``llms`` entry, else defaults."""

    messages: list[dict[str, Any]]
    action_type: str = "chat"
    tools: list[dict[str, Any]] | None = None
    tool_choice: Any = None  # OpenAI's: "auto" | "required" | "none" | {"type": "function", "function": {...}}
    parallel_tool_calls: bool = True  # OpenAI's: false lets the grammar allow one call per reply
    llms: list[dict[str, Any]] | None = None
    message_return_type: str = "text"
    response_format: dict[str, Any] | None = None
    temperature: float | None = None
    top_p: float | None = None
    max_new_tokens: int | None = None
    stop: list[str] = field(default_factory=list)
    seed: int | None = None
    # Given each new piece of a free-text reply as it is decoded, on the event loop (streaming); a structured
    # reply (tool calls, JSON) is read whole, so it streams nothing and arrives only in the final reply. Under
    # tool_choice auto, prose streams and calls do not.
    on_text: Callable[[str], None] | None = None
    # Filled by prepare():
    core: LLMCore | None = None
    route: Route | None = None
    sampling: SamplingParams = field(default_factory=SamplingParams)
    spec: OutputSpec | None = None  # what the reply must be; None for free text
    model_tools: list[dict[str, Any]] | None = None  # the tools as the model sees them (model-safe names)

    @property
    def wants_json(self) -> bool:
        if self.response_format is not None:
            return wants_json_output(self.response_format)
        return self.action_type == "chat_with_json_output" or self.message_return_type == "json"


@dataclass
class LLMResponse:
    """The AIOS LLM response, plus ``finish_reason``: why the reply ended (``stop``, ``length``, ``kv_budget``,
    ``cancelled``, or ``error`` when the syscall failed). ``finished`` is true only for a natural end. ``usage``:
    the tokens of the prompt and of the reply (``prompt_tokens``, ``completion_tokens``), as the core counted them."""

    response_class: str = "llm"
    response_message: str | None = None
    tool_calls: list[dict[str, Any]] | None = None
    finished: bool = False
    error: str | None = None
    status_code: int = 200
    finish_reason: str = "error"
    usage: dict[str, int] | None = None

    @classmethod
    def ended(cls, generation: Generation, **fields: Any) -> "LLMResponse":
        """The reply to a generation that ended, however it ended."""
        return cls(finished=generation.finish_reason == "stop", finish_reason=generation.finish_reason,
                   usage=usage_of(generation), **fields)


def usage_of(generation: Generation) -> dict[str, int]:
    return {"prompt_tokens": generation.prompt_tokens, "completion_tokens": generation.completion_tokens}


@dataclass(frozen=True)
class FileOperator:
    """How ``operate_file`` reaches the storage subsystem: the file tools offered to the model, the prompt that
    goes with them, and ``run(agent, reply)``, which runs the calls in the reply and reports each outcome."""

    tools: list[dict[str, Any]]
    instruct: Callable[[list[dict[str, Any]]], list[dict[str, Any]]]
    run: Callable[[str, "LLMResponse"], Awaitable["LLMResponse"]]
    max_calls: int = 1  # operations one request may make (small models go on calling tools nobody asked for)


# call_tool: runs the calls in a reply as the agent and returns the reply with their results.
ToolCaller = Callable[[str, "LLMResponse"], Awaitable["LLMResponse"]]


class ChatHook(Protocol):
    """Runs around each LLM syscall (memory personalization): ``before`` may change the query's messages,
    ``after`` sees a free-text reply. Each decides which queries it applies to."""

    async def before(self, agent: str, query: LLMQuery) -> None: ...
    async def after(self, agent: str, query: LLMQuery, reply: "LLMResponse") -> None: ...


class LLMHandler:
    def __init__(self, router: Router, file_operator: FileOperator | None = None,
                 tool_caller: ToolCaller | None = None, chat_hook: ChatHook | None = None) -> None:
        self.router = router
        self.file_operator = file_operator
        self.tool_caller = tool_caller
        self.chat_hook = chat_hook

    def prepare(self, query: LLMQuery, agent: str = "") -> LLMQuery:
        if query.action_type == "operate_file":
            _offer_file_tools(query, self.file_operator)
        if query.action_type in TOOL_ACTIONS and not query.tools:
            raise BadRequest(f"action_type {query.action_type!r} needs a non-empty 'tools' list")
        if query.tool_choice is not None and not query.tools:
            raise BadRequest("tool_choice was given without 'tools' to choose from")
        try:
            query.model_tools = tools_for_model(query.tools) if query.tools else None
            tool_names(query.tools or [])  # two tools the model would not tell apart: refused whatever the choice
            query.spec = _output_spec(query)
            if query.action_type == "operate_file" and query.spec is not None and self.file_operator is not None:
                query.spec = replace(query.spec, schema={**query.spec.schema, "maxItems": self.file_operator.max_calls})
        except ValueError as exc:
            raise BadRequest(str(exc)) from None
        except RecursionError:
            raise BadRequest("the tools or the response_format schema are nested too deeply") from None
        query.route = self.router.pick(query.llms, agent, query_kind(query.action_type, _output_form(query),
                                                                     _prompt_chars(query)))
        query.core, entry = query.route.core, query.route.entry
        _check_prompt_length(query)
        if query.action_type == "operate_file" and query.temperature is None and entry.get("temperature") is None:
            query.temperature = 0.0  # file operations are decoded greedily unless the caller asks otherwise
        query.sampling = _sampling(query, entry)
        return query

    async def __call__(self, syscall: Syscall) -> LLMResponse:
        query: LLMQuery = syscall.payload
        assert query.core is not None, "prepare() routes every query before it is submitted"

        def record_slice(running: bool) -> None:
            if running:
                syscall.start_slice()
            else:
                syscall.suspend()

        if self.chat_hook is not None:
            await self.chat_hook.before(syscall.agent_name, query)
        # The engine says, from its thread, when the generation starts and stops running: the syscall's slices.
        on_running = on_loop(asyncio.get_running_loop(), record_slice)
        streamed = _streamed(query)
        on_text = on_loop(asyncio.get_running_loop(), streamed) if streamed else None
        request = _request(query, GenerationRequest(query.messages, query.sampling, priority=syscall.priority,
                                                    on_running=on_running, on_text=on_text))
        generation = await query.core.complete(request)
        if query.spec is None:
            reply = LLMResponse.ended(generation, response_message=generation.text)
            if self.chat_hook is not None:
                await self.chat_hook.after(syscall.agent_name, query, reply)
            return reply
        reply = await _structured_reply(query, request, generation)
        if query.action_type == "operate_file":
            assert self.file_operator is not None, "prepare() refuses operate_file without a file operator"
            return await self.file_operator.run(syscall.agent_name, reply)
        if query.action_type == "call_tool" and self.tool_caller is not None:
            return await self.tool_caller(syscall.agent_name, reply)
        return reply


def _offer_file_tools(query: LLMQuery, operator: FileOperator | None) -> None:
    """operate_file offers the storage operations as tools (whatever tools the caller sent) and requires calls."""
    if operator is None:
        raise NotAvailable("action_type 'operate_file' needs the storage manager, which this kernel has not enabled")
    query.tools, query.tool_choice = operator.tools, "required"
    query.messages = operator.instruct(query.messages)


def _check_prompt_length(query: LLMQuery) -> None:
    """Refuse a prompt that cannot fit the model by its length in characters alone, before anything tokenizes
    it (a tokenizer's working memory grows with its input)."""
    limit = query.core.max_prompt_chars  # type: ignore[union-attr]
    if limit is None:
        return
    chars = _prompt_chars(query)
    if chars > limit:
        raise BadRequest(f"the prompt is {chars:,} characters, more than model {query.core.name} can take "  # type: ignore[union-attr]
                         f"(at most {limit:,}); send a shorter one")


def _streamed(query: LLMQuery) -> Callable[[str], None] | None:
    """What the reply's pieces go to as they are decoded: free text streams; a reply that may be prose or tool
    calls (``tool_choice: auto``) streams if it is prose; JSON and required calls are read whole."""
    if query.on_text is None or query.spec is None:
        return query.on_text
    return ProseGate(query.on_text) if query.spec.allow_text else None


def _prompt_chars(query: LLMQuery) -> int:
    chars = sum(len(_text_of(m.get("content"))) for m in query.messages)
    return chars + (len(json.dumps(query.tools)) if query.tools else 0)


def _output_form(query: LLMQuery) -> str:
    if query.spec is None:
        return "text"
    return "tools" if query.spec.tools is not None else "json"


def _text_of(content: Any) -> str:
    if isinstance(content, list):  # OpenAI content parts
        return "".join(p["text"] for p in content if isinstance(p, dict) and isinstance(p.get("text"), str))
    return content if isinstance(content, str) else ""


async def _structured_reply(query: LLMQuery, request: GenerationRequest, generation: Generation) -> LLMResponse:
    """The reply read against its spec, never an invalid one passed as valid. An invalid reply gets one retry,
    with the problem shown to the model — unless it was cut off by the token limit (then more tokens, not
    another try, is the fix). Under a grammar a reply is invalid only when cut off, or where the schema asks
    for what a grammar cannot say (``uniqueItems``, ``not``, ...)."""
    spec, core = query.spec, query.core
    assert spec is not None and core is not None
    try:
        return _shaped(parse_reply(spec, generation.text, core.constrains), generation)
    except InvalidReply as exc:
        problem = exc
    if generation.finish_reason == "stop":
        # The retry streams nothing: what streamed of the first reply was prose that turned out to hold bad calls.
        retry = replace(request, messages=[*request.messages, {"role": "assistant", "content": generation.text},
                                           retry_message(spec, str(problem))], on_text=None)
        generation = await core.complete(retry)
        try:
            return _shaped(parse_reply(spec, generation.text, core.constrains), generation)
        except InvalidReply as exc:
            problem = exc
        if generation.finish_reason == "stop":
            return _invalid(f"the model's reply was invalid twice (it was shown the first problem and retried): "
                            f"{problem}", generation)
    salvaged = _calls_before_the_cut(spec, generation, core.constrains)
    if salvaged is not None:
        return salvaged
    cut_by = _CUT_BY.get(generation.finish_reason, generation.finish_reason)
    return _invalid(f"the reply was cut off after {generation.completion_tokens} tokens (max_new_tokens="
                    f"{query.sampling.max_new_tokens}; {cut_by}) before it was complete: {problem}", generation)


def _calls_before_the_cut(spec: OutputSpec, generation: Generation, constrained: bool) -> LLMResponse | None:
    """A reply of tool calls cut short inside a later call: the calls made whole before it, as a reply that says
    it was cut (``finish_reason`` stays ``length``). A small model may go on calling past what it was asked, and
    the closing of the reply, in its last tokens, cannot always end a call it has begun."""
    before = complete_calls(generation.text) if spec.tools is not None else None
    if before is None:
        return None
    try:
        return _shaped(parse_reply(spec, before, constrained), generation)
    except InvalidReply:
        return None


_CUT_BY = {"length": "it reached that or the model's context length",
           "kv_budget": "the model's KV-cache budget ran out (llms.models[].kv_budget_mb)",
           "cancelled": "it was cancelled"}


def _output_spec(query: LLMQuery) -> OutputSpec | None:
    """What the reply must be: tool calls when tools are offered (``required`` by default for the tool actions,
    ``auto`` for chat, where a reply without calls is the JSON asked for, if any), else (no tools, or
    ``tool_choice: none``) JSON when asked for, else free text."""
    if query.model_tools:
        default = "required" if query.action_type in TOOL_ACTIONS else "auto"
        calls = tool_call_spec(query.tools or [], query.tool_choice or default, query.parallel_tool_calls)
        if calls is not None and calls.allow_text and query.wants_json:  # no call: then the JSON, not prose
            return calls_or_answer(calls, json_spec(requested_schema(query.response_format)))
        if calls is not None:
            return calls
    if query.wants_json:
        return json_spec(requested_schema(query.response_format))
    return None


def _request(query: LLMQuery, request: GenerationRequest) -> GenerationRequest:
    """The generation request for a query: the spec for the backend to enforce if it can (a grammar) or pass on
    (an API's native fields), with the tools or the wanted JSON described in the prompt; where nothing enforces
    the spec, JSON replies get a prefilled start, which is what makes prompt-only JSON work on small models."""
    spec = query.spec
    if spec is None:
        return request
    request.constraint = spec
    if spec.tools is not None:
        request.tools = query.model_tools
        if spec.answer is not None:  # how to answer when no tool fits
            request.messages = merge_messages_with_response_format(query.messages, query.response_format)
    else:
        request.messages = merge_messages_with_response_format(query.messages, query.response_format)
        if not query.core.constrains:  # type: ignore[union-attr]
            request.reply_prefix = json_reply_prefix(query.response_format)
    return request


def _shaped(reply: Reply, generation: Generation) -> LLMResponse:
    if reply.tool_calls:
        return LLMResponse.ended(generation, response_message=None, tool_calls=reply.tool_calls)
    if reply.tool_calls is not None and reply.value is None:
        # With tool_choice auto, a model that answers in prose instead of calling a tool gives an answer.
        return LLMResponse.ended(generation, response_message=reply.text, tool_calls=[])
    return LLMResponse.ended(generation, response_message=json.dumps(reply.value, ensure_ascii=False),
                             tool_calls=reply.tool_calls)


def _invalid(error: str, generation: Generation) -> LLMResponse:
    return LLMResponse(response_message=generation.text, finished=False, status_code=502, error=error,
                       finish_reason=generation.finish_reason, usage=usage_of(generation))


@dataclass(frozen=True)
class _EntryRule:
    """How an ``llms`` entry may set a sampling field: under which keys, and held to its query field's rule."""

    keys: tuple[str, ...]  # the first key the entry sets wins (AIOS puts max_tokens there)
    whole: bool
    valid: Callable[[float], bool]
    rule: str


_ENTRY_RULES = {
    "temperature": _EntryRule(("temperature",), False, lambda v: 0 <= v <= 2, "a number from 0 to 2"),
    "top_p": _EntryRule(("top_p",), False, lambda v: 0 < v <= 1, "a number above 0 and at most 1"),
    "max_new_tokens": _EntryRule(("max_new_tokens", "max_tokens"), True, lambda v: 1 <= v <= 32768,
                                 "a whole number from 1 to 32768"),
}


def check_llms_entry(entry: dict[str, Any]) -> None:
    """Refuse (BadRequest, naming the field) an ``llms`` entry with a sampling value a query using it would be
    refused for: a selection is checked when it is made, not at every request after."""
    for name in _ENTRY_RULES:
        _entry_value(entry, name)


def _entry_value(entry: dict[str, Any], name: str) -> Any:
    """The entry's value for sampling field ``name`` (None if it sets none); a bad one is refused naming it."""
    rule = _ENTRY_RULES[name]
    key = next((k for k in rule.keys if entry.get(k) is not None), None)
    if key is None:
        return None
    raw = entry[key]
    # As the query's own fields: a whole number is a JSON integer (not 5.0, not true), any number is finite.
    finite = isinstance(raw, int) or (isinstance(raw, float) and math.isfinite(raw))
    number = isinstance(raw, int) if rule.whole else finite
    if isinstance(raw, bool) or not number or not rule.valid(raw):
        raise BadRequest(f"llms entry {entry.get('name')!r}: {key} must be {rule.rule}, got {reprlib.repr(raw)}")
    return int(raw) if rule.whole else float(raw)


def _sampling(query: LLMQuery, entry: dict[str, Any]) -> SamplingParams:
    """Explicit query fields win over the ``llms`` entry's (AIOS puts temperature/max_tokens there); an entry's
    value is held to the rule its query field is held to, and a bad one is refused naming it."""
    defaults = SamplingParams()

    def pick(name: str) -> Any:
        value = getattr(query, name)
        if value is None:
            value = _entry_value(entry, name)
        return getattr(defaults, name) if value is None else value

    return SamplingParams(temperature=pick("temperature"), top_p=pick("top_p"),
                          max_new_tokens=pick("max_new_tokens"), stop=list(query.stop), seed=query.seed)
