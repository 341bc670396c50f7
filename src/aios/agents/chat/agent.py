"""A question-answering agent: one plain chat syscall."""

from __future__ import annotations

from typing import Any

from aios.agents.report import report
from aios.sdk import llm_chat


class ChatAgent:
    def __init__(self, agent_name: str) -> None:
        self.agent_name = agent_name

    def run(self, task_input: str) -> dict[str, Any]:
        reply = llm_chat(self.agent_name, [{"role": "user", "content": task_input}], temperature=0, max_new_tokens=48)
        return report(reply.response_message or "", reply.timings)
