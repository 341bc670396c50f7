"""A tool-using agent: offers a weather tool and reports the call the model decided to make."""

from __future__ import annotations

from aios.sdk import LLMResponse, llm_chat_with_tool_call_output

AGENT_NAME = "example/weather"

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


def run(request: str, base_url: str | None = None) -> LLMResponse:
    """``tool_calls`` holds the calls the model made (at least one: decoding is constrained to valid calls)."""
    return llm_chat_with_tool_call_output(AGENT_NAME, [{"role": "user", "content": request}], [WEATHER_TOOL],
                                          base_url, temperature=0, max_new_tokens=64)
