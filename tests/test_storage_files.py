"""The versioned file system on both stores (SQLite and a real PostgreSQL): versions, rollback by count and by
time, history, changes made outside the kernel, deletion, confinement, mounts, share links, and retrieval."""

from __future__ import annotations

import asyncio
import errno
import hashlib
import inspect
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import pytest

from aios.embeddings import Embedder
from aios.errors import BadRequest, Conflict, Forbidden, Gone, NotFound, NotText, TooLarge
from aios.storage.files import FileSystem
from aios.storage.index import Indexer, chunk_text
from aios.storage.os_errors import refusal
from aios.storage.shares import ShareLinks
from aios.storage.store import Version
from storage_support import FakeClock, file_permissions_bind, make_fs, open_store, run, run_here

AGENT = "team/writer"


@pytest.fixture(params=["sqlite", "postgres"])
def kind(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def storage_handler() -> Iterator[Callable[[Any], Any]]:
    """Builds the kernel's storage handler from a config, with the access manager it needs (closed afterwards)."""
    from aios.access.manager import AccessManager
    from aios.storage.handler import StorageHandler

    managers: list[AccessManager] = []

    def build(config: Any) -> StorageHandler:
        managers.append(AccessManager(config.access, config.data_dir))
        return StorageHandler.from_config(config, None, managers[-1])

    yield build
    for manager in managers:
        asyncio.run(manager.close())


@pytest.fixture
def fs(kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> FileSystem:
    postgres = request.getfixturevalue("postgres") if kind == "postgres" else None
    store = open_store(kind, tmp_path, postgres)
    yield make_fs(store, tmp_path)
    store.close()


def contents(fs: FileSystem, path: str) -> list[str]:
    """Every version's text, oldest first (a deletion is None)."""
    versions = fs.history(AGENT, path)["versions"]
    return [fs.read(AGENT, path, v["version"])["content"] if v["hash"] else None for v in reversed(versions)]


def test_each_write_and_rollback_is_exactly_one_version_and_a_rollback_is_undoable(fs: FileSystem) -> None:
    assert fs.create_file(AGENT, "notes/todo.txt")["version"] == 1
    assert fs.write(AGENT, "notes/todo.txt", "milk")["version"] == 2
    assert fs.write(AGENT, "notes/todo.txt", "milk, eggs")["version"] == 3
    back = fs.rollback(AGENT, "notes/todo.txt", 1)
    assert (back["version"], back["restored"]) == (4, 2)
    assert fs.read(AGENT, "notes/todo.txt")["content"] == "milk"
    undo = fs.rollback(AGENT, "notes/todo.txt", 1)  # the rollback itself is one version back
    assert (undo["version"], undo["restored"]) == (5, 3)
    assert fs.read(AGENT, "notes/todo.txt")["content"] == "milk, eggs"
    assert contents(fs, "notes/todo.txt") == ["", "milk", "milk, eggs", "milk", "milk, eggs"]
    on_disk = Path(fs.history(AGENT, "notes/todo.txt")["path"]).read_text()
    assert on_disk == "milk, eggs"


def test_history_says_version_time_size_hash_agent_and_kind(fs: FileSystem) -> None:
    clock: FakeClock = fs.clock  # type: ignore[assignment]
    fs.write(AGENT, "a.txt", "one")
    clock.advance(10)
    fs.write(AGENT, "a.txt", "three")
    fs.rollback(AGENT, "a.txt")
    history = fs.history(AGENT, "a.txt")["versions"]
    assert [(v["version"], v["size"], v["kind"], v["agent"], v["restored_from"]) for v in history] == [
        (3, 3, "rollback", AGENT, 1), (2, 5, "write", AGENT, None), (1, 3, "write", AGENT, None)]
    assert history[1]["time"] == clock.now and history[2]["time"] == clock.now - 10
    assert history[0]["hash"] == history[2]["hash"] and history[0]["hash"] != history[1]["hash"]
    assert history[1]["iso_time"].startswith("2027-01-15T")
    assert [v["version"] for v in fs.history(AGENT, "a.txt", limit=2)["versions"]] == [3, 2]


def test_a_hundred_writes_then_rollbacks_by_count_and_by_time(fs: FileSystem) -> None:
    clock: FakeClock = fs.clock  # type: ignore[assignment]
    start = clock.now
    for i in range(1, 101):
        fs.write(AGENT, "log.txt", f"entry {i}")
        clock.advance(60)
    assert fs.history(AGENT, "log.txt", limit=1)["versions"][0]["version"] == 100
    assert fs.rollback(AGENT, "log.txt", 10)["restored"] == 90
    assert fs.read(AGENT, "log.txt")["content"] == "entry 90"
    assert fs.rollback(AGENT, "log.txt", 100)["restored"] == 1  # 101 versions now: 100 back is the first
    assert fs.read(AGENT, "log.txt")["content"] == "entry 1"
    # By time: version i was written at start + 60 (i - 1); half a minute later it was still the content.
    at = fs.rollback(AGENT, "log.txt", at=start + 60 * 41 + 30)
    assert at["restored"] == 42 and fs.read(AGENT, "log.txt")["content"] == "entry 42"
    assert fs.rollback(AGENT, "log.txt", at=start)["restored"] == 1  # exactly at a version's time: that one
    with pytest.raises(NotFound, match="no version at or before"):
        fs.rollback(AGENT, "log.txt", at=start - 1)
    with pytest.raises(NotFound, match="it has 104, so it can go back at most 103"):
        fs.rollback(AGENT, "log.txt", 104)
    assert fs.history(AGENT, "log.txt", limit=1)["versions"][0]["version"] == 104  # refusals made no version


def test_a_change_made_outside_the_kernel_is_recorded_when_the_file_is_next_touched(fs: FileSystem) -> None:
    path = Path(fs.write(AGENT, "shared.txt", "from the agent")["path"])
    path.write_text("edited by hand")
    assert fs.read(AGENT, "shared.txt")["content"] == "edited by hand"
    history = fs.history(AGENT, "shared.txt")["versions"]
    assert [(v["version"], v["kind"], v["agent"]) for v in history] == [(2, "external", None), (1, "write", AGENT)]
    path.unlink()
    assert fs.history(AGENT, "shared.txt")["versions"][0]["kind"] == "external"
    with pytest.raises(NotFound, match="no file shared.txt"):
        fs.read(AGENT, "shared.txt")
    assert fs.rollback(AGENT, "shared.txt")["restored"] == 2  # brings the hand edit back
    assert path.read_text() == "edited by hand"


def test_delete_is_a_version_and_rollback_restores_the_file(fs: FileSystem) -> None:
    path = Path(fs.write(AGENT, "docs/plan.md", "# Plan")["path"])
    deleted = fs.delete(AGENT, "docs/plan.md")
    assert deleted["version"] == 2 and deleted["hash"] is None and not path.exists()
    with pytest.raises(NotFound):
        fs.delete(AGENT, "docs/plan.md")
    fs.rollback(AGENT, "docs/plan.md")
    assert path.read_text() == "# Plan"
    fs.write(AGENT, "docs/sub/x.txt", "x")
    with pytest.raises(Conflict, match="not empty"):
        fs.delete(AGENT, "docs")
    gone = fs.delete(AGENT, "docs", recursive=True)
    assert sorted(gone["deleted"]) == ["docs/plan.md", "docs/sub/x.txt"] and not path.parent.exists()
    assert fs.read(AGENT, "docs/sub/x.txt", 1)["content"] == "x"  # history keeps every version


def test_create_file_refuses_an_existing_file_and_create_dir_makes_parents(fs: FileSystem) -> None:
    fs.write(AGENT, "a.txt", "keep me")
    with pytest.raises(Conflict, match="already exists"):
        fs.create_file(AGENT, "a.txt")
    assert fs.read(AGENT, "a.txt")["content"] == "keep me"
    made = fs.create_dir(AGENT, "x/y/z")
    assert made["created"] and Path(made["path"]).is_dir()
    assert not fs.create_dir(AGENT, "x/y/z")["created"]
    with pytest.raises(Conflict):
        fs.create_dir(AGENT, "a.txt/sub")
    with pytest.raises(Conflict, match="is a directory"):
        fs.write(AGENT, "x", "text")
    entries = fs.listing(AGENT, "", recursive=True)["entries"]
    assert [(e["file_path"], e["type"], e["version"]) for e in entries] == [
        ("a.txt", "file", 1), ("x", "dir", None), ("x/y", "dir", None), ("x/y/z", "dir", None)]
    assert fs.listing(AGENT, "")["message"].startswith("2 entries in . (")
    assert fs.listing(AGENT, "x")["message"].startswith("1 entry in x (")


def test_limits_and_non_text(fs: FileSystem) -> None:
    with pytest.raises(TooLarge, match="limit is 1048576"):
        fs.write(AGENT, "big.txt", "x" * ((1 << 20) + 1))
    path = Path(fs.write(AGENT, "blob.bin", "")["path"])
    path.write_bytes(b"\xff\xfe\x00binary")
    with pytest.raises(NotText, match="not UTF-8"):
        fs.read(AGENT, "blob.bin")
    assert fs.history(AGENT, "blob.bin")["versions"][0]["size"] == 9  # still versioned
    with pytest.raises(BadRequest, match="names the mount root"):
        fs.write(AGENT, ".", "x")


ESCAPES = [
    # (id, path, why it must be refused)
    ("parent", "../other/secret.txt", "outside the mount"),
    ("deep-parent", "a/b/../../../x.txt", "outside the mount"),
    ("absolute-elsewhere", "/etc/passwd", "outside the mount"),
    ("absolute-sibling", "{root}/../other-agent/x.txt", "outside the mount"),
    ("symlink-out", "escape/passwd", "a symbolic link on the way leads out"),
    ("symlink-file-out", "secret-link", "a symbolic link on the way leads out"),
]


@pytest.mark.parametrize(("path", "why"), [(p, w) for _, p, w in ESCAPES], ids=[i for i, _, _ in ESCAPES])
def test_paths_that_leave_the_mount_are_refused_naming_the_path_and_not_where_it_leads(fs: FileSystem, path: str,
                                                                                         why: str) -> None:
    root = Path(fs.root_of(AGENT).path)
    (root / "escape").symlink_to("/etc") if not (root / "escape").exists() else None
    (root / "secret-link").symlink_to("/etc/hostname") if not (root / "secret-link").exists() else None
    path = path.format(root=root)
    for operation in (lambda: fs.write(AGENT, path, "x"), lambda: fs.read(AGENT, path),
                      lambda: fs.delete(AGENT, path), lambda: fs.create_dir(AGENT, path)):
        with pytest.raises(Forbidden) as refused:
            operation()
        assert path in str(refused.value) and why in str(refused.value)
        assert "/etc" not in str(refused.value).replace(repr(path), "")  # a link's target is not told
    assert not (root.parent / "other").exists() and not (root.parent.parent / "x.txt").exists()


def test_an_absolute_path_inside_the_mount_and_a_symlink_inside_it_are_fine(fs: FileSystem) -> None:
    root = Path(fs.root_of(AGENT).path)
    assert fs.write(AGENT, str(root / "abs.txt"), "ok")["file_path"] == "abs.txt"
    (root / "alias.txt").symlink_to(root / "abs.txt")
    assert fs.read(AGENT, "alias.txt")["file_path"] == "abs.txt"


def test_mounts_are_honoured_owned_and_never_overlap(kind: str, tmp_path: Path, request: pytest.FixtureRequest,
                                                     tmp_path_factory: pytest.TempPathFactory) -> None:
    postgres = request.getfixturevalue("postgres") if kind == "postgres" else None
    store = open_store(kind, tmp_path, postgres)
    projects = tmp_path_factory.mktemp("projects")  # a mount root outside the data dir, shared by every agent
    fs = make_fs(store, tmp_path, more_mount_roots=(projects,))
    (projects / "alpha").mkdir()
    (projects / "alpha" / "readme.md").write_text("already here")
    mounted = fs.mount(AGENT, str(projects / "alpha"))
    assert mounted["root"] == str(projects / "alpha") and mounted["files"] == 1 and mounted["recorded_versions"] == 1
    assert fs.read(AGENT, "readme.md")["content"] == "already here"  # the requested directory, not a default
    assert Path(fs.write(AGENT, "new.txt", "n")["path"]).parent == projects / "alpha"
    for other_root in ("alpha", "alpha/sub", "."):
        with pytest.raises(Forbidden, match="overlaps the mount of another agent"):
            fs.mount("someone/else", str(projects / other_root))
    with pytest.raises(Forbidden, match="outside the directories agents may mount"):
        fs.mount("someone/else", "/tmp")
    fs.mount("someone/else", str(projects / "beta"))
    with pytest.raises(Forbidden, match="outside the mount"):
        fs.read("someone/else", str(projects / "alpha" / "readme.md"))
    assert fs.mount(AGENT, str(projects / "alpha"))["recorded_versions"] == 0  # mounting again finds nothing new
    store.close()


def test_a_relative_mount_is_inside_the_agents_own_directory_and_nobody_squats_another(fs: FileSystem) -> None:
    storage = fs.settings.storage_root
    mine, theirs = fs.home(AGENT), fs.home("someone/else")
    assert (mine, theirs) == (storage / "team%2Fwriter", storage / "someone%2Felse")
    assert fs.mount(AGENT, "workspace")["root"] == str(mine / "workspace")
    assert fs.mount("someone/else", "workspace")["root"] == str(theirs / "workspace")  # no collision
    fs.write(AGENT, "notes.txt", "mine")
    fs.write("someone/else", "notes.txt", "theirs")
    assert (mine / "workspace" / "notes.txt").read_text() == "mine"
    assert fs.mount(AGENT, ".")["root"] == str(mine)  # its own directory: mounts inside it may nest
    # The storage root, what holds it, and any other directory in it (an agent that has not come yet owns it all the
    # same) are refused, relative or absolute.
    refused = {"..": "holds the storage root", str(storage): "holds the storage root",
               str(storage.parent): "outside the directories agents may mount",
               "../someone%2Felse": "mounts only within its own",
               str(theirs / "workspace"): "mounts only within its own",
               str(storage / "late%2Fcomer"): "mounts only within its own"}
    for root_dir, why in refused.items():
        with pytest.raises(Forbidden, match=why) as refusal:
            fs.mount(AGENT, root_dir)
        assert repr(root_dir) in str(refusal.value)
    assert fs.write("late/comer", "mine.txt", "arrived")["path"] == str(storage / "late%2Fcomer" / "mine.txt")
    assert fs.read("someone/else", "notes.txt")["content"] == "theirs"


def test_a_mount_that_cannot_be_a_directory_is_refused_and_leaves_the_agent_working(fs: FileSystem) -> None:
    home = fs.home(AGENT)
    home.mkdir()
    (home / "a-file").write_text("not a directory")
    locked = home / "locked"
    locked.mkdir(mode=0o555)
    refusals = [(home / "a-file", Conflict, "it is a file, not a directory"),
                (home / "a-file" / "below", Conflict, "a parent of it is a file"),
                (locked, Forbidden, "may not write in it"),
                (locked / "below", Forbidden, "may not create")]
    with file_permissions_bind():
        for root_dir, error, why in refusals:
            with pytest.raises(error) as refused:
                fs.mount(AGENT, str(root_dir.relative_to(home)))
            assert str(root_dir) in str(refused.value) and why in str(refused.value)
    assert fs.store.mount_of(AGENT) is None  # nothing was recorded
    assert fs.write(AGENT, "still.txt", "works")["version"] == 1
    assert fs.mount(AGENT, str(home / "fine"))["files"] == 0


def test_a_folder_another_agent_mounted_meanwhile_is_refused_not_shared(kind: str, tmp_path: Path,
                                                                       request: pytest.FixtureRequest,
                                                                       tmp_path_factory: pytest.TempPathFactory) -> None:
    """Kernels sharing a PostgreSQL database check each other's mounts. A check that missed a mount being made
    at that moment (a kernel of an older version takes no lock) used to hand the folder over: the second agent
    read the first one's files. Here the check sees no mounts at all."""
    postgres = request.getfixturevalue("postgres") if kind == "postgres" else None
    store = open_store(kind, tmp_path, postgres)
    projects = tmp_path_factory.mktemp("projects")
    fs = make_fs(store, tmp_path, more_mount_roots=(projects,))
    fs.mount("alice", str(projects / "plans"))
    fs.write("alice", "diary.txt", "alice's own")
    store.roots = lambda: []  # the check's view: nobody has mounted anything yet
    with pytest.raises(Forbidden, match="it is the mount of another agent"):
        fs.mount("bob", str(projects / "plans"))
    assert store.mount_of("bob") is None
    with pytest.raises(NotFound):
        fs.read("bob", "diary.txt")  # his own directory, still
    store.close()


def test_names_made_outside_the_kernel_that_it_cannot_keep_are_skipped_and_never_deleted_unrecorded(
        fs: FileSystem) -> None:
    """A file named with a tab, or with bytes that are not UTF-8, made outside the kernel: a mount skips it
    saying why (it refused the whole mount, after switching to it), a listing leaves it out (it was a 500), and
    deleting its folder refuses before anything is deleted (it recorded some deletions, then failed)."""
    home = fs.home(AGENT)
    (home / "ws" / "d").mkdir(parents=True)
    (home / "ws" / "d" / "fine.txt").write_text("fine")
    (home / "ws" / "tab\tname.txt").write_text("tab")
    os.close(os.open(os.fsencode(home / "ws" / "d") + b"/caf\xe9.txt", os.O_CREAT | os.O_WRONLY, 0o644))
    mounted = fs.mount(AGENT, "ws")
    assert mounted["files"] == 1
    assert sorted(skip["file_path"] for skip in mounted["skipped"]) == ["d/caf\\xe9.txt", "tab\tname.txt"]
    assert "not UTF-8 text" in json.dumps(mounted["skipped"]) and "control character" in json.dumps(mounted["skipped"])
    listed = fs.listing(AGENT, "d")
    assert [entry["name"] for entry in listed["entries"]] == ["fine.txt"]
    assert "1 whose names are not UTF-8 text left out" in listed["message"]
    with pytest.raises(Conflict, match=r"names are not UTF-8 text.*\(d/caf\\xe9\.txt\)"):
        fs.delete(AGENT, "d", recursive=True)
    assert fs.read(AGENT, "d/fine.txt")["content"] == "fine"
    assert [v["kind"] for v in fs.history(AGENT, "d/fine.txt")["versions"]] == ["external"]  # no deletion recorded
    json.dumps(fs.listing(AGENT, "", recursive=True))  # every reply can be sent


def test_a_mount_that_fails_while_scanning_leaves_the_agents_mount_as_it_was(fs: FileSystem) -> None:
    """A tree too deep for Python to walk (it walks by recursion; made outside the kernel, which takes paths of
    at most 256 components) fails the mount, saying so; the agent's files stay where they were (it used to
    switch first, then fail). The recursion limit is lowered so that a tree of 300 folders is too deep: one deep
    enough for the usual limit would be too deep for pytest to remove too."""
    fs.mount(AGENT, "first")
    fs.write(AGENT, "here.txt", "in first")
    (fs.home(AGENT) / "deep").joinpath(*["a"] * 300).mkdir(parents=True)
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(len(inspect.stack(0)) + 100)
    try:
        with pytest.raises(Conflict, match="nested too deep to walk"):
            fs.mount(AGENT, "deep")
    finally:
        sys.setrecursionlimit(limit)
    assert fs.read(AGENT, "here.txt")["content"] == "in first"


def test_a_refused_write_of_the_same_content_makes_no_version(fs: FileSystem) -> None:
    """The version was recorded before the file was replaced; refused, it stayed, and since the disk held that
    content anyway, the history showed a write that had been refused."""
    fs.write(AGENT, "frozen/a.txt", "same")
    folder = fs.home(AGENT) / "frozen"
    folder.chmod(0o555)
    try:
        with file_permissions_bind():
            with pytest.raises(PermissionError):  # the storage handler answers it as a 403
                fs.write(AGENT, "frozen/a.txt", "same")
    finally:
        folder.chmod(0o755)
    assert [v["version"] for v in fs.history(AGENT, "frozen/a.txt")["versions"]] == [1]


def test_the_kernels_data_cannot_be_mounted_also_through_a_symlinked_data_dir(
        tmp_path: Path, storage_handler: Callable[[Any], Any]) -> None:
    """The data dir as the config names it is a link; mount paths are resolved: the kernel's data is protected in
    both spellings. Here agents may mount anywhere in the data dir (mount_roots: ["."]), except the kernel's own."""
    from aios.config import load_config

    real, link = tmp_path / "data", tmp_path / "data-link"
    real.mkdir()
    link.symlink_to(real)
    (real / "config.yaml").write_text("storage: {mount_roots: ['.']}\n")
    handler = storage_handler(load_config(real / "config.yaml", env={"AIOS_DATA_DIR": str(link)}))
    try:
        for data_dir in (link, real):
            for kernels in ("lsfs", "lsfs/blobs", "models", "snapshots"):
                with pytest.raises(Forbidden, match="cannot be mounted: it overlaps the kernel's (own data|data dir)"):
                    handler.fs.mount(AGENT, str(data_dir / kernels))
        assert not (real / "models").exists()  # nothing was made for a refused mount
        assert handler.fs.mount(AGENT, "work")["root"] == str(real / "storage" / "team%2Fwriter" / "work")
    finally:
        asyncio.run(handler.close())


def test_the_default_mount_is_per_agent_and_names_never_collide(fs: FileSystem) -> None:
    a = Path(fs.write("a", "x.txt", "a")["path"]).parent
    ab = Path(fs.write("a/b", "x.txt", "a/b")["path"]).parent
    dots = Path(fs.write("..", "x.txt", "dots")["path"]).parent
    assert a.parent == ab.parent == dots.parent == fs.settings.storage_root
    assert len({a, ab, dots}) == 3
    assert fs.read("a", "x.txt")["content"] == "a" and fs.read("a/b", "x.txt")["content"] == "a/b"


def test_a_name_shaped_like_a_long_names_directory_cannot_take_it(fs: FileSystem) -> None:
    """A name that escapes to over 200 characters gets a directory cut to 150 and a hash of the whole. A plain
    name of that very form would be that directory: it is refused, and the long-named agent keeps its files."""
    long = "q" * 220
    assert fs.write(long, "mine.txt", "the long name's")["version"] == 1
    squatter = "q" * 150 + "-" + hashlib.sha256(long.encode()).hexdigest()[:16]
    with pytest.raises(Forbidden, match="has the form of a long name's cut directory"):
        fs.read(squatter, "mine.txt")
    with pytest.raises(Forbidden, match="has the form of a long name's cut directory"):
        fs.write(squatter, "squat.txt", "x")
    assert fs.read(long, "mine.txt")["content"] == "the long name's"


def test_share_links_pin_a_version_expire_and_are_revocable(fs: FileSystem) -> None:
    clock: FakeClock = fs.clock  # type: ignore[assignment]
    links = ShareLinks(fs, default_expiry_s=7 * 86400, max_expiry_s=30 * 86400, public_url=None)
    fs.write(AGENT, "report.txt", "v1")
    shared = links.share(AGENT, "report.txt", base_url="http://kernel:8000")
    assert shared["url"].startswith("http://kernel:8000/share/") and shared["version"] == 1
    fs.write(AGENT, "report.txt", "v2")
    assert links.open(shared["token"]).data == b"v1"  # the version that was shared
    clock.advance(7 * 86400 - 1)
    assert links.open(shared["token"]).name == "report.txt"
    clock.advance(1)
    with pytest.raises(Gone, match="expired"):
        links.open(shared["token"])
    short = links.share(AGENT, "report.txt", expires_in=60)
    with pytest.raises(NotFound):
        links.unshare("someone/else", short["url"])  # only its owner may revoke it
    assert links.unshare(AGENT, short["url"])["revoked"] == 1
    with pytest.raises(Gone, match="revoked"):
        links.open(short["token"])
    with pytest.raises(NotFound):
        links.open("x" * 43)
    with pytest.raises(BadRequest, match="longer than the limit"):
        links.share(AGENT, "report.txt", expires_in=31 * 86400)
    assert links.unshare(AGENT, file_path="report.txt")["revoked"] == 0  # nothing live left


def test_a_share_link_is_gone_once_its_file_is_deleted_or_its_version_lost(fs: FileSystem) -> None:
    clock: FakeClock = fs.clock  # type: ignore[assignment]
    links = ShareLinks(fs, default_expiry_s=7 * 86400, max_expiry_s=30 * 86400, public_url=None)
    fs.write(AGENT, "plan.txt", "the plan")
    shared = links.share(AGENT, "plan.txt")
    fs.write(AGENT, "plan.txt", "a later plan")
    assert links.open(shared["token"]).data == b"the plan"  # a later version leaves the link alone
    clock.advance(60)
    fs.delete(AGENT, "plan.txt")
    with pytest.raises(Gone, match="the shared file was deleted at 2027-"):
        links.open(shared["token"])
    fs.rollback(AGENT, "plan.txt")  # the file is back; the link that its deletion ended stays ended
    with pytest.raises(Gone, match="deleted"):
        links.open(shared["token"])
    again = links.share(AGENT, "plan.txt")
    assert links.open(again["token"]).data == b"a later plan"
    blob = fs.blobs.path(fs.history(AGENT, "plan.txt")["versions"][0]["hash"])
    with file_permissions_bind():
        blob.chmod(0)  # its stored content cannot be read, then is lost
        for lose in (lambda: None, blob.unlink):
            lose()
            with pytest.raises(Gone, match="^the shared version is no longer available$"):  # naming no kernel path
                links.open(again["token"])


def test_a_link_ends_with_its_file_deleted_through_a_folder_mounted_too_and_is_revoked_through_it(
        fs: FileSystem) -> None:
    """A folder of a mount, mounted too, keeps histories of its own. A file shared through the outer mount and
    deleted through the inner one stayed shared, and unsharing it through the inner one found no link."""
    links = ShareLinks(fs, default_expiry_s=7 * 86400, max_expiry_s=30 * 86400, public_url=None)
    fs.write(AGENT, "ws/secret.txt", "password=hunter2")
    deleted = links.share(AGENT, "ws/secret.txt")
    fs.write(AGENT, "ws/other.txt", "also shared")
    revoked = links.share(AGENT, "ws/other.txt")
    fs.mount(AGENT, "ws")
    fs.delete(AGENT, "secret.txt")
    with pytest.raises(Gone, match="the shared file was deleted"):
        links.open(deleted["token"])
    assert links.unshare(AGENT, file_path="other.txt")["revoked"] == 1
    with pytest.raises(Gone, match="revoked"):
        links.open(revoked["token"])


# -- retrieval ----------------------------------------------------------------------------------------------------------
LIBRARY = {
    "recipes/banana_bread.txt": "Mash three ripe bananas, stir in melted butter, sugar, an egg and flour, then bake "
                                "the loaf for an hour at 175 degrees.",
    "recipes/tomato_soup.txt": "Roast tomatoes with garlic and onion, blend with stock and simmer; season with basil.",
    "travel/kyoto.txt": "Kyoto has hundreds of Buddhist temples and Shinto shrines; visit Fushimi Inari early.",
    "travel/iceland.txt": "Drive the ring road around the island to see glaciers, geysers and black sand beaches.",
    "finance/budget_2024.txt": "The quarterly budget allocates funds to marketing, salaries and office rent.",
    "finance/taxes.txt": "File the annual income tax return before April; keep receipts for deductible expenses.",
    "code/sorting.py": "def quicksort(items):\n    # pick a pivot and partition the list recursively\n    ...",
    "code/http_server.py": "from http.server import HTTPServer\n# serve requests on port 8080 and answer GET",
    "health/running.txt": "Start with short jogs three times a week and slowly increase your distance.",
    "health/sleep.txt": "Adults need seven to nine hours of rest each night; avoid screens before bed.",
    "pets/cat_care.txt": "Cats need fresh water, a clean litter box and regular visits to the veterinarian.",
    "pets/dog_training.txt": "Reward your puppy with treats when it sits on command; keep lessons short.",
    "garden/roses.txt": "Prune rose bushes in late winter and feed them with compost in spring.",
    "garden/vegetables.txt": "Plant carrots and lettuce in raised beds; water the seedlings every morning.",
    "music/guitar.txt": "Practice chord changes slowly: G, C and D cover many folk songs.",
    "music/piano.txt": "Play scales with both hands on the keyboard to build finger independence.",
    "space/mars.txt": "The red planet has the tallest volcano in the solar system, Olympus Mons.",
    "space/telescope.txt": "A reflecting telescope gathers starlight with a curved mirror instead of a lens.",
    "history/rome.txt": "Julius Caesar crossed the Rubicon in 49 BC, starting a civil war in the Republic.",
    "history/egypt.txt": "The pyramids of Giza were built as tombs for the pharaohs of the Old Kingdom.",
    "cars/maintenance.txt": "Change the engine oil every ten thousand kilometres and check tyre pressure monthly.",
    "weather/storms.txt": "Thunderstorms form when warm moist air rises quickly and cools into tall clouds.",
    "work/meeting_notes.txt": "Minutes: the team agreed to ship the release on Friday after the final review.",
    "language/spanish.txt": "Hola means hello and gracias means thank you; practise verbs every day.",
}
# A labelled query set: each query paraphrases one file without quoting it.
QUERIES = [
    ("how do I make a loaf with fruit in the oven", "recipes/banana_bread.txt"),
    ("a warm blended dish for a cold evening", "recipes/tomato_soup.txt"),
    ("sightseeing among religious sites in Japan", "travel/kyoto.txt"),
    ("a road trip past volcanic hot springs and ice", "travel/iceland.txt"),
    ("how much money each department gets this quarter", "finance/budget_2024.txt"),
    ("paying the government what I owe on my salary", "finance/taxes.txt"),
    ("an algorithm to order an array", "code/sorting.py"),
    ("web service listening for requests", "code/http_server.py"),
    ("getting into jogging as a beginner", "health/running.txt"),
    ("how long should I sleep at night", "health/sleep.txt"),
    ("looking after a kitten", "pets/cat_care.txt"),
    ("teaching a young dog to obey", "pets/dog_training.txt"),
    ("when to trim flowering shrubs", "garden/roses.txt"),
    ("growing food in my backyard", "garden/vegetables.txt"),
    ("learning chords on a stringed instrument", "music/guitar.txt"),
    ("keyboard exercises for both hands", "music/piano.txt"),
    ("the fourth planet from the sun", "space/mars.txt"),
    ("optics for watching stars", "space/telescope.txt"),
    ("the end of the Roman republic", "history/rome.txt"),
    ("ancient monuments built for kings in Africa", "history/egypt.txt"),
    ("servicing my vehicle", "cars/maintenance.txt"),
    ("why lightning storms happen", "weather/storms.txt"),
    ("what did we decide at the meeting about the launch", "work/meeting_notes.txt"),
    ("basic words in a foreign language", "language/spanish.txt"),
]


def _indexed(fs: FileSystem, embedder) -> Indexer:  # noqa: ANN001
    for path, text in LIBRARY.items():
        fs.write(AGENT, path, text)
    return Indexer(fs, run_here, embedder)


def test_retrieval_finds_the_right_file_for_nine_in_ten_labelled_queries(fs: FileSystem, embedder) -> None:  # noqa: ANN001
    indexer = _indexed(fs, embedder)
    root = fs.root_of(AGENT)
    misses = []
    for query, expected in QUERIES:
        top = run(indexer.search(root, query, 1, None))
        if not top or top[0]["file_path"] != expected:
            misses.append((query, expected, top[0]["file_path"] if top else None))
    hit_rate = 1 - len(misses) / len(QUERIES)
    assert hit_rate >= 0.9, f"top-1 hit rate {hit_rate:.0%}; misses: {misses}"


def test_results_carry_path_score_and_snippet_and_keywords_filter(fs: FileSystem, embedder) -> None:  # noqa: ANN001
    indexer = _indexed(fs, embedder)
    root = fs.root_of(AGENT)
    results = run(indexer.search(root, "pets and animals", 3, None))
    assert len(results) == 3 and results[0]["score"] >= results[1]["score"] >= results[2]["score"]
    first = results[0]
    assert first["path"] == f"{root.path}/{first['file_path']}" and first["snippet"] in LIBRARY[first["file_path"]]
    assert -1 <= first["similarity"] <= 1 and first["version"] == 1
    only = run(indexer.search(root, "pets and animals", 5, ["VETERINARIAN"]))  # case-insensitive
    assert [r["file_path"] for r in only] == ["pets/cat_care.txt"]
    both = run(indexer.search(root, "anything", 5, ["the", "rest"]))
    assert {r["file_path"] for r in both} == {p for p, t in LIBRARY.items() if "the" in t.lower() and "rest" in t.lower()}
    assert run(indexer.search(root, "pets", 5, ["no-such-word-anywhere"])) == []


def test_the_index_follows_writes_rollbacks_and_deletes(fs: FileSystem, embedder) -> None:  # noqa: ANN001
    indexer = Indexer(fs, run_here, embedder)
    root = fs.root_of(AGENT)
    fs.write(AGENT, "fact.txt", "Penguins live in Antarctica and eat fish.")
    fs.write(AGENT, "other.txt", "Bicycles have two wheels and pedals.")
    top = lambda: run(indexer.search(root, "birds of the south pole", 1, None))[0]  # noqa: E731
    assert top()["file_path"] == "fact.txt"
    fs.write(AGENT, "fact.txt", "The stock market fell sharply on Monday.")
    assert top()["file_path"] == "other.txt" or "Penguins" not in top()["snippet"]
    fs.rollback(AGENT, "fact.txt")
    assert top()["file_path"] == "fact.txt" and "Penguins" in top()["snippet"] and top()["version"] == 3
    fs.delete(AGENT, "fact.txt")
    assert all(r["file_path"] != "fact.txt" for r in run(indexer.search(root, "penguins", 5, None)))


def test_without_vectors_retrieval_ranks_by_keywords(kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    postgres = request.getfixturevalue("postgres") if kind == "postgres" else None
    store = open_store(kind, tmp_path, postgres, vectors=False)
    fs = make_fs(store, tmp_path)
    indexer = _indexed(fs, None)
    results = run(indexer.search(fs.root_of(AGENT), "veterinarian visits", 2, None))
    assert results[0]["file_path"] == "pets/cat_care.txt" and results[0]["similarity"] is None
    store.close()


class BatchRecordingEmbedder(Embedder):
    """The real model, noting how many texts each of its forward passes took."""

    def __init__(self) -> None:
        super().__init__()
        self.batches: list[int] = []

    def _vectors(self, texts: list[str]) -> np.ndarray:
        self.batches.append(len(texts))
        return super()._vectors(texts)


def test_indexing_embeds_at_most_256_chunks_at_a_time_so_a_query_never_waits_behind_more(tmp_path: Path) -> None:
    store = open_store("sqlite", tmp_path, None)
    fs = make_fs(store, tmp_path, max_file_bytes=1 << 22)
    # 260 paragraphs of about 900 characters, each a chunk; words over 100 characters are one token each, so the
    # model's passes stay short.
    text = "\n\n".join(f"part {i} " + f"{i:03d}{'y' * 110} " * 8 for i in range(260))
    fs.write(AGENT, "big.txt", text)
    model = BatchRecordingEmbedder()
    try:
        assert run(Indexer(fs, run_here, model).refresh(fs.root_of(AGENT).id)) == 1
        chunks = len(chunk_text(text))
        assert chunks > 256 and sum(model.batches) == chunks and max(model.batches) <= 256, model.batches
    finally:
        model.close()
        store.close()


def test_chunks_cover_the_text_and_cut_at_boundaries() -> None:
    text = "\n\n".join(f"Paragraph {i}. " + "word " * 150 for i in range(6))
    chunks = chunk_text(text)
    assert "".join(c.text for c in chunks) == text and all(len(c.text) <= 1000 for c in chunks)
    assert all(c.text.endswith((" ", "\n")) for c in chunks[:-1])
    assert [c.start for c in chunks] == [sum(len(p.text) for p in chunks[:i]) for i in range(len(chunks))]
    assert chunk_text("") == [] and chunk_text("   ") == []


# -- several kernels on one PostgreSQL --------------------------------------------------------------------------------
def test_two_kernels_share_one_file_system_through_postgres(tmp_path: Path, postgres: Callable[[], str]) -> None:
    from aios.storage.postgres_store import PostgresStore

    dsn = postgres()
    first, second = PostgresStore(dsn), PostgresStore(dsn)
    one, two = make_fs(first, tmp_path), make_fs(second, tmp_path)
    one.write(AGENT, "shared.txt", "from kernel one")
    assert two.read(AGENT, "shared.txt")["content"] == "from kernel one"
    assert two.write(AGENT, "shared.txt", "from kernel two")["version"] == 2
    assert one.rollback(AGENT, "shared.txt")["version"] == 3
    assert [v["kind"] for v in two.history(AGENT, "shared.txt")["versions"]] == ["rollback", "write", "write"]
    assert os.path.exists(one.history(AGENT, "shared.txt")["path"])
    first.close()
    second.close()


# -- one kernel per SQLite data dir ----------------------------------------------------------------------------------
HOLD_STORE = """
import sys
from pathlib import Path
from aios.storage.sqlite_store import SQLiteStore
store = SQLiteStore(Path(sys.argv[1]), vectors=False)
print("open", flush=True)
sys.stdin.read()  # until the test closes our stdin
store.close()
"""


def test_a_second_process_on_the_same_sqlite_data_dir_is_refused_naming_it(
        tmp_path: Path, storage_handler: Callable[[Any], Any]) -> None:
    from aios.config import load_config
    from aios.errors import NotAvailable

    database = tmp_path / "lsfs" / "lsfs.db"
    other = subprocess.Popen([sys.executable, "-c", HOLD_STORE, str(database)], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)
    try:
        assert other.stdout.readline() == "open\n"  # type: ignore[union-attr]
        with pytest.raises(NotAvailable) as refused:
            open_store("sqlite", tmp_path, None)
        assert f"another kernel (process {other.pid}) uses this data dir" in str(refused.value)
        assert str(database) in str(refused.value) and "use backend postgres to share storage" in str(refused.value)
        with pytest.raises(NotAvailable, match=f"storage: .*another kernel .*{tmp_path}.*use backend postgres"):
            storage_handler(load_config(env={"AIOS_DATA_DIR": str(tmp_path)}))
    finally:
        other.communicate("", timeout=60)
    store = open_store("sqlite", tmp_path, None)  # the other process has ended: its lock went with it
    store.close()


def test_settling_a_version_that_is_no_longer_pending_is_refused(fs: FileSystem) -> None:
    """What a second process settling this file's pending version meanwhile would leave: no head may point at it."""
    fs.write(AGENT, "a.txt", "one")
    record = fs.store.file(fs.root_of(AGENT).id, "a.txt")
    fs.store.add_version(Version(record.id, 2, 0.0, 3, record.hash, AGENT, "write", pending=True))
    fs.store.settle(record.id, 2, keep=False)  # the other process decided the write had crashed
    with pytest.raises(Conflict, match="version 2 of this file is no longer pending"):
        fs.store.settle(record.id, 2, keep=True)
    with pytest.raises(Conflict):
        fs.store.settle(record.id, 1, keep=True)  # committed long ago
    assert fs.history(AGENT, "a.txt")["versions"][0]["version"] == 1 and fs.read(AGENT, "a.txt")["content"] == "one"


# -- operating-system errors ----------------------------------------------------------------------------------------
OS_ERRORS = [  # (errno, the refusal's status); the ones a test can cause for real are in test_storage_http's table
    (errno.EACCES, 403), (errno.EPERM, 403), (errno.EROFS, 403), (errno.ENAMETOOLONG, 400), (errno.ELOOP, 400),
    (errno.ENOSPC, 507), (errno.EDQUOT, 507), (errno.ENOTDIR, 409), (errno.EISDIR, 409), (errno.EEXIST, 409),
]


@pytest.mark.parametrize(("number", "status"), OS_ERRORS, ids=[errno.errorcode[n] for n, _ in OS_ERRORS])
def test_an_os_error_a_request_can_cause_is_a_refusal_naming_the_path(number: int, status: int) -> None:
    """A full disk, a quota or a read-only file system cannot be made here without privileges the tests do not
    assume, so the mapping is checked on the errors themselves."""
    refused = refusal(OSError(number, os.strerror(number), "/srv/agents/a/notes.txt"))
    assert refused is not None and refused.status_code == status
    assert str(refused).startswith("/srv/agents/a/notes.txt: ")
    assert refusal(OSError(errno.EIO, "Input/output error", "/x")) is None  # the disk failing is no refusal


# -- what else may be on the disk ------------------------------------------------------------------------------------
def test_a_fifo_in_the_mount_is_refused_without_blocking(fs: FileSystem) -> None:
    root = Path(fs.root_of(AGENT).path)
    os.mkfifo(root / "pipe")
    fs.write(AGENT, "plain.txt", "plain")
    outcome: dict[str, Exception] = {}
    finished = threading.Event()

    def read_the_fifo() -> None:
        try:
            fs.read(AGENT, "pipe")
        except Exception as exc:  # noqa: BLE001 - the test looks at what it was
            outcome["error"] = exc
        finally:
            finished.set()

    threading.Thread(target=read_the_fifo, daemon=True).start()
    if not finished.wait(60):
        with open(root / "pipe", "wb"):  # a writer lets the stuck reader go, so the failure does not hang the run
            pass
        finished.wait(60)
        pytest.fail("reading a FIFO blocked the storage thread")
    assert isinstance(outcome.get("error"), Conflict) and "pipe is a FIFO (named pipe), not a regular file" in str(
        outcome["error"])
    with pytest.raises(Conflict, match="not a regular file"):
        fs.write(AGENT, "pipe", "into the pipe")
    assert (root / "pipe").is_fifo() and fs.mount(AGENT, ".")["files"] == 1  # a mount passes it by


def test_a_file_grown_past_the_limit_outside_the_kernel_is_refused_naming_it(fs: FileSystem) -> None:
    path = Path(fs.write(AGENT, "log.txt", "small")["path"])
    path.write_bytes(b"x" * ((1 << 20) + 1))  # the limit (storage.max_file_mb) is 1 MiB here
    with pytest.raises(TooLarge, match=r"log.txt is 1048577 bytes on disk .* the limit is 1048576"):
        fs.read(AGENT, "log.txt")
    mounted = fs.mount(AGENT, ".")
    assert [s["file_path"] for s in mounted["skipped"]] == ["log.txt"] and "1048577 bytes" in mounted["skipped"][0]["why"]
    path.write_text("small again")
    assert fs.read(AGENT, "log.txt")["content"] == "small again"
    assert [v["kind"] for v in fs.history(AGENT, "log.txt")["versions"]] == ["external", "write"]


# -- files unchanged since they were hashed are not read again -------------------------------------------------------
def test_an_unchanged_file_is_not_read_again_by_a_mount_or_a_read(fs: FileSystem) -> None:
    home = fs.home(AGENT)
    home.mkdir(parents=True)
    long_ago = time.time_ns() - 3600 * 10**9
    for name in ("a.txt", "b.txt"):
        (home / name).write_text(f"settled {name}")
        os.utime(home / name, ns=(long_ago, long_ago))
    assert fs.mount(AGENT, ".")["recorded_versions"] == 2
    with file_permissions_bind():
        for name in ("a.txt", "b.txt"):
            (home / name).chmod(0)  # a read of either would now fail: nothing may read them
        again = fs.mount(AGENT, ".")
        assert (again["files"], again["recorded_versions"], again["skipped"]) == (2, 0, [])
        assert fs.read(AGENT, "a.txt")["content"] == "settled a.txt"  # the version's stored copy
        (home / "b.txt").chmod(0o644)
        (home / "b.txt").write_text("changed b.txt")  # same size, a new modification time
        (home / "b.txt").chmod(0)
        with pytest.raises(PermissionError):  # changed, so it must be read (the handler makes this a 403)
            fs.read(AGENT, "b.txt")


def test_a_file_changed_right_after_it_was_hashed_is_read_again_whatever_its_fingerprint(fs: FileSystem) -> None:
    """Within the clock's granularity a change can keep size, modification time and inode: a file hashed that soon
    after its last change is not trusted by its fingerprint."""
    path = Path(fs.write(AGENT, "fresh.txt", "first")["path"])
    before = path.stat()
    fs.read(AGENT, "fresh.txt")  # hashed now, moments after its change
    with path.open("r+") as handle:  # the same size, in place: the same inode
        handle.write("FIRST")
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))  # and the same modification time
    assert fs.read(AGENT, "fresh.txt")["content"] == "FIRST"
    assert [v["kind"] for v in fs.history(AGENT, "fresh.txt")["versions"]] == ["external", "write"]


# -- the handler's life cycle -----------------------------------------------------------------------------------------
def test_closing_the_storage_handler_never_blocks_the_event_loop(tmp_path: Path, storage_handler: Callable[[Any], Any],
                                                                 caplog: pytest.LogCaptureFixture) -> None:
    """Work still queued on the storage I/O thread when the handler closes (here a job that takes a second, as slow
    disk work would) is waited for off the event loop. asyncio's debug mode reports any step of the loop that
    takes longer than slow_callback_duration."""
    import logging

    from aios.config import load_config

    handler = storage_handler(load_config(env={"AIOS_DATA_DIR": str(tmp_path)}))
    never = threading.Event()  # nobody sets it: the job waits its full second

    async def close_with_work_queued() -> None:
        asyncio.get_running_loop().slow_callback_duration = 0.5
        closing = asyncio.create_task(handler.close())
        await asyncio.sleep(0)  # close() has handed the store's closing to the I/O thread
        late = asyncio.create_task(handler.run_io(never.wait, 1.0))
        await asyncio.sleep(0)  # and the slow job is queued behind it
        await closing
        await late

    with caplog.at_level(logging.WARNING, logger="asyncio"):
        asyncio.run(close_with_work_queued(), debug=True)
    assert not [r.getMessage() for r in caplog.records if "took" in r.getMessage()]
