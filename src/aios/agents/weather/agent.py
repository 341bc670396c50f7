"""A tool-using agent: offers a weather tool and reports the call the model decided to make (at least one:
decoding is constrained to valid calls)."""

from __future__ import annotations

import json
from typing import Any

from aios.agents.report import report
from aios.sdk import llm_chat_with_tool_call_output

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "demo/get_weather",
        "description": "Get the current weather for a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "description": "city name, e.g. Paris"}},
            "required": ["city"],
        },
    },
}


class WeatherAgent:
    def __init__(self, agent_name: str) -> None:
        self.agent_name = agent_name

    def run(self, task_input: str) -> dict[str, Any]:
        reply = llm_chat_with_tool_call_output(self.agent_name, [{"role": "user", "content": task_input}],
                                               [WEATHER_TOOL], temperature=0, max_new_tokens=64)
        calls = [f"call {call.name}({json.dumps(call.parameters)})" for call in reply.tool_calls or []]
        return report("\n".join(calls), reply.timings)
