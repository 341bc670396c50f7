"""Tool syscalls: the AIOS SDK's ``call_tool`` and ``llm_call_tool`` (same names and arguments), and the tool
list (``list_tools``, ``get_tool``). Each raises :class:`AIOSError` when the kernel refused the calls or any of
them failed (``status_code`` says why: 404 no such tool, 400 parameters the schema does not take, 504 a
timeout, ...); the reply is attached to the error, with the calls that did succeed."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from aios.sdk.transport import AIOSError, get_json, not_an_envelope, send_query
from aios.sdk.types import Timings


@dataclass(frozen=True)
class ToolInfo:
    name: str  # "author/name"
    description: str
    parameters: dict[str, Any]  # JSON Schema
    timeout_s: float | None
    max_concurrency: int | None  # 1: never two calls at once
    requires_confirmation: bool
    source: str  # builtin, a folder, an entry point, an MCP server

    def call_format(self) -> dict[str, Any]:
        """As an OpenAI function tool, ready for ``llm_call_tool(..., tools=[...])``."""
        return {"type": "function", "function": {"name": self.name, "description": self.description,
                                                 "parameters": self.parameters}}

    @classmethod
    def of(cls, item: dict[str, Any]) -> "ToolInfo":
        return cls(item["name"], item.get("description", ""), item.get("parameters") or {}, item.get("timeout_s"),
                   item.get("max_concurrency"), bool(item.get("requires_confirmation")), item.get("source", ""))


@dataclass(frozen=True)
class ToolResult:
    name: str
    parameters: dict[str, Any]
    id: str
    result: Any  # text, or a JSON value; None when the call failed
    error: str | None
    status_code: int


@dataclass(frozen=True)
class ToolResponse:
    response_message: str | None  # one call: its result as text; several: a JSON array of their results
    results: list[ToolResult]
    finished: bool
    error: str | None
    status_code: int
    timings: Timings

    @classmethod
    def from_envelope(cls, envelope: Any) -> "ToolResponse":
        try:
            response = envelope["response"]
            results = [ToolResult(c["name"], c.get("parameters") or {}, c.get("id", ""), c.get("result"),
                                  c.get("error"), int(c.get("status_code", 200))) for c in response.get("tool_calls") or []]
            return cls(response.get("response_message"), results, bool(response.get("finished")),
                       response.get("error"), int(response.get("status_code", 200)),
                       Timings.of(envelope))
        except (KeyError, TypeError, ValueError, AttributeError):
            raise not_an_envelope(envelope) from None


def list_tools(base_url: str | None = None) -> list[ToolInfo]:
    """Every tool the kernel offers."""
    return [ToolInfo.of(item) for item in get_json("/tools", base_url).get("tools", [])]


def get_tool(name: str, base_url: str | None = None) -> ToolInfo:
    """One tool by its ``author/name``; :class:`AIOSError` 404 (naming close matches) when there is none, and
    status 0 for a name of another form, which no route of the kernel's would answer for."""
    parts = name.split("/") if isinstance(name, str) else []
    if len(parts) != 2 or not all(parts):
        raise AIOSError(0, f"tool name must be author/name (such as 'aios/calculator'), not {name!r}; list_tools() "
                           "gives every name the kernel has")
    author, tool = parts
    return ToolInfo.of(get_json(f"/tools/{quote(author, safe='')}/{quote(tool, safe='')}", base_url)["tool"])


def call_tool(agent_name: str, tool_calls: list[dict[str, Any]], base_url: str | None = None) -> ToolResponse:
    """Run ``[{"name": "author/name", "parameters": {...}}, ...]`` in order, as this agent."""
    return _checked(send_query(agent_name, "tool", {"query_class": "tool", "tool_calls": tool_calls}, base_url))


def llm_call_tool(agent_name: str, messages: list[dict[str, Any]], tools: list[dict[str, Any]],
                  base_url: str | None = None, llms: list[dict[str, Any]] | None = None, *,
                  temperature: float | None = None, max_new_tokens: int | None = None) -> ToolResponse:
    """The model picks calls of ``tools`` (the kernel's tools, e.g. ``get_tool(...).call_format()``); the kernel
    runs them as this agent and replies with their results."""
    query_data = {key: value for key, value in (("llms", llms), ("temperature", temperature),
                                                ("max_new_tokens", max_new_tokens)) if value is not None}
    return _checked(send_query(agent_name, "llm", {"messages": messages, "tools": tools, "action_type": "call_tool",
                                                   **query_data}, base_url))


def _checked(envelope: dict[str, Any]) -> ToolResponse:
    response = ToolResponse.from_envelope(envelope)
    if response.error is not None and response.status_code >= 400:
        raise AIOSError(response.status_code, response.error, response)
    return response
