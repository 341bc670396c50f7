"""How the terminal shows things: tables for lists, one line per outcome, errors in one line."""

from __future__ import annotations

import json
from typing import Any, Iterable

from rich.console import Console, Group
from rich.table import Table
from rich.text import Text

from aios.sdk import AgentLogs, AgentProcess, AgentStatus, ChatStream, DirEntry, FileVersion, RetrievedFile
from aios.sdk import SearchResult, ToolCall, ToolInfo, ToolResult


def error(console: Console, message: str, status_code: int | None = None) -> str:
    """Show an error in one line; that line."""
    code = f" [{status_code}]" if status_code else ""
    line = f"error{code}: {' '.join(message.split())}"
    console.print(Text(line, style="red"))
    return line


def done(console: Console, message: str | None) -> None:
    console.print(Text(message or "done", style="green"))


def banner(console: Console, agent: str, status: dict[str, Any]) -> None:
    models = ", ".join(llm.get("name", "?") for llm in status.get("llms", [])) or "none"
    # Text, not markup: a name like 'a[/]' is a name, not a tag.
    console.print(Text.assemble(f"connected to AIOS {status.get('version', '?')} as ", (agent, "bold"),
                                f" (models: {models}); `help` lists the commands, Ctrl-D leaves"), highlight=False)


def usage(console: Console, commands: dict[str, tuple[str, str]]) -> None:
    table = Table(show_header=False, box=None)
    for usage, summary in commands.values():
        _row(table, Text(usage, style="bold"), summary)
    console.print(table)


def streamed(console: Console, stream: ChatStream) -> str:
    """Print the reply's text as it arrives; the text. Text that streamed nothing (an API model offered tools
    answers whole) is printed once it came; tool calls print nothing here."""
    pieces = []
    for piece in stream:
        console.print(piece, end="", markup=False, highlight=False, soft_wrap=True)
        pieces.append(piece)
    reply = stream.response
    if not pieces and reply is not None and not reply.tool_calls and reply.response_message:
        console.print(reply.response_message, end="", markup=False, highlight=False, soft_wrap=True)
        pieces.append(reply.response_message)
    if pieces:
        console.print()
    if reply is not None and reply.finish_reason == "length":
        console.print(Text("(cut at the token limit)", style="dim"))
    return "".join(pieces)


def _table(*columns: str) -> Table:
    return Table(*columns, box=None, header_style="bold")


def _row(table: Table, *cells: str | Text) -> None:
    """Add a row of plain text: rich reads a str cell as markup, and names (of files, agents, models) are not."""
    table.add_row(*(Text(cell) if isinstance(cell, str) else cell for cell in cells))


def entries(console: Console, items: Iterable[DirEntry]) -> None:
    table = _table("name", "type", "size", "version")
    for entry in items:
        _row(table, entry.file_path, entry.type, _text(entry.size), _text(entry.version))
    console.print(table if table.rows else Text("(empty)", style="dim"))


def versions(console: Console, items: Iterable[FileVersion]) -> None:
    table = _table("version", "time", "kind", "size", "by", "from")
    for version in items:
        _row(table, str(version.version), version.iso_time, version.kind, _text(version.size),
             _text(version.agent), _text(version.restored_from))
    console.print(table)


def retrieved(console: Console, files: Iterable[RetrievedFile]) -> None:
    table = _table("file", "score", "snippet")
    for found in files:
        _row(table, found.file_path, f"{found.score:.3f}", _short(found.snippet))
    console.print(table if table.rows else Text("nothing found", style="dim"))


def memories(console: Console, results: Iterable[SearchResult]) -> None:
    table = _table("id", "score", "content")
    for result in results:
        _row(table, result.memory_id, f"{result.score:.3f}", _short(result.content))
    console.print(table if table.rows else Text("nothing found", style="dim"))


def tools(console: Console, items: Iterable[ToolInfo]) -> None:
    table = _table("tool", "description", "asks first")
    for info in items:
        _row(table, info.name, _short(info.description), "yes" if info.requires_confirmation else "")
    console.print(table)


def call_text(call: ToolCall | ToolResult) -> str:
    return f"{call.name} {json.dumps(call.parameters, ensure_ascii=False)}"


def plan(console: Console, calls: list[ToolCall], asks: list[bool]) -> None:
    if not calls:
        console.print(Text("the model proposed no action", style="dim"))
        return
    console.print(f"the model proposes {len(calls)} call(s):", highlight=False)
    for number, (call, ask) in enumerate(zip(calls, asks), 1):
        console.print(Text(f"  {number}. {call_text(call)}" + ("  (asks first)" if ask else "")))


def tool_result(console: Console, result: ToolResult) -> str:
    """Show a call's result, in one line (the terminal wraps it); that line."""
    value = result.result if isinstance(result.result, str) else json.dumps(result.result, ensure_ascii=False)
    line = f"{call_text(result)} -> {value}"
    console.print(Text(line), soft_wrap=True)
    return line


def declined(console: Console, call: ToolCall) -> str:
    line = f"not run: {call_text(call)}"
    console.print(Text(line, style="yellow"))
    return line


def stopped(console: Console, left: int) -> None:
    if left:
        console.print(Text(f"stopped: the {left} later call(s) not run", style="yellow"))


def agents(console: Console, runs: Iterable[AgentProcess]) -> None:
    table = _table("id", "agent", "status", "pid", "ended")
    for run in runs:
        ended = run.error or (f"exit {run.exit_code}" if run.exit_code is not None else "")
        _row(table, str(run.execution_id), run.agent_name, run.status, _text(run.pid), _short(ended))
    console.print(table if table.rows else Text("no agent runs", style="dim"))


def agent_status(console: Console, status: AgentStatus) -> None:
    outcome = json.dumps(status.result, ensure_ascii=False) if status.status == "completed" else status.error
    console.print(Text(f"execution {status.execution_id}: {status.status}: {outcome}"))


def logs(console: Console, output: AgentLogs) -> None:
    console.print(output.stdout or Text("(no output)", style="dim"), markup=False, highlight=False, end="")
    if output.stderr:
        console.print(Text(output.stderr, style="dim"), end="")
    console.print()


def scheduler(status: dict[str, Any]) -> Group:
    """The /status reply as top shows it: one row per model, one per syscall queue."""
    models = _table("model", "state", "running", "waiting", "preemptions", "max batch")
    for llm in status.get("llms", []):
        engine = llm.get("engine", {})
        _row(models, llm.get("name", "?"), llm.get("state", "?"), _text(engine.get("running")),
             _text(engine.get("waiting")), _text(engine.get("preemptions")), _text(llm.get("max_batch")))
    queues = _table("syscalls", "policy", "queued", "running")
    for kind, queue in status.get("queues", {}).items():
        _row(queues, kind, str(queue.get("policy")), str(queue.get("queued")), str(queue.get("running")))
    hint = Text(f"up {status.get('uptime_s', 0):.0f} s; any key ends the view", style="dim")
    return Group(models, queues, hint)


def _text(value: Any) -> str:
    return "-" if value is None else str(value)


def _short(text: str, limit: int = 80) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."
