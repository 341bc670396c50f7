"""Storage over real HTTP: every operation with the exact bodies the AIOS SDK sends, the reply shape, the bad
inputs (and that nothing was lost), share links expiring and revoked, and the SDK's typed functions.

The kernel runs in this process (no LLM cores: storage needs none) and serves on loopback from a thread, so a
test can move its storage clock: share links last days, and no test waits that long."""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import httpx
import pytest

from aios import sdk
from aios.config import load_config
from aios.kernel import Kernel
from aios.sdk import AIOSError
from conftest import ENVELOPE, refused_before_running, served_in_thread
from storage_support import FakeClock, file_permissions_bind

STORAGE_REPLY = {"response_class", "response_message", "finished", "error", "status_code"}


@dataclass
class StorageServer:
    url: str
    client: httpx.Client
    clock: FakeClock
    kernel: Kernel
    data: Path

    def query(self, agent: str, operation: str, params: Any) -> dict[str, Any]:
        """POST what the AIOS SDK posts (StorageQuery.model_dump(): query_class, params, operation_type)."""
        body = {"query_type": "storage", "agent_name": agent,
                "query_data": {"query_class": "storage", "params": params, "operation_type": operation}}
        reply = self.client.post("/query", json=body)
        assert reply.status_code == 200, reply.text
        envelope = reply.json()
        assert set(envelope) == ENVELOPE and set(envelope["response"]) == STORAGE_REPLY
        assert envelope["response"]["response_class"] == "storage" and len(envelope["start_times"]) == 1
        return envelope["response"]

    def ok(self, agent: str, operation: str, params: Any) -> dict[str, Any]:
        response = self.query(agent, operation, params)
        assert response["error"] is None and response["status_code"] == 200 and response["finished"], response
        return json.loads(response["response_message"])


@pytest.fixture(scope="module")
def lsfs(tmp_path_factory: pytest.TempPathFactory, embedder) -> Iterator[StorageServer]:  # noqa: ANN001
    data = tmp_path_factory.mktemp("lsfs-http")
    (data / "config.yaml").write_text("storage: {max_file_mb: 1}\n")
    kernel = Kernel(load_config(data / "config.yaml", env={"AIOS_DATA_DIR": str(data)}), [], embedder=embedder)
    clock = FakeClock(time.time())
    kernel.storage.fs.clock = clock  # the one stand-in: days passing
    with served_in_thread(kernel, file_permissions_bind()) as url, httpx.Client(base_url=url, timeout=120) as client:
        # (started with file permissions as a user meets them, even when the tests run as root)
        yield StorageServer(url, client, clock, kernel, data)


def test_the_seven_aios_operations_do_what_they_say(lsfs: StorageServer) -> None:
    agent = "aios/classic"
    mounted = lsfs.ok(agent, "mount", {"root_dir": "classic"})
    root = Path(mounted["root"])  # the requested directory, inside the agent's own
    assert root == (lsfs.data / "storage" / "aios%2Fclassic" / "classic").resolve() and root.is_dir()
    assert lsfs.ok(agent, "create_dir", {"dir_path": "docs"})["created"] and (root / "docs").is_dir()
    created = lsfs.ok(agent, "create_file", {"file_path": "docs/todo.txt"})
    assert (created["path"], created["version"]) == (str(root / "docs" / "todo.txt"), 1)
    written = lsfs.ok(agent, "write", {"file_path": "docs/todo.txt", "content": "water the plants"})
    assert written["version"] == 2 and (root / "docs" / "todo.txt").read_text() == "water the plants"
    lsfs.ok(agent, "write", {"file_path": "docs/todo.txt", "content": "buy a new laptop"})
    lsfs.ok(agent, "write", {"file_path": "docs/cake.txt", "content": "Whisk eggs and sugar, fold in flour, bake."})
    found = lsfs.ok(agent, "retrieve", {"query_text": "a dessert recipe", "n": 1, "keywords": None})
    assert [f["file_path"] for f in found["files"]] == ["docs/cake.txt"] and "Whisk" in found["files"][0]["snippet"]
    rolled = lsfs.ok(agent, "rollback", {"file_path": "docs/todo.txt", "n": 1})
    assert (rolled["version"], rolled["restored"]) == (4, 2)
    assert (root / "docs" / "todo.txt").read_text() == "water the plants"
    found = lsfs.ok(agent, "retrieve", {"query_text": "gardening chores", "n": 5, "keywords": ["plants"]})
    assert [f["file_path"] for f in found["files"]] == ["docs/todo.txt"]  # the index followed the rollback
    shared = lsfs.ok(agent, "share", {"file_path": "docs/todo.txt"})
    assert shared["url"].startswith(lsfs.url + "/share/") and shared["version"] == 4
    assert httpx.get(shared["url"]).text == "water the plants"


def test_read_list_delete_history_and_unshare(lsfs: StorageServer) -> None:
    agent = "aios/extras"
    for text in ("first", "second"):
        lsfs.ok(agent, "write", {"file_path": "a.txt", "content": text})
    assert lsfs.ok(agent, "read", {"file_path": "a.txt"})["content"] == "second"
    assert lsfs.ok(agent, "read_file", {"file_path": "a.txt", "version": 1})["content"] == "first"
    listed = lsfs.ok(agent, "list", {"dir_path": "", "recursive": True})
    assert [(e["file_path"], e["type"], e["version"]) for e in listed["entries"]] == [("a.txt", "file", 2)]
    deleted = lsfs.ok(agent, "delete", {"file_path": "a.txt"})
    assert deleted["version"] == 3 and not Path(deleted["path"]).exists()
    history = lsfs.ok(agent, "history", {"file_path": "a.txt"})["versions"]
    assert [(v["version"], v["kind"], v["agent"]) for v in history] == [
        (3, "delete", agent), (2, "write", agent), (1, "write", agent)]
    lsfs.ok(agent, "rollback", {"file_path": "a.txt", "n": 1})
    link = lsfs.ok(agent, "share", {"file_path": "a.txt", "expires_in": 60})["url"]
    assert lsfs.ok(agent, "unshare", {"link": link})["revoked"] == 1
    assert httpx.get(link).status_code == 410


def test_a_rollback_by_time_takes_an_iso_time_or_unix_seconds(lsfs: StorageServer) -> None:
    agent = "aios/timely"
    lsfs.ok(agent, "write", {"file_path": "t.txt", "content": "morning"})
    lsfs.clock.advance(3600)
    noon = lsfs.clock.now
    lsfs.ok(agent, "write", {"file_path": "t.txt", "content": "noon"})
    lsfs.clock.advance(3600)
    lsfs.ok(agent, "write", {"file_path": "t.txt", "content": "evening"})
    iso = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(noon + 60))  # naive: the kernel's local time
    assert lsfs.ok(agent, "rollback", {"file_path": "t.txt", "time": iso})["restored"] == 2
    assert lsfs.ok(agent, "rollback", {"file_path": "t.txt", "time": noon - 1})["restored"] == 1
    assert lsfs.ok(agent, "read", {"file_path": "t.txt"})["content"] == "morning"


KEEP = "guarded/agent"
# Type and shape problems. (id, operation, params, text the 422 must contain: the field and the problem)
MALFORMED = [
    ("write-without-content", "write", {"file_path": "keep.txt"}, "content: is required"),
    ("write-without-path", "write", {"content": "x"}, "file_path: is required"),
    ("mount-without-root", "mount", {}, "root_dir: is required"),
    ("retrieve-without-query", "retrieve", {"n": 3}, "query_text: is required"),
    ("params-not-object", "write", "keep.txt", "params: must be an object"),
    ("path-number", "write", {"file_path": 5, "content": "x"}, "file_path: must be a string"),
    ("content-list", "write", {"file_path": "keep.txt", "content": ["x"]}, "content: must be a string"),
    ("content-bytes-as-numbers", "write", {"file_path": "keep.txt", "content": [104, 105]}, "content: must be a string"),
    ("content-lone-surrogate", "write", {"file_path": "keep.txt", "content": "\ud800"}, "body.query_data.params.content: not valid Unicode text"),
    ("n-string", "retrieve", {"query_text": "q", "n": "3"}, "n: must be an integer"),
    ("n-bool", "rollback", {"file_path": "keep.txt", "n": True}, "n: must be an integer"),
    ("keywords-number", "retrieve", {"query_text": "q", "n": 1, "keywords": 5}, "keywords: must be a list of strings"),
    ("recursive-string", "list", {"dir_path": "", "recursive": "yes"}, "recursive: must be true or false"),
    ("time-words", "rollback", {"file_path": "keep.txt", "time": "yesterday"}, "time: must be Unix seconds or an ISO"),
    ("n-and-time", "rollback", {"file_path": "keep.txt", "n": 1, "time": 5}, "give n (versions back) or time"),
    ("n-and-its-alias-k", "retrieve", {"query_text": "q", "n": 1, "k": 3},
     "params.k: and params.n are one parameter (n) of 'retrieve': give it once"),
    ("link-as-url-and-token", "unshare", {"url": "http://x/s/abc", "token": "def"},
     "params.token: and params.url are one parameter (link)"),
    ("delete-both", "delete", {"file_path": "keep.txt", "dir_path": "d"}, "exactly one of file_path and dir_path"),
    ("unshare-neither", "unshare", {}, "exactly one of link and file_path"),
    ("unknown-param", "write", {"file_path": "keep.txt", "content": "x", "mode": "a"}, "mode: is not a parameter"),
    ("unknown-operation", "format_disk", {}, "operation_type: must be one of"),
    ("operation-not-string", 7, {}, "operation_type: must be one of"),
    # A wrong set beside a refused value: still malformed.
    ("delete-both-one-refused", "delete", {"file_path": "a\nb", "dir_path": "d"}, "exactly one of file_path and dir_path"),
    ("n-and-time-n-refused", "rollback", {"file_path": "keep.txt", "n": 0, "time": 5}, "give n (versions back) or time"),
]


def _kept(lsfs: StorageServer) -> tuple[str, int]:
    lsfs.ok(KEEP, "write", {"file_path": "keep.txt", "content": "precious"}) if not _exists(lsfs) else None
    read = lsfs.ok(KEEP, "read", {"file_path": "keep.txt"})
    return read["content"], read["version"]


def _stored(lsfs: StorageServer) -> tuple[tuple[str, int], list[tuple[str, int | None]]]:
    """The kept file, and what the agent's mount holds."""
    kept = _kept(lsfs)
    return kept, [(e["file_path"], e["version"]) for e in lsfs.ok(KEEP, "list", {"dir_path": ""})["entries"]]


def _post(lsfs: StorageServer, operation: Any, params: Any) -> httpx.Response:
    """A storage query of KEEP's, sent as ASCII JSON (escapes), which is how a lone surrogate can travel at all."""
    body = {"agent_name": KEEP, "query_type": "storage",
            "query_data": {"query_class": "storage", "operation_type": operation, "params": params}}
    return lsfs.client.post("/query", content=json.dumps(body), headers={"content-type": "application/json"})


@pytest.mark.parametrize(("operation", "params", "expected"), [(o, p, e) for _, o, p, e in MALFORMED],
                         ids=[i for i, *_ in MALFORMED])
def test_a_malformed_storage_request_is_422_naming_the_field_and_loses_nothing(
        lsfs: StorageServer, operation: Any, params: Any, expected: str) -> None:
    before = _kept(lsfs)
    reply = _post(lsfs, operation, params)
    assert reply.status_code == 422
    problems = [f"{'.'.join(map(str, d['loc']))}: {d['msg']}" for d in reply.json()["detail"]]
    assert any(expected in p for p in problems), problems
    assert all(p.startswith("body.query_data.") for p in problems)
    assert _kept(lsfs) == before


# Values of the right type that the kernel refuses: answered in the envelope, as upstream AIOS answers its errors,
# since the AIOS SDK raises on a 422 before an agent could read why. (id, operation, params, text the error must
# contain: the field and the problem)
REFUSED_VALUES = [
    ("path-nul", "write", {"file_path": "keep\x00.txt", "content": "x"}, "params.file_path: contains a NUL"),
    ("path-newline", "write", {"file_path": "keep\n.txt", "content": "x"},
     "params.file_path: contains the control character"),
    ("path-carriage-return", "read", {"file_path": "keep.txt\r"}, "params.file_path: contains the control character"),
    ("path-component-too-long", "write", {"file_path": "a" * 300, "content": "x"},
     "params.file_path: has a component longer than 255 bytes"),
    ("path-too-long", "read", {"file_path": "a/" * 2100},
     "params.file_path: is 4200 bytes long in UTF-8; the limit is 4096"),
    ("path-too-long-in-bytes", "read", {"file_path": "é/" * 1400}, "4200 bytes long in UTF-8; the limit is 4096"),
    ("path-too-deep", "create_dir", {"dir_path": "/".join(["a"] * 300)},
     "params.dir_path: has 300 components; the limit is 256"),
    ("n-zero", "rollback", {"file_path": "keep.txt", "n": 0}, "params.n: must be at least 1, not 0"),
    ("version-huge", "read", {"file_path": "keep.txt", "version": 10 ** 400},
     "params.version: must be at most 9223372036854775807 (a 64-bit integer), not 1000000"),
    ("expires-in-huge", "share", {"file_path": "keep.txt", "expires_in": 2 ** 63}, "params.expires_in: must be at most"),
    ("n-too-many", "retrieve_file", {"query_text": "q", "n": 101}, "params.n: must be between 1 and 100, not 101"),
    ("k-too-many", "retrieve", {"query_text": "q", "k": 500}, "params.k: must be between 1 and 100, not 500"),
    ("empty-query", "retrieve", {"query_text": "  ", "n": 1}, "params.query_text: must not be empty"),
    ("query-too-long", "retrieve", {"query_text": "q" * 10_001}, "params.query_text: is 10001 characters long"),
    ("keywords-empty-word", "retrieve", {"query_text": "q", "n": 1, "keywords": [""]},
     "params.keywords: must not hold empty keywords"),
    ("version-zero", "read", {"file_path": "keep.txt", "version": 0}, "params.version: must be at least 1"),
    ("expires-negative", "share", {"file_path": "keep.txt", "expires_in": -1}, "params.expires_in: must be at least 1"),
    ("link-empty", "unshare", {"link": " "}, "params.link: must be a share URL or token"),
    ("time-before-any-calendar", "rollback", {"file_path": "keep.txt", "time": -1e15},
     "params.time: is outside the dates this kernel can place: -1000000000000000.0 seconds"),
    ("time-past-any-clock", "rollback", {"file_path": "keep.txt", "time": 1e300},
     "params.time: is outside the dates this kernel can place"),
    ("time-iso-before-year-1-in-utc", "rollback", {"file_path": "keep.txt", "time": "0001-01-01T00:00:00+05:00"},
     "params.time: is outside the dates this kernel can place: '0001-01-01T00:00:00+05:00'"),
]


@pytest.mark.parametrize(("operation", "params", "expected"), [(o, p, e) for _, o, p, e in REFUSED_VALUES],
                         ids=[i for i, *_ in REFUSED_VALUES])
def test_a_refused_storage_value_is_200_with_400_in_the_envelope_naming_the_field_and_stores_nothing(
        lsfs: StorageServer, operation: str, params: Any, expected: str) -> None:
    before = _stored(lsfs)
    response = refused_before_running(_post(lsfs, operation, params), STORAGE_REPLY)
    assert (response["status_code"], response["response_class"], response["response_message"]) == (400, "storage", None)
    assert response["error"].startswith("storage request: ") and expected in response["error"], response["error"]
    assert _stored(lsfs) == before


def _exists(lsfs: StorageServer) -> bool:
    return lsfs.query(KEEP, "read", {"file_path": "keep.txt"})["error"] is None


def test_a_body_that_is_not_utf8_json_or_has_unknown_fields_is_refused(lsfs: StorageServer) -> None:
    raw = b'{"agent_name": "raw", "query_type": "storage", "query_data": {"operation_type": "write", "params": ' \
          b'{"file_path": "a.txt", "content": "\xff\xfe"}}}'
    reply = lsfs.client.post("/query", content=raw, headers={"content-type": "application/json"})
    assert reply.status_code == 422 and "not UTF-8 text" in json.dumps(reply.json()["detail"])
    assert lsfs.query("raw", "read", {"file_path": "a.txt"})["status_code"] == 404  # nothing was written
    extra = {"agent_name": "x", "query_type": "storage", "query_data": {"operation_type": "list", "params": {},
                                                                          "tools": []}}
    detail = lsfs.client.post("/query", json=extra).json()["detail"]
    assert detail[0]["loc"] == ["body", "query_data", "tools"]


# (id, operation, params, status in the envelope, text the error must contain)
REFUSED = [
    ("escape-parent", "write", {"file_path": "../other/x.txt", "content": "x"}, 403, "'../other/x.txt'"),
    ("escape-absolute", "read", {"file_path": "/etc/hostname"}, 403, "'/etc/hostname' leads outside the mount"),
    ("escape-symlink", "read", {"file_path": "out/hostname"}, 403, "a symbolic link on the way leads out"),
    ("mount-outside", "mount", {"root_dir": "/etc"}, 403, "outside the directories agents may mount"),
    ("mount-storage-root", "mount", {"root_dir": ".."}, 403, "holds the storage root"),
    ("mount-data-dir", "mount", {"root_dir": "../.."}, 403, "outside the directories agents may mount"),
    ("mount-another-agents", "mount", {"root_dir": "../aios%2Fclassic"}, 403, "mounts only within its own"),
    ("missing-file", "read", {"file_path": "nope.txt"}, 404, "no file nope.txt"),
    ("missing-version", "read", {"file_path": "keep.txt", "version": 99}, 404, "has no version 99"),
    ("rollback-too-far", "rollback", {"file_path": "keep.txt", "n": 50}, 404, "cannot roll keep.txt back 50"),
    ("create-existing", "create_file", {"file_path": "keep.txt"}, 409, "already exists"),
    ("write-into-directory", "write", {"file_path": "folder", "content": "x"}, 409, "is a directory"),
    ("content-too-large", "write", {"file_path": "keep.txt", "content": "x" * (2**20 + 1)}, 413, "the limit is 1048576"),
    ("not-text", "read", {"file_path": "binary.bin"}, 415, "is not UTF-8 text"),
    ("share-missing", "share", {"file_path": "nope.txt"}, 404, "no file nope.txt"),
    ("share-too-long", "share", {"file_path": "keep.txt", "expires_in": 10**9}, 400, "longer than the limit"),
    ("unshare-unknown", "unshare", {"link": "http://x/share/" + "a" * 43}, 404, "no share link of yours"),
    ("delete-root", "delete", {"dir_path": "."}, 403, "mount root itself"),
    ("delete-dir-that-is-a-file", "delete_dir", {"dir_path": "keep.txt"}, 409,
     "keep.txt is a file, not a directory: delete it with file_path"),
    ("delete-file-that-is-a-dir", "delete_file", {"file_path": "folder"}, 409,
     "folder is a directory, not a file: delete it with dir_path"),
    ("list-missing-dir", "list", {"dir_path": "nowhere"}, 404, "no directory nowhere"),
]


@pytest.mark.parametrize(("operation", "params", "status", "expected"), [(o, p, s, e) for _, o, p, s, e in REFUSED],
                         ids=[i for i, *_ in REFUSED])
def test_a_refused_operation_answers_200_with_the_error_in_the_envelope_and_loses_nothing(
        lsfs: StorageServer, operation: str, params: dict[str, Any], status: int, expected: str) -> None:
    if not _exists(lsfs):
        lsfs.ok(KEEP, "write", {"file_path": "keep.txt", "content": "precious"})
    root = Path(lsfs.ok(KEEP, "list", {"dir_path": ""})["path"])
    if not (root / "out").is_symlink():
        (root / "folder").mkdir()
        (root / "binary.bin").write_bytes(b"\x00\xff\xfe")
        (root / "out").symlink_to("/etc")
    before = _kept(lsfs)
    response = lsfs.query(KEEP, operation, params)
    assert response["status_code"] == status and expected in response["error"], response
    assert response["response_message"] is None and response["response_class"] == "storage"
    assert _kept(lsfs) == before


OS_AGENT = "os/refused"


def _unreadable(lsfs: StorageServer, root: Path) -> None:
    lsfs.ok(OS_AGENT, "write", {"file_path": "secret.txt", "content": "for nobody"})
    (root / "secret.txt").chmod(0)


def _unwritable_directory(lsfs: StorageServer, root: Path) -> None:
    (root / "frozen").mkdir(mode=0o555)


def _without_its_blob(lsfs: StorageServer, file_path: str, damage: bytes | None) -> None:
    """Version 1 of ``file_path`` loses its stored content (removed, or changed to ``damage``); version 2 is fine."""
    written = lsfs.ok(OS_AGENT, "write", {"file_path": file_path, "content": f"only here: {file_path}"})
    blob = lsfs.kernel.storage.fs.blobs.path(written["hash"])
    blob.write_bytes(damage) if damage is not None else blob.unlink()
    lsfs.ok(OS_AGENT, "write", {"file_path": file_path, "content": "the next version"})


# (id, what the test does to the mount first, operation, params, status in the envelope, text the error must contain)
OS_REFUSED: list[tuple[str, Callable[[StorageServer, Path], None], str, dict[str, Any], int, str]] = [
    ("unreadable-file", _unreadable, "read", {"file_path": "secret.txt"}, 403, "secret.txt: permission denied"),
    ("write-over-unreadable", _unreadable, "write", {"file_path": "secret.txt", "content": "x"}, 403,
     "secret.txt: permission denied"),
    ("unwritable-directory", _unwritable_directory, "write", {"file_path": "frozen/new.txt", "content": "x"}, 403,
     "frozen/new.txt: permission denied"),
    ("symlink-loop", lambda lsfs, root: (root / "loop").symlink_to("loop"), "read", {"file_path": "loop"}, 400,
     "loop: too many levels of symbolic links"),
    # 4095 bytes (16 names of 255): a path the request may hold, too long once it is placed in the mount.
    ("name-too-long-for-the-file-system", lambda lsfs, root: None, "write",
     {"file_path": "/".join(["ü" * 127 + "a"] * 16), "content": "x"}, 400, "the name is too long for the file system"),
    ("missing-version-content", lambda lsfs, root: _without_its_blob(lsfs, "gone.txt", None), "read",
     {"file_path": "gone.txt", "version": 1}, 410, "gone.txt version 1 is no longer available: its stored content"),
    ("damaged-version-content", lambda lsfs, root: _without_its_blob(lsfs, "damaged.txt", b"changed"), "rollback",
     {"file_path": "damaged.txt", "n": 1}, 410, "damaged.txt version 1 is no longer available: its stored"),
]


@pytest.mark.parametrize(("prepare", "operation", "params", "status", "expected"),
                         [case[1:] for case in OS_REFUSED], ids=[case[0] for case in OS_REFUSED])
def test_what_the_operating_system_refuses_is_a_clear_refusal_naming_the_path(
        lsfs: StorageServer, prepare: Callable[[StorageServer, Path], None], operation: str, params: dict[str, Any],
        status: int, expected: str) -> None:
    root = lsfs.kernel.storage.fs.home(OS_AGENT)
    lsfs.ok(OS_AGENT, "mount", {"root_dir": "."})
    for leftover in [p for p in root.iterdir()]:  # each case starts from an empty mount
        leftover.chmod(0o755) if not leftover.is_symlink() else None
        shutil.rmtree(leftover) if leftover.is_dir() and not leftover.is_symlink() else leftover.unlink()
    prepare(lsfs, root)
    response = lsfs.query(OS_AGENT, operation, params)
    assert response["status_code"] == status and expected in response["error"], response
    assert lsfs.ok(OS_AGENT, "write", {"file_path": "still.txt", "content": "working"})["version"] >= 1


def test_a_mount_skips_a_file_it_cannot_read_and_records_the_rest(lsfs: StorageServer) -> None:
    agent = "os/scanner"
    shelf = lsfs.kernel.storage.fs.home(agent) / "shelf"
    shelf.mkdir(parents=True)
    (shelf / "open.txt").write_text("anyone may read this")
    (shelf / "closed.txt").write_text("nobody may read this")
    (shelf / "closed.txt").chmod(0)
    mounted = lsfs.ok(agent, "mount", {"root_dir": "shelf"})
    assert (mounted["files"], mounted["recorded_versions"]) == (1, 1)
    (skipped,) = mounted["skipped"]
    assert skipped["file_path"] == "closed.txt" and "permission denied" in skipped["why"]
    assert "1 skipped, as they cannot be read" in mounted["message"]
    listed = {e["file_path"]: e["version"] for e in lsfs.ok(agent, "list", {"dir_path": ""})["entries"]}
    assert listed == {"open.txt": 1, "closed.txt": None}  # nothing recorded for the unreadable file
    (shelf / "closed.txt").chmod(0o644)
    assert lsfs.ok(agent, "read", {"file_path": "closed.txt"})["content"] == "nobody may read this"


def test_share_links_over_http_expire_and_are_revoked(lsfs: StorageServer) -> None:
    agent = "aios/sharer"
    lsfs.ok(agent, "write", {"file_path": "page.html", "content": "<script>alert(1)</script>"})
    shared = lsfs.ok(agent, "share", {"file_path": "page.html", "expires_in": 3600})
    page = httpx.get(shared["url"])
    assert page.status_code == 200 and page.text == "<script>alert(1)</script>"
    assert page.headers["content-type"] == "text/html; charset=utf-8"
    assert page.headers["content-security-policy"] == "sandbox"  # never runs as the kernel's origin
    assert page.headers["x-content-type-options"] == "nosniff" and page.headers["cache-control"] == "no-store"
    lsfs.clock.advance(3599)
    assert httpx.get(shared["url"]).status_code == 200
    lsfs.clock.advance(1)
    expired = httpx.get(shared["url"])
    assert expired.status_code == 410 and "expired" in expired.json()["detail"]
    default = lsfs.ok(agent, "share", {"file_path": "page.html"})  # 7 days unless told otherwise
    lsfs.clock.advance(7 * 86400 - 1)
    assert httpx.get(default["url"]).status_code == 200
    assert lsfs.ok(agent, "unshare", {"file_path": "page.html"})["revoked"] == 1
    revoked = httpx.get(default["url"])
    assert revoked.status_code == 410 and "revoked" in revoked.json()["detail"]


def test_a_share_link_names_the_address_its_caller_reached_the_kernel_at(lsfs: StorageServer) -> None:
    """A kernel reached under another name (a LAN address, a proxy's Host) gives links under that name: the
    one it listens at may be one the link's reader cannot reach. (The address was dropped on its way to the
    share, and every link named the listening one.)"""
    lsfs.ok("aios/sharer", "write", {"file_path": "named.txt", "content": "hello"})
    port = httpx.URL(lsfs.url).port
    assert httpx.URL(lsfs.url).host == "127.0.0.1"
    body = {"query_type": "storage", "agent_name": "aios/sharer",
            "query_data": {"operation_type": "share", "params": {"file_path": "named.txt"}}}
    reply = lsfs.client.post("/query", json=body, headers={"Host": f"localhost:{port}"}).json()["response"]
    url = json.loads(reply["response_message"])["url"]
    assert url.startswith(f"http://localhost:{port}/share/")
    assert httpx.get(url.replace("localhost", "127.0.0.1", 1)).text == "hello"


@pytest.mark.parametrize("token", ["", "short", "a" * 43, "a" * 200, "..%2F..%2Fetc", "x" * 42 + "!"])
def test_a_share_url_that_is_no_link_is_404(lsfs: StorageServer, token: str) -> None:
    reply = httpx.get(f"{lsfs.url}/share/{token}")
    assert reply.status_code == 404


def test_an_agent_reaches_only_its_own_mount(lsfs: StorageServer) -> None:
    mine = Path(lsfs.ok("aios/alice", "write", {"file_path": "diary.txt", "content": "secret"})["path"])
    response = lsfs.query("aios/mallory", "read", {"file_path": str(mine)})
    assert response["status_code"] == 403 and str(mine) in response["error"]
    response = lsfs.query("aios/mallory", "mount", {"root_dir": str(mine.parent)})
    assert response["status_code"] == 403 and "mounts only within its own" in response["error"]
    nothing = lsfs.ok("aios/mallory", "retrieve", {"query_text": "secret diary", "n": 5})
    assert nothing["files"] == []


# -- the SDK ------------------------------------------------------------------------------------------------------------
def test_the_sdk_functions_return_typed_replies(lsfs: StorageServer) -> None:
    agent, url = "sdk/files", lsfs.url
    mounted = sdk.mount(agent, "sdk-files", url)
    assert mounted.root == str((lsfs.data / "storage" / "sdk%2Ffiles" / "sdk-files").resolve())
    assert mounted.files == [] and mounted.result["files"] == 0  # a mount's files is a count, not retrieved files
    assert sdk.create_file(agent, "n.txt", url).version == 1
    written = sdk.write_file(agent, "n.txt", "alpha", url)
    assert (written.version, written.file_path, written.status_code) == (2, "n.txt", 200)
    assert written.message.startswith("wrote 5 bytes") and written.timings.turnaround >= 0
    sdk.write_file(agent, "n.txt", "beta", url)
    assert sdk.rollback_file(agent, "n.txt", 1, url).result["restored"] == 2
    assert sdk.read_file(agent, "n.txt", url).content == "alpha"
    assert sdk.read_file(agent, "n.txt", url, version=3).content == "beta"
    assert [v.kind for v in sdk.file_history(agent, "n.txt", url).versions] == ["rollback", "write", "write", "create"]
    assert [e.name for e in sdk.list_dir(agent, "", False, url).entries] == ["n.txt"]
    files = sdk.retrieve_file(agent, "the first letter of the greek alphabet", 1, None, url).files
    assert files[0].file_path == "n.txt" and files[0].snippet == "alpha"
    link = sdk.share_file(agent, "n.txt", url, expires_in=60)
    assert httpx.get(link.url).text == "alpha" and link.expires_at
    assert sdk.unshare_file(agent, link.url, url).result["revoked"] == 1
    assert sdk.delete_file(agent, "n.txt", url).version == 5
    sdk.create_dir(agent, "d/e", url)
    assert sdk.delete_dir(agent, "d", True, url).result["deleted"] == []


SDK_BAD: list[tuple[str, Callable[[str], Any], int, str]] = [
    ("escape", lambda url: sdk.write_file("sdk/bad", "../x.txt", "x", url), 403, "outside the mount"),
    ("missing", lambda url: sdk.read_file("sdk/bad", "absent.txt", url), 404, "no file absent.txt"),
    ("bad-version", lambda url: sdk.read_file("sdk/bad", "absent.txt", url, version=0), 400,
     "storage request: params.version: must be at least 1"),
    ("path-not-string", lambda url: sdk.write_file("sdk/bad", 5, "x", url), 422, "file_path: must be a string"),  # type: ignore[arg-type]
    ("empty-query", lambda url: sdk.retrieve_file("sdk/bad", "", 3, None, url), 400,
     "storage request: params.query_text: must not be empty"),
    ("too-many-results", lambda url: sdk.retrieve_file("sdk/bad", "q", 101, None, url), 400,
     "storage request: params.n: must be between 1 and 100, not 101"),
    ("zero-rollback", lambda url: sdk.rollback_file("sdk/bad", "a.txt", 0, url), 400, "n: must be at least 1"),
    ("zero-expiry", lambda url: sdk.share_file("sdk/bad", "a.txt", url, expires_in=0), 400, "expires_in"),
    ("mount-outside", lambda url: sdk.mount("sdk/bad", "/etc", url), 403, "may mount"),
    ("no-kernel", lambda url: sdk.read_file("sdk/bad", "a.txt", "http://127.0.0.1:9"), 0, "cannot reach the kernel"),
]


@pytest.mark.parametrize(("call", "status", "expected"), [(c, s, e) for _, c, s, e in SDK_BAD],
                         ids=[i for i, *_ in SDK_BAD])
def test_the_sdk_raises_one_error_type_with_the_status_and_why(
        lsfs: StorageServer, call: Callable[[str], Any], status: int, expected: str) -> None:
    with pytest.raises(AIOSError) as caught:
        call(lsfs.url)
    assert caught.value.status_code == status and expected in caught.value.message
    if status not in (0, 422):  # a refusal after parsing carries the typed reply too
        assert isinstance(caught.value.response, sdk.StorageResponse) and caught.value.response.error
