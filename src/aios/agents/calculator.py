"""A tool-using agent whose tool the kernel runs: the model picks a call of the built-in calculator (under the
grammar), the kernel runs it as this agent, and the reply carries the result."""

from __future__ import annotations

from aios.sdk import ToolResponse, get_tool, llm_call_tool

AGENT_NAME = "example/calculator"


def run(request: str, base_url: str | None = None) -> ToolResponse:
    calculator = get_tool("aios/calculator", base_url)
    return llm_call_tool(AGENT_NAME, [{"role": "user", "content": request}], [calculator.call_format()], base_url,
                         temperature=0, max_new_tokens=48)
