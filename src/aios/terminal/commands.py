"""The terminal's commands, in one table: each is a small function of the shell and the rest of its line,
making its syscalls through the SDK. A function raises :class:`UsageError` for arguments it cannot take;
the kernel's refusals arrive as ``AIOSError`` and the shell shows both in one line."""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

from aios import sdk
from aios.terminal import render
from aios.terminal.actions import act, converse
from aios.terminal.top import top

if TYPE_CHECKING:
    from aios.terminal.shell import Shell


class UsageError(Exception):
    """A command given arguments it cannot take; the message names the problem."""


class ExitShell(Exception):
    """``exit``: the shell ends."""


@dataclass(frozen=True)
class Command:
    usage: str
    summary: str
    run: Callable[["Shell", str], None]
    completes_files: bool = False  # Tab after the command offers the file paths seen so far


def _need(text: str, what: str) -> str:
    if not text:
        raise UsageError(f"{what} is missing")
    return text


def _words(text: str, least: int, most: int) -> list[str]:
    """The arguments as a shell splits them (quotes group words), between ``least`` and ``most`` of them."""
    try:
        words = shlex.split(text)
    except ValueError as exc:
        raise UsageError(f"cannot read the arguments: {exc}") from None
    if not least <= len(words) <= most:
        raise UsageError(f"takes {least}{'' if least == most else f' to {most}'} argument(s), not {len(words)}")
    return words


def _number(text: str, what: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise UsageError(f"{what} must be a whole number, not {text!r}") from None


# -- the model ----------------------------------------------------------------------------------------------------
def chat(shell: Shell, text: str) -> None:
    """Send ``text`` to the model with the conversation so far, offering no tools; its reply as it is written."""
    converse(shell, _need(text, "TEXT"), may_act=False)


def do(shell: Shell, text: str) -> None:
    act(shell, _need(text, "TEXT"))


def say(shell: Shell, text: str) -> None:
    """A line that is no command: the model answers, or acts with the kernel's tools."""
    converse(shell, _need(text, "TEXT"), may_act=True)


# -- files --------------------------------------------------------------------------------------------------------
def ls(shell: Shell, args: str) -> None:
    (directory,) = _words(args, 0, 1) or [""]
    entries = sdk.list_dir(shell.agent, directory, base_url=shell.url).entries
    shell.files.update(entry.file_path for entry in entries if entry.type == "file")
    render.entries(shell.console, entries)


def cat(shell: Shell, args: str) -> None:
    words = _words(args, 1, 3)
    version = None
    if "--version" in words:
        at = words.index("--version")
        if at + 1 >= len(words):
            raise UsageError("--version needs a number")
        version = _number(words.pop(at + 1), "the version")
        words.pop(at)
    if len(words) != 1:
        raise UsageError("takes one FILE")
    reply = sdk.read_file(shell.agent, words[0], shell.url, version=version)
    shell.console.print(reply.content, markup=False, highlight=False)


def write(shell: Shell, args: str) -> None:
    path, _, text = _need(args, "FILE").partition(" ")
    content = text.strip() or shell.read_lines("type the content; a line holding only '.' ends it")
    reply = sdk.write_file(shell.agent, path, content, shell.url)
    shell.files.add(reply.file_path or path)
    render.done(shell.console, reply.message)


def history(shell: Shell, args: str) -> None:
    (path,) = _words(args, 1, 1)
    render.versions(shell.console, sdk.file_history(shell.agent, path, shell.url).versions)


def rollback(shell: Shell, args: str) -> None:
    words = _words(args, 1, 2)
    steps = _number(words[1], "N") if len(words) == 2 else 1
    render.done(shell.console, sdk.rollback_file(shell.agent, words[0], steps, shell.url).message)


def share(shell: Shell, args: str) -> None:
    (path,) = _words(args, 1, 1)
    reply = sdk.share_file(shell.agent, path, shell.url)
    render.done(shell.console, f"{reply.url} (until {reply.expires_at})")


def search(shell: Shell, query: str) -> None:
    render.retrieved(shell.console, sdk.retrieve_file(shell.agent, _need(query, "QUERY"), 5, base_url=shell.url).files)


# -- memories -----------------------------------------------------------------------------------------------------
def remember(shell: Shell, text: str) -> None:
    reply = sdk.create_memory(shell.agent, _need(text, "TEXT"), base_url=shell.url)
    render.done(shell.console, f"remembered as {reply.memory_id}")


def recall(shell: Shell, query: str) -> None:
    reply = sdk.search_memories(shell.agent, _need(query, "QUERY"), 5, shell.url)
    render.memories(shell.console, reply.search_results or [])


def forget(shell: Shell, args: str) -> None:
    (memory_id,) = _words(args, 1, 1)
    sdk.delete_memory(shell.agent, memory_id, shell.url)
    render.done(shell.console, f"forgot {memory_id}")


# -- tools --------------------------------------------------------------------------------------------------------
def tools(shell: Shell, args: str) -> None:
    _words(args, 0, 0)
    render.tools(shell.console, sdk.list_tools(shell.url))


def tool(shell: Shell, args: str) -> None:
    name, _, text = _need(args, "NAME").partition(" ")
    try:
        parameters = json.loads(text or "{}")
    except ValueError as exc:
        raise UsageError(f"the parameters are not JSON: {exc}") from None
    if not isinstance(parameters, dict):
        raise UsageError("the parameters must be a JSON object")
    reply = sdk.call_tool(shell.agent, [{"name": name, "parameters": parameters}], shell.url)
    render.tool_result(shell.console, reply.results[0])


# -- agents -------------------------------------------------------------------------------------------------------
def agents(shell: Shell, args: str) -> None:
    _words(args, 0, 0)
    render.agents(shell.console, sdk.list_agents(shell.url))


def submit(shell: Shell, args: str) -> None:
    agent_id, _, task = _need(args, "AGENT_ID").partition(" ")
    execution_id = sdk.submit_agent(agent_id, _need(task.strip(), "TASK"), shell.url)
    render.done(shell.console, f"execution {execution_id} started ({agent_id})")


def _execution(args: str) -> int:
    (text,) = _words(args, 1, 1)
    return _number(text, "ID")


def wait(shell: Shell, args: str) -> None:
    render.agent_status(shell.console, sdk.wait_agent(_execution(args), shell.url))


def logs(shell: Shell, args: str) -> None:
    render.logs(shell.console, sdk.agent_logs(_execution(args), shell.url))


def cancel(shell: Shell, args: str) -> None:
    render.agent_status(shell.console, sdk.cancel_agent(_execution(args), shell.url))


def top_command(shell: Shell, args: str) -> None:
    (seconds,) = _words(args, 0, 1) or ["1"]
    try:
        interval = float(seconds)
    except ValueError:
        raise UsageError(f"SECONDS must be a number, not {seconds!r}") from None
    if not 0.1 <= interval <= 60:
        raise UsageError("SECONDS must be between 0.1 and 60")
    top(shell.console, shell.url, interval)


# -- the shell ----------------------------------------------------------------------------------------------------
def help_command(shell: Shell, args: str) -> None:
    (name,) = _words(args, 0, 1) or [""]
    if name and name not in COMMANDS:
        raise UsageError(f"no command {name!r}; `help` lists them")
    render.usage(shell.console, {key: (c.usage, c.summary) for key, c in COMMANDS.items() if not name or key == name})


def exit_command(shell: Shell, args: str) -> None:
    raise ExitShell


COMMANDS: dict[str, Command] = {
    "help": Command("help [COMMAND]", "the commands, or one of them", help_command),
    "chat": Command("chat TEXT", "say TEXT to the model, offering no tools", chat),
    "do": Command("do TEXT", "let the model act with the kernel's tools: each call shown with its result, "
                  "irreversible ones asked first (any line that is no command may act too)", do),
    "ls": Command("ls [DIR]", "the agent's files", ls, completes_files=True),
    "cat": Command("cat FILE [--version N]", "a file's text, now or at version N", cat, completes_files=True),
    "write": Command("write FILE [TEXT]", "write TEXT as the file's next version (no TEXT: type lines, end "
                     "with '.')", write, completes_files=True),
    "history": Command("history FILE", "a file's versions, newest first", history, completes_files=True),
    "rollback": Command("rollback FILE [N]", "bring back the content of N versions ago (default 1), as a new "
                        "version", rollback, completes_files=True),
    "share": Command("share FILE", "a read-only link to the file's current version", share, completes_files=True),
    "search": Command("search QUERY", "the files best matching QUERY, by meaning and words", search),
    "remember": Command("remember TEXT", "keep TEXT as a memory", remember),
    "recall": Command("recall QUERY", "the memories best matching QUERY", recall),
    "forget": Command("forget ID", "remove a memory", forget),
    "tools": Command("tools", "the tools the kernel offers", tools),
    "tool": Command("tool NAME [JSON]", "call a tool with JSON parameters", tool),
    "agents": Command("agents", "the agent runs the kernel knows (ps)", agents),
    "submit": Command("submit AGENT_ID TASK", "run an agent on TASK (example/chat, author/name, a path)", submit),
    "wait": Command("wait ID", "wait for an agent run to end; its result", wait),
    "logs": Command("logs ID", "what an agent run wrote", logs),
    "cancel": Command("cancel ID", "kill a running agent", cancel),
    "top": Command("top [SECONDS]", "the scheduler, live (every SECONDS, default 1); any key ends it", top_command),
    "exit": Command("exit", "leave (Ctrl-D too)", exit_command),
}
