"""The access manager over real HTTP, on a kernel that requires tokens: who may call at all, who may touch whose
files and which tools, grants to agents and groups and their revocation, permission requests, the audit log,
and a person's approval of irreversible operations (approve, deny, time out); memories the same way. (And the one
access route whose answer is everyone's, on the shared kernel that needs no tokens.)"""

from __future__ import annotations

import asyncio
import contextlib
import http.server
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest

from aios.access import address
from aios.access.approvals import Approvals
from aios.access.manager import ADMIN, MAX_PENDING_REQUESTS
from aios.config import load_config
from aios.errors import Forbidden
from aios.kernel import Kernel
from aios.sdk import AIOSError, audit_log, confirmations
from aios.syscall import SyscallKind
from conftest import KernelProcess, data_dir_of_its_own, start_kernel, stop_kernel
from test_cli import aios

CONFIG = {"access": {"auth": "required", "groups": {"team": ["carol"]}, "restricted_tools": ["aios/text_stats"],
                     "confirm": {"mode": "ask", "timeout_s": 3, "operations": ["delete", "remove_memory"]}}}


class Secured:
    """A kernel that requires tokens, with the administrator's token and one token per agent."""

    def __init__(self, kernel: KernelProcess, data_dir: Path) -> None:
        self.kernel, self.data_dir = kernel, data_dir
        self.admin_token = (data_dir / "access" / "admin.token").read_text().strip()
        self.tokens = {name: self.register(name) for name in ("alice", "bob", "carol")}

    def client(self, who: str | None) -> httpx.Client:
        token = self.admin_token if who == "admin" else self.tokens.get(who or "", None)
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.kernel.url, headers=headers, timeout=httpx.Timeout(120.0, connect=10.0))

    def register(self, name: str) -> str:
        with self.client("admin") as admin:
            reply = admin.post("/access/agents", json={"agent_name": name})
        assert reply.status_code == 200, reply.text
        return reply.json()["token"]

    def storage(self, who: str, operation: str, **params: Any) -> dict[str, Any]:
        return self.query(who, "storage", {"operation_type": operation, "params": params})

    def memory(self, who: str, operation: str, **params: Any) -> dict[str, Any]:
        return self.query(who, "memory", {"query_class": "memory", "operation_type": operation, "params": params})

    def query(self, who: str, query_type: str, query_data: dict[str, Any], agent: str | None = None) -> dict[str, Any]:
        with self.client(who) as client:
            reply = client.post("/query", json={"agent_name": agent or who, "query_type": query_type,
                                                "query_data": query_data})
        assert reply.status_code == 200, reply.text
        return reply.json()["response"]

    def route(self, who: str | None, method: str, path: str, **kwargs: Any) -> httpx.Response:
        with self.client(who) as client:
            return client.request(method, path, **kwargs)


@pytest.fixture(scope="module")
def secured(backend: Any, data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Secured]:
    """A kernel with a data dir of its own (its access records and files), sharing the converted model."""
    home = tmp_path_factory.mktemp("secured")
    own_data = data_dir_of_its_own(data_dir, home / "data")
    config = home / "config.yaml"
    config.write_text(json.dumps(CONFIG))
    kernel = start_kernel(["--config", str(config)], {**os.environ, "AIOS_DATA_DIR": str(own_data)},
                          home / "kernel.log")
    yield Secured(kernel, own_data)
    stop_kernel(kernel)


# --- authentication ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("route", ["/status", "/tools", "/core/llms/list", "/access/permissions", "/access/confirm"])
def test_without_a_token_every_route_is_refused_with_401(secured: Secured, route: str) -> None:
    reply = secured.route(None, "GET", route)
    assert reply.status_code == 401 and "requires a bearer token" in reply.json()["detail"]
    assert reply.headers["www-authenticate"] == "Bearer"


def test_a_kernel_that_requires_tokens_answers_under_any_name_but_not_other_sites_pages(secured: Secured) -> None:
    """Behind a proxy, under its public name: tokens guard it, so the Host it is reached by does not matter. A
    page of another site is still refused."""
    assert secured.route("alice", "GET", "/status", headers={"host": "aios.example.org"}).status_code == 200
    page = secured.route("alice", "GET", "/status", headers={"origin": "https://evil.example"})
    assert page.status_code == 403 and "the web page at 'https://evil.example'" in page.json()["detail"]
    openai = secured.route(None, "GET", f"/as/{secured.tokens['alice']}/v1/models",
                           headers={"origin": "https://evil.example"})  # refused in OpenAI's words under /v1/
    assert openai.status_code == 403 and "the web page at" in openai.json()["error"]["message"]


NOT_ASCII = "Bearer ét".encode("latin-1")  # as a client may send it: HTTP headers are bytes


@pytest.mark.parametrize(("path", "authorization"), [
    ("/status", b"Bearer aios_forged"),
    ("/status", NOT_ASCII),
    ("/v1/models", NOT_ASCII),
    ("/as/%C3%A9t/status", None),
], ids=["forged", "not-ascii", "not-ascii-openai", "not-ascii-in-the-address"])
def test_a_token_the_kernel_never_issued_is_refused_with_401(secured: Secured, path: str,
                                                             authorization: bytes | None) -> None:
    reply = httpx.get(secured.kernel.url + path, headers={"Authorization": authorization} if authorization else {})
    assert reply.status_code == 401 and "the bearer token is not valid" in reply.text


def test_the_openai_api_needs_a_token_too_and_refuses_in_openai_s_shape(secured: Secured) -> None:
    body = {"model": "HuggingFaceTB/SmolLM2-135M-Instruct", "max_tokens": 4,
            "messages": [{"role": "user", "content": "Hi"}]}
    for headers in ({}, {"Authorization": "Bearer sk-any-openai-key"}):
        reply = httpx.post(f"{secured.kernel.url}/v1/chat/completions", json=body, headers=headers)
        assert reply.status_code == 401 and reply.json()["error"]["type"] == "authentication_error"
    with secured.client("alice") as alice:
        assert alice.post("/v1/chat/completions", json=body).json()["object"] == "chat.completion"


def test_share_links_need_no_token(secured: Secured) -> None:
    assert secured.route(None, "GET", "/share/no-such-link").status_code == 404


def test_a_token_makes_syscalls_only_as_its_own_agent(secured: Secured) -> None:
    refused = secured.query("alice", "storage", {"operation_type": "list", "params": {}}, agent="bob")
    assert refused["status_code"] == 403 and "agent 'alice''s: it cannot make syscalls as 'bob'" in refused["error"]
    as_admin = secured.query("admin", "storage", {"operation_type": "list", "params": {}}, agent="bob")
    assert as_admin["status_code"] == 200


def test_an_aios_sdk_agent_puts_its_token_in_the_kernel_url(secured: Secured) -> None:
    """The AIOS SDK posts to ``{CEREBRUM_KERNEL_URL}/query`` and cannot add headers."""
    url = f"{secured.kernel.url}/as/{secured.tokens['alice']}"
    reply = httpx.post(f"{url}/query", json={"agent_name": "alice", "query_type": "tool", "query_data": {
        "query_class": "tool", "tool_calls": [{"name": "aios/calculator", "parameters": {"expression": "1+1"}}]}})
    assert reply.status_code == 200 and json.loads(reply.json()["response"]["response_message"])["result"] == 2


def test_revoking_a_token_stops_it_and_revoking_one_that_does_not_exist_is_a_404_that_audits_nothing(
        secured: Secured) -> None:
    token = secured.register("erin")
    assert secured.route("admin", "DELETE", "/access/agents/erin").json() == {"status": "success"}
    assert httpx.get(f"{secured.kernel.url}/tools", headers={"Authorization": f"Bearer {token}"}).status_code == 401
    for agent in ("erin", "nobody"):  # revoked already; never registered
        reply = secured.route("admin", "DELETE", f"/access/agents/{agent}")
        assert reply.status_code == 404
        assert reply.json()["detail"] == f"no agent '{agent}' is registered: `aios token list` shows those that are"
    entries = secured.route("admin", "GET", "/access/audit", params={"agent": "kernel/admin"}).json()["entries"]
    unregistered = [e["resource"] for e in entries if e["action"] == "unregister"]
    assert unregistered.count("agent:erin") == 1 and "agent:nobody" not in unregistered


def test_the_cli_fails_to_revoke_a_token_that_does_not_exist_saying_why(secured: Secured) -> None:
    revoked = subprocess.run([sys.executable, "-m", "aios", "token", "revoke", "nobody", "--url", secured.kernel.url,
                              "--admin-token", secured.admin_token], capture_output=True, text=True, timeout=60)
    assert revoked.returncode == 1 and revoked.stdout == ""
    assert ("the kernel answered 404: no agent 'nobody' is registered: `aios token list` shows those that are"
            in revoked.stderr)


def test_tokens_are_kept_only_as_hashes_and_shown_nowhere(secured: Secured) -> None:
    listed = secured.route("admin", "GET", "/access/agents").text
    database = (secured.data_dir / "access" / "access.db").read_bytes()
    with sqlite3.connect(secured.data_dir / "access" / "access.db") as db:
        hashes = [row[0] for row in db.execute("SELECT token_hash FROM agents")]
    assert len(hashes) >= 3 and all(len(h) == 64 for h in hashes)
    for token in secured.tokens.values():
        assert token not in listed and token.encode() not in database
        assert token not in secured.kernel.log.read_text()


@pytest.mark.parametrize(("who", "method", "path", "body"), [
    ("alice", "POST", "/access/agents", {"agent_name": "mallory"}),
    ("alice", "GET", "/access/agents", None),
    ("alice", "GET", "/access/approvals", None),
    ("alice", "POST", "/access/groups/team/members", {"agent_name": "alice"}),
], ids=["register", "list-agents", "approvals", "join-group"])
def test_administrator_routes_refuse_an_agent_s_token(secured: Secured, who: str, method: str, path: str,
                                                      body: Any) -> None:
    reply = secured.route(who, method, path, **({"json": body} if body else {}))
    assert reply.status_code == 403 and "administrator's token" in reply.json()["detail"]


# --- whose files, which tools -----------------------------------------------------------------------------------

def test_another_agent_s_files_need_its_grant_and_a_revoked_grant_stops_working(secured: Secured) -> None:
    assert secured.storage("alice", "write", file_path="plan.txt", content="Kyoto in April")["status_code"] == 200
    denied = {operation: secured.storage("bob", operation, owner="alice", **params) for operation, params in [
        ("read", {"file_path": "plan.txt"}), ("list", {}), ("history", {"file_path": "plan.txt"}),
        ("write", {"file_path": "plan.txt", "content": "mine now"}), ("create_file", {"file_path": "new.txt"}),
        ("rollback", {"file_path": "plan.txt"})]}
    for operation, reply in denied.items():
        needed = "read" if operation in ("read", "list", "history") else "write"
        assert reply["status_code"] == 403, operation
        assert f"agent 'bob' has no {needed} permission on files:alice" in reply["error"]
    grant = secured.route("alice", "POST", "/access/grants", json={
        "resource": "files:alice", "grantee": "bob", "permission": "read"}).json()["grant"]
    read = json.loads(secured.storage("bob", "read", owner="alice", file_path="plan.txt")["response_message"])
    assert read["content"] == "Kyoto in April"
    assert secured.storage("bob", "write", owner="alice", file_path="plan.txt", content="x")["status_code"] == 403
    assert secured.route("alice", "DELETE", f"/access/grants/{grant['id']}").status_code == 200
    assert secured.storage("bob", "read", owner="alice", file_path="plan.txt")["status_code"] == 403


def test_another_agent_s_memories_need_its_grant_and_a_revoked_grant_stops_working(secured: Secured) -> None:
    memory_id = secured.memory("alice", "add_memory", content="The spare key is under the blue pot.")["memory_id"]
    needs = {"get_memory": ("read", {"memory_id": memory_id}), "retrieve_memory": ("read", {"content": "spare key"}),
             "retrieve_memory_raw": ("read", {"content": "spare key"}),
             "update_memory": ("write", {"memory_id": memory_id, "content": "mine now"}),
             "remove_memory": ("write", {"memory_id": memory_id}), "add_memory": ("write", {"content": "planted"})}
    for operation, (needed, params) in needs.items():
        reply = secured.memory("bob", operation, owner="alice", **params)
        assert (reply["status_code"], reply["success"]) == (403, False), operation
        assert f"agent 'bob' has no {needed} permission on memory:alice" in reply["error"]
    unknown = secured.memory("bob", "get_memory", memory_id=memory_id)  # without owner: bob's own, where it is not
    assert unknown["status_code"] == 404 and unknown["content"] is None
    grant = secured.route("alice", "POST", "/access/grants", json={
        "resource": "memory:alice", "grantee": "bob", "permission": "read"}).json()["grant"]
    assert secured.memory("bob", "get_memory", owner="alice", memory_id=memory_id)["content"] == (
        "The spare key is under the blue pot.")
    found = secured.memory("bob", "retrieve_memory", owner="alice", content="where is the spare key?", k=1)
    assert [hit["memory_id"] for hit in found["search_results"]] == [memory_id]
    assert secured.memory("bob", "update_memory", owner="alice", memory_id=memory_id,
                          content="mine now")["status_code"] == 403
    assert secured.route("alice", "DELETE", f"/access/grants/{grant['id']}").status_code == 200
    assert secured.memory("bob", "get_memory", owner="alice", memory_id=memory_id)["status_code"] == 403
    kept = secured.memory("alice", "get_memory", memory_id=memory_id)
    assert kept["content"] == "The spare key is under the blue pot."  # no denied write reached it


def test_a_grant_to_a_group_reaches_its_members_only(secured: Secured) -> None:
    secured.storage("alice", "write", file_path="team.txt", content="v1")
    secured.route("alice", "POST", "/access/grants", json={"resource": "files:alice", "grantee": "group:team",
                                                           "permission": "write"})
    assert secured.storage("carol", "write", owner="alice", file_path="team.txt", content="v2")["status_code"] == 200
    assert secured.storage("bob", "write", owner="alice", file_path="team.txt", content="v3")["status_code"] == 403
    assert json.loads(secured.storage("alice", "read", file_path="team.txt")["response_message"])["content"] == "v2"
    versions = json.loads(secured.storage("alice", "history", file_path="team.txt")["response_message"])["versions"]
    assert [(v["version"], v["agent"]) for v in versions] == [(2, "carol"), (1, "alice")]  # who made each


def test_a_restricted_tool_needs_a_grant_from_the_administrator(secured: Secured) -> None:
    call = {"query_class": "tool", "tool_calls": [{"name": "aios/text_stats", "parameters": {"text": "a b"}}]}
    refused = secured.query("bob", "tool", call)
    assert refused["status_code"] == 403 and "has no call permission on tool:aios/text_stats" in refused["error"]
    by_alice = secured.route("alice", "POST", "/access/grants", json={"resource": "tool:aios/text_stats",
                                                                      "grantee": "bob", "permission": "call"})
    assert by_alice.status_code == 403
    secured.route("admin", "POST", "/access/grants", json={"resource": "tool:aios/text_stats", "grantee": "bob",
                                                           "permission": "call"})
    assert json.loads(secured.query("bob", "tool", call)["response_message"])["words"] == 2
    open_tool = {"query_class": "tool", "tool_calls": [{"name": "aios/calculator", "parameters": {"expression": "2"}}]}
    assert secured.query("carol", "tool", open_tool)["status_code"] == 200  # tools not restricted: anyone


def test_a_permission_request_becomes_a_grant_when_the_owner_approves(secured: Secured) -> None:
    secured.storage("alice", "write", file_path="notes.txt", content="secret-ish")
    asked = secured.route("carol", "POST", "/access/requests", json={
        "resource": "files:alice", "permission": "read", "note": "for the weekly report"}).json()["request"]
    inbox = secured.route("alice", "GET", "/access/permissions").json()["requests"]
    assert any(r["id"] == asked["id"] and r["requester"] == "carol" and r["status"] == "pending" for r in inbox)
    answered = secured.route("alice", "POST", f"/access/requests/{asked['id']}", json={"approve": True}).json()
    assert answered["request"]["status"] == "granted"
    assert secured.storage("carol", "read", owner="alice", file_path="notes.txt")["status_code"] == 200
    again = secured.route("alice", "POST", f"/access/requests/{asked['id']}", json={"approve": False})
    assert again.status_code == 409
    assert again.json()["detail"] == f"permission request {asked['id']} was already answered: it is granted"


def newcomers(secured: Secured, *names: str) -> None:
    """Agents of their own for a test whose counts another test's requests or grants would spoil."""
    for name in names:
        secured.tokens[name] = secured.register(name)


def test_of_two_answers_at_once_only_one_counts_and_the_other_learns_what_the_request_became(
        secured: Secured) -> None:
    newcomers(secured, "owner-race", "asker-race")

    async def approve_and_decline(request_id: int) -> list[httpx.Response]:
        headers = {"Authorization": f"Bearer {secured.tokens['owner-race']}"}
        async with httpx.AsyncClient(base_url=secured.kernel.url, headers=headers, timeout=60) as owner:
            return await asyncio.gather(*(owner.post(f"/access/requests/{request_id}", json={"approve": approve})
                                          for approve in (True, False)))

    for _ in range(10):  # each round a fresh race: the answers arrive together
        asked = secured.route("asker-race", "POST", "/access/requests", json={
            "resource": "memory:owner-race", "permission": "read"}).json()["request"]
        replies = asyncio.run(approve_and_decline(asked["id"]))
        assert sorted(reply.status_code for reply in replies) == [200, 409], [reply.text for reply in replies]
        (won,) = [reply.json()["request"]["status"] for reply in replies if reply.status_code == 200]
        (lost,) = [reply.json()["detail"] for reply in replies if reply.status_code == 409]
        assert lost == f"permission request {asked['id']} was already answered: it is {won}"
        grants = secured.route("owner-race", "GET", "/access/permissions").json()["grants"]
        assert bool(grants) == (won == "granted")  # the grant exists exactly when the request says granted
        for grant in grants:
            secured.route("owner-race", "DELETE", f"/access/grants/{grant['id']}")


def test_asking_again_while_a_request_waits_answers_with_the_waiting_one(secured: Secured) -> None:
    newcomers(secured, "owner-again", "asker-again")
    ask = {"resource": "files:owner-again", "permission": "read"}
    first, *again = [secured.route("asker-again", "POST", "/access/requests", json={**ask, "note": f"try {n}"})
                     .json()["request"] for n in range(3)]
    assert all(request == first for request in again) and first["note"] == "try 0"
    inbox = secured.route("owner-again", "GET", "/access/permissions").json()["requests"]
    assert [request["id"] for request in inbox] == [first["id"]]
    secured.route("owner-again", "POST", f"/access/requests/{first['id']}", json={"approve": False})
    after_the_answer = secured.route("asker-again", "POST", "/access/requests", json=ask).json()["request"]
    assert after_the_answer["id"] != first["id"] and after_the_answer["status"] == "pending"


def test_an_agent_with_too_many_requests_waiting_is_refused_until_some_are_answered(secured: Secured) -> None:
    newcomers(secured, "asker-many")

    def ask(owner: int) -> httpx.Response:
        return secured.route("asker-many", "POST", "/access/requests",
                             json={"resource": f"files:owner-{owner}", "permission": "read"})

    assert all(ask(owner).status_code == 200 for owner in range(MAX_PENDING_REQUESTS))
    refused = ask(MAX_PENDING_REQUESTS)
    assert refused.status_code == 409 and refused.json()["detail"] == (
        f"agent 'asker-many' already has {MAX_PENDING_REQUESTS} permission requests waiting for an answer: ask "
        "again once their owners have answered some")
    assert ask(0).status_code == 200  # asking again for one that waits is no new request
    first = ask(0).json()["request"]
    secured.route("admin", "POST", f"/access/requests/{first['id']}", json={"approve": False})
    assert ask(MAX_PENDING_REQUESTS).status_code == 200


def test_any_agent_learns_which_operations_and_tools_the_kernel_asks_a_person_about(secured: Secured) -> None:
    said = secured.route("bob", "GET", "/access/confirm").json()
    assert (said["mode"], said["operations"]) == ("ask", ["delete", "remove_memory"])  # as configured
    assert "aios/delete_file" in said["tools"]  # a storage delete
    assert "aios/rollback_file" not in said["tools"] and "aios/share_file" not in said["tools"]  # not configured


def test_the_sdk_s_confirmations_say_what_the_route_says(secured: Secured) -> None:
    url = f"{secured.kernel.url}/as/{secured.tokens['bob']}"
    said = secured.route("bob", "GET", "/access/confirm").json()
    assert confirmations("bob", url) == {key: said[key] for key in ("mode", "operations", "tools")}


@pytest.mark.parametrize(("base", "status", "fragment"), [
    ("kernel", 401, "requires a bearer token"),  # no token in the URL
    ("stranger", 401, ""),  # a token the kernel never issued
    ("http://127.0.0.1:9", 0, "cannot reach"),
])
def test_the_sdk_s_confirmations_raise_aios_errors(secured: Secured, base: str, status: int, fragment: str) -> None:
    url = {"kernel": secured.kernel.url, "stranger": f"{secured.kernel.url}/as/not-a-token"}.get(base, base)
    with pytest.raises(AIOSError) as caught:
        confirmations("bob", url)
    assert caught.value.status_code == status and fragment in caught.value.message


def test_the_audit_log_records_denials_and_grants_and_each_agent_sees_its_own(secured: Secured) -> None:
    secured.storage("bob", "read", owner="alice", file_path="plan.txt")
    everyone = secured.route("admin", "GET", "/access/audit", params={"decision": "denied"}).json()["entries"]
    assert any(e["agent"] == "bob" and e["resource"] == "files:alice" for e in everyone)
    grants = secured.route("admin", "GET", "/access/audit", params={"agent": "alice"}).json()["entries"]
    assert any(e["action"] == "grant" and e["decision"] == "granted" for e in grants)
    own = secured.route("bob", "GET", "/access/audit").json()["entries"]
    assert own and all(e["agent"] == "bob" for e in own)
    assert secured.route("bob", "GET", "/access/audit", params={"agent": "alice"}).status_code == 403


def test_the_sdk_s_audit_log_sends_the_decision_as_one_value(secured: Secured) -> None:
    secured.storage("bob", "read", owner="alice", file_path="plan.txt")  # denied: bob has no grant
    url = f"{secured.kernel.url}/as/{secured.tokens['bob']}"
    denied = audit_log("bob", url, decision="denied")
    assert denied and all(e["agent"] == "bob" and e["decision"] == "denied" for e in denied)
    # Not a second parameter (that asked for alice's entries, and was refused with 403): no entry has it.
    assert audit_log("bob", url, decision="denied&agent=alice") == []


BAD_ACCESS_REQUESTS = [
    # (id, who, method, path, body, status, text)
    ("unknown-resource-kind", "alice", "POST", "/access/grants", {"resource": "disk:alice", "grantee": "bob",
                                                                  "permission": "read"}, 400, "must be files:<agent>"),
    ("permission-for-kind", "alice", "POST", "/access/grants", {"resource": "files:alice", "grantee": "bob",
                                                                "permission": "call"}, 400, "must be read or write"),
    ("not-the-owner", "bob", "POST", "/access/grants", {"resource": "files:alice", "grantee": "bob",
                                                        "permission": "write"}, 403, "only 'alice' can grant"),
    ("bad-permission", "alice", "POST", "/access/grants", {"resource": "files:alice", "grantee": "bob",
                                                           "permission": "own"}, 422, "permission"),
    ("empty-grantee", "alice", "POST", "/access/grants", {"resource": "files:alice", "grantee": "",
                                                          "permission": "read"}, 422, "grantee"),
    ("empty-group", "alice", "POST", "/access/grants", {"resource": "files:alice", "grantee": "group:",
                                                        "permission": "read"}, 400, "must be an agent name or group"),
    ("unknown-field", "alice", "POST", "/access/grants", {"resource": "files:alice", "grantee": "bob",
                                                          "permission": "read", "forever": True}, 422, "forever"),
    ("revoke-unknown", "alice", "DELETE", "/access/grants/999999", None, 404, "no grant 999999 made by 'alice'"),
    ("revoke-not-a-number", "alice", "DELETE", "/access/grants/first", None, 422, "grant_id"),
    ("answer-unknown", "alice", "POST", "/access/requests/999999", {"approve": True}, 404,
     "no permission request 999999 to 'alice'"),
    ("answer-not-bool", "alice", "POST", "/access/requests/1", {"approve": "yes please"}, 422, "approve"),
    ("revoke-past-64-bits", "alice", "DELETE", f"/access/grants/{2**64}", None, 422,
     "Input should be less than or equal to 9223372036854775807"),
    ("answer-past-64-bits", "alice", "POST", f"/access/requests/{2**64}", {"approve": True}, 422,
     "Input should be less than or equal to 9223372036854775807"),
    ("approve-past-64-bits", "admin", "POST", f"/access/approvals/{2**64}", {"approve": True}, 422,
     "Input should be less than or equal to 9223372036854775807"),
    ("revoke-zero", "alice", "DELETE", "/access/grants/0", None, 422,
     "Input should be greater than or equal to 1"),
    ("note-too-long", "bob", "POST", "/access/requests", {"resource": "files:alice", "permission": "read",
                                                          "note": "x" * 2001}, 422, "at most 2000 characters"),
    ("approve-unknown", "admin", "POST", "/access/approvals/999999", {"approve": True}, 404, "no pending approval"),
    ("register-admin-name", "admin", "POST", "/access/agents", {"agent_name": "kernel/admin"}, 400,
     "the administrator's identity"),
    ("revoke-unknown-agent", "admin", "DELETE", "/access/agents/nobody", None, 404,
     "no agent 'nobody' is registered"),
    ("remove-not-a-member", "admin", "DELETE", "/access/groups/team/members/nobody", None, 404,
     "'nobody' is not a member of group 'team'"),
    ("audit-bad-limit", "alice", "GET", "/access/audit?limit=0", None, 422, "limit"),
    ("confirm-not-get", "alice", "POST", "/access/confirm", {"operations": []}, 405, "Method Not Allowed"),
    ("confirm-unknown-path", "alice", "GET", "/access/confirm/delete", None, 404, "Not Found"),
]


@pytest.mark.parametrize(("who", "method", "path", "body", "status", "text"), [b[1:] for b in BAD_ACCESS_REQUESTS],
                         ids=[b[0] for b in BAD_ACCESS_REQUESTS])
def test_bad_access_requests_get_a_clear_error_and_change_nothing(secured: Secured, who: str, method: str, path: str,
                                                                  body: Any, status: int, text: str) -> None:
    before = secured.route("alice", "GET", "/access/permissions").json()["grants"]
    reply = secured.route(who, method, path, **({"json": body} if body is not None else {}))
    assert reply.status_code == status, reply.text
    assert text in json.dumps(reply.json()["detail"])
    assert secured.route("alice", "GET", "/access/permissions").json()["grants"] == before


# --- a kernel that needs no tokens (the shared loopback one) ----------------------------------------------------

def test_without_tokens_anyone_learns_what_the_kernel_counts_as_irreversible_without_naming_itself(
        kernel: KernelProcess) -> None:
    anonymous = kernel.client.get("/access/confirm")
    assert anonymous.status_code == 200, anonymous.text
    said = anonymous.json()
    assert said["mode"] == "off" and "aios/delete_file" in said["tools"]  # the defaults
    assert kernel.client.get("/access/confirm", headers={"X-AIOS-Agent": "alice"}).json() == said  # no matter who
    assert kernel.client.get("/access/permissions").status_code == 401  # a route about the caller still asks


def test_without_tokens_no_syscall_acts_as_the_administrator(kernel: KernelProcess) -> None:
    """The administrator's name reaches every agent's files and memories without a grant: without its token, a
    body naming it is refused, and nothing of the owner's is read."""
    def storage(agent: str, operation: str, **params: Any) -> dict[str, Any]:
        return kernel.query({"agent_name": agent, "query_type": "storage",
                             "query_data": {"operation_type": operation, "params": params}}).json()["response"]

    assert storage("owner/one", "write", file_path="mine.txt", content="mine")["status_code"] == 200
    reply = storage(ADMIN, "read", file_path="mine.txt", owner="owner/one")
    assert reply["status_code"] == 403 and "the administrator's identity" in reply["error"]
    assert reply["response_message"] is None


def test_without_tokens_an_agent_that_has_a_token_is_acted_as_only_with_it(kernel: KernelProcess,
                                                                          data_dir: Path) -> None:
    """On a kernel that needs no tokens a request is the agent it names, except one whose owner gave it a token:
    then a syscall, an /access route or a /v1 chat naming it without the token is refused (401, saying how to
    send it), and nothing of its own is read or written. Revoking the token gives the name back."""
    admin = {"Authorization": f"Bearer {(data_dir / 'access' / 'admin.token').read_text().strip()}"}
    name = "owner/tokened"
    token = kernel.client.post("/access/agents", json={"agent_name": name}, headers=admin).json()["token"]
    mine = {"agent_name": name, "query_type": "storage",
            "query_data": {"operation_type": "write", "params": {"file_path": "kept.txt", "content": "mine"}}}
    try:
        assert kernel.client.post("/query", json=mine, headers={"Authorization": f"Bearer {token}"}).json()[
            "response"]["status_code"] == 200
        reading = {**mine, "query_data": {"operation_type": "read", "params": {"file_path": "kept.txt"}}}
        refused = kernel.query(reading).json()["response"]
        assert refused["status_code"] == 401 and refused["response_message"] is None
        assert f"agent {name!r} has a token: requests as {name!r} must send it" in refused["error"]
        assert kernel.client.get("/access/permissions", headers={"X-AIOS-Agent": name}).status_code == 401
        chat = kernel.client.post("/v1/chat/completions", json={"model": "any", "user": name, "messages": [
            {"role": "user", "content": "hi"}]})
        assert chat.status_code == 401 and "API key" in chat.json()["error"]["message"]
    finally:
        assert kernel.client.delete(f"/access/agents/{name}", headers=admin).status_code == 200
    assert json.loads(kernel.query(reading).json()["response"]["response_message"])["content"] == "mine"


def test_without_tokens_an_agent_that_has_a_token_is_run_and_its_runs_seen_only_with_it(
        kernel: KernelProcess, data_dir: Path) -> None:
    """Its code would run with its rights, and its runs' results and logs are its own: without its token, a
    submission of it (from a path or the hub) and an upload under its name are refused, and its runs are left
    out of the listing and not found. Revoking the token gives them back."""
    admin = {"Authorization": f"Bearer {(data_dir / 'access' / 'admin.token').read_text().strip()}"}
    whoami = {"agent_id": str(Path(__file__).parent / "fixtures" / "agents" / "whoami"), "agent_config": {"task": "x"}}
    token = kernel.client.post("/access/agents", json={"agent_name": "tests/whoami"}, headers=admin).json()["token"]
    try:
        refused = kernel.client.post("/agents/submit", json=whoami)
        assert refused.status_code == 401 and "agent 'tests/whoami' has a token" in refused.json()["detail"]
        upload = kernel.client.post("/cerebrum/upload", json={"author": "tests", "name": "whoami", "version": "1.0.0",
                                                              "files": []})
        assert upload.status_code == 401 and not (data_dir / "hub" / "agents" / "tests").exists()
        run = kernel.client.post("/agents/submit", json=whoami, headers=admin).json()["execution_id"]
        listed = [process["execution_id"] for process in kernel.client.get("/agents/ps").json()["processes"]]
        assert run not in listed
        assert kernel.client.get(f"/agents/{run}/logs").status_code == 404
        assert kernel.client.post(f"/agents/{run}/cancel").status_code == 404
        ended = kernel.client.get(f"/agents/{run}/status", params={"wait": 60},
                                  headers={"Authorization": f"Bearer {token}"})
        assert ended.status_code == 200 and ended.json()["status"] == "completed", ended.text
    finally:
        assert kernel.client.delete("/access/agents/tests/whoami", headers=admin).status_code == 200
    assert kernel.client.get(f"/agents/{run}/status").json()["status"] == "completed"


# --- a person's approval ----------------------------------------------------------------------------------------

def delete_in_background(secured: Secured, file_path: str,
                         agent: str = "alice") -> tuple[threading.Thread, list[dict[str, Any]]]:
    secured.storage(agent, "write", file_path=file_path, content="precious")
    result: list[dict[str, Any]] = []
    thread = threading.Thread(target=lambda: result.append(secured.storage(agent, "delete", file_path=file_path)))
    thread.start()
    return thread, result


def pending_for(secured: Secured, key: str, value: str) -> dict[str, Any]:
    """The approval an operation whose ``key`` is ``value`` is waiting on (the kernel holds this request until
    one arrives)."""
    while True:
        for approval in secured.route("admin", "GET", "/access/approvals", params={"wait": 20}).json()["approvals"]:
            if approval["detail"].get(key) == value:
                return approval


@pytest.mark.parametrize("approve", [True, False], ids=["approved", "denied"])
def test_a_delete_waits_for_a_person_and_happens_only_if_approved(secured: Secured, approve: bool) -> None:
    name = f"approve-{approve}.txt"
    thread, result = delete_in_background(secured, name)
    approval = pending_for(secured, "file_path", name)
    assert approval["agent"] == "alice" and approval["action"] == "storage delete"
    secured.route("admin", "POST", f"/access/approvals/{approval['id']}", json={"approve": approve})
    thread.join(60)
    (reply,) = result
    if approve:
        assert reply["status_code"] == 200
        assert secured.storage("alice", "read", file_path=name)["status_code"] == 404
    else:
        assert reply["status_code"] == 403 and "was not approved: denied by the administrator" in reply["error"]
        assert secured.storage("alice", "read", file_path=name)["status_code"] == 200


def test_an_answered_approval_is_no_longer_offered() -> None:
    """`aios approvals` polls again right after it answers: the answer takes the approval off the list at once,
    before the waiting operation wakes, or the person would be asked about it twice."""
    async def main() -> list[Any]:
        approvals = Approvals("ask", 60, audit=lambda *record: asyncio.sleep(0))
        operation = asyncio.create_task(approvals.confirm("alice", "storage delete", {"file_path": "x.txt"}))
        (offered,) = await approvals.waiting(60)  # wakes when the operation asks
        approvals.answer(offered["id"], True, by="the administrator")
        listed = await approvals.waiting(0)
        await asyncio.wait_for(operation, 60)  # approved: it goes ahead
        return listed

    assert asyncio.run(main()) == []


def kernel_asking_about_deletes(data_dir: Path, **tools: Any) -> Kernel:
    """A kernel in this process, with no model, whose deletes wait for a person (``tools``: its tools section)."""
    (data_dir / "config.yaml").write_text(json.dumps({"storage": {"use_vector_db": False}, "tools": tools,
                                                       "access": {"confirm": {"mode": "ask", "timeout_s": 600,
                                                                              "operations": ["delete"]}}}))
    return Kernel(load_config(data_dir / "config.yaml", env={"AIOS_DATA_DIR": str(data_dir)}), [])


def test_operations_waiting_for_a_person_hold_up_no_other_agent(tmp_path: Path) -> None:
    """Storage serves four syscalls at a time. Five deletes waiting for a person's approval (of files that need
    not even exist) used to take all four, and every agent's files waited until someone answered; now they wait
    before they are queued, and another agent writes and reads its files meanwhile. One agent may have at most
    eight operations waiting: a ninth is refused at once."""
    kernel = kernel_asking_about_deletes(tmp_path)

    def storage(agent: str, operation: str, **params: Any) -> Any:
        return kernel.call(SyscallKind.STORAGE, agent, {"operation_type": operation, "params": params})

    async def main() -> tuple[list[Any], Any, list[Any]]:
        await kernel.start()
        try:
            approvals = kernel.access.approvals
            deletes = [asyncio.create_task(storage("mallory", "delete", file_path=f"nope{n}.txt")) for n in range(8)]
            async with approvals._arrived:  # notified as each asks (a bound: before, only four ever could)
                await asyncio.wait_for(approvals._arrived.wait_for(lambda: len(approvals.pending) == 8), 60)
            with pytest.raises(Forbidden, match="agent 'mallory' already has 8 operations waiting for one"):
                await asyncio.wait_for(storage("mallory", "delete", file_path="nope8.txt"), 60)
            await asyncio.wait_for(storage("dave", "write", file_path="d.txt", content="mine"), 60)
            read = await asyncio.wait_for(storage("dave", "read", file_path="d.txt"), 60)
            waiting = await approvals.waiting(0)
            for approval in waiting:
                approvals.answer(approval["id"], False, by="the test")
            return waiting, read, await asyncio.gather(*deletes, return_exceptions=True)
        finally:
            await kernel.stop()

    waiting, read, denied = asyncio.run(main())
    assert len(waiting) == 8 and json.loads(read.value.response_message)["content"] == "mine"
    assert all(isinstance(error, Forbidden) and "was not approved: denied by the test" in str(error) for error in denied)


@pytest.mark.parametrize("approve", [True, False], ids=["approved", "denied"])
def test_a_file_tool_is_asked_about_before_it_runs_and_once(tmp_path: Path, approve: bool) -> None:
    """``aios/delete_file`` makes a storage delete. It used to ask inside the running tool call: the person's
    time counted against the tool's timeout (10 s here), the call failed with a timeout, and a later answer found
    nothing waiting. Now the tool call is asked about before it runs, and its delete is not asked about again."""
    kernel = kernel_asking_about_deletes(tmp_path, default_timeout_s=10)
    delete = [{"name": "aios/delete_file", "parameters": {"file_path": "precious.txt"}}]

    async def main() -> tuple[list[Any], dict[str, int], Any, Any]:
        await kernel.start()
        try:
            await kernel.call(SyscallKind.STORAGE, "alice", {"operation_type": "write",
                                                             "params": {"file_path": "precious.txt", "content": "x"}})
            call = asyncio.create_task(kernel.call(SyscallKind.TOOL, "alice", delete))
            approvals = kernel.access.approvals
            waiting = await approvals.waiting(60)  # wakes when the call asks
            running = dict(kernel.tools.runner.running)  # nothing runs yet: no timeout can pass meanwhile
            approvals.answer(waiting[0]["id"], approve, by="the test")
            done = await asyncio.wait_for(call, 60)
            read = await kernel.submit(SyscallKind.STORAGE, "alice", {"operation_type": "read",
                                                                      "params": {"file_path": "precious.txt"}})
            await read.wait()
            return waiting, running, done.value, read
        finally:
            await kernel.stop()

    waiting, running, reply, read = asyncio.run(main())
    assert [(w["agent"], w["action"], w["detail"]) for w in waiting] == [
        ("alice", "tool aios/delete_file", {"file_path": "precious.txt"})]
    assert not any(running.values())
    if approve:  # deleted without a second question (one would have waited 600 s, and the call timed out)
        assert reply.status_code == 200 and reply.error is None
        assert read.error is not None and read.error.status_code == 404
    else:
        assert reply.status_code == 403 and "was not approved: denied by the test" in reply.error
        assert json.loads(read.value.response_message)["content"] == "x"


def test_removing_a_memory_waits_for_a_person_too(secured: Secured) -> None:
    memory_id = secured.memory("alice", "add_memory", content="Grandma's recipe: two eggs, a cup of flour.")["memory_id"]
    result: list[dict[str, Any]] = []
    thread = threading.Thread(target=lambda: result.append(secured.memory("alice", "remove_memory",
                                                                          memory_id=memory_id)))
    thread.start()
    approval = pending_for(secured, "memory_id", memory_id)
    assert approval["agent"] == "alice" and approval["action"] == "memory remove_memory"
    secured.route("admin", "POST", f"/access/approvals/{approval['id']}", json={"approve": False})
    thread.join(60)
    assert result[0]["status_code"] == 403 and "was not approved" in result[0]["error"]
    assert secured.memory("alice", "get_memory", memory_id=memory_id)["success"]


def test_an_unanswered_approval_times_out_to_deny(secured: Secured) -> None:
    thread, result = delete_in_background(secured, "unanswered.txt")
    thread.join(60)
    (reply,) = result
    assert reply["status_code"] == 403 and "nobody answered within 3 s" in reply["error"]
    assert secured.storage("alice", "read", file_path="unanswered.txt")["status_code"] == 200


def test_operations_waiting_for_a_person_are_denied_when_the_kernel_stops() -> None:
    """They wait in their callers' requests, which the server waits for before it stops: they end at once, denied,
    and later ones are denied without waiting."""
    async def main() -> tuple[BaseException | None, BaseException | None]:
        approvals = Approvals("ask", 3600, audit=lambda *record: asyncio.sleep(0))
        operation = asyncio.create_task(approvals.confirm("alice", "storage delete", {"file_path": "x.txt"}))
        await approvals.waiting(60)  # wakes when the operation asks
        await approvals.close()
        later = approvals.confirm("alice", "storage delete", {"file_path": "y.txt"})
        return (await asyncio.wait_for(asyncio.gather(operation, return_exceptions=True), 60))[0], \
            (await asyncio.wait_for(asyncio.gather(later, return_exceptions=True), 60))[0]

    waiting, later = asyncio.run(main())
    assert isinstance(waiting, Forbidden) and "the kernel stopped before anyone answered" in str(waiting)
    assert isinstance(later, Forbidden) and "the kernel is stopping" in str(later)


def test_a_long_poll_for_approvals_answers_at_once_when_the_kernel_stops() -> None:
    """The server waits for every open request before it stops: a UI or `aios approvals` waiting for approvals
    (up to a minute) must not hold the kernel's exit. On close the waiting poll answers, and later ones do not
    wait. (A poll that kept waiting would fail the hang guard, not pass slowly.)"""
    async def main() -> tuple[list[Any], list[Any]]:
        approvals = Approvals("ask", 3, audit=lambda *record: asyncio.sleep(0))
        poll = asyncio.create_task(approvals.waiting(3600))
        await asyncio.sleep(0)  # let the poll start waiting
        await approvals.close()
        return await asyncio.wait_for(poll, 60), await asyncio.wait_for(approvals.waiting(3600), 60)

    assert asyncio.run(main()) == ([], [])


def answered_at_the_prompt(secured: Secured, thread: threading.Thread, answer: str) -> str:
    """What `aios approvals` printed, answering ``answer`` to the operation ``thread`` waits on."""
    prompt = subprocess.Popen([sys.executable, "-m", "aios", "approvals", "--url", secured.kernel.url,
                               "--admin-token", secured.admin_token], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    try:
        prompt.stdin.write(f"{answer}\n")  # type: ignore[union-attr]
        prompt.stdin.flush()  # type: ignore[union-attr]
        thread.join(60)
    finally:
        prompt.terminate()
    return prompt.communicate(timeout=30)[0]


def test_the_approvals_prompt_answers_from_the_terminal(secured: Secured) -> None:
    thread, result = delete_in_background(secured, "prompted.txt")
    output = answered_at_the_prompt(secured, thread, "y")
    assert result[0]["status_code"] == 200
    assert '"alice" wants to "storage delete"' in output and "approved" in output


def test_the_approvals_prompt_shows_what_an_agent_wrote_with_its_control_characters_escaped(
        secured: Secured) -> None:
    """A name that would erase the line and write another request in its place (then hide what follows) is shown
    as written, so the person declines what they see."""
    name = 'mallory\x1b[2K\r[5] mallory wants to storage delete: {"file_path": "scratch.tmp"}\x1b[8m\u202e'
    newcomers(secured, name)
    thread, result = delete_in_background(secured, "important.db", agent=name)
    output = answered_at_the_prompt(secured, thread, "n")
    assert "was not approved" in result[0]["error"]
    shown = '"mallory\\u001b[2K\\r[5] mallory wants to storage delete: {\\"file_path\\": \\"scratch.tmp\\"}' \
            '\\u001b[8m\\u202e" wants to "storage delete": {"owner": '
    assert shown in output and "important.db" in output
    assert not {"\x1b", "\r", "\u202e"} & set(output)


def test_an_agent_token_from_the_cli_works_for_syscalls(secured: Secured) -> None:
    made = subprocess.run([sys.executable, "-m", "aios", "token", "create", "dave", "--url", secured.kernel.url,
                           "--admin-token", secured.admin_token], capture_output=True, text=True, timeout=60)
    assert made.returncode == 0, made.stderr
    token = made.stdout.strip()
    reply = httpx.post(f"{secured.kernel.url}/query", headers={"Authorization": f"Bearer {token}"}, json={
        "agent_name": "dave", "query_type": "storage", "query_data": {"operation_type": "list", "params": {}}})
    assert reply.json()["response"]["status_code"] == 200


@pytest.mark.parametrize(("name", "decoy"), [("hunt/x?y", "hunt/x"), ("hunt/x#y", "hunt/x"), ("hunt/x%3Fy", "hunt/x?y"),
                                            ("hunt/a/../x", "hunt/x")],
                         ids=["question-mark", "hash", "percent", "dot-dot"])
def test_the_cli_revokes_the_token_of_the_agent_it_names_whatever_its_name_holds(secured: Secured, name: str,
                                                                                 decoy: str) -> None:
    """Put into the URL as it is, each name would name the decoy (`hunt/x?y` revoked hunt/x)."""
    newcomers(secured, name, decoy)
    revoked = subprocess.run([sys.executable, "-m", "aios", "token", "revoke", name, "--url", secured.kernel.url,
                              "--admin-token", secured.admin_token], capture_output=True, text=True, timeout=60)
    assert revoked.returncode == 0 and revoked.stdout == f"revoked the token of {name}\n", revoked.stderr
    agents = {agent["agent_name"] for agent in secured.route("admin", "GET", "/access/agents").json()["agents"]}
    assert name not in agents and decoy in agents


def test_the_agents_commands_send_the_administrator_s_token_of_the_data_dir_or_the_one_given(
        secured: Secured) -> None:
    echo = Path(__file__).parent / "fixtures" / "agents" / "echo"
    url, data = secured.kernel.url, secured.data_dir
    ran = aios("run-agent", str(echo), "--task", "hi", "--url", url, data_dir=data, timeout=120)
    assert ran.returncode == 0 and json.loads(ran.stdout)["task"] == "hi", ran.stderr
    execution_id = int(ran.stderr.split()[1])  # "execution 7 started"
    logs = aios("agents", "logs", str(execution_id), "--url", url, data_dir=data)
    assert logs.returncode == 0 and logs.stdout == "stdout of tests/echo: hi\n", logs.stderr
    listed = aios("agents", "ps", "--url", url, data_dir=data)
    assert f"{execution_id:>6}  tests/echo " in listed.stdout, listed.stderr
    as_alice = aios("agents", "ps", "--url", url, "--token", secured.tokens["alice"], data_dir=data)
    assert as_alice.returncode == 0 and "tests/echo" not in as_alice.stdout, as_alice.stderr  # not hers to see
    cancelled = aios("agents", "cancel", str(execution_id), "--url", url, data_dir=data)
    assert (cancelled.returncode, cancelled.stderr) == (1, f"aios: [409] agent execution {execution_id} has already "
                                                           "completed\n")


@contextlib.contextmanager
def another_server() -> Iterator[tuple[str, list[str | None]]]:
    """A program of someone else's on a loopback port: its URL, and the Authorization header of each request it
    got (it refuses them all)."""
    seen: list[str | None] = []

    class Refusing(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - the name http.server calls
            seen.append(self.headers.get("Authorization"))
            body = json.dumps({"detail": "who are you?"}).encode()
            self.send_response(401)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Refusing)
    thread = threading.Thread(target=server.serve_forever)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}", seen
    finally:
        server.shutdown()
        thread.join()
        server.server_close()


def test_the_cli_sends_the_administrator_s_token_only_to_the_kernel_serving_its_data_dir(
        secured: Secured, tmp_path: Path) -> None:
    """It went to any loopback port: on a shared machine, another user's program listening there got the
    kernel. Now the administrator's commands refuse, saying where the kernel serves; the agents commands go
    without it; and a kernel that stopped (its record left behind) is sent nothing."""
    kernel = secured.kernel.url
    with another_server() as (other, seen):
        listed = aios("token", "list", "--url", other, data_dir=secured.data_dir)
        ps = aios("agents", "ps", "--url", other, data_dir=secured.data_dir)
        stopped = tmp_path / "access"
        stopped.mkdir()
        (stopped / "admin.token").write_text(secured.admin_token)
        ended = subprocess.Popen([sys.executable, "-c", "pass"])  # the kernel that recorded it, ended
        ended.wait()
        (stopped / "admin.url").write_text(json.dumps({"url": other, "pid": ended.pid}))
        after_stop = aios("token", "list", "--url", other, data_dir=tmp_path)
    assert listed.returncode == 2 and listed.stderr == (
        f"aios: the kernel of the data dir {secured.data_dir} serves at {kernel}, not {other}, and its administrator's "
        f"token goes only there: give --url {kernel}, or --admin-token for another kernel\n")
    assert ps.returncode == 1 and "[401] who are you?" in ps.stderr
    assert after_stop.returncode == 2 and "is not running, and its administrator's token goes only to it" in after_stop.stderr
    assert seen == [None]  # the agents command's request, without the token
    as_localhost = aios("token", "list", "--url", kernel.replace("127.0.0.1", "localhost"), data_dir=secured.data_dir)
    assert as_localhost.returncode == 0 and "alice" in as_localhost.stdout, as_localhost.stderr


@pytest.mark.parametrize(("bound", "recorded"), [("http://127.0.0.1:8123", "http://127.0.0.1:8123"),
                                               ("http://0.0.0.0:8123", "http://127.0.0.1:8123"),
                                               ("http://[::]:8123", "http://[::1]:8123")],
                         ids=["loopback", "every-ipv4-address", "every-ipv6-address"])
def test_where_a_kernel_serves_is_recorded_as_an_address_this_machine_reaches(tmp_path: Path, bound: str,
                                                                              recorded: str) -> None:
    """A kernel bound to every address records the loopback one: the command line's default URL reaches it."""
    address.record(tmp_path, bound)
    assert address.serving(tmp_path) == recorded
    address.forget(tmp_path)
    assert address.serving(tmp_path) is None


def test_a_record_left_by_a_process_whose_pid_was_reused_is_not_trusted(tmp_path: Path) -> None:
    """After a crash the record stays; the pid may come back as another process (of the same user), which may
    listen where the kernel did. Its start time tells them apart."""
    address.record(tmp_path, "http://127.0.0.1:8123")
    said = json.loads((tmp_path / address.RECORD).read_text())
    (tmp_path / address.RECORD).write_text(json.dumps({**said, "started": said["started"] - 1}))
    assert address.serving(tmp_path) is None


@pytest.mark.parametrize("words", [("agents", "ps"), ("agents", "logs", "1"), ("agents", "cancel", "1"),
                                   ("run-agent", "example/chat", "--task", "x")], ids=" ".join)
def test_the_agents_commands_without_a_token_say_how_to_give_one(secured: Secured, tmp_path: Path,
                                                                 words: tuple[str, ...]) -> None:
    result = aios(*words, "--url", secured.kernel.url, data_dir=tmp_path)  # a data dir with no administrator's token
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr.startswith("aios: [401] this kernel requires a bearer token")
    assert result.stderr.endswith("; give --token TOKEN or set $AIOS_TOKEN (without either, the kernel serving this "
                                  f"data dir is sent the administrator's token in {tmp_path}/access/admin.token)\n")


def test_serving_beyond_loopback_without_choosing_auth_is_refused(data_dir: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "aios", "serve", "--host", "0.0.0.0", "--port", "0"],
                            capture_output=True, text=True, timeout=120, env={**os.environ,
                                                                             "AIOS_DATA_DIR": str(data_dir)})
    assert result.returncode == 2 and result.stdout == ""
    assert "serving on 0.0.0.0 exposes the kernel beyond this machine, and access.auth is not set" in result.stderr


# --- agents the kernel runs --------------------------------------------------------------------------------------
def _finished(secured: Secured, who: str, execution_id: int) -> dict[str, Any]:
    while True:
        status = secured.route(who, "GET", f"/agents/{execution_id}/status", params={"wait": 60}).json()
        if status["status"] != "running":
            return status


def test_an_agent_run_makes_syscalls_only_as_itself_and_its_token_ends_with_it(secured: Secured) -> None:
    whoami = Path(__file__).parent / "fixtures" / "agents" / "whoami"
    reply = secured.route("admin", "POST", "/agents/submit", json={"agent_id": str(whoami),
                                                                    "agent_config": {"task": "mine"}})
    assert reply.status_code == 200, reply.text
    status = _finished(secured, "admin", reply.json()["execution_id"])
    assert status["status"] == "completed", status
    result = status["result"]
    assert "note.txt" in result["own"]
    assert result["as_alice"].startswith("403 this bearer token is agent 'tests/whoami'")
    with httpx.Client(base_url=secured.kernel.url) as client:  # the run's token ended with the run
        assert client.get("/tools", headers={"Authorization": f"Bearer {result['token']}"}).status_code == 401


def test_no_agent_named_as_the_administrator_runs(secured: Secured, tmp_path: Path) -> None:
    """Its run's token would be the administrator's identity, with every agent's files and memories."""
    whoami = Path(__file__).parent / "fixtures" / "agents" / "whoami"
    impostor = tmp_path / "impostor"
    shutil.copytree(whoami, impostor)
    config = json.loads((impostor / "config.json").read_text())
    config["name"], config["meta"]["author"] = "admin", "kernel"
    (impostor / "config.json").write_text(json.dumps(config))
    before = secured.route("admin", "GET", "/agents/ps").json()["count"]
    reply = secured.route("admin", "POST", "/agents/submit", json={"agent_id": str(impostor),
                                                                    "agent_config": {"task": "mine"}})
    assert reply.status_code == 403, reply.text
    assert "'kernel/admin' is the administrator's identity" in reply.json()["detail"]
    assert secured.route("admin", "GET", "/agents/ps").json()["count"] == before


def test_an_aios_sdk_agent_runs_with_its_token_in_the_kernel_url(secured: Secured) -> None:
    aios_style = Path(__file__).parent / "fixtures" / "agents" / "aios_style"
    reply = secured.route("admin", "POST", "/agents/submit", json={"agent_id": str(aios_style),
                                                                    "agent_config": {"task": "Say hi."}})
    status = _finished(secured, "admin", reply.json()["execution_id"])
    assert status["status"] == "completed" and status["result"]["answer"]["status_code"] == 200, status


@pytest.mark.parametrize(("method", "path", "body", "detail"), [
    ("POST", "/agents/submit", {"agent_id": "/tmp", "agent_config": {"task": "x"}},
     "only the administrator may run an agent from a path on the kernel's machine"),
    ("POST", "/agents/submit", {"agent_id": "example/chat", "agent_config": {"task": "x"}},
     "agent example/chat runs as itself: submitting it needs its token or the administrator's, not 'alice''s"),
    ("POST", "/cerebrum/upload", {"author": "bob", "name": "x", "version": "1.0.0", "files": []},
     "agent 'alice' may upload only packages named after itself, not bob/x"),
], ids=["path", "another-agent", "upload-as-another"])
def test_an_agent_cannot_run_or_upload_code_as_another(secured: Secured, method: str, path: str,
                                                       body: dict[str, Any], detail: str) -> None:
    before = secured.route("admin", "GET", "/agents/ps").json()["count"]
    reply = secured.route("alice", method, path, json=body)
    assert reply.status_code == 403 and reply.json() == {"detail": detail}
    assert secured.route("admin", "GET", "/agents/ps").json()["count"] == before
    assert not (secured.data_dir / "hub" / "agents" / "bob").exists()
