"""LLM syscalls, with the AIOS SDK's signatures plus ``temperature``, ``max_new_tokens`` and ``priority``
keywords (``priority``: higher runs first when the kernel uses the priority policy)."""

from __future__ import annotations

from typing import Any, Generator, Iterator, TypeVar, overload

from aios.sdk.transport import AIOSError, send_query, stream_query
from aios.sdk.types import LLMResponse

Messages = list[dict[str, Any]]
Model = TypeVar("Model")  # a pydantic model class, used without importing pydantic


def llm_chat(
    agent_name: str,
    messages: Messages,
    base_url: str | None = None,
    llms: list[dict[str, Any]] | None = None,
    *,
    temperature: float | None = None,
    max_new_tokens: int | None = None,
    priority: int | None = None,
) -> LLMResponse:
    """Chat: the model's reply as text in ``response_message``."""
    return _llm(agent_name, base_url, messages=messages, llms=llms, action_type="chat",
                temperature=temperature, max_new_tokens=max_new_tokens, priority=priority)


class ChatStream:
    """The reply of :func:`llm_chat_stream`, read as it is written: iterate it for the text in pieces; once the
    iteration ends, ``response`` is the whole reply (as :func:`llm_chat` returns it, timings included)."""

    def __init__(self, lines: Generator[dict[str, Any], None, None]) -> None:
        self._lines = lines
        self.response: LLMResponse | None = None

    def __iter__(self) -> Iterator[str]:
        try:
            for line in self._lines:
                if "delta" in line:
                    yield line["delta"]
                else:
                    self.response = LLMResponse.from_envelope(line)
        finally:  # a loop left early: the connection closes now, which cancels the generation (not when collected)
            self._lines.close()
        if self.response is None:
            raise AIOSError(0, "the stream ended before the kernel sent the final reply")
        _raise_on_error(self.response)


def llm_chat_stream(
    agent_name: str,
    messages: Messages,
    base_url: str | None = None,
    llms: list[dict[str, Any]] | None = None,
    *,
    tools: list[dict[str, Any]] | None = None,
    temperature: float | None = None,
    max_new_tokens: int | None = None,
    priority: int | None = None,
) -> ChatStream:
    """Chat, with the reply handed over as the model writes it::

        stream = llm_chat_stream("me/agent", [{"role": "user", "content": "Hi"}])
        for text in stream:
            print(text, end="", flush=True)
        stream.response.finish_reason  # the whole reply, once the loop ended

    With ``tools`` (OpenAI function tools) the model may call them instead of answering (``tool_choice: auto``):
    a prose reply streams as above; calls stream nothing and arrive in ``stream.response.tool_calls``.

    Nothing is sent until the iteration starts; a loop left early closes the connection, which cancels the
    generation. Errors raise :class:`AIOSError`, as for :func:`llm_chat`."""
    query_data = _query_data(messages=messages, llms=llms, action_type="chat", tools=tools, temperature=temperature,
                             max_new_tokens=max_new_tokens, priority=priority)
    return ChatStream(stream_query(agent_name, "llm", query_data, base_url))


@overload
def llm_chat_with_json_output(
    agent_name: str,
    messages: Messages,
    base_url: str | None = None,
    llms: list[dict[str, Any]] | None = None,
    response_format: type[Model] = ...,  # type: ignore[assignment]
    *,
    temperature: float | None = None,
    max_new_tokens: int | None = None,
    priority: int | None = None,
) -> Model: ...


@overload
def llm_chat_with_json_output(
    agent_name: str,
    messages: Messages,
    base_url: str | None = None,
    llms: list[dict[str, Any]] | None = None,
    response_format: dict[str, Any] | None = None,
    *,
    temperature: float | None = None,
    max_new_tokens: int | None = None,
    priority: int | None = None,
) -> LLMResponse: ...


def llm_chat_with_json_output(
    agent_name: str,
    messages: Messages,
    base_url: str | None = None,
    llms: list[dict[str, Any]] | None = None,
    response_format: dict[str, Any] | type[Model] | None = None,
    *,
    temperature: float | None = None,
    max_new_tokens: int | None = None,
    priority: int | None = None,
) -> LLMResponse | Model:
    """Chat with a JSON reply that parses and matches the schema: a local model's decoding is constrained to it,
    and the kernel checks every reply (a reply that does not fit raises :class:`AIOSError` with status 502).

    ``response_format`` is ``{"type": "json_object"}`` (the default: any JSON object),
    ``{"type": "json_schema", "json_schema": {"name": ..., "schema": {...}}}``, a bare JSON Schema — then the
    result is an :class:`LLMResponse` whose ``json()`` gives the parsed value — or a pydantic model class, and
    then the result is an instance of that class.
    """
    model = response_format if isinstance(response_format, type) else None
    if model is not None:
        if not hasattr(model, "model_json_schema"):
            raise TypeError(f"response_format must be a dict or a pydantic model class, not {model.__name__}")
        response_format = {"type": "json_schema",
                           "json_schema": {"name": model.__name__, "schema": model.model_json_schema()}}
    response = _llm(agent_name, base_url, messages=messages, llms=llms, action_type="chat_with_json_output",
                    message_return_type="json", response_format=response_format,
                    temperature=temperature, max_new_tokens=max_new_tokens, priority=priority)
    if model is None:
        return response
    try:
        return model.model_validate_json(response.response_message or "")  # type: ignore[attr-defined]
    except ValueError as exc:  # pydantic's ValidationError: checks the schema cannot express (validators)
        raise AIOSError(502, f"the reply does not fit {model.__name__}: {exc}", response) from None


def llm_chat_with_tool_call_output(
    agent_name: str,
    messages: Messages,
    tools: list[dict[str, Any]],
    base_url: str | None = None,
    llms: list[dict[str, Any]] | None = None,
    *,
    tool_choice: str | dict[str, Any] | None = None,
    temperature: float | None = None,
    max_new_tokens: int | None = None,
    priority: int | None = None,
) -> LLMResponse:
    """Chat offering ``tools`` (OpenAI function tools; names may be ``author/name``); ``tool_calls`` holds the
    calls the model made, each naming an offered tool with parameters that match its schema.

    ``tool_choice`` as in the OpenAI API: ``"required"`` (the default: one or more calls), ``"auto"`` (the
    model may answer in prose instead: then ``tool_calls`` is empty and the prose is in ``response_message``),
    ``"none"`` (prose only), or ``{"type": "function", "function": {"name": "author/name"}}`` for that tool.
    """
    return _llm(agent_name, base_url, messages=messages, tools=tools, tool_choice=tool_choice, llms=llms,
                action_type="chat_with_tool_call_output", temperature=temperature, max_new_tokens=max_new_tokens,
                priority=priority)


def _llm(agent_name: str, base_url: str | None, **fields: Any) -> LLMResponse:
    envelope = send_query(agent_name, "llm", _query_data(**fields), base_url)
    return _raise_on_error(LLMResponse.from_envelope(envelope))


def _query_data(**fields: Any) -> dict[str, Any]:
    """The fields given; those left out (None) take the kernel's defaults."""
    return {key: value for key, value in fields.items() if value is not None}


def _raise_on_error(response: LLMResponse) -> LLMResponse:
    if response.error is not None and response.status_code >= 400:
        raise AIOSError(response.status_code, response.error, response)
    return response
