"""Every SDK failure is an AIOSError: replies that are no kernel's, from a tiny real HTTP server, and bad input;
and a newer kernel's reply (fields this SDK does not know) still reads.

No kernel and no model: the server answers each path with one canned shape, so these run in well under a second.
"""

from __future__ import annotations

import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Iterator

import pytest

from aios.sdk import (
    AIOSError,
    LLMResponse,
    file_history,
    kernel_url,
    list_dir,
    list_tools,
    llm_chat,
    llm_chat_stream,
    read_file,
    retrieve_file,
    submit_agent,
)

HI = [{"role": "user", "content": "hi"}]
GOOD = {"response": {"response_message": "hello", "finished": True, "status_code": 200}}


def _json(value: Any) -> bytes:
    return json.dumps(value).encode()


# id, HTTP status, content type, body, expected AIOSError.status_code, expected message fragment
BAD_REPLIES: list[tuple[str, int, str, bytes, int, str]] = [
    ("200-not-json", 200, "text/html", b"<html>a proxy\npage</html>", 0, "not a kernel envelope (not JSON): '<html>a proxy"),
    ("200-empty-body", 200, "application/json", b"", 0, "not a kernel envelope (not JSON)"),
    ("200-not-utf8", 200, "application/json", b"\xff\xfe{", 0, "not a kernel envelope"),
    ("200-json-list", 200, "application/json", _json([1, 2]), 0, "not a kernel envelope: [1, 2]"),
    ("200-json-string", 200, "application/json", _json("ok"), 0, "not a kernel envelope: 'ok'"),
    ("200-no-response", 200, "application/json", _json({"result": 1}), 0, "not a kernel envelope: {'result': 1}"),
    ("200-response-is-string", 200, "application/json", _json({"response": "hi"}), 0, "not a kernel envelope"),
    ("200-tool-call-without-id", 200, "application/json",
     _json({"response": {"tool_calls": [{"name": "demo/t", "parameters": {}}]}}), 0, "not a kernel envelope"),
    ("200-tool-calls-not-list", 200, "application/json",
     _json({"response": {"tool_calls": 5}}), 0, "not a kernel envelope"),
    ("200-bad-status-code", 200, "application/json",
     _json({"response": {"status_code": "teapot"}}), 0, "not a kernel envelope"),
    ("200-bad-timings", 200, "application/json",
     _json({**GOOD, "start_times": 5}), 0, "not a kernel envelope"),
    ("200-syscall-failed", 200, "application/json",
     _json({"response": {"error": "model exploded", "status_code": 500}}), 500, "model exploded"),
    ("500-json-list", 500, "application/json", _json(["boom", "bang"]), 500, "boom; bang"),
    ("400-json-string", 400, "application/json", _json("bad thing"), 400, "bad thing"),
    ("404-detail", 404, "application/json", _json({"detail": "unknown model"}), 404, "unknown model"),
    ("422-validation", 422, "application/json",
     _json({"detail": [{"loc": ["body", "query_type"], "msg": "Field required"}]}), 422, "body.query_type: Field required"),
    ("422-odd-validation-items", 422, "application/json", _json({"detail": ["x", {"msg": "y"}, {"loc": "z"}]}), 422, "x; y; z: None"),
    ("503-plain-text", 503, "text/plain", b"overloaded", 503, "overloaded"),
    ("502-empty", 502, "text/plain", b"", 502, "Bad Gateway"),
]
ROUTES = {f"/{case}/query": (status, ctype, body) for case, status, ctype, body, _, _ in BAD_REPLIES}
ROUTES["/good/query"] = (200, "application/json", _json(GOOD))
# A storage reply from a kernel newer than this SDK: each listed item carries a field the SDK does not know.
NEWER_KERNEL = {
    "files": [{"file_path": "a.txt", "path": "/m/a.txt", "score": 0.5, "similarity": 0.9, "snippet": "alpha",
               "version": 2, "language": "en"}],
    "versions": [{"version": 2, "time": 1.0, "iso_time": "1970-01-01T00:00:01+00:00", "size": 5, "hash": "ab",
                  "agent": "x", "kind": "write", "restored_from": None, "encoding": "utf-8"}],
    "entries": [{"name": "a.txt", "file_path": "a.txt", "type": "file", "size": 5, "version": 2, "mode": "0644"}],
    "message": "a newer kernel's reply"}
ROUTES["/newer-kernel/query"] = (200, "application/json", _json({"response": {
    "response_class": "storage", "response_message": json.dumps(NEWER_KERNEL), "finished": True, "error": None,
    "status_code": 200}}))


class _Canned(BaseHTTPRequestHandler):
    def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        status, ctype, body = ROUTES.get(self.path, (404, "text/plain", b"no such case"))
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:  # keep pytest's output clean
        pass


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    # A proxy from the environment would answer for 127.0.0.1 and hide what the server sent.
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="module")
def server_url() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Canned)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def test_the_canned_server_serves_a_good_reply(server_url: str) -> None:
    reply = llm_chat("a", HI, base_url=f"{server_url}/good")
    assert isinstance(reply, LLMResponse) and reply.response_message == "hello" and reply.finished
    assert reply.usage is None  # a reply without usage (an older kernel's) still reads


@pytest.mark.parametrize(("case", "status", "fragment"), [(c, s, f) for c, _, _, _, s, f in BAD_REPLIES],
                         ids=[c for c, *_ in BAD_REPLIES])
def test_a_reply_that_is_no_kernel_reply_is_an_aios_error(server_url: str, case: str, status: int, fragment: str) -> None:
    with pytest.raises(AIOSError) as caught:
        llm_chat("a", HI, base_url=f"{server_url}/{case}")
    assert caught.value.status_code == status, caught.value
    assert fragment in caught.value.message, caught.value.message
    assert "\n" not in caught.value.message


def test_a_long_bad_reply_is_cut_to_a_short_excerpt(server_url: str) -> None:
    ROUTES["/long/query"] = (200, "text/html", b"x" * 10_000)
    with pytest.raises(AIOSError) as caught:
        llm_chat("a", HI, base_url=f"{server_url}/long")
    assert caught.value.status_code == 0 and len(caught.value.message) < 400


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


BAD_CALLS: list[tuple[str, str | None, list[dict[str, Any]], str]] = [
    ("invalid-url", "http://[::1", HI, "invalid kernel URL 'http://[::1'"),
    ("unsupported-scheme", "ftp://127.0.0.1:1", HI, "cannot reach the kernel at ftp://127.0.0.1:1"),
    ("no-kernel", None, HI, "is `aios serve` running?"),
    ("content-not-serialisable", None, [{"role": "user", "content": object()}], "not JSON-serialisable"),
    ("content-nan", None, [{"role": "user", "content": float("nan")}], "not JSON-serialisable"),
]


@pytest.mark.parametrize(("base_url", "messages", "fragment"), [(u, m, f) for _, u, m, f in BAD_CALLS],
                         ids=[i for i, *_ in BAD_CALLS])
def test_a_call_that_cannot_be_sent_is_an_aios_error_with_status_0(
    base_url: str | None, messages: list[dict[str, Any]], fragment: str
) -> None:
    with pytest.raises(AIOSError) as caught:
        llm_chat("a", messages, base_url=base_url or f"http://127.0.0.1:{_closed_port()}")
    assert caught.value.status_code == 0
    assert fragment in caught.value.message, caught.value.message


# One call per way the SDK reaches the kernel (a syscall, a stream, a GET, another route), each with a base_url
# that is no URL: such as a tools list passed where Cerebrum's order has the URL.
NOT_A_URL: list[tuple[str, Any, str]] = [
    ("syscall-list", lambda: llm_chat("a", HI, [{"name": "t"}]), "not list [{'name': 't'}]"),
    ("stream-int", lambda: list(llm_chat_stream("a", HI, 8000)), "not int 8000"),
    ("get-bytes", lambda: list_tools(b"http://127.0.0.1:1"), "not bytes b'http://127.0.0.1:1'"),
    ("route-dict", lambda: submit_agent("example/chat", "x", {"url": "u"}), "not dict {'url': 'u'}"),
    ("kernel-url", lambda: kernel_url(["u"]), "not list ['u']"),  # type: ignore[arg-type]
]


@pytest.mark.parametrize(("call", "fragment"), [(c, f) for _, c, f in NOT_A_URL], ids=[i for i, *_ in NOT_A_URL])
def test_a_base_url_that_is_not_a_string_is_an_aios_error_naming_it(call: Any, fragment: str) -> None:
    with pytest.raises(AIOSError) as caught:
        call()
    assert caught.value.status_code == 0
    assert "base_url must be the kernel's URL as a string" in caught.value.message and fragment in caught.value.message


def test_storage_replies_with_fields_this_sdk_does_not_know_still_give_typed_items(server_url: str) -> None:
    url = f"{server_url}/newer-kernel"
    (found,) = retrieve_file("sdk/newer", "alpha", 1, None, url).files
    assert (found.file_path, found.snippet, found.version) == ("a.txt", "alpha", 2)
    (version,) = file_history("sdk/newer", "a.txt", url).versions
    assert (version.version, version.kind, version.hash) == (2, "write", "ab")
    (entry,) = list_dir("sdk/newer", "", False, url).entries
    assert (entry.name, entry.type, entry.size) == ("a.txt", "file", 5)
    assert read_file("sdk/newer", "a.txt", url).result["versions"][0]["encoding"] == "utf-8"  # all of it is kept
