"""An agent that remembers across runs: each run first recalls what earlier runs kept, then keeps its own
lesson. Memories live in the kernel's database, so a later run — after the kernel restarted, or the next
``aios demo`` — recalls them too."""

from __future__ import annotations

import dataclasses
import time

from aios.sdk import MemoryResponse, create_memory, search_memories

AGENT_NAME = "example/rememberer"
LESSONS = ["The kettle in the office kitchen is broken; boil water in the microwave.",
           "Lena is vegetarian: book a restaurant with good vegetable dishes for the team dinner."]


def run(question: str, base_url: str | None = None) -> MemoryResponse:
    """Two runs of the agent, one after the other (no state passes between them but the kernel's memory); the
    reply's ``content`` tells what each recalled and kept."""
    lines, last = [], None
    for number, lesson in enumerate(LESSONS, 1):
        found = search_memories(AGENT_NAME, question, 3, base_url, tags=["lesson"]).search_results
        recalled = "; ".join(f"{r.content} (learned {r.metadata.get('learned_at', '?')})" for r in found)
        lines.append(f"run {number} recalls: {recalled or 'nothing yet'}")
        last = search_memories(AGENT_NAME, lesson, 1, base_url, tags=["lesson"])
        if any(result.content == lesson for result in last.search_results):
            lines.append(f"run {number} knew its lesson already")
            continue
        last = create_memory(AGENT_NAME, lesson, {"tags": ["lesson"], "learned_at": time.strftime("%Y-%m-%d %H:%M")},
                             base_url)
        lines.append(f"run {number} keeps: {lesson}")
    assert last is not None
    return dataclasses.replace(last, content="\n".join(lines))
