"""The LLM syscall handler: turns an LLM query into a prompt, runs it on a core, and shapes the reply.

``prepare`` runs when the syscall is submitted, so a request the kernel cannot serve (unknown model, action not
built yet, missing tools) is refused before it queues; ``__call__`` runs when the scheduler gives it its turn.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import Any

from aios.errors import BadRequest, NotAvailable
from aios.llm.core import GenerationRequest, LLMCore, SamplingParams, on_loop
from aios.llm.prompting import (
    decode_hf_tool_calls,
    extract_json,
    json_reply_prefix,
    merge_messages_with_response_format,
    tools_for_model,
    wants_json_output,
)
from aios.llm.router import Router
from aios.syscall import Syscall

TOOL_ACTIONS = ("chat_with_tool_call_output", "tool_use")  # tool_use: the AIOS SDK's name for the same action
ACTIONS = ("chat", "chat_with_json_output", *TOOL_ACTIONS, "call_tool", "operate_file")
_NOT_BUILT = {
    "call_tool": "action_type 'call_tool' needs the tool manager, which this kernel does not have yet",
    "operate_file": "action_type 'operate_file' needs the storage manager, which this kernel does not have yet",
}


@dataclass
class LLMQuery:
    """An LLM syscall's payload. Sampling fields left ``None`` come from the chosen ``llms`` entry, else defaults."""

    messages: list[dict[str, Any]]
    action_type: str = "chat"
    tools: list[dict[str, Any]] | None = None
    llms: list[dict[str, Any]] | None = None
    message_return_type: str = "text"
    response_format: dict[str, Any] | None = None
    temperature: float | None = None
    top_p: float | None = None
    max_new_tokens: int | None = None
    stop: list[str] = field(default_factory=list)
    # Filled by prepare():
    core: LLMCore | None = None
    sampling: SamplingParams = field(default_factory=SamplingParams)

    @property
    def wants_json(self) -> bool:
        if self.response_format is not None:
            return wants_json_output(self.response_format)
        return self.action_type == "chat_with_json_output" or self.message_return_type == "json"


@dataclass
class LLMResponse:
    response_message: str | None = None
    tool_calls: list[dict[str, Any]] | None = None
    finished: bool = False
    error: str | None = None
    status_code: int = 200


class LLMHandler:
    def __init__(self, router: Router) -> None:
        self.router = router

    def prepare(self, query: LLMQuery) -> LLMQuery:
        if query.action_type in _NOT_BUILT:
            raise NotAvailable(_NOT_BUILT[query.action_type])
        if query.action_type in TOOL_ACTIONS and not query.tools:
            raise BadRequest(f"action_type {query.action_type!r} needs a non-empty 'tools' list")
        query.core, entry = self.router.pick(query.llms)
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

        # The engine says, from its thread, when the generation starts and stops running: the syscall's slices.
        on_running = on_loop(asyncio.get_running_loop(), record_slice)
        request = GenerationRequest(query.messages, query.sampling, priority=syscall.priority, on_running=on_running)
        if query.tools:
            request.tools = tools_for_model(query.tools)
        elif query.wants_json:
            request.messages = merge_messages_with_response_format(query.messages, query.response_format)
            request.reply_prefix = json_reply_prefix(query.response_format)
        generation = await query.core.complete(request)
        if request.tools:
            calls = decode_hf_tool_calls(generation.text)
            # A model that answers in prose instead of calling a tool is an answer, not an error.
            return LLMResponse(response_message=None if calls else generation.text, tool_calls=calls, finished=True)
        if query.wants_json:
            return _json_reply(generation.text)
        return LLMResponse(response_message=generation.text, finished=True)


def _json_reply(text: str) -> LLMResponse:
    try:
        value = extract_json(text)
    except ValueError as exc:
        return LLMResponse(response_message=text, finished=True, status_code=502, error=f"model reply is not JSON: {exc}")
    return LLMResponse(response_message=json.dumps(value, ensure_ascii=False), finished=True)


def _sampling(query: LLMQuery, entry: dict[str, Any]) -> SamplingParams:
    """Explicit query fields win over the ``llms`` entry's (AIOS puts temperature/max_tokens there)."""
    defaults = SamplingParams()

    def pick(value: Any, *keys: str, default: Any, kind: type) -> Any:
        if value is not None:
            return value
        key = next((k for k in keys if entry.get(k) is not None), None)
        if key is None:
            return default
        raw = entry[key]
        if isinstance(raw, bool) or not isinstance(raw, (int, float)) or raw != raw or raw in (float("inf"), float("-inf")):
            raise BadRequest(f"llms entry {entry.get('name')!r}: {key} must be a finite number, got {raw!r}")
        return kind(raw)

    sampling = SamplingParams(
        temperature=pick(query.temperature, "temperature", default=defaults.temperature, kind=float),
        top_p=pick(query.top_p, "top_p", default=defaults.top_p, kind=float),
        max_new_tokens=pick(query.max_new_tokens, "max_new_tokens", "max_tokens", default=defaults.max_new_tokens,
                            kind=int),
        stop=list(query.stop),
    )
    if not 0 <= sampling.temperature <= 2 or not 0 < sampling.top_p <= 1 or not 1 <= sampling.max_new_tokens <= 32768:
        raise BadRequest(
            "llms entry has an out-of-range sampling value: temperature must be in [0, 2], top_p in (0, 1], "
            f"max_tokens in [1, 32768] (got {sampling.temperature}, {sampling.top_p}, {sampling.max_new_tokens})"
        )
    return sampling
