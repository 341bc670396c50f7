"""The versioned agent file system (LSFS): mounts, files with their history, rollback. Blocking code: it runs
on the storage subsystem's I/O thread (or in a plain process, as the crash test's writer does).

Every change of a file's content is one new version, made so that a crash at any moment leaves the disk and
the history in agreement once the file is next touched:

1. the new content goes to the blob store (atomic, content-addressed);
2. the version is recorded as *pending*;
3. the live file is replaced atomically (temporary file, fsync, rename) — or removed, for a deletion;
4. the version is committed and becomes the file's head.

Touching a file first settles a pending version left by a crash (kept if the disk holds its content — the
rename happened — dropped otherwise), then compares the disk with the head: a difference is a change made
outside the kernel and is recorded as an ``external`` version. So history always ends with what is on disk.
"""

from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

from aios.errors import BadRequest, Conflict, Forbidden, Gone, KernelError, NotFound, NotText, TooLarge
from aios.storage.atomic import is_partial, remove_file, replace_file
from aios.storage.blobs import BlobStore, DamagedBlob, content_hash
from aios.storage.fingerprints import KnownHashes
from aios.storage.os_errors import refusal
from aios.storage.paths import NOT_TEXT, Place, default_mount, escaped, inside, is_text, overlaps, resolve
from aios.storage.reading import read_regular_file, regular_file_facts
from aios.storage.store import FileRecord, Root, Store, Version

Result = dict[str, Any]  # what an operation reports: JSON-ready facts plus a one-line "message"
# Given the file as the kernel knows it (after settling what the disk says), the new content (None: remove
# the file) and, for a rollback, the version it restores.
Decide = Callable[[FileRecord], tuple[bytes | None, int | None]]


@dataclass(frozen=True)
class Settings:
    storage_root: Path  # every agent's own directory (its default mount) lives here
    mount_roots: tuple[Path, ...]  # directories inside which agents may mount, besides their own directories
    protected: tuple[Path, ...]  # the kernel's own data (database, blobs): no mount may hold it
    max_file_bytes: int
    data_dir: Path  # the kernel's (models, snapshots, ...): no mount may overlap it, but for the storage root in it


@dataclass(frozen=True)
class DiskState:
    hash: str | None  # None: no file there
    data: bytes | None  # None also for a file known unchanged, which was not read


class FileSystem:
    def __init__(self, store: Store, blobs: BlobStore, settings: Settings, clock: Callable[[], float] = time.time):
        self.store, self.blobs, self.settings, self.clock = store, blobs, settings, clock
        self._disk_hashes = KnownHashes()  # so an unchanged file is not read and hashed at each touch

    # -- mounts -------------------------------------------------------------------------------------------------
    def mount(self, agent: str, root_dir: str) -> Result:
        """Make ``root_dir`` the agent's mount (a relative one is taken inside the agent's own directory), then
        record every file in it that the kernel has not seen as it is, so that history and search cover it."""
        path = self._mount_path(agent, root_dir)
        root = self._add_root(agent, path)
        before = {record.id: record.head for record in self.store.files(root.id)}
        tracked, skipped = self._scan(root)
        self.store.set_mount(agent, root.id)  # once scanned: a refused mount leaves the agent's mount as it was
        recorded = sum(record.head - before.get(record.id, 0) for record in tracked)
        files = sum(record.hash is not None for record in tracked)
        unread = f"; {len(skipped)} skipped, as they cannot be read (see skipped)" if skipped else ""
        return {"operation": "mount", "root": root.path, "files": files, "recorded_versions": recorded,
                "skipped": skipped,
                "message": f"mounted {root.path} for {agent}: {files} files, {recorded} changes made outside "
                           f"the kernel recorded{unread}"}

    def root_of(self, agent: str) -> Root:
        """The agent's mount: its last ``mount``, else its own directory (made on first use)."""
        root = self.store.mount_of(agent)
        if root is None:
            root = self._add_root(agent, self.home(agent))
            self.store.set_mount(agent, root.id)
            return root
        _make_mount_directory(Path(root.path))
        return root

    def home(self, agent: str) -> Path:
        """The agent's own directory, ``<storage_root>/<agent>``: its mount until it mounts another, and where a
        relative ``root_dir`` points."""
        return Path(os.path.realpath(default_mount(self.settings.storage_root, agent)))

    def _mount_path(self, agent: str, root_dir: str) -> Path:
        """Where ``root_dir`` points, if the agent may mount it. Every directory in the storage root is some
        agent's own (for a name that has not been used yet, too), so there an agent mounts only inside its own."""
        home, storage = self.home(agent), self.settings.storage_root
        wanted = Path(root_dir)
        path = Path(os.path.realpath(wanted if wanted.is_absolute() else home / wanted))
        if inside(path, home):
            return path
        said = f"root_dir {root_dir!r} ({path})"
        if not any(inside(path, allowed) for allowed in self.settings.mount_roots):
            allowed = ", ".join(str(p) for p in self.settings.mount_roots)
            raise Forbidden(f"{said} is outside the directories agents may mount (its own directory {home}, and "
                            f"{allowed}; see storage.mount_roots)")
        if inside(storage, path):
            raise Forbidden(f"{said} cannot be mounted: it holds the storage root {storage}, where every agent "
                            "has its own directory")
        if inside(path, storage):
            raise Forbidden(f"{said} cannot be mounted: in the storage root {storage} every directory is an agent's "
                            f"own, and an agent mounts only within its own ({home})")
        return path

    def _add_root(self, agent: str, path: Path) -> Root:
        """``path`` as a mount of ``agent``'s (recorded once), unless it overlaps another agent's."""
        self._refuse_kernel_data(path)
        _make_mount_directory(path)  # before anything is recorded: a mount that cannot work is never made
        # One kernel at a time checks and adds (kernels may share a PostgreSQL database): two agents mounting
        # overlapping folders at once would each find the other's mount not there yet.
        with self.store.mounts_lock(), self.store.transaction():
            for other in self.store.roots():
                # An agent's own mounts may nest (a folder of its own directory); each keeps its own history.
                if other.owner != agent and overlaps(Path(other.path), path):
                    raise Forbidden(f"{path} cannot be mounted: it overlaps the mount of another agent")
            root = self.store.add_root(str(path), agent)
        if root.owner != agent:  # a root the lock did not cover (a kernel of an older version added it)
            raise Forbidden(f"{path} cannot be mounted: it is the mount of another agent")
        return root

    def _refuse_kernel_data(self, path: Path) -> None:
        for kept in self.settings.protected:
            if overlaps(path, kept):
                raise Forbidden(f"{path} cannot be mounted: it overlaps the kernel's own data ({kept})")
        data_dir, storage = self.settings.data_dir, self.settings.storage_root
        if overlaps(path, data_dir) and not inside(path, storage):
            raise Forbidden(f"{path} cannot be mounted: it overlaps the kernel's data dir {data_dir}, of which only "
                            f"the storage root {storage} is for agents")

    def _scan(self, root: Root) -> tuple[list[FileRecord], list[dict[str, str]]]:
        """Touch every file on disk under ``root`` and every file the history knows there. One that cannot be
        read is skipped, with nothing recorded for it, and reported with why: it does not fail the others."""
        try:
            on_disk, unnamed = self._disk_files(Path(root.path), root)
        except RecursionError:  # Python walks a tree by recursion; the kernel makes none this deep
            raise Conflict(f"{root.path} cannot be mounted: its folders are nested too deep to walk") from None
        seen = {place.relative for place in on_disk}
        known = {record.path for record in self.store.files(root.id) if record.head}
        tracked, skipped = [], [{"file_path": name, "why": NOT_TEXT} for name in unnamed]
        for relative in sorted(seen | known):
            try:
                place = resolve(Path(root.path), relative)
            except Forbidden:  # a parent was replaced by a link that leads out: not this mount's file any more
                continue
            except KernelError as exc:  # a name made outside the kernel that it does not take (a line break)
                skipped.append({"file_path": relative, "why": str(exc)})
                continue
            try:
                tracked.append(self.touch(root, place))
            except KernelError as exc:
                skipped.append({"file_path": relative, "why": str(exc)})
            except OSError as exc:
                skipped.append({"file_path": relative, "why": str(refusal(exc) or exc)})
        return tracked, skipped

    def _disk_files(self, directory: Path, root: Root) -> tuple[list[Place], list[str]]:
        """The files under ``directory``, and those whose paths are not UTF-8 text (made outside the kernel, they
        can be neither recorded nor named in a reply: shown with \\x escapes)."""
        places, unnamed = [], []
        for folder, dirs, names in os.walk(directory):
            dirs[:] = [d for d in dirs if not os.path.islink(os.path.join(folder, d))]
            for name in names:
                full = Path(folder) / name
                if is_partial(name) or full.is_symlink() or not full.is_file():
                    continue
                relative = full.relative_to(root.path).as_posix()
                if is_text(relative):
                    places.append(Place(full, relative))
                else:
                    unnamed.append(escaped(relative))
        return places, unnamed

    # -- touching a file: settle a crash, record outside changes --------------------------------------------------
    def touch(self, root: Root, place: Place) -> FileRecord:
        with self.store.file_lock(root.id, place.relative):
            return self._reconcile(root, place)

    def _reconcile(self, root: Root, place: Place) -> FileRecord:
        known = self.store.file(root.id, place.relative)
        # The disk first: a file that cannot be read leaves no record behind.
        disk = self._disk_state(place, known.hash if known else None)
        record = known or self.store.add_file(root.id, place.relative)
        pending = self.store.pending(record.id)
        if pending is not None:
            keep = pending.hash == disk.hash  # the rename (or removal) happened before the crash
            with self.store.transaction():
                self.store.settle(record.id, pending.number, keep)
                if keep:
                    self.store.set_head(record.id, pending.number, pending.hash, pending.size)
            record = self.store.file_by_id(record.id)
        if disk.hash == record.hash or (disk.hash is None and record.head == 0):
            return record
        assert disk.hash is None or disk.data is not None, "a file is left unread only when it is what history says"
        digest = self.blobs.put(disk.data) if disk.data is not None else None
        version = Version(record.id, record.head + 1, self.clock(), len(disk.data or b""), digest, "", "external")
        with self.store.transaction():
            self.store.add_version(version)
            self.store.set_head(record.id, version.number, digest, version.size)
        return self.store.file_by_id(record.id)

    def _disk_state(self, place: Place, known_hash: str | None) -> DiskState:
        """What is on disk at ``place``. A file whose fingerprint says it is still the content ``known_hash``
        (what history says) is not read again: its ``data`` is None."""
        path, limit = place.absolute, self.settings.max_file_bytes
        facts = regular_file_facts(path, place.relative, limit)
        if facts is None:
            return DiskState(None, None)
        if known_hash is not None and self._disk_hashes.get(str(path), facts) == known_hash:
            return DiskState(known_hash, None)
        read = read_regular_file(path, place.relative, limit)
        if read is None:  # removed in the meantime
            return DiskState(None, None)
        data, facts = read
        digest = content_hash(data)
        self._disk_hashes.remember(str(path), facts, digest)
        return DiskState(digest, data)

    # -- changing a file: one new version ---------------------------------------------------------------------
    def _change(self, agent: str, root: Root, place: Place, kind: str, decide: Decide) -> Version:
        """One new version of ``place``, made by ``agent`` (the one acting: the owner, or an agent it granted write)."""
        with self.store.file_lock(root.id, place.relative):
            record = self._reconcile(root, place)
            data, restored_from = decide(record)
            digest = self.blobs.put(data) if data is not None else None
            version = Version(record.id, record.head + 1, self.clock(), len(data or b""), digest, agent, kind,
                              restored_from, pending=True)
            self.store.add_version(version)
            try:
                if data is None:
                    remove_file(place.absolute)
                else:
                    self._make_parents(place)
                    replace_file(place.absolute, data)
            except BaseException:  # refused (permissions, a full disk): the refused operation makes no version
                with contextlib.suppress(Exception):  # else the next touch settles it: the refusal is the news
                    self.store.settle(record.id, version.number, keep=False)
                raise
            with self.store.transaction():
                self.store.settle(record.id, version.number, keep=True)
                self.store.set_head(record.id, version.number, digest, version.size)
        return replace(version, pending=False)

    def _make_parents(self, place: Place) -> None:
        try:
            place.absolute.parent.mkdir(parents=True, exist_ok=True)
        except (FileExistsError, NotADirectoryError):
            raise Conflict(f"{place.relative}: a parent of this path is a file, not a directory") from None

    # -- the operations -----------------------------------------------------------------------------------------
    def create_file(self, agent: str, file_path: str, by: str | None = None) -> Result:
        """``by``: the agent acting on ``agent``'s files, when it is another one (its history says who did it)."""
        root, place = self.file_place(agent, file_path)

        def new_only(record: FileRecord) -> tuple[bytes | None, int | None]:
            if record.hash is not None:
                raise Conflict(f"{place.relative} already exists (version {record.head}); use write to change it")
            return b"", None

        version = self._change(by or agent, root, place, "create", new_only)
        return _file_result("create_file", place, version, f"created empty file {place.relative} "
                            f"(version {version.number}) at {place.absolute}")

    def create_dir(self, agent: str, dir_path: str) -> Result:
        root = self.root_of(agent)
        place = resolve(Path(root.path), dir_path)
        existed = place.absolute.is_dir()
        if not existed:
            try:
                place.absolute.mkdir(parents=True, exist_ok=True)
            except (FileExistsError, NotADirectoryError):
                raise Conflict(f"{place.relative}, or a parent of it, exists and is a file, not a directory") from None
        said = "already existed" if existed else "created"
        return {"operation": "create_dir", "path": str(place.absolute), "dir_path": place.relative,
                "created": not existed, "message": f"directory {place.relative or '.'} {said} at {place.absolute}"}

    def write(self, agent: str, file_path: str, content: str, by: str | None = None) -> Result:
        data = content.encode("utf-8")
        if len(data) > self.settings.max_file_bytes:
            raise TooLarge(f"content for {file_path!r} is {len(data)} bytes; the limit is "
                           f"{self.settings.max_file_bytes} (storage.max_file_mb)")
        root, place = self.file_place(agent, file_path)
        version = self._change(by or agent, root, place, "write", lambda record: (data, None))
        return _file_result("write", place, version, f"wrote {len(data)} bytes to {place.relative} "
                            f"(version {version.number}) at {place.absolute}")

    def read(self, agent: str, file_path: str, number: int | None = None) -> Result:
        root, place = self.file_place(agent, file_path)
        record = self.touch(root, place)
        if number is None and record.hash is None:
            raise NotFound(f"no file {place.relative} in the mount {root.path}")
        version = self._version(record, place, number if number is not None else record.head)
        if version.hash is None:
            raise NotFound(f"{place.relative} did not exist in version {version.number} (it was deleted)")
        data = self.content(place.relative, version)
        try:
            content = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise NotText(f"{place.relative} (version {version.number}, {len(data)} bytes) is not UTF-8 text "
                          f"(bad byte at offset {exc.start})") from None
        result = _file_result("read", place, version, f"read {len(data)} bytes of {place.relative} "
                              f"(version {version.number})")
        return {**result, "content": content}

    def history(self, agent: str, file_path: str, limit: int | None = None) -> Result:
        root, place = self.file_place(agent, file_path)
        record = self.touch(root, place)
        if record.head == 0:
            raise NotFound(f"no file {place.relative} in the mount {root.path}, and no history of one")
        versions = self.store.versions(record.id, limit)
        return {"operation": "history", "path": str(place.absolute), "file_path": place.relative,
                "versions": [_version_facts(v) for v in versions],
                "message": f"{place.relative} has {record.head} versions; the current one is {record.head}"}

    def rollback(self, agent: str, file_path: str, n: int | None = None, at: float | None = None,
                 by: str | None = None) -> Result:
        """Bring back the content of ``n`` versions ago, or as it was at time ``at``, as one new version (so a
        rollback is itself undone by the next ``rollback`` of 1)."""
        root, place = self.file_place(agent, file_path)

        def target_of(record: FileRecord) -> tuple[bytes | None, int | None]:
            target = self._rollback_target(record, place, n, at)
            return (self.content(place.relative, target) if target.hash else None), target.number

        version = self._change(by or agent, root, place, "rollback", target_of)
        state = "removed (that version was a deletion)" if version.hash is None else f"{version.size} bytes"
        result = _file_result("rollback", place, version, f"rolled {place.relative} back to the content of version "
                              f"{version.restored_from} as version {version.number}: {state}")
        return {**result, "restored": version.restored_from}

    def _rollback_target(self, record: FileRecord, place: Place, n: int | None, at: float | None) -> Version:
        if record.head == 0:
            raise NotFound(f"no file {place.relative} and no history of one: nothing to roll back")
        if at is not None:
            target = self.store.version_at(record.id, at)
            if target is None:
                first = self.store.version(record.id, 1)
                raise NotFound(f"{place.relative} has no version at or before {iso_time(at)}; its first is from "
                               f"{iso_time(first.time) if first else 'never'}")
            return target
        steps = 1 if n is None else n
        if steps >= record.head:
            raise NotFound(f"cannot roll {place.relative} back {steps} version(s): it has {record.head}, so it can "
                           f"go back at most {record.head - 1}")
        return self._version(record, place, record.head - steps)

    def delete(self, agent: str, file_path: str, recursive: bool = False, by: str | None = None,
               kind: str | None = None) -> Result:
        """``kind``: "file" or "dir" when the caller said which it deletes (``file_path``, ``dir_path``): the other
        is refused. None: whichever is there."""
        root = self.root_of(agent)
        place = resolve(Path(root.path), file_path)
        if place.relative == "":
            raise Forbidden("the mount root itself cannot be deleted")
        is_dir = place.absolute.is_dir()
        if kind == "file" and is_dir:
            raise Conflict(f"{place.relative} is a directory, not a file: delete it with dir_path")
        if kind == "dir" and not is_dir and place.absolute.exists():
            raise Conflict(f"{place.relative} is a file, not a directory: delete it with file_path")
        if is_dir:
            return self._delete_dir(by or agent, root, place, recursive)
        version = self._change(by or agent, root, place, "delete", self._must_exist(place))
        result = _file_result("delete", place, version, f"deleted {place.relative} (version {version.number} "
                              "records the deletion; rollback brings it back)")
        return {**result, "deleted": [place.relative]}

    def _must_exist(self, place: Place) -> Decide:
        def check(record: FileRecord) -> tuple[bytes | None, int | None]:
            if record.hash is None:
                raise NotFound(f"no file {place.relative} in the mount")
            return None, None

        return check

    def _delete_dir(self, agent: str, root: Root, place: Place, recursive: bool) -> Result:
        inside, unnamed = self._disk_files(place.absolute, root)
        if not recursive and any(place.absolute.iterdir()):
            raise Conflict(f"directory {place.relative} is not empty; pass recursive: true to delete it and "
                           f"its {len(inside) + len(unnamed)} files")
        if unnamed:  # their deletion could not be recorded, nor undone: nothing is deleted
            raise Conflict(f"directory {place.relative} holds files whose names are not UTF-8 text, which the "
                           f"kernel cannot keep versions of ({', '.join(unnamed[:3])}): rename them first")
        for file in inside:
            self._change(agent, root, file, "delete", self._must_exist(file))
        _remove_tree(place.absolute)
        return {"operation": "delete", "path": str(place.absolute), "file_path": place.relative,
                "deleted": [file.relative for file in inside],
                "message": f"deleted directory {place.relative} and its {len(inside)} files (each one's "
                           "deletion is a version; rollback brings a file back)"}

    def listing(self, agent: str, dir_path: str = "", recursive: bool = False) -> Result:
        root = self.root_of(agent)
        place = resolve(Path(root.path), dir_path)
        if place.absolute.is_file():
            raise Conflict(f"{place.relative} is a file, not a directory")
        if not place.absolute.is_dir():
            raise NotFound(f"no directory {place.relative} in the mount {root.path}")
        heads = {r.path: r.head for r in self.store.files(root.id) if r.hash is not None}
        paths = _walk(place.absolute, recursive)
        entries = [_entry(Path(root.path), path, heads) for path in paths if is_text(str(path))]
        unnamed = len(paths) - len(entries)
        left_out = f"; {unnamed} whose names are not UTF-8 text left out" if unnamed else ""
        return {"operation": "list", "path": str(place.absolute), "dir_path": place.relative, "entries": entries,
                "message": f"{len(entries)} {'entry' if len(entries) == 1 else 'entries'} in {place.relative or '.'} "
                           f"({place.absolute}){left_out}"}

    # -- helpers ------------------------------------------------------------------------------------------------
    def file_place(self, agent: str, file_path: str) -> tuple[Root, Place]:
        root = self.root_of(agent)
        place = resolve(Path(root.path), file_path)
        if place.relative == "":
            raise BadRequest(f"path {file_path!r} names the mount root, not a file")
        return root, place

    def content(self, file_path: str, version: Version) -> bytes:
        """A version's bytes, from the blob store; Gone when they are missing or damaged there."""
        assert version.hash is not None, "a deletion has no content"
        try:
            return self.blobs.get(version.hash)
        except FileNotFoundError:
            raise Gone(f"{file_path} version {version.number} is no longer available: its stored content "
                       f"({self.blobs.path(version.hash)}) is missing") from None
        except DamagedBlob as exc:
            raise Gone(f"{file_path} version {version.number} is no longer available: {exc}") from None

    def _version(self, record: FileRecord, place: Place, number: int) -> Version:
        version = self.store.version(record.id, number) if number >= 1 else None
        if version is None:
            known = f"its versions are 1 to {record.head}" if record.head else "it has no versions"
            raise NotFound(f"{place.relative} has no version {number}: {known}")
        return version


def _make_mount_directory(path: Path) -> None:
    """Make sure ``path`` is a directory the kernel can keep files in (creating it and its parents), or refuse
    naming it."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise Conflict(f"{path} cannot be mounted: it is a file, not a directory") from None
    except NotADirectoryError:
        raise Conflict(f"{path} cannot be mounted: a parent of it is a file, not a directory") from None
    except PermissionError as exc:
        raise Forbidden(f"{path} cannot be mounted: the kernel may not create {exc.filename} ({exc.strerror})") from None
    if not os.access(path, os.W_OK | os.X_OK, effective_ids=True):
        raise Forbidden(f"{path} cannot be mounted: the kernel may not write in it (its permissions)")


def _file_result(operation: str, place: Place, version: Version, message: str) -> Result:
    return {"operation": operation, "path": str(place.absolute), "file_path": place.relative,
            "version": version.number, "size": version.size, "hash": version.hash, "message": message}


def _version_facts(version: Version) -> dict[str, Any]:
    return {"version": version.number, "time": version.time, "iso_time": iso_time(version.time), "size": version.size,
            "hash": version.hash, "agent": version.agent or None, "kind": version.kind,
            "restored_from": version.restored_from}


def iso_time(when: float) -> str:
    return datetime.fromtimestamp(when, timezone.utc).isoformat()


def _walk(directory: Path, recursive: bool) -> list[Path]:
    found = []
    for entry in sorted(os.scandir(directory), key=lambda e: e.name):
        if is_partial(entry.name):
            continue
        found.append(Path(entry.path))
        if recursive and entry.is_dir(follow_symlinks=False):
            found.extend(_walk(Path(entry.path), recursive))
    return found


def _entry(root: Path, path: Path, heads: dict[str, int]) -> dict[str, Any]:
    relative = path.relative_to(root).as_posix()
    if path.is_symlink():
        return {"name": path.name, "file_path": relative, "type": "link", "size": None, "version": None}
    if path.is_dir():
        return {"name": path.name, "file_path": relative, "type": "dir", "size": None, "version": None}
    return {"name": path.name, "file_path": relative, "type": "file", "size": path.stat().st_size,
            "version": heads.get(relative)}


def _remove_tree(directory: Path) -> None:
    """Remove what is left once every file's deletion is recorded: empty directories, links, partial files."""
    for folder, dirs, names in os.walk(directory, topdown=False):
        for name in names:
            os.unlink(os.path.join(folder, name))
        for name in dirs:
            path = os.path.join(folder, name)
            os.unlink(path) if os.path.islink(path) else os.rmdir(path)
    os.rmdir(directory)
