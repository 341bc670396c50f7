"""A structured-extraction agent: asks for JSON matching a schema and returns the parsed object."""

from __future__ import annotations

from aios.sdk import LLMResponse, llm_chat_with_json_output

AGENT_NAME = "example/extractor"

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


def run(text: str, base_url: str | None = None) -> LLMResponse:
    """``.json()`` of the reply is the extracted object."""
    messages = [{"role": "user", "content": f"Which city and country does this text talk about?\n\n{text}"}]
    return llm_chat_with_json_output(AGENT_NAME, messages, base_url, response_format=CITY_SCHEMA,
                                     temperature=0, max_new_tokens=48)
