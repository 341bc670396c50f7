"""operate_file on the embedded model (a real kernel process): a plain-language request becomes a storage
operation that really runs, and the reply reports each operation's real outcome — a failure as a failure.

The 135M model is weak, so the requests are simple and explicit, and decoding is greedy (the default for
operate_file)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from aios import sdk
from aios.config import load_config
from aios.kernel import Kernel
from aios.llm.handler import LLMResponse
from aios.sdk import AIOSError
from aios.syscall import SyscallKind
from conftest import KernelProcess

AGENT = "ops/agent"


def ask(kernel: KernelProcess, request: str) -> sdk.FileOperationsResponse:
    return sdk.llm_operate_file(AGENT, [{"role": "user", "content": request}], kernel.url, max_new_tokens=48)


def test_a_create_request_creates_the_file(kernel: KernelProcess) -> None:
    reply = ask(kernel, "Create a file named notes.txt")
    (operation,) = reply.operations
    assert (operation.name, operation.parameters, operation.status_code) == ("create_file",
                                                                            {"file_path": "notes.txt"}, 200)
    assert operation.result["version"] == 1 and reply.error is None
    assert reply.response_message.startswith('create_file(file_path="notes.txt"): done: created empty file')
    assert sdk.read_file(AGENT, "notes.txt", kernel.url).content == ""  # it really exists


def test_a_write_request_writes_what_the_reply_says(kernel: KernelProcess) -> None:
    reply = ask(kernel, "Write the text 'hello world' into a file called greeting.txt")
    (operation,) = reply.operations
    assert operation.name == "write_file" and operation.parameters["file_path"] == "greeting.txt"
    written = operation.parameters["content"]
    assert "hello" in written.lower()  # the 135M model may add to the text; the reply says exactly what
    assert operation.result["size"] == len(written.encode()) and operation.result["version"] == 1
    assert sdk.read_file(AGENT, "greeting.txt", kernel.url).content == written


def test_a_read_request_returns_the_files_text(kernel: KernelProcess) -> None:
    sdk.write_file(AGENT, "report.txt", "Sales rose by 12 percent.", kernel.url)
    reply = ask(kernel, "Read the file report.txt")
    (operation,) = reply.operations
    assert (operation.name, operation.parameters) == ("read_file", {"file_path": "report.txt"})
    assert operation.result["content"] == "Sales rose by 12 percent." and operation.error is None


def test_a_failed_operation_is_reported_as_failed(kernel: KernelProcess) -> None:
    with pytest.raises(AIOSError) as caught:
        ask(kernel, "Read file todo.txt")  # there is no todo.txt
    assert caught.value.status_code == 404 and "no file todo.txt" in caught.value.message
    reply = caught.value.response
    (operation,) = reply.operations
    assert operation.name == "read_file" and operation.status_code == 404 and operation.result is None
    assert "FAILED (404)" in reply.response_message and "done" not in reply.response_message
    body = kernel.query({"agent_name": AGENT, "query_type": "llm", "query_data": {
        "messages": [{"role": "user", "content": "Read file todo.txt"}], "action_type": "operate_file",
        "max_new_tokens": 48}}).json()["response"]
    assert body["status_code"] == 404 and body["error"].startswith("1 of 1 file operations failed")
    assert body["tool_calls"][0]["error"] and body["tool_calls"][0]["result"] is None


def test_calls_past_operate_file_max_calls_are_reported_failed_and_do_not_run(tmp_path: Path) -> None:
    """Whatever decoded the reply (an API model, structured_output: prompt, no grammar's maxItems), the kernel
    runs at most storage.operate_file_max_calls of its calls. The reply is built here, as such a model gives it."""
    (tmp_path / "config.yaml").write_text("storage: {operate_file_max_calls: 2}\n")
    config = load_config(tmp_path / "config.yaml", env={"AIOS_DATA_DIR": str(tmp_path)})
    calls = [{"name": "write_file", "parameters": {"file_path": "a.txt", "content": "first"}, "id": "1"},
             {"name": "write_file", "parameters": {"file_path": "a.txt", "content": "first"}, "id": "2"},  # a repeat
             {"name": "create_file", "parameters": {"file_path": "b.txt"}, "id": "3"},
             {"name": "delete_file", "parameters": {"file_path": "a.txt"}, "id": "4"},
             {"name": "share_file", "parameters": {"file_path": "b.txt"}, "id": "5"}]
    reply = LLMResponse(tool_calls=calls, finished=True, finish_reason="stop")

    async def operate() -> tuple[LLMResponse, dict[str, Any]]:
        kernel = Kernel(config, [])
        await kernel.start()
        try:
            operated = await kernel.handlers[SyscallKind.LLM].file_operator.run("ops/limited", reply)
            listing = await kernel.call(SyscallKind.STORAGE, "ops/limited", {"operation_type": "list", "params": {}})
            return operated, json.loads(listing.value.response_message)
        finally:
            await kernel.stop()

    operated, listing = asyncio.run(operate())
    ran, refused = operated.tool_calls[:2], operated.tool_calls[2:]
    assert [(op["id"], op["status_code"]) for op in ran] == [("1", 200), ("3", 200)]
    assert [(op["id"], op["status_code"], op["result"]) for op in refused] == [("4", 400, None), ("5", 400, None)]
    assert all("not run: one operate_file request makes at most 2" in op["error"] for op in refused)
    assert operated.error.startswith("2 of 4 file operations failed") and operated.status_code == 400
    assert "delete_file" in operated.response_message.splitlines()[2] and "FAILED (400)" in operated.response_message
    assert {e["file_path"]: e["version"] for e in listing["entries"]} == {"a.txt": 1, "b.txt": 1}  # a.txt kept
