"""A structured-extraction agent: asks for JSON matching a schema and returns the parsed object."""

from __future__ import annotations

import json
from typing import Any

from aios.agents.report import report
from aios.sdk import llm_chat_with_json_output

CITY_SCHEMA = {
    "type": "json_schema",
    "json_schema": {
        "name": "city",
        "schema": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "country": {"type": "string"}},
            "required": ["city", "country"],
        },
    },
}


class ExtractorAgent:
    def __init__(self, agent_name: str) -> None:
        self.agent_name = agent_name

    def run(self, task_input: str) -> dict[str, Any]:
        messages = [{"role": "user", "content": f"Which city and country does this text talk about?\n\n{task_input}"}]
        reply = llm_chat_with_json_output(self.agent_name, messages, response_format=CITY_SCHEMA, temperature=0,
                                          max_new_tokens=48)
        return report(json.dumps(reply.json()), reply.timings)
