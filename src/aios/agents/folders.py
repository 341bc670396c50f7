"""The folders of agent runs, ``<data_dir>/agents/runs/<execution_id>/``: numbered as runs are submitted, and
those of ended runs kept ``agents.keep_runs`` at a time, in the order the runs ended (a long run that ends last
is the newest); older ones are deleted, at start-up and as runs end.

A folder to delete is first renamed out of the way (``.deleting-<id>``), at once, then removed in a thread: a
reader never finds it half deleted, and a removal that a crash cut short is finished at the next start.
"""

from __future__ import annotations

import logging
import shutil
from collections import deque
from pathlib import Path

log = logging.getLogger(__name__)

DELETING = ".deleting-"


class RunFolders:
    def __init__(self, runs_dir: Path, keep: int | None) -> None:
        self.dir, self.keep = runs_dir, keep
        for leftover in runs_dir.glob(DELETING + "*"):
            remove(leftover)
        folders = sorted((p for p in runs_dir.glob("*") if p.name.isdigit()), key=_ended_at)
        self._ended = deque(int(p.name) for p in folders)  # the kept folders of ended runs, the oldest end first
        self.next_id = 1 + max(self._ended, default=0)
        for _, folder in self._past_keep():
            remove(folder)

    def folder(self, execution_id: int) -> Path:
        return self.dir / str(execution_id)

    def new_id(self) -> int:
        execution_id, self.next_id = self.next_id, self.next_id + 1
        return execution_id

    def ended(self, execution_id: int) -> list[tuple[int, Path]]:
        """Note that a run ended; the runs it pushes past the bound, with their renamed folders for
        :func:`remove`."""
        self._ended.append(execution_id)
        return self._past_keep()

    def deleted(self, execution_id: int) -> bool:
        """Whether a run of this kernel's data dir has no folder left because the bound deleted it (or because it
        never started: a submission refused, whose folder went at once)."""
        return (self.keep is not None and 0 < execution_id < self.next_id
                and not self.folder(execution_id).exists())

    def _past_keep(self) -> list[tuple[int, Path]]:
        gone = []
        while self.keep is not None and len(self._ended) > self.keep:
            execution_id = self._ended.popleft()
            target = self.dir / f"{DELETING}{execution_id}"
            try:
                self.folder(execution_id).rename(target)
            except OSError as exc:
                log.warning("could not delete the folder of agent run %d: %s", execution_id, exc)
                continue
            gone.append((execution_id, target))
        return gone


def remove(folder: Path) -> None:
    """Remove a folder (blocking), saying so in the log if some of it stays (an agent may leave files it made
    read-only, or owned by another user)."""
    def failed(function: object, path: str, exc_info: object) -> None:
        log.warning("could not delete %s of a deleted agent run", path)

    shutil.rmtree(folder, onerror=failed)


def _ended_at(folder: Path) -> float:
    """When a run ended: its status was written then (its folder's own time if it has none)."""
    try:
        return (folder / "status.json").stat().st_mtime
    except OSError:
        return folder.stat().st_mtime
