"""The OpenAI Agents SDK (``openai-agents``): an agent with a function tool, its model the kernel's through /v1
(the Chat Completions API; tracing export off, as nothing here should reach OpenAI's servers).

Run against a running kernel: ``AIOS_KERNEL_URL=http://localhost:8000 python openai_agents.py``.
"""

import asyncio
import os

from agents import Agent, ModelSettings, OpenAIChatCompletionsModel, Runner, function_tool, set_tracing_disabled
from openai import AsyncOpenAI


@function_tool
def get_weather(city: str) -> str:
    """The current weather in a city."""
    return f"It is sunny in {city}."


async def main() -> None:
    set_tracing_disabled(True)
    client = AsyncOpenAI(base_url=os.environ.get("AIOS_KERNEL_URL", "http://localhost:8000") + "/v1",
                         api_key=os.environ.get("AIOS_TOKEN", "no-token-needed"))
    model = OpenAIChatCompletionsModel(model=os.environ.get("AIOS_MODEL", "HuggingFaceTB/SmolLM2-135M-Instruct"),
                                       openai_client=client)
    # A small model would go on calling the tool; the tool's answer is taken as the agent's.
    agent = Agent(name="weather", instructions="Answer questions about the weather with the tool.", model=model,
                  tools=[get_weather], tool_use_behavior="stop_on_first_tool",
                  model_settings=ModelSettings(tool_choice="required", temperature=0, max_tokens=40))
    result = await Runner.run(agent, "What is the weather in Paris?", max_turns=3)
    print("final output:", result.final_output)


if __name__ == "__main__":
    asyncio.run(main())
