"""LangChain's ``ChatOpenAI`` with a tool, against the kernel's /v1 (its own base_url setting, nothing patched).

Run against a running kernel: ``AIOS_KERNEL_URL=http://localhost:8000 python langchain_tools.py``.
"""

import os

from langchain_core.tools import tool
from langchain_openai import ChatOpenAI


@tool
def get_weather(city: str) -> str:
    """The current weather in a city."""
    return f"It is sunny in {city}."


def main() -> None:
    llm = ChatOpenAI(base_url=os.environ.get("AIOS_KERNEL_URL", "http://localhost:8000") + "/v1",
                     api_key=os.environ.get("AIOS_TOKEN", "no-token-needed"),
                     model=os.environ.get("AIOS_MODEL", "HuggingFaceTB/SmolLM2-135M-Instruct"),
                     temperature=0, max_tokens=40)
    print("chat:", llm.invoke("What is the capital of France?").content)
    reply = llm.bind_tools([get_weather], tool_choice="get_weather").invoke("What is the weather in Paris?")
    for call in reply.tool_calls:
        print("tool call:", call["name"], call["args"], "->", get_weather.invoke(call["args"]))


if __name__ == "__main__":
    main()
