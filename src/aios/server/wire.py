"""Request and reply shapes of the AIOS-compatible wire protocol (pydantic lives here, at the boundary only)."""

from __future__ import annotations

import reprlib
from dataclasses import asdict
from typing import Annotated, Any, Literal, TypeVar

from fastapi import Path
from fastapi.exceptions import RequestValidationError
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_core import PydanticCustomError

from aios.errors import BadRequest, Cancelled, KernelError
from aios.jsonvalues import json_problem
from aios.llm.handler import ACTIONS, LLMQuery, LLMResponse
from aios.llm.prompting import merge_messages_with_response_format, tools_for_model
from aios.llm.structured import tool_choice_of
from aios.memory.handler import MemoryResponse
from aios.storage.handler import StorageResponse
from aios.syscall import Syscall, SyscallKind, SyscallStatus
from aios.tools.handler import ToolResponse


# Numbers as JSON numbers only: "16", true and 16.5 are mistakes to report, not to coerce; NaN is no number.
StrictInt = Annotated[int, Field(strict=True)]
StrictFloat = Annotated[float, Field(strict=True, allow_inf_nan=False)]
StrictBool = Annotated[bool, Field(strict=True)]
# An id in a route's path: a database row's, so positive and within SQLite's 64 bits (a larger one would
# overflow there, a 500, where the caller should learn that the id cannot be one).
PathId = Annotated[int, Path(ge=1, le=2**63 - 1)]


def _no_nul(name: str) -> str:
    if "\x00" in name:
        raise ValueError("an agent's name cannot hold the NUL character (\\u0000): no store keeps it")
    return name


# An agent's name as a request gives it. Other characters are the agent's own to choose (every display escapes
# them), but not NUL: PostgreSQL text cannot hold it, and the agent's first syscall there would fail.
AgentName = Annotated[str, Field(min_length=1, max_length=256), AfterValidator(_no_nul)]


class QueryRequest(BaseModel):
    """``POST /query`` body. ``query_data`` is checked against the model for its ``query_type``."""

    model_config = ConfigDict(extra="forbid")

    agent_name: AgentName = Field(examples=["example/demo"])
    query_type: Literal["llm", "memory", "storage", "tool"]
    query_data: dict[str, Any]

    @model_validator(mode="before")
    @classmethod
    def _plain_json(cls, body: Any) -> Any:
        """Refuse, naming where, what no later step can handle: nesting deeper than ``MAX_JSON_DEPTH``, strings
        that are not valid Unicode (a lone surrogate such as ``\\ud800`` cannot be encoded) and NaN or infinities
        (Python's parser takes them, but no reply that echoes them can be written as JSON)."""
        problem = json_problem(body)
        if problem is not None:
            path, what = problem
            # The server reports it located at ``path`` (ctx), like any other validation error.
            raise PydanticCustomError(JSON_VALUE_ERROR, "{where}: {what}",
                                      {"where": ".".join(map(str, path)), "path": path, "what": what})
        return body


JSON_VALUE_ERROR = "invalid_json_value"


class Message(BaseModel):
    """An OpenAI chat message; extra keys (name, tool_calls, tool_call_id) pass through to the template."""

    model_config = ConfigDict(extra="allow")

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[dict[str, Any]] | None = None

    @field_validator("role")
    @classmethod
    def _developer_is_system(cls, role: str) -> str:
        """``developer`` is OpenAI's newer name for the system prompt; chat templates, the kernel's own notes
        (tools, JSON formats) and the providers messages are passed on to know it as ``system``."""
        return "system" if role == "developer" else role


def _text_only(messages: list[Message]) -> list[Message]:
    for i, message in enumerate(messages):
        for part in message.content if isinstance(message.content, list) else []:
            if part.get("type") != "text" or not isinstance(part.get("text"), str):
                raise ValueError(f"messages[{i}]: only text content parts are supported (this kernel runs text "
                                 f"models), got a part of type {part.get('type')!r}")
    return messages


def messages_of(message: type[Message]) -> Any:
    """A list of messages of this model: at least one; of content parts, only text ones (an image would be
    dropped without a word)."""
    return Annotated[list[message], Field(min_length=1), AfterValidator(_text_only)]  # type: ignore[valid-type]


Messages = messages_of(Message)


class LLMChoice(BaseModel):
    """An ``llms`` entry: which model to use, optionally with sampling settings (AIOS SDK style)."""

    model_config = ConfigDict(extra="allow")

    name: str = Field(min_length=1)
    backend: str | None = None


def _tools_are_functions(tools: list[dict[str, Any]] | None) -> list[dict[str, Any]] | None:
    if tools:
        _nested_ok(tools_for_model, tools)  # raises ValueError naming the bad tool
    return tools


def _known_tool_choice(tool_choice: str | dict[str, Any] | None) -> str | dict[str, Any] | None:
    if tool_choice is not None:
        tool_choice_of(tool_choice)  # raises ValueError naming the accepted forms
    return tool_choice


def _known_response_format(response_format: dict[str, Any] | None) -> dict[str, Any] | None:
    _nested_ok(merge_messages_with_response_format, [], response_format)  # ValueError naming the problem
    return response_format


# Every running reply is checked for its stop strings at each step, on the engine's thread that serves everyone:
# their number and length are bounded (OpenAI takes 4).
MAX_STOPS, MAX_STOP_CHARS = 16, 256


def _stop_strings(stop: str | list[str] | None) -> list[str]:
    stops = [stop] if isinstance(stop, str) else stop or []
    if any(not s for s in stops):
        raise ValueError("stop strings must not be empty")
    if len(stops) > MAX_STOPS:
        raise ValueError(f"at most {MAX_STOPS} stop strings, not {len(stops)}")
    if any(len(s) > MAX_STOP_CHARS for s in stops):
        raise ValueError(f"a stop string may be at most {MAX_STOP_CHARS} characters long, not "
                         f"{max(map(len, stops))}")
    return stops


# The fields an LLM request shares with the OpenAI API, checked alike wherever they come in (/query, /v1).
Tools = Annotated[list[dict[str, Any]] | None, AfterValidator(_tools_are_functions)]
ToolChoice = Annotated[str | dict[str, Any] | None, AfterValidator(_known_tool_choice)]
ResponseFormat = Annotated[dict[str, Any] | None, AfterValidator(_known_response_format)]
Stop = Annotated[str | list[str] | None, AfterValidator(_stop_strings)]
Temperature = Annotated[StrictFloat | None, Field(ge=0, le=2, description="default 1.0; 0 = greedy")]
TopP = Annotated[StrictFloat | None, Field(gt=0, le=1)]
MaxTokens = Annotated[StrictInt | None, Field(ge=1, le=32768, description="default 1000")]
# What a generator takes as its seed: a signed or an unsigned 64-bit integer.
Seed = Annotated[StrictInt | None, Field(ge=-(2**63), le=2**64 - 1,
                                         description="sampling's random seed, for a reproducible reply")]


class LLMQueryData(BaseModel):
    model_config = ConfigDict(extra="forbid")

    query_class: Literal["llm"] | None = None  # sent by the AIOS SDK; carries no information
    messages: Messages
    tools: Tools = None
    tool_choice: ToolChoice = Field(
        default=None, description="auto | required | none | {type: function, function: {name}}; "
        "default: required for the tool actions, auto for chat")
    action_type: Literal[ACTIONS] = "chat"  # type: ignore[valid-type]
    llms: list[LLMChoice] | None = None
    temperature: Temperature = None
    top_p: TopP = None
    max_new_tokens: MaxTokens = None
    stop: Stop = Field(default_factory=list, description="stop strings; not returned")
    seed: Seed = None
    message_return_type: Literal["text", "json"] = "text"
    response_format: ResponseFormat = None
    priority: StrictInt = Field(default=0, ge=-1000, le=1000, description="higher runs first under the priority policy")
    stream: StrictBool = Field(default=False, description="reply as NDJSON: text deltas, then the envelope")

    def to_query(self) -> LLMQuery:
        return LLMQuery(
            messages=[m.model_dump(exclude_none=True) for m in self.messages],
            action_type=self.action_type,
            tools=self.tools,
            tool_choice=self.tool_choice,
            llms=[c.model_dump(exclude_none=True) for c in self.llms] if self.llms else None,
            message_return_type=self.message_return_type,
            response_format=self.response_format,
            temperature=self.temperature,
            top_p=self.top_p,
            max_new_tokens=self.max_new_tokens,
            stop=self.stop,  # type: ignore[arg-type]  # normalised to a list by the validator
            seed=self.seed,
        )


Model = TypeVar("Model", bound=BaseModel)


# pydantic's errors for a value of the right type outside what its field takes (a range, a length).
_REFUSED_VALUES = frozenset({"greater_than", "greater_than_equal", "less_than", "less_than_equal", "too_short",
                             "too_long", "string_too_short", "string_too_long"})


def query_data_as(model: type[Model], query_data: dict[str, Any], what: str) -> Model:
    """``query_data`` of a ``what`` query (``llm``, ``tool``) read as ``model``. Malformed (a wrong type or shape),
    it is a 422 located inside query_data, like FastAPI's own; well-formed but with a value out of its field's
    range (every error of that kind: a temperature of 3, no messages), it is a BadRequest, which ``/query``
    answers in the envelope, where an AIOS agent can read it (DESIGN §3; memory and storage values alike)."""
    try:
        return model.model_validate(query_data)
    except ValidationError as exc:
        errors = exc.errors(include_url=False, include_context=False)
        if all(error["type"] in _REFUSED_VALUES for error in errors):
            first = errors[0]
            # A length's message says what it got; a bound's does not.
            got = "" if "too_" in first["type"] else f", not {reprlib.repr(first['input'])}"
            raise BadRequest(f"{what} request: {'.'.join(map(str, first['loc']))}: {first['msg']}{got}") from None
        for error in errors:
            error["loc"] = ("body", "query_data", *error["loc"])
        raise RequestValidationError(errors) from None


def _nested_ok(check: Any, *args: Any) -> None:
    try:
        check(*args)
    except RecursionError:
        raise ValueError("nested too deeply") from None


# The reply shape of each kind of syscall, for failures too: an agent reads the fields of the kind it asked.
RESPONSES: dict[SyscallKind, type] = {SyscallKind.LLM: LLMResponse, SyscallKind.MEMORY: MemoryResponse,
                                      SyscallKind.STORAGE: StorageResponse, SyscallKind.TOOL: ToolResponse}


def envelope(syscall: Syscall) -> dict[str, Any]:
    """The AIOS reply: the response plus one timing entry per scheduling slice."""
    return {
        "response": asdict(_response(syscall)),
        "start_times": syscall.start_times,
        "end_times": syscall.end_times,
        "waiting_times": syscall.waiting_times,
        "turnaround_times": syscall.turnaround_times,
    }


def refusal(kind: SyscallKind, error: KernelError) -> dict[str, Any]:
    """The envelope of a syscall the kernel refused before it ran (no slices): ``error`` and ``status_code``
    say why, under HTTP 200, which is what lets the AIOS SDK hand the reason to the agent."""
    return {"response": asdict(_failed(kind, error)), "start_times": [], "end_times": [], "waiting_times": [],
            "turnaround_times": []}


def _response(syscall: Syscall) -> Any:
    if syscall.status is SyscallStatus.DONE:
        return syscall.value
    if syscall.status is SyscallStatus.CANCELLED:
        return _failed(syscall.kind, Cancelled("the syscall was cancelled before it finished"))
    error = syscall.error
    if isinstance(error, KernelError):
        return _failed(syscall.kind, error)
    return _failed(syscall.kind, KernelError(f"internal error: {type(error).__name__}: {error}"))


def _failed(kind: SyscallKind, error: KernelError) -> Any:
    shape = RESPONSES[kind]
    ended = {"finish_reason": "cancelled" if isinstance(error, Cancelled) else "error"} if shape is LLMResponse else {}
    return shape(error=str(error), status_code=error.status_code, **ended)
