"""A file-keeping agent: writes notes, finds one again by its meaning, and rolls a bad edit back."""

from __future__ import annotations

import dataclasses

from aios.sdk import StorageResponse, read_file, retrieve_file, rollback_file, write_file

AGENT_NAME = "example/archivist"
NOTES = {
    "trips/kyoto.txt": "Kyoto in April: temples, shrines and the cherry blossoms along the Philosopher's Path.",
    "recipes/soup.txt": "Tomato soup: roast the tomatoes with garlic, blend with stock, season with basil.",
    "work/release.txt": "The release ships on Friday after the final review.",
}


def run(question: str, base_url: str | None = None) -> StorageResponse:
    """Keeps its notes, answers ``question`` with the best-matching one, then undoes a careless edit of it;
    the reply's ``message`` tells each step."""
    for path, text in NOTES.items():
        write_file(AGENT_NAME, path, text, base_url)
    found = retrieve_file(AGENT_NAME, question, 1, None, base_url).files[0]
    steps = [f"wrote {len(NOTES)} notes", f"retrieved {found.file_path} ({found.similarity}): {found.snippet}"]
    edit = write_file(AGENT_NAME, found.file_path, "oops, overwritten", base_url)
    undo = rollback_file(AGENT_NAME, found.file_path, 1, base_url)
    restored = read_file(AGENT_NAME, found.file_path, base_url).content
    steps += [f"overwrote it (version {edit.version})", f"{undo.message}; it reads again: {restored}"]
    return dataclasses.replace(undo, result={**undo.result, "message": "\n".join(steps)})
