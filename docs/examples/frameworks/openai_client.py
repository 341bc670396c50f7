"""The official ``openai`` client against the kernel's /v1: sync, async, streaming, tools, structured output.

Run against a running kernel: ``AIOS_KERNEL_URL=http://localhost:8000 python openai_client.py``. The API key is
the agent's token when the kernel requires one (``aios token create NAME``); otherwise any string.
"""

import asyncio
import json
import os

from openai import AsyncOpenAI, OpenAI
from pydantic import BaseModel

BASE_URL = os.environ.get("AIOS_KERNEL_URL", "http://localhost:8000") + "/v1"
API_KEY = os.environ.get("AIOS_TOKEN", "no-token-needed")
MODEL = os.environ.get("AIOS_MODEL", "HuggingFaceTB/SmolLM2-135M-Instruct")
QUESTION = [{"role": "user", "content": "What is the capital of France?"}]
WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "The current weather in a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}


class Capital(BaseModel):
    country: str
    capital: str


def main() -> None:
    client = OpenAI(base_url=BASE_URL, api_key=API_KEY)
    models = [m.id for m in client.models.list()]
    print("models:", models)

    reply = client.chat.completions.create(model=MODEL, messages=QUESTION, max_tokens=24, temperature=0)
    print("sync:", reply.choices[0].message.content, reply.usage.completion_tokens)

    stream = client.chat.completions.create(model=MODEL, messages=QUESTION, max_tokens=24, temperature=0,
                                            stream=True, stream_options={"include_usage": True})
    pieces = [c.choices[0].delta.content or "" for c in stream if c.choices]
    print("stream:", len(pieces), "chunks:", "".join(pieces))

    reply = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "What is the weather in Paris?"}], tools=[WEATHER],
        tool_choice="required", max_tokens=40, temperature=0)
    call = reply.choices[0].message.tool_calls[0]
    print("tool call:", call.function.name, json.loads(call.function.arguments))

    parsed = client.chat.completions.parse(model=MODEL, messages=QUESTION, response_format=Capital, max_tokens=40,
                                           temperature=0)
    print("parsed:", repr(parsed.choices[0].message.parsed))

    print("async:", asyncio.run(ask_async()))


async def ask_async() -> str:
    async with AsyncOpenAI(base_url=BASE_URL, api_key=API_KEY) as client:
        reply = await client.chat.completions.create(model=MODEL, messages=QUESTION, max_tokens=24, temperature=0)
        return reply.choices[0].message.content or ""


if __name__ == "__main__":
    main()
