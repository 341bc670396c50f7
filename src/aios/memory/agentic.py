"""Agentic memory (A-MEM, Xu et al. 2025): a new note is organised by the kernel's own model.

1. *Note construction*: the model picks the note's keywords (from the note's own words), writes its context
   (what it is about, in a sentence) and gives topic tags.
2. *Link generation*: the agent's notes nearest the new one (by vector, above a similarity floor) are shown to
   the model, which says which are related; those are linked both ways.
3. *Memory evolution*: for each linked note, the model rewrites its context to cover what the new note adds and
   picks which of the new note's tags it gets too; each change goes into that note's evolution history.

Every model call is an LLM syscall of the agent through the kernel's scheduler, with a JSON schema that the
grammar enforces; the schemas are small and closed where they can be (keywords and links are enums over what
exists, tags are short lowercase words), decoding is greedy, and a worked example precedes each question —
what makes a 135M model's answers usable. A reply that still cannot be used (an error, a model that is down)
never fails the syscall: construction failing stores the plain note; a link or evolution failing leaves that
step out. The reply's ``metadata.agentic`` says what happened and what went wrong.
"""

from __future__ import annotations

import asyncio
import json
import re
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable

from aios.hybrid_search import STOPWORDS
from aios.memory.notes import Note

PROMPT_CHARS = 1500  # of a note's content shown to the model (a long note's start says what it is about)
MAX_KEYWORDS, MAX_TAGS = 4, 3
_WORD = re.compile(r"[^\W\d_][\w'-]*")
_TAG = "^[a-z][a-z0-9-]{1,23}$"

# agent, messages, JSON schema, max_new_tokens -> the reply's JSON object; raises Unusable.
Ask = Callable[[str, list[dict[str, Any]], dict[str, Any], int], Awaitable[dict[str, Any]]]


class Unusable(Exception):
    """The model's reply cannot be used; the message says why."""


@dataclass
class Report:
    """What agentic memory did for one note (``metadata.agentic`` of the reply)."""

    analysed: bool = False
    candidates: list[str] = field(default_factory=list)  # neighbours shown to the model
    linked: list[str] = field(default_factory=list)
    evolved: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"analysed": self.analysed, "candidates": self.candidates, "linked": self.linked,
                "evolved": self.evolved, "problems": self.problems}


@dataclass(frozen=True)
class Evolution:
    context: str
    add_tags: list[str]


# -- 1. note construction ---------------------------------------------------------------------------------------------
_ANALYSE_SYSTEM = ("You file notes. For each note, pick its most important keywords, write its context (what the note "
                   "is about, in one sentence) and give one to three topic tags.")
_ANALYSE_EXAMPLE = ("We booked flights to Rome for our anniversary in June.",
                    {"keywords": ["flights", "Rome", "anniversary"],
                     "context": "Travel plans for an anniversary trip to Rome.", "tags": ["travel", "family"]})


def keyword_choices(content: str) -> list[str]:
    """The note's distinct words worth being keywords, in order of first appearance."""
    seen: dict[str, str] = {}
    for word in _WORD.findall(content[:PROMPT_CHARS]):
        word = word.strip("'-")
        if len(word) >= 3 and word.casefold() not in STOPWORDS:
            seen.setdefault(word.casefold(), word)
    return list(seen.values())[:48]


def analysis_schema(choices: list[str]) -> dict[str, Any]:
    properties: dict[str, Any] = {
        "context": {"type": "string", "minLength": 8, "maxLength": 120},
        "tags": {"type": "array", "items": {"type": "string", "pattern": _TAG}, "minItems": 1, "maxItems": MAX_TAGS}}
    if choices:
        properties = {"keywords": {"type": "array", "items": {"enum": choices}, "minItems": 1,
                                   "maxItems": min(MAX_KEYWORDS, len(choices))}, **properties}
    return {"type": "object", "properties": properties, "required": list(properties), "additionalProperties": False}


async def analyse(ask: Ask, agent: str, content: str) -> tuple[list[str], str, list[str]]:
    """Keywords, context and tags for ``content``."""
    example, answer = _ANALYSE_EXAMPLE
    choices = keyword_choices(content)
    messages = [{"role": "system", "content": _ANALYSE_SYSTEM},
                {"role": "user", "content": f"Note: {example}"},
                {"role": "assistant", "content": json.dumps(answer if choices else _without(answer, "keywords"))},
                {"role": "user", "content": f"Note: {content[:PROMPT_CHARS]}"}]
    reply = await ask(agent, messages, analysis_schema(choices), 96)
    context = str(reply.get("context", "")).strip()
    if not context:
        raise Unusable("the model gave an empty context")
    return _distinct(reply.get("keywords", [])), context, _distinct(reply.get("tags", []))


# -- 2. link generation -----------------------------------------------------------------------------------------------
_LINK_SYSTEM = "You connect related notes. A note is related when it is about the same person, thing, place or event."
_LINK_EXAMPLE = (["We booked flights to Rome for June.", "The printer on floor 2 is broken."],
                 "Our Rome hotel is near the Colosseum.", {"related": ["1"]})


def _numbered(texts: list[str]) -> str:
    return "\n".join(f"{n}. {' '.join(text[:300].split())}" for n, text in enumerate(texts, 1))


async def choose_links(ask: Ask, agent: str, content: str, candidates: list[Note]) -> list[Note]:
    """Which of ``candidates`` (nearest first) the model says are related to the new note."""
    older, new, answer = _LINK_EXAMPLE
    labels = [str(n) for n in range(1, len(candidates) + 1)]
    question = "Which older notes are related to the new note?"
    messages = [{"role": "system", "content": _LINK_SYSTEM},
                {"role": "user", "content": f"Older notes:\n{_numbered(older)}\nNew note: {new}\n{question}"},
                {"role": "assistant", "content": json.dumps(answer)},
                {"role": "user", "content": f"Older notes:\n{_numbered([c.content for c in candidates])}\n"
                                            f"New note: {' '.join(content[:PROMPT_CHARS].split())}\n{question}"}]
    schema = {"type": "object", "properties": {"related": {"type": "array", "items": {"enum": labels},
                                                           "maxItems": len(labels)}},
              "required": ["related"], "additionalProperties": False}
    reply = await ask(agent, messages, schema, 32)
    chosen = {label for label in reply.get("related", []) if label in labels}
    return [candidate for label, candidate in zip(labels, candidates) if label in chosen]


# -- 3. memory evolution ----------------------------------------------------------------------------------------------
_EVOLVE_SYSTEM = ("You update an older note when a related new note arrives: rewrite its context to cover both, and "
                  "pick which of the new note's tags it should get too.")
_EVOLVE_EXAMPLE = ("We booked flights to Rome for June.", "Travel plans.", "Our Rome hotel is near the Colosseum.",
                   ["hotel", "sights"], {"context": "Travel plans for a trip to Rome, with flights and a hotel.",
                                         "add_tags": ["hotel"]})


def _evolve_question(older: str, context: str, new: str, tags: list[str]) -> str:
    return (f"Older note: {' '.join(older[:PROMPT_CHARS].split())}\nIts context: {context or '(none)'}\n"
            f"New note: {' '.join(new[:PROMPT_CHARS].split())}\nTags it could get: {json.dumps(tags)}")


async def evolve(ask: Ask, agent: str, new: Note, neighbour: Note) -> Evolution:
    """The neighbour's new context, and which of the new note's tags it gains."""
    older, context, example_new, example_tags, answer = _EVOLVE_EXAMPLE
    held = {tag.casefold() for tag in neighbour.tags}
    offered = [tag for tag in new.tags if tag.casefold() not in held]
    properties: dict[str, Any] = {"context": {"type": "string", "minLength": 8, "maxLength": 120}}
    if offered:
        properties["add_tags"] = {"type": "array", "items": {"enum": offered}, "maxItems": len(offered)}
    messages = [{"role": "system", "content": _EVOLVE_SYSTEM},
                {"role": "user", "content": _evolve_question(older, context, example_new, example_tags)},
                {"role": "assistant", "content": json.dumps(answer)},
                {"role": "user", "content": _evolve_question(neighbour.content, neighbour.context, new.content,
                                                             offered)}]
    schema = {"type": "object", "properties": properties, "required": list(properties), "additionalProperties": False}
    reply = await ask(agent, messages, schema, 80)
    new_context = str(reply.get("context", "")).strip()
    if not new_context:
        raise Unusable("the model gave an empty context")
    return Evolution(new_context, [tag for tag in _distinct(reply.get("add_tags", [])) if tag in offered])


def apply_evolution(neighbour: Note, new: Note, evolution: Evolution | None, when: float) -> None:
    """Link ``neighbour`` back to ``new`` and apply what evolved, each change in its evolution history."""
    changes: dict[str, Any] = {}
    if new.memory_id not in neighbour.links:
        neighbour.links = [*neighbour.links, new.memory_id]
        changes["links"] = {"added": [new.memory_id]}
    if evolution is not None and evolution.context != neighbour.context:
        changes["context"] = {"from": neighbour.context, "to": evolution.context}
        neighbour.context = evolution.context
    if evolution is not None and evolution.add_tags:
        tags = [*neighbour.tags, *evolution.add_tags]
        changes["tags"] = {"from": neighbour.tags, "to": tags}
        neighbour.tags = tags
    neighbour.record(when, new.memory_id, changes)
    if changes:
        neighbour.updated = when


async def evolve_all(ask: Ask, agent: str, new: Note, linked: list[Note],
                     report: Report) -> dict[str, Evolution | None]:
    """Every linked note's evolution, asked at once (the engine batches them); None where the reply failed."""
    outcomes = await asyncio.gather(*(evolve(ask, agent, new, note) for note in linked), return_exceptions=True)
    evolutions: dict[str, Evolution | None] = {}
    for note, outcome in zip(linked, outcomes):
        if isinstance(outcome, Unusable):
            report.problems.append(f"evolution of {note.memory_id}: {outcome}")
            outcome = None
        elif isinstance(outcome, BaseException):
            raise outcome
        evolutions[note.memory_id] = outcome
    return evolutions


def _distinct(values: Any) -> list[str]:
    unique: dict[str, str] = {}
    for value in values if isinstance(values, list) else []:
        if isinstance(value, str) and value.strip():
            unique.setdefault(value.strip().casefold(), value.strip())
    return list(unique.values())


def _without(answer: dict[str, Any], key: str) -> dict[str, Any]:
    return {k: v for k, v in answer.items() if k != key}
