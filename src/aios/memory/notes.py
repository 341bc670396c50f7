"""A memory note (A-MEM's unit of memory) and how replies show it.

A note holds the agent's content and metadata, the fields agentic memory derives (keywords, tags, context), its
category, links to related notes of the same agent, its times, how often it was retrieved, and its evolution
history: one entry per event that changed it, saying when, what caused it and what changed from what to what.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

DEFAULT_CATEGORY = "Uncategorized"  # upstream's default
# Note fields an agent may set through ``metadata`` (AIOS reads tags, keywords and category from there too).
NOTE_FIELDS = ("keywords", "tags", "context", "category")
# What replies show beside them, kept by the kernel: an agent cannot set these.
KERNEL_FIELDS = ("timestamp", "last_accessed", "created_at", "updated_at", "retrieval_count", "links",
                 "evolution_history", "agentic")
MAX_HISTORY = 100  # evolution entries kept per note (the oldest go first)


@dataclass
class Note:
    memory_id: str
    agent: str
    content: str
    metadata: dict[str, Any] = field(default_factory=dict)  # the agent's own keys
    keywords: list[str] = field(default_factory=list)
    tags: list[str] = field(default_factory=list)
    context: str = ""
    category: str = DEFAULT_CATEGORY
    links: list[str] = field(default_factory=list)  # memory_ids of related notes (each links back)
    evolution: list[dict[str, Any]] = field(default_factory=list)
    created: float = 0.0  # Unix seconds
    updated: float = 0.0
    last_accessed: float = 0.0
    retrieval_count: int = 0
    row: int = 0  # the store's key for it (0: not stored yet)

    def search_text(self) -> str:
        """What is embedded and indexed for words: the content, and what describes it."""
        parts = [self.content, " ".join(self.keywords), " ".join(self.tags), self.context]
        return "\n".join(part for part in parts if part.strip())

    def record(self, when: float, cause: str, changes: dict[str, Any]) -> None:
        """Add an evolution entry (nothing when nothing changed)."""
        if changes:
            self.evolution = [*self.evolution, {"time": iso(when), "cause": cause, "changes": changes}][-MAX_HISTORY:]

    def reply_metadata(self) -> dict[str, Any]:
        """The ``metadata`` of a reply: the agent's keys, the note's fields, and what the kernel keeps."""
        return {**self.metadata, "keywords": self.keywords, "tags": self.tags, "context": self.context,
                "category": self.category, "timestamp": upstream_time(self.created),
                "last_accessed": upstream_time(self.last_accessed), "created_at": iso(self.created),
                "updated_at": iso(self.updated), "retrieval_count": self.retrieval_count, "links": self.links,
                "evolution_history": self.evolution}

    def summary(self) -> dict[str, Any]:
        """The note as a list shows it (``list_memories``): its id, content, labels and time."""
        return {"memory_id": self.memory_id, "content": self.content, "metadata": self.reply_metadata(),
                "keywords": self.keywords, "tags": self.tags, "category": self.category,
                "timestamp": upstream_time(self.created)}

    def search_result(self, score: float, whole: bool) -> dict[str, Any]:
        """One entry of ``search_results``; ``whole`` (retrieve_memory_raw) adds every field at the top level,
        as upstream's raw notes have them."""
        result = {**self.summary(), "score": round(score, 4)}
        if whole:
            result.update(id=self.memory_id, context=self.context, links=self.links,
                          retrieval_count=self.retrieval_count, last_accessed=upstream_time(self.last_accessed),
                          evolution_history=self.evolution)
        return result


def upstream_time(seconds: float) -> str:
    """Upstream's note time format, ``YYYYMMDDHHMM`` in the kernel's local time."""
    return time.strftime("%Y%m%d%H%M", time.localtime(seconds))


def iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds).astimezone().isoformat(timespec="seconds")
