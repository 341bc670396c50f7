"""The OpenAI-compatible API: ``POST /v1/chat/completions`` and ``GET /v1/models``, for any OpenAI client.

A chat completion is an LLM syscall like any agent's — the same queues, scheduler, cores, grammar-constrained tools
and JSON, timings —: the request becomes an ``LLMQuery`` and the ended syscall an OpenAI reply. The agent is the
bearer token's; without a token (or with the administrator's), the ``user`` field, else the ``X-AIOS-Agent``
header, else ``openai-client``. Every error is an OpenAI error object with OpenAI's HTTP status.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any, AsyncIterator, Literal

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect

from aios.access.manager import ADMIN
from aios.errors import KernelError
from aios.jsonvalues import json_problem
from aios.kernel import Kernel
from aios.llm.handler import LLMQuery
from aios.llm.prompting import offered_name
from aios.llm.structured import TOOL_CHOICES, tool_choice_of
from aios.server.asgi import openai_error
from aios.server.calls import StreamedCall, until_done_or_disconnected
from aios.server.wire import (
    AgentName,
    MaxTokens,
    Message,
    ResponseFormat,
    Seed,
    Stop,
    StrictBool,
    StrictFloat,
    StrictInt,
    Temperature,
    ToolChoice,
    Tools,
    TopP,
    envelope,
    messages_of,
)
from aios.syscall import Syscall, SyscallKind

router = APIRouter(prefix="/v1")

DEFAULT_AGENT = "openai-client"
AGENT_HEADER = "x-aios-agent"


class FunctionCall(BaseModel):
    model_config = ConfigDict(extra="allow")

    name: str
    arguments: str  # JSON, as a string


class ToolCall(BaseModel):
    """A call an assistant made, fed back in the conversation."""

    model_config = ConfigDict(extra="allow")

    id: str
    type: Literal["function"]
    function: FunctionCall


class ChatMessage(Message):
    """A message as OpenAI checks it: every message but an assistant's (which may call tools instead) has
    content, an assistant's ``tool_calls`` are tool-call objects, and a tool's result names the call it answers
    (``role`` is checked first, being declared first)."""

    content: str | list[dict[str, Any]] | None = Field(default=None, validate_default=True)
    tool_calls: list[ToolCall] | None = None
    tool_call_id: str | None = Field(default=None, validate_default=True)

    @field_validator("content")
    @classmethod
    def _has_content(cls, content: Any, info: ValidationInfo) -> Any:
        role = info.data.get("role")
        if content is None and role not in (None, "assistant"):
            raise ValueError(f"a {role} message needs content: a string or a list of text parts")
        return content

    @field_validator("tool_call_id")
    @classmethod
    def _answers_a_call(cls, tool_call_id: str | None, info: ValidationInfo) -> str | None:
        if tool_call_id is None and info.data.get("role") == "tool":
            raise ValueError("a tool message needs the tool_call_id of the call whose result it holds")
        return tool_call_id


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    include_usage: StrictBool = False


class ChatCompletionRequest(BaseModel):
    """The body of ``POST /v1/chat/completions``. Unknown fields are refused, as OpenAI does; the last group is
    accepted for the clients that send it, and has no effect here."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(min_length=1)
    messages: messages_of(ChatMessage)  # type: ignore[valid-type]
    tools: Tools = None
    tool_choice: ToolChoice = None
    response_format: ResponseFormat = None
    temperature: Temperature = None
    top_p: TopP = None
    max_tokens: MaxTokens = None
    max_completion_tokens: MaxTokens = None
    stop: Stop = None
    # OpenAI marks most fields nullable: null means the default.
    n: StrictInt | None = None
    seed: Seed = None
    stream: StrictBool | None = None
    stream_options: StreamOptions | None = None
    user: AgentName | None = None
    logprobs: StrictBool | None = None
    parallel_tool_calls: StrictBool | None = None
    # Accepted without effect:
    frequency_penalty: StrictFloat | None = Field(default=None, ge=-2, le=2)
    presence_penalty: StrictFloat | None = Field(default=None, ge=-2, le=2)
    logit_bias: dict[str, StrictFloat] | None = None
    top_logprobs: StrictInt | None = Field(default=None, ge=0, le=0)
    store: StrictBool | None = None
    metadata: dict[str, str] | None = None
    service_tier: str | None = None
    prompt_cache_key: str | None = None
    safety_identifier: str | None = None

    @field_validator("n")
    @classmethod
    def _one_choice(cls, n: int | None) -> int | None:
        if n not in (None, 1):
            raise ValueError("n must be 1: this kernel returns one choice per request (send n requests instead)")
        return n

    @field_validator("logprobs")
    @classmethod
    def _no_logprobs(cls, logprobs: bool | None) -> bool | None:
        if logprobs:
            raise ValueError("logprobs are not available from this kernel")
        return logprobs

    @field_validator("tool_choice")
    @classmethod
    def _offered(cls, choice: Any, info: ValidationInfo) -> Any:
        """A named tool must be among those offered (``tools`` is checked first, being declared first)."""
        if choice is None or "tools" not in info.data:
            return choice
        tools = info.data["tools"] or []
        if not tools and choice != "none":
            raise ValueError("tool_choice is only allowed when tools are given")
        name = tool_choice_of(choice)
        if name not in TOOL_CHOICES and name not in map(offered_name, tools):
            raise ValueError(f"tool_choice names function {name!r}, which is not among the tools")
        return choice

    def to_query(self) -> LLMQuery:
        response_format = self.response_format if self.response_format != {"type": "text"} else None
        return LLMQuery(
            messages=[m.model_dump(exclude_none=True) for m in self.messages],
            tools=self.tools or None,
            tool_choice=self.tool_choice if self.tools else None,
            parallel_tool_calls=self.parallel_tool_calls is not False,
            llms=[{"name": self.model}],
            response_format=response_format,
            temperature=self.temperature,
            top_p=self.top_p,
            max_new_tokens=self.max_completion_tokens or self.max_tokens,
            stop=self.stop or [],  # type: ignore[arg-type]  # normalised to a list by its validator
            seed=self.seed,
        )


class OpenAIError(Exception):
    """Ends a request with an OpenAI error object."""

    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.status, self.param, self.code = status, param, code

    def response(self) -> JSONResponse:
        return JSONResponse(status_code=self.status, content=openai_error(self.status, str(self), self.param,
                                                                          self.code))


@router.post("/chat/completions", response_model=None)
async def chat_completions(request: Request) -> Response:
    kernel: Kernel = request.app.state.kernel
    try:
        body = await _body(request)
        agent = await _agent(request, body.user)
        if body.model not in {core.name for core in kernel.router.cores}:
            raise OpenAIError(404, f"the model {body.model!r} does not exist here; GET /v1/models lists them",
                              "model", "model_not_found")
        reply = Reply(body.model, body.stream_options is not None and body.stream_options.include_usage)
        if body.stream:
            return await _stream(StreamedCall(kernel, request), agent, body.to_query(), reply)
        syscall = await until_done_or_disconnected(kernel.call(SyscallKind.LLM, agent, body.to_query()), request)
        if syscall is None:  # the client hung up; its syscall was cancelled
            return Response(status_code=499)
        return JSONResponse(reply.completion(syscall))
    except KernelError as exc:  # refused at submission
        return OpenAIError(exc.status_code, str(exc)).response()
    except OpenAIError as exc:
        return exc.response()


@router.get("/models")
async def models(request: Request) -> dict[str, Any]:
    kernel: Kernel = request.app.state.kernel
    return {"object": "list", "data": [_model(kernel, core.name, core.backend) for core in kernel.router.cores]}


@router.get("/models/{model:path}", response_model=None)
async def model(model: str, request: Request) -> dict[str, Any] | JSONResponse:
    kernel: Kernel = request.app.state.kernel
    for core in kernel.router.cores:
        if core.name == model:
            return _model(kernel, core.name, core.backend)
    return OpenAIError(404, f"the model {model!r} does not exist here", "model", "model_not_found").response()


async def _stream(call: StreamedCall, agent: str, query: LLMQuery, reply: Reply) -> Response:
    """A streamed completion, started once the reply's first piece is decoded or the syscall has ended: until
    then an error (a prompt longer than the model takes, found when it runs) can still have its HTTP status,
    and the client waits for that first piece either way."""
    await call.submit(agent, query)
    pieces = call.pieces()
    first = await anext(pieces, None)
    if first is None:  # it ended, or the client went away, without a piece of text
        if call.syscall is None or not call.syscall.done:
            return Response(status_code=499)
        _succeeded(call.syscall)  # raises OpenAIError for a failed syscall
    return StreamingResponse(reply.events(call, _resumed(first, pieces)), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache"})


async def _resumed(first: str | None, rest: AsyncIterator[str]) -> AsyncIterator[str]:
    """The pieces of a stream whose first one (None: there was none) was already read."""
    if first is not None:
        yield first
    async for piece in rest:
        yield piece


def _model(kernel: Kernel, name: str, backend: str) -> dict[str, Any]:
    return {"id": name, "object": "model", "created": int(kernel.started_at), "owned_by": backend}


async def _body(request: Request) -> ChatCompletionRequest:
    """The request body, read and checked; OpenAIError (400, 413) naming the problem and where."""
    try:
        raw = await request.body()
    except HTTPException as exc:  # over server.max_body_mb, counted while it arrived
        raise OpenAIError(exc.status_code, str(exc.detail)) from None
    except ClientDisconnect:
        raise OpenAIError(400, "the client went away before it sent the whole body") from None
    try:
        parsed = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise OpenAIError(400, f"the body is not valid JSON: {exc}") from None
    problem = json_problem(parsed)
    if problem is not None:
        path, what = problem
        raise OpenAIError(400, f"{_param(path) or 'the body'}: {what}", _param(path) or None)
    try:
        return ChatCompletionRequest.model_validate(parsed)
    except ValidationError as exc:
        raise _invalid(exc) from None


def _invalid(exc: ValidationError) -> OpenAIError:
    """The first problem in a body (OpenAI reports one), with ``param`` saying where."""
    error = exc.errors(include_url=False)[0]
    param = _param(error["loc"])
    if error["type"] == "extra_forbidden":
        return OpenAIError(400, f"Unrecognized request argument supplied: {param}", param)
    message = str(error["msg"]).removeprefix("Value error, ")
    if error["type"] == "missing":
        message = "a required parameter is missing"
    return OpenAIError(400, f"{param}: {message}" if param else message, param or None)


# Pydantic names the union member it tried inside a location (``tool_choice.str``); OpenAI's param has none.
_TYPE_TAGS = {"str", "int", "float", "bool", "dict", "list", "none"}


def _param(loc: Any) -> str:
    """A location as OpenAI writes a param: ``messages[0].role``."""
    param = ""
    for part in loc:
        if isinstance(part, int):
            param += f"[{part}]"
        elif part in _TYPE_TAGS or "[" in str(part):
            break
        else:
            param += f".{part}" if param else str(part)
    return param


async def _agent(request: Request, user: str | None) -> str:
    """Whose syscall this is: a token's agent; else ``user``, the ``X-AIOS-Agent`` header, or the default."""
    identity = request.scope.get("state", {}).get("identity")
    if identity not in (None, ADMIN):
        return identity
    agent = user or request.headers.get(AGENT_HEADER) or DEFAULT_AGENT
    if len(agent) > 256:
        raise OpenAIError(400, "the agent name (X-AIOS-Agent) is longer than 256 characters")
    if agent == ADMIN and identity != ADMIN:  # its memories, say, are no one else's to read
        raise OpenAIError(403, f"{ADMIN!r} is the administrator's identity: it needs the administrator's token")
    try:
        await request.app.state.kernel.access.check_claim(identity, agent)
    except KernelError as exc:  # an OpenAI client sends the agent's token as its API key
        raise OpenAIError(exc.status_code, f"{exc} (an OpenAI client sends it as its API key)") from exc
    return agent


class Reply:
    """OpenAI's reply objects for one request: a whole completion, or the chunks of a stream."""

    def __init__(self, model: str, include_usage: bool) -> None:
        self.model, self.include_usage = model, include_usage
        self.id, self.created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())

    def completion(self, syscall: Syscall) -> dict[str, Any]:
        response = _succeeded(syscall)
        message = {"role": "assistant", "content": response["response_message"], "refusal": None}
        if response["tool_calls"]:
            message["tool_calls"] = _tool_calls(response["tool_calls"])
        return {**self._head("chat.completion"),
                "choices": [{"index": 0, "message": message, "finish_reason": _finish_reason(response),
                             "logprobs": None}],
                "usage": _usage(response)}

    async def events(self, call: StreamedCall, pieces: AsyncIterator[str]) -> AsyncIterator[str]:
        """Server-sent events: a chunk per piece of text as it is decoded (a structured reply — tool calls,
        JSON — arrives whole in one chunk at the end; prose under ``tool_choice: auto`` streams), the finish
        reason, the usage if asked, ``[DONE]``."""
        yield self._chunk({"role": "assistant", "content": ""})
        streamed = ""
        async for piece in pieces:
            streamed += piece
            yield self._chunk({"content": piece})
        if call.syscall is None or not call.syscall.done:  # the client went away
            return
        try:
            response = _succeeded(call.syscall)
        except OpenAIError as exc:  # OpenAI's clients raise the error a stream ends with
            yield _event(openai_error(exc.status, str(exc), exc.param, exc.code))
            return
        text = response["response_message"] or ""
        rest = text[len(streamed):] if text.startswith(streamed) else ""
        if response["tool_calls"]:
            yield self._chunk({"tool_calls": [{"index": i, **call}
                                              for i, call in enumerate(_tool_calls(response["tool_calls"]))]})
        elif rest:
            yield self._chunk({"content": rest})
        yield self._chunk({}, _finish_reason(response))
        if self.include_usage:
            yield _event({**self._head("chat.completion.chunk"), "choices": [], "usage": _usage(response)})
        yield "data: [DONE]\n\n"

    def _head(self, kind: str) -> dict[str, Any]:
        return {"id": self.id, "object": kind, "created": self.created, "model": self.model,
                "system_fingerprint": None}

    def _chunk(self, delta: dict[str, Any], finish_reason: str | None = None) -> str:
        choice = {"index": 0, "delta": delta, "finish_reason": finish_reason, "logprobs": None}
        return _event({**self._head("chat.completion.chunk"), "choices": [choice],
                       **({"usage": None} if self.include_usage else {})})


def _event(data: dict[str, Any]) -> str:
    return f"data: {json.dumps(data, ensure_ascii=False)}\n\n"


# Why a reply was cut short: the token cap or the model's context, or its KV-cache budget.
CUT_SHORT = ("length", "kv_budget")


def _succeeded(syscall: Syscall) -> dict[str, Any]:
    """The LLM response of an ended syscall; OpenAIError if it failed (a provider's rate limit stays a 429;
    a structured reply still invalid after the model ended it, or a failed core, is the server's fault). A
    structured reply cut short before it was complete is no failure here: as OpenAI does, its text goes back as
    it is, with ``finish_reason: length`` (a 5xx would only make OpenAI's clients send it again, to the same
    end). /query's envelope keeps the error, which the AIOS SDK raises."""
    response: dict[str, Any] = envelope(syscall)["response"]
    if response["error"] is not None and response["finish_reason"] not in CUT_SHORT:
        status = response["status_code"]
        raise OpenAIError(status if status < 500 or status == 503 else 500, response["error"],
                          code="cancelled" if response["finish_reason"] == "cancelled" else None)
    return response


def _tool_calls(calls: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{"id": call["id"], "type": "function",
             "function": {"name": call["name"], "arguments": json.dumps(call["parameters"], ensure_ascii=False)}}
            for call in calls]


def _finish_reason(response: dict[str, Any]) -> str:
    """``length`` for any reply cut short, tool calls too (the calls may be fewer than the model meant)."""
    if response["finish_reason"] in CUT_SHORT:
        return "length"
    return "tool_calls" if response["tool_calls"] else "stop"


def _usage(response: dict[str, Any]) -> dict[str, int]:
    usage = response["usage"] or {"prompt_tokens": 0, "completion_tokens": 0}
    return {**usage, "total_tokens": usage["prompt_tokens"] + usage["completion_tokens"]}
