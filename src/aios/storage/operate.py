"""``operate_file``: a model turns a file request in plain language into calls of the storage operations
(decoded under a grammar, so each call names an operation with parameters of the right shape); the kernel
then runs each call as a storage syscall of the asking agent, and the reply lists every operation with what
really happened — its result, or its error. Nothing is summarised by the model: a failure is never reported
as a success.
"""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any, Awaitable, Callable

from aios.errors import BadRequest, Cancelled, KernelError
from aios.llm.handler import LLMResponse
from aios.llm.structured import distinct_calls
from aios.storage.requests import InvalidRequest, parse_request
from aios.syscall import Syscall, SyscallKind, SyscallStatus

SYSTEM_PROMPT = "You operate on the user's files by calling the file tools."

Call = Callable[[SyscallKind, str, Any], Awaitable[Syscall]]


def _tool(name: str, description: str, **properties: tuple[str, str]) -> dict[str, Any]:
    """A function tool whose parameters are all required: ``name=(type, description)``. Strings may not be
    empty: a small model under a grammar otherwise closes a path's quotes at once."""
    schemas = {key: {"type": kind, "description": text, **({"minLength": 1} if kind == "string" else {"minimum": 1})}
               for key, (kind, text) in properties.items()}
    return {"type": "function", "function": {"name": name, "description": description, "parameters": {
        "type": "object", "properties": schemas, "required": list(properties), "additionalProperties": False}}}


_PATH = ("string", "the file name or path")
_DIR = ("string", "the directory name or path; . for the agent's whole mount")
# Named as the SDK functions are (the storage requests accept these names too); the most common first.
FILE_TOOLS = [
    _tool("create_file", "Create a new empty file.", file_path=_PATH),
    _tool("write_file", "Write text into a file.", file_path=_PATH, content=("string", "the text to write")),
    _tool("read_file", "Read a file.", file_path=_PATH),
    _tool("create_dir", "Create a directory (folder).", dir_path=_DIR),
    _tool("list_dir", "List the files in a directory.", dir_path=_DIR),
    _tool("delete_file", "Delete a file.", file_path=_PATH),
    _tool("rollback_file", "Undo the last n changes of a file.", file_path=_PATH, n=("integer", "how many versions")),
    _tool("share_file", "Make a read-only link to a file.", file_path=_PATH),
    _tool("retrieve_file", "Find the files whose content is about something.", query_text=("string", "the topic"),
          n=("integer", "how many files")),
]


def with_instructions(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{"role": "system", "content": SYSTEM_PROMPT}, *messages]


async def operate_files(call: Call, agent: str, reply: LLMResponse, max_calls: int) -> LLMResponse:
    """Run the calls in ``reply`` (the model's tool calls), at most ``max_calls`` of them, and report each one's
    real outcome; calls past the limit are reported as failed, and do not run."""
    if reply.error is not None or not reply.tool_calls:
        return reply  # the model gave no usable calls: its error (or prose) says so, and nothing ran
    calls = distinct_calls(reply.tool_calls)
    # A grammar caps the calls only where the model decodes under one (not an API model, nor structured_output:
    # prompt), so the limit is kept here, for every model.
    operations = [await _run(call, agent, tool_call) for tool_call in calls[:max_calls]]
    operations += [_over_the_limit(tool_call, max_calls) for tool_call in calls[max_calls:]]
    failed = [op for op in operations if op["error"] is not None]
    lines = [_line(op) for op in operations]
    error = None
    if failed:
        error = f"{len(failed)} of {len(operations)} file operations failed: " + "; ".join(
            f"{op['name']}: {op['error']}" for op in failed)
    return replace(reply, response_message="\n".join(lines), tool_calls=operations, error=error,
                   status_code=failed[0]["status_code"] if failed else 200, finished=reply.finished and not failed)


def _over_the_limit(tool_call: dict[str, Any], max_calls: int) -> dict[str, Any]:
    return {**tool_call, "status_code": 400, "result": None,
            "error": f"not run: one operate_file request makes at most {max_calls} file operation(s) "
                     "(storage.operate_file_max_calls)"}


async def _run(call: Call, agent: str, tool_call: dict[str, Any]) -> dict[str, Any]:
    operation = {**tool_call, "status_code": 200, "error": None, "result": None}
    try:
        return {**operation, "result": await file_operation(call, agent, tool_call["name"], tool_call["parameters"])}
    except KernelError as exc:
        return {**operation, "status_code": exc.status_code, "error": str(exc)}


async def file_operation(call: Call, agent: str, name: str, parameters: Any, approved: bool = False) -> dict[str, Any]:
    """Run one file operation (by its tool or SDK name) as a storage syscall of ``agent``: what happened (the
    reply's JSON object), or a KernelError saying why it did not. ``approved``: a person approved it already."""
    try:
        request = replace(parse_request(name, parameters), approved=approved)
    except InvalidRequest as exc:
        raise BadRequest(str(exc)) from None
    syscall = await call(SyscallKind.STORAGE, agent, request)
    if syscall.status is SyscallStatus.DONE:
        return json.loads(syscall.value.response_message)
    if syscall.status is SyscallStatus.CANCELLED:
        raise Cancelled("cancelled before it finished")
    error = syscall.error
    if isinstance(error, KernelError):
        raise error
    raise KernelError(f"internal error: {type(error).__name__}: {error}")


def _line(operation: dict[str, Any]) -> str:
    arguments = ", ".join(f"{k}={_short(v)}" for k, v in operation["parameters"].items())
    if operation["error"] is not None:
        return f"{operation['name']}({arguments}): FAILED ({operation['status_code']}): {operation['error']}"
    return f"{operation['name']}({arguments}): done: {operation['result']['message']}"


def _short(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= 60 else text[:57] + "..."
