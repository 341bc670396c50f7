"""The web UI's files at /ui and the scheduler feed at /scheduler/events, over real HTTP on real kernels: the
shared test kernel (no tokens) and one that requires tokens (a data dir of its own)."""

from __future__ import annotations

import json
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import parse_qs, urlsplit
from typing import Any, Callable, Iterator

import httpx
import pytest

from conftest import KernelProcess
from ui_support import Secured, secured_kernel

CHAT = {"messages": [{"role": "user", "content": "Say hi."}], "max_new_tokens": 4, "temperature": 0}


def snapshots(client: httpx.Client, **params: Any) -> Iterator[dict[str, Any]]:
    """The feed's snapshots, as they come (a read timeout fails the test rather than hanging it)."""
    with client.stream("GET", "/scheduler/events", params=params, timeout=httpx.Timeout(60.0)) as reply:
        assert reply.status_code == 200, reply.read()
        assert reply.headers["content-type"].startswith("text/event-stream")
        event = None
        for line in reply.iter_lines():
            if line.startswith("event: "):
                event = line.removeprefix("event: ")
            elif line.startswith("data: "):
                assert event == "snapshot"
                yield json.loads(line.removeprefix("data: "))


def first(stream: Iterator[dict[str, Any]], condition: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
    return next(snapshot for snapshot in stream if condition(snapshot))


def syscalls_of(snapshot: dict[str, Any], agent: str) -> list[dict[str, Any]]:
    return [s for s in snapshot["syscalls"] if s["agent"] == agent]


# --- the page -------------------------------------------------------------------------------------------------

def test_the_ui_is_served_by_the_kernel_with_its_scripts(kernel: KernelProcess) -> None:
    root = kernel.client.get("/ui", follow_redirects=False)
    assert root.status_code == 307 and root.headers["location"] == "ui/"  # relative: /as/<token>/ui keeps its prefix
    page = kernel.client.get("/ui/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert '<script type="module" src="app.js">' in page.text and "default-src 'self'" in page.headers["content-security-policy"]
    for script in ("app.js", "api.js", "pages/chat.js", "pages/scheduler.js", "pages/storage.js"):
        reply = kernel.client.get(f"/ui/{script}")
        assert reply.status_code == 200 and "javascript" in reply.headers["content-type"], script


@pytest.mark.parametrize("path", ["/ui/no-such-page.js", "/ui/pages", "/ui/%2e%2e/app.py", "/ui/..%2fapp.py",
                                  "/ui/pages/%2e%2e/%2e%2e/auth.py", "/ui/" + "a" * 300],
                         ids=["missing", "folder", "dot-dot", "escaped-slash", "deep-dot-dot", "name-too-long"])
def test_nothing_but_the_ui_s_own_files_is_served(kernel: KernelProcess, path: str) -> None:
    reply = kernel.client.get(path)
    assert reply.status_code == 404 and "the web UI has no file" in reply.json()["detail"]


# --- the scheduler feed ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("params, field, why", [
    ({"limit": "0"}, "limit", "greater than or equal to 1"),
    ({"limit": "1001"}, "limit", "less than or equal to 1000"),
    ({"limit": "many"}, "limit", "valid integer"),
    ({"agent": ""}, "agent", "at least 1 character"),
    ({"agent": "a" * 257}, "agent", "at most 256 characters"),
])
def test_bad_feed_requests_are_refused_naming_the_parameter(kernel: KernelProcess, params: dict[str, str],
                                                            field: str, why: str) -> None:
    reply = kernel.client.get("/scheduler/events", params=params)
    assert reply.status_code == 422
    (problem,) = reply.json()["detail"]
    assert problem["loc"] == ["query", field] and why in problem["msg"]
    assert kernel.client.get("/status").json()["status"] == "ok"  # nothing else changed


def test_the_feed_pushes_a_syscall_from_queued_to_done_with_its_slices(kernel: KernelProcess) -> None:
    agent = "ui-test/feed"
    stream = snapshots(kernel.client, agent=agent)
    current = next(stream)  # the current state comes at once, before anything changes
    assert syscalls_of(current, agent) == [] and {"models", "queues", "time"} <= current.keys()
    (model,) = current["models"]
    assert {"running", "waiting", "preemptions", "policy", "max_batch"} <= model.keys()
    with ThreadPoolExecutor(1) as pool:
        reply = pool.submit(kernel.query, {"agent_name": agent, "query_type": "llm", "query_data": CHAT})
        done = first(stream, lambda s: any(c["status"] == "done" for c in syscalls_of(s, agent)))
        envelope = reply.result().json()
    stream.close()
    (syscall,) = syscalls_of(done, agent)
    assert syscall["kind"] == "llm" and syscall["model"] == model["name"] and syscall["preemptions"] == 0
    assert [tuple(s) for s in syscall["slices"]] == list(zip(envelope["start_times"], envelope["end_times"]))


def test_the_feed_holds_the_most_recent_syscalls_up_to_its_limit(kernel: KernelProcess) -> None:
    agent = "ui-test/limit"
    for n in range(3):
        body = {"operation_type": "write", "params": {"file_path": f"f{n}.txt", "content": str(n)}}
        assert kernel.query({"agent_name": agent, "query_type": "storage", "query_data": body}).json()["response"]["finished"]
    stream = snapshots(kernel.client, agent=agent, limit=2)
    listed = syscalls_of(next(stream), agent)
    stream.close()
    assert len(listed) == 2 and all(s["kind"] == "storage" and s["status"] == "done" for s in listed)
    assert listed[0]["id"] < listed[1]["id"]  # oldest first, the newest kept


# --- a kernel that requires tokens ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def secured(backend: Any, data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Secured]:
    with secured_kernel(data_dir, tmp_path_factory.mktemp("ui-secured")) as kernel:
        yield kernel


@pytest.mark.parametrize("path", ["/ui/", "/ui/app.js", "/ui/login.html", "/ui/login.js"])
def test_the_ui_s_files_are_served_without_a_token_and_its_api_calls_are_refused_without_one(
        secured: Secured, path: str) -> None:
    """The files hold no secret; what the page does goes through the API, which wants the token."""
    anonymous = secured.client(None)
    reply = anonymous.get(path)
    assert reply.status_code == 200 and "default-src 'self'" in reply.headers["content-security-policy"]
    assert anonymous.get("/access/permissions").status_code == 401
    assert anonymous.get("/scheduler/events").status_code == 401


@pytest.mark.parametrize("token", ["aios_forged", "%C3%A9t"], ids=["forged", "not-ascii"])
def test_a_token_in_the_address_that_is_not_valid_sends_the_browser_to_the_login_page_saying_so(
        secured: Secured, token: str) -> None:
    forged = secured.client(None).get(f"/as/{token}/ui/", follow_redirects=False)
    assert forged.status_code == 303
    location = urlsplit(forged.headers["location"])
    assert (location.path, parse_qs(location.query)) == ("/ui/login.html", {"reason": ["refused"]})
    assert secured.client(None).get("/ui/%00").status_code == 404  # not a 500 from the file lookup


def test_the_api_calls_of_the_page_carry_its_token_and_an_address_of_the_older_form_still_opens_it(
        secured: Secured) -> None:
    assert secured.client(secured.alice).get("/access/permissions").json()["agent_name"] == "alice"
    with secured.client(secured.alice).stream("GET", "/scheduler/events") as feed:
        assert feed.status_code == 200 and feed.headers["content-type"].startswith("text/event-stream")
    anonymous = secured.client(None)
    page = anonymous.get(f"/as/{secured.alice}/ui/")
    assert page.status_code == 200 and '<main id="main"' in page.text
    assert anonymous.get(f"/as/{secured.alice}/ui/api.js").status_code == 200


def test_an_agent_s_token_sees_only_its_own_syscalls_in_the_feed(secured: Secured) -> None:
    alice, admin = secured.client(secured.alice), secured.client(secured.admin)
    for client, agent in ((alice, "alice"), (admin, "bob")):
        body = {"agent_name": agent, "query_type": "storage",
                "query_data": {"operation_type": "write", "params": {"file_path": "x.txt", "content": agent}}}
        assert client.post("/query", json=body).json()["response"]["finished"]
    seen = {c["agent"] for c in next(snapshots(alice))["syscalls"]}
    assert seen == {"alice"}
    assert {"alice", "bob"} <= {c["agent"] for c in next(snapshots(admin))["syscalls"]}
    refused = alice.get("/scheduler/events", params={"agent": "bob"})
    assert refused.status_code == 403 and "sees its own syscalls" in refused.json()["detail"]


def test_a_kernel_stops_while_a_browser_watches_the_feed(secured: Secured) -> None:
    """uvicorn waits for every open response before it stops: the feed's streams end first."""
    stream = snapshots(secured.client(secured.admin))
    next(stream)
    ended = threading.Event()
    watcher = threading.Thread(target=lambda: (list(stream), ended.set()), daemon=True)
    watcher.start()
    assert secured.client(secured.admin).post("/core/cleanup").json()["status"] == "success"  # stops as on Ctrl-C
    assert secured.kernel.process.wait(timeout=60) == 0
    watcher.join(60)
    assert ended.is_set()
