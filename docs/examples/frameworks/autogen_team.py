"""AutoGen (``autogen-agentchat`` with ``autogen-ext[openai]``): two agents taking turns in a round-robin team,
their model the kernel's, through its /v1. Each turn is a syscall of the kernel, scheduled with every other.

Run against a running kernel: ``AIOS_KERNEL_URL=http://localhost:8000 python autogen_team.py``.
"""

import asyncio
import os

from autogen_agentchat.agents import AssistantAgent
from autogen_agentchat.conditions import MaxMessageTermination
from autogen_agentchat.teams import RoundRobinGroupChat
from autogen_ext.models.openai import OpenAIChatCompletionClient


async def main() -> None:
    client = OpenAIChatCompletionClient(
        model=os.environ.get("AIOS_MODEL", "HuggingFaceTB/SmolLM2-135M-Instruct"),
        base_url=os.environ.get("AIOS_KERNEL_URL", "http://localhost:8000") + "/v1",
        api_key=os.environ.get("AIOS_TOKEN", "no-token-needed"),
        # AutoGen knows OpenAI's own models only; for any other it is told what the model can do.
        model_info={"vision": False, "function_calling": True, "json_output": True, "structured_output": True,
                    "family": "unknown", "multiple_system_messages": True},
        temperature=0, max_tokens=32)
    writer = AssistantAgent("writer", model_client=client, system_message="You write one short line of poetry.")
    critic = AssistantAgent("critic", model_client=client, system_message="You praise the line in one sentence.")
    team = RoundRobinGroupChat([writer, critic], termination_condition=MaxMessageTermination(3))
    result = await team.run(task="Write a line about the sea.")
    for message in result.messages:
        print(f"{message.source}: {message.content}")
    await client.close()


if __name__ == "__main__":
    asyncio.run(main())
