"""The folders of agent runs, ``<data_dir>/agents/runs/<execution_id>/``: numbered as runs are accepted, and
those of ended runs kept ``agents.keep_runs`` at a time, in the order the runs ended (a long run that ends last
is the newest); older ones are deleted, at start-up and as runs end.

A submission is prepared in a folder of its own (``.preparing-<random>``: its package unpacked, its request
written), in a thread, and gets its id only once it is accepted, when that folder is renamed to it (on the event
loop, so two submissions never take the same id). A refused submission takes no id, so every id below
``next_id`` was a run, and one whose folder is gone was deleted by the bound. A kernel that stopped while a
submission was being prepared leaves its folder, which the next start removes.

Ids are never reused, across restarts too: the next id is one past the highest run folder, or what
``<data_dir>/agents/next_run_id`` says if that is more. That file is written before any folder is deleted, as
deleting the folder of the newest run would otherwise hand its id out again at the next start.

A folder to delete is first renamed out of the way (``.deleting-<id>``), at once, then removed in a thread: a
reader never finds it half deleted, and a removal that a crash cut short is finished at the next start.
"""

from __future__ import annotations

import logging
import os
import shutil
import stat
import sys
import uuid
from collections import deque
from pathlib import Path

log = logging.getLogger(__name__)

DELETING = ".deleting-"
PREPARING = ".preparing-"
NEXT_ID = "next_run_id"  # beside the runs' folders, not among them


class RunFolders:
    def __init__(self, runs_dir: Path, keep: int | None) -> None:
        self.dir, self.keep = runs_dir, keep
        self._next_id_file = runs_dir.parent / NEXT_ID
        for leftover in [*runs_dir.glob(DELETING + "*"), *runs_dir.glob(PREPARING + "*")]:
            remove(leftover)
        folders = sorted((p for p in runs_dir.glob("*") if p.name.isdigit()), key=_ended_at)
        self._ended = deque(int(p.name) for p in folders)  # the kept folders of ended runs, the oldest end first
        self.next_id = max(1 + max(self._ended, default=0), _read_id(self._next_id_file))
        for _, folder in self._past_keep():
            remove(folder)

    def folder(self, execution_id: int) -> Path:
        return self.dir / str(execution_id)

    def preparing(self) -> Path:
        """A new folder's path for a submission to be prepared in (:meth:`take` gives it its id)."""
        return self.dir / f"{PREPARING}{uuid.uuid4().hex}"

    def take(self, prepared: Path) -> int:
        """The next id, for a submission that was accepted: its prepared folder becomes the run's. Nothing awaits
        between reading the id and counting it, so no other submission can take it; if the rename fails, no id
        was taken (``OSError``)."""
        execution_id = self.next_id
        prepared.rename(self.folder(execution_id))
        self.next_id = execution_id + 1
        return execution_id

    def ended(self, execution_id: int) -> list[tuple[int, Path]]:
        """Note that a run ended; the runs it pushes past the bound, with their renamed folders for
        :func:`remove`."""
        self._ended.append(execution_id)
        return self._past_keep()

    def deleted(self, execution_id: int) -> bool:
        """Whether a run of this kernel's data dir has no folder left because the bound deleted it (every id below
        ``next_id`` was a run: a refused submission takes none)."""
        return (self.keep is not None and 0 < execution_id < self.next_id
                and not self.folder(execution_id).exists())

    def _past_keep(self) -> list[tuple[int, Path]]:
        gone: list[tuple[int, Path]] = []
        if self.keep is None or len(self._ended) <= self.keep:
            return gone
        self._save_next_id()  # before the newest run's folder can go
        while len(self._ended) > self.keep:
            execution_id = self._ended.popleft()
            target = self.dir / f"{DELETING}{execution_id}"
            try:
                self.folder(execution_id).rename(target)
            except OSError as exc:
                log.warning("could not delete the folder of agent run %d: %s", execution_id, exc)
                continue
            gone.append((execution_id, target))
        return gone

    def _save_next_id(self) -> None:
        """Written whole or not at all. If it cannot be (a full disk), the folders are deleted all the same: only
        a restart before the next write, with the newest run's folder gone, could then hand out its id again."""
        partial = self._next_id_file.with_name(NEXT_ID + ".partial")
        try:
            partial.write_text(str(self.next_id), encoding="utf-8")
            partial.replace(self._next_id_file)
        except OSError as exc:
            log.warning("could not save the next agent execution id in %s: %s", self._next_id_file, exc)


def remove(folder: Path) -> None:
    """Remove a folder (blocking). An agent may have made folders of its own read-only (or unreadable), which
    keeps what they hold from being removed: then every folder in it is given back to its owner (u+rwx) and the
    removal tried once more. What still stays (files of another user's) is said in the log."""
    if _removed(folder, quiet=True):
        return
    try:
        parent = os.open(folder.parent, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        pass
    else:
        try:
            _give_back(parent, folder.name)
        except RecursionError:  # folders nested deeper than Python recurses: the retry logs what stays
            pass
        finally:
            os.close(parent)
    _removed(folder, quiet=False)


def _removed(folder: Path, quiet: bool) -> bool:
    """Whether all of ``folder`` could be removed; what could not is logged unless ``quiet``."""
    stayed: list[str] = []

    def failed(function: object, path: str, _: object) -> None:
        stayed.append(path)
        if not quiet:
            log.warning("could not delete %s of a deleted agent run", path)

    shutil.rmtree(folder, **{_ON_ERROR: failed})
    return not stayed


# Python 3.12 renamed the handler's argument (it gets the exception itself, which this does not read).
_ON_ERROR = "onexc" if sys.version_info >= (3, 12) else "onerror"


def _give_back(parent: int, name: str) -> None:
    """Give the owner every right (u+rwx) on the folder ``name`` in ``parent`` (a descriptor) and on every folder
    in it. By descriptors, never following a link: a process the agent left running could swap one of its folders
    for a link to one of the kernel's meanwhile."""
    try:
        mode = os.stat(name, dir_fd=parent, follow_symlinks=False).st_mode
        if not stat.S_ISDIR(mode):
            return
        os.chmod(name, stat.S_IMODE(mode) | stat.S_IRWXU, dir_fd=parent, follow_symlinks=False)
        handle = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=parent)
    except (OSError, NotImplementedError):  # gone, a link now; or a system that cannot leave links alone
        return
    try:
        with os.scandir(handle) as entries:
            folders = [entry.name for entry in entries if entry.is_dir(follow_symlinks=False)]
        for child in folders:
            _give_back(handle, child)
    except OSError:
        pass
    finally:
        os.close(handle)


def _read_id(path: Path) -> int:
    try:
        return int(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return 0


def _ended_at(folder: Path) -> float:
    """When a run ended: its status was written then (its folder's own time if it has none)."""
    try:
        return (folder / "status.json").stat().st_mtime
    except OSError:
        return folder.stat().st_mtime
