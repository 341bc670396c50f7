"""Personalization, as AIOS offers it (``memory.auto_inject``, ``memory.auto_extract``; both off by default).

``auto_inject``: before an agent's chat call, its memories most relevant to the last user message (at least
``relevance_threshold`` cosine similarity, at most ``max_injected_memories``, within about
``max_memory_tokens``) are added to the system prompt. ``auto_extract``: after a chat reply, the exchange is
kept as a memory of that agent. Both are memory syscalls of the agent through the scheduler, like any other.

They apply to plain chat only (no tools, no JSON output): agentic memory's own model calls ask for JSON, so
they are never personalized. Personalization never fails a chat: a memory syscall that fails is logged and the
chat goes on as it would without it.
"""

from __future__ import annotations

import logging
from typing import Any, Awaitable, Callable

from aios.config import MemoryConfig
from aios.llm.handler import LLMQuery, LLMResponse
from aios.memory.requests import MAX_CONTENT_CHARS, MemoryRequest
from aios.params import MAX_QUERY_CHARS
from aios.syscall import Syscall, SyscallKind, SyscallStatus

log = logging.getLogger(__name__)

Call = Callable[[SyscallKind, str, Any], Awaitable[Syscall]]
HEADER = "What you remember from earlier conversations with this user (use it when it helps):"
CONVERSATION = "conversation"  # the category of extracted exchanges


class Personalization:
    def __init__(self, call: Call, settings: MemoryConfig) -> None:
        self.call, self.settings = call, settings

    @classmethod
    def from_config(cls, call: Call, settings: MemoryConfig) -> "Personalization | None":
        return cls(call, settings) if settings.auto_inject or settings.auto_extract else None

    async def before(self, agent: str, query: LLMQuery) -> None:
        question = _last_user_text(query)
        if not self.settings.auto_inject or not _plain_chat(query) or not question.strip():
            return
        request = MemoryRequest("retrieve_memory", {"content": question[-MAX_QUERY_CHARS:],
                                                    "k": self.settings.max_injected_memories})
        found = await self._memory(agent, request)
        relevant = [r["content"] for r in found or [] if r["score"] >= self.settings.relevance_threshold]
        block = _within_budget(relevant, self.settings.max_memory_tokens)
        if block:
            query.messages = _with_system_note(query.messages, block)

    async def after(self, agent: str, query: LLMQuery, reply: LLMResponse) -> None:
        question, answer = _last_user_text(query), reply.response_message or ""
        if not self.settings.auto_extract or not _plain_chat(query) or not question.strip() or not answer.strip():
            return
        half = MAX_CONTENT_CHARS // 2 - 20
        content = f"User: {question[:half]}\nAssistant: {answer[:half]}"
        await self._memory(agent, MemoryRequest("add_memory", {"content": content, "metadata": {
            "category": CONVERSATION, "source": "auto_extract"}}))

    async def _memory(self, agent: str, request: MemoryRequest) -> list[dict[str, Any]] | None:
        """Run a memory syscall of ``agent``; its search results (None when it failed, which is only logged)."""
        try:
            syscall = await self.call(SyscallKind.MEMORY, agent, request)
        except Exception as exc:  # noqa: BLE001 - personalization must never fail the chat it serves
            log.warning("personalization (%s for %s) was refused: %s", request.operation, agent, exc)
            return None
        if syscall.status is not SyscallStatus.DONE:
            log.warning("personalization (%s for %s) failed: %s", request.operation, agent, syscall.error)
            return None
        return syscall.value.search_results or []


def _plain_chat(query: LLMQuery) -> bool:
    return query.action_type == "chat" and query.spec is None and not query.tools


def _last_user_text(query: LLMQuery) -> str:
    for message in reversed(query.messages):
        if message.get("role") == "user":
            content = message.get("content")
            if isinstance(content, list):  # OpenAI content parts
                return " ".join(p["text"] for p in content if isinstance(p, dict) and isinstance(p.get("text"), str))
            return content if isinstance(content, str) else ""
    return ""


def _within_budget(memories: list[str], max_tokens: int) -> str:
    """The memories (most relevant first) as a list under ``HEADER``, as many as fit in about ``max_tokens``
    (words × 1.3, as upstream counts)."""
    lines: list[str] = []
    for memory in memories:
        candidate = "\n".join([HEADER, *lines, f"- {' '.join(memory.split())}"])
        if len(candidate.split()) * 1.3 > max_tokens:
            break
        lines.append(f"- {' '.join(memory.split())}")
    return "\n".join([HEADER, *lines]) if lines else ""


def _with_system_note(messages: list[dict[str, Any]], note: str) -> list[dict[str, Any]]:
    """The memories join the first system message, or open the conversation as one (a single system prompt is
    what chat templates expect)."""
    if messages and messages[0].get("role") == "system" and isinstance(messages[0].get("content"), str):
        return [{**messages[0], "content": f"{messages[0]['content']}\n\n{note}"}, *messages[1:]]
    return [{"role": "system", "content": note}, *messages]
