"""An agent that remembers across runs: each run first recalls what earlier runs kept, then keeps its own
lesson. Memories live in the kernel's database, so a later run — after the kernel restarted, or the next
``aios demo`` — recalls them too."""

from __future__ import annotations

import time
from typing import Any

from aios.agents.report import report
from aios.sdk import MemoryResponse, create_memory, search_memories

LESSONS = ["The kettle in the office kitchen is broken; boil water in the microwave.",
           "Lena is vegetarian: book a restaurant with good vegetable dishes for the team dinner."]


class RemembererAgent:
    def __init__(self, agent_name: str) -> None:
        self.agent_name = agent_name

    def run(self, task_input: str) -> dict[str, Any]:
        """Two runs of the agent, one after the other (no state passes between them but the kernel's memory);
        the result tells what each recalled and kept."""
        lines: list[str] = []
        last: MemoryResponse | None = None
        for number, lesson in enumerate(LESSONS, 1):
            found = search_memories(self.agent_name, task_input, 3, tags=["lesson"]).search_results
            recalled = "; ".join(f"{r.content} (learned {r.metadata.get('learned_at', '?')})" for r in found)
            lines.append(f"run {number} recalls: {recalled or 'nothing yet'}")
            last = search_memories(self.agent_name, lesson, 1, tags=["lesson"])
            if any(result.content == lesson for result in last.search_results):
                lines.append(f"run {number} knew its lesson already")
                continue
            last = create_memory(self.agent_name, lesson, {"tags": ["lesson"],
                                                           "learned_at": time.strftime("%Y-%m-%d %H:%M")})
            lines.append(f"run {number} keeps: {lesson}")
        assert last is not None
        return report("\n".join(lines), last.timings)
