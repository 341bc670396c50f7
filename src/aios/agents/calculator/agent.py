"""A tool-using agent whose tool the kernel runs: the model picks a call of the built-in calculator (under the
grammar), the kernel runs it as this agent, and the reply carries the result."""

from __future__ import annotations

import json
from typing import Any

from aios.agents.report import report
from aios.sdk import get_tool, llm_call_tool


class CalculatorAgent:
    def __init__(self, agent_name: str) -> None:
        self.agent_name = agent_name

    def run(self, task_input: str) -> dict[str, Any]:
        calculator = get_tool("aios/calculator")
        reply = llm_call_tool(self.agent_name, [{"role": "user", "content": task_input}], [calculator.call_format()],
                              temperature=0, max_new_tokens=48)
        ran = [f"ran {r.name}({json.dumps(r.parameters)}) = {json.dumps(r.result)}" for r in reply.results]
        return report("\n".join(ran), reply.timings)
