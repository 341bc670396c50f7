"""LLM syscalls, with the AIOS SDK's signatures plus ``temperature``, ``max_new_tokens`` and ``priority``
keywords (``priority``: higher runs first when the kernel uses the priority policy)."""

from __future__ import annotations

from typing import Any

from aios.sdk.transport import AIOSError, send_query
from aios.sdk.types import LLMResponse

Messages = list[dict[str, Any]]


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
) -> LLMResponse:
    """Chat with a JSON reply: ``response.json()`` gives the parsed value.

    ``response_format`` is ``{"type": "json_object"}`` (the default) or
    ``{"type": "json_schema", "json_schema": {"name": ..., "schema": {...}}}``.
    """
    return _llm(agent_name, base_url, messages=messages, llms=llms, action_type="chat_with_json_output",
                message_return_type="json", response_format=response_format,
                temperature=temperature, max_new_tokens=max_new_tokens, priority=priority)


def llm_chat_with_tool_call_output(
    agent_name: str,
    messages: Messages,
    tools: list[dict[str, Any]],
    base_url: str | None = None,
    llms: list[dict[str, Any]] | None = None,
    *,
    temperature: float | None = None,
    max_new_tokens: int | None = None,
    priority: int | None = None,
) -> LLMResponse:
    """Chat offering ``tools`` (OpenAI function tools; names may be ``author/name``).

    ``tool_calls`` holds the calls the model made; when it answered in prose instead, ``tool_calls`` is empty
    and the prose is in ``response_message``.
    """
    return _llm(agent_name, base_url, messages=messages, tools=tools, llms=llms,
                action_type="chat_with_tool_call_output", temperature=temperature, max_new_tokens=max_new_tokens,
                priority=priority)


def _llm(agent_name: str, base_url: str | None, **fields: Any) -> LLMResponse:
    query_data = {key: value for key, value in fields.items() if value is not None}
    response = LLMResponse.from_envelope(send_query(agent_name, "llm", query_data, base_url))
    if response.error is not None and response.status_code >= 400:
        raise AIOSError(response.status_code, response.error, response)
    return response
