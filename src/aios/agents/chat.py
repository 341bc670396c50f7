"""A question-answering agent: one plain chat syscall."""

from __future__ import annotations

from aios.sdk import LLMResponse, llm_chat

AGENT_NAME = "example/chat"


def run(question: str, base_url: str | None = None) -> LLMResponse:
    """The answer is ``response_message``."""
    return llm_chat(AGENT_NAME, [{"role": "user", "content": question}], base_url, temperature=0, max_new_tokens=48)
