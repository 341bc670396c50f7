"""Agentic memory (A-MEM) on the embedded model, through a real kernel process: the model builds the note
(keywords from its words, a context, tags), links it to related memories chosen among the nearest ones, and
evolves those; every change lands in their evolution history. Decoding is greedy, so runs repeat."""

from __future__ import annotations

import re

from aios import sdk
from conftest import KernelProcess

AGENT = "amem/agent"


def test_a_new_note_is_built_linked_to_related_memories_and_evolves_them(kernel: KernelProcess) -> None:
    url = kernel.url
    puppy = sdk.create_memory(AGENT, "I adopted a golden retriever puppy named Max last Saturday.",
                              {"tags": ["pets", "family"], "context": "Adopting a puppy named Max."}, url)
    leash = sdk.create_memory(AGENT, "Bought dog food and a leash for Max.",
                              {"tags": ["shopping", "pets"], "context": "Shopping for the new dog."}, url)
    budget = sdk.create_memory(AGENT, "The quarterly budget review moved to Thursday at 3pm.", {"tags": ["work"]}, url)
    content = "Max the dog needs his vaccination shots next month."
    reply = sdk.create_agentic_memory(AGENT, content, base_url=url)
    report, note = reply.agentic, reply.note
    assert report["analysed"] and report["problems"] == [], report

    # Note construction: keywords are the note's own words; a context; short lowercase tags.
    assert note.keywords and all(keyword.lower() in content.lower() for keyword in note.keywords)
    assert note.context.strip() and note.tags and all(re.fullmatch(r"[a-z][a-z0-9-]{1,23}", t) for t in note.tags)

    # Link generation: candidates are the nearest memories above the similarity floor; the model picked links.
    assert set(report["candidates"]) == {puppy.memory_id, leash.memory_id}  # not the budget review
    assert report["linked"] and set(report["linked"]) <= set(report["candidates"])
    assert note.links == report["linked"] and budget.memory_id not in note.links

    # Memory evolution: each linked note links back, and its history says what the new note changed.
    for linked in report["linked"]:
        other = sdk.get_memory(AGENT, linked, url).note
        assert reply.memory_id in other.links
        (entry,) = other.evolution_history
        assert entry["cause"] == reply.memory_id and entry["changes"]["links"] == {"added": [reply.memory_id]}
    assert report["evolved"], "the model changed no linked note's context or tags"
    for evolved in report["evolved"]:
        other = sdk.get_memory(AGENT, evolved, url).note
        changes = other.evolution_history[0]["changes"]
        assert {"context", "tags"} & set(changes)
        if "context" in changes:
            assert changes["context"]["to"] == other.context != changes["context"]["from"]
        if "tags" in changes:
            assert set(changes["tags"]["from"]) < set(changes["tags"]["to"]) == set(other.tags)
    assert sdk.get_memory(AGENT, budget.memory_id, url).note.evolution_history == []

    # The note is kept like any other, and found by meaning.
    found = sdk.search_memories(AGENT, "When is the dog's next vet visit?", 1, url).search_results
    assert [r.memory_id for r in found] == [reply.memory_id]
