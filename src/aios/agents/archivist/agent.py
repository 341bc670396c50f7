"""A file-keeping agent: writes notes, finds one again by its meaning, and rolls a bad edit back."""

from __future__ import annotations

from typing import Any

from aios.agents.report import report
from aios.sdk import read_file, retrieve_file, rollback_file, write_file

NOTES = {
    "trips/kyoto.txt": "Kyoto in April: temples, shrines and the cherry blossoms along the Philosopher's Path.",
    "recipes/soup.txt": "Tomato soup: roast the tomatoes with garlic, blend with stock, season with basil.",
    "work/release.txt": "The release ships on Friday after the final review.",
}


class ArchivistAgent:
    def __init__(self, agent_name: str) -> None:
        self.agent_name = agent_name

    def run(self, task_input: str) -> dict[str, Any]:
        """Keeps its notes, answers the question with the best-matching one, then undoes a careless edit of it;
        the result tells each step."""
        for path, text in NOTES.items():
            write_file(self.agent_name, path, text)
        found = retrieve_file(self.agent_name, task_input, 1).files[0]
        steps = [f"wrote {len(NOTES)} notes", f"retrieved {found.file_path} ({found.similarity}): {found.snippet}"]
        edit = write_file(self.agent_name, found.file_path, "oops, overwritten")
        undo = rollback_file(self.agent_name, found.file_path, 1)
        restored = read_file(self.agent_name, found.file_path).content
        steps += [f"overwrote it (version {edit.version})", f"{undo.message}; it reads again: {restored}"]
        return report("\n".join(steps), undo.timings)
