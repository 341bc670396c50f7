"""``do TEXT``: the model acts through the kernel's tools, in the open.

The model is asked for tool calls only (``chat_with_tool_call_output``: a syscall that decides, and runs
nothing); the terminal then runs each call itself, in order, through ``call_tool`` — a syscall of this agent,
so the kernel's access checks apply as to any call — and shows its real result before the next one. A call
that cannot simply be undone (a deletion, a rollback, a share link, a tool marked ``requires_confirmation``)
is shown and asked about first, after the results of the calls before it. The first call declined or failed
ends the run: later calls may depend on it. (``call_tool`` / ``operate_file`` action types would run every
call inside one syscall, leaving no moment to show a result or ask.)
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from aios import sdk
from aios.sdk import AIOSError, ToolCall, ToolInfo
from aios.terminal import render

if TYPE_CHECKING:
    from aios.terminal.shell import Shell

# The built-in file tools whose storage operations the access manager counts as irreversible
# (access.confirm.operations' default); other tools say so themselves with requires_confirmation.
IRREVERSIBLE_FILE_TOOLS = frozenset({"aios/delete_file", "aios/rollback_file", "aios/share_file"})
INSTRUCTIONS = "You act for the user by calling the tools. Call only what the request asks for."


def irreversible(call: ToolCall, offered: dict[str, ToolInfo]) -> bool:
    info = offered.get(call.name)
    return call.name in IRREVERSIBLE_FILE_TOOLS or (info is not None and info.requires_confirmation)


def act(shell: Shell, text: str) -> None:
    offered = {info.name: info for info in sdk.list_tools(shell.url)}
    messages = [{"role": "system", "content": INSTRUCTIONS}, {"role": "user", "content": text}]
    reply = sdk.llm_chat_with_tool_call_output(
        shell.agent, messages, [info.call_format() for info in offered.values()], shell.url,
        temperature=shell.settings.temperature, max_new_tokens=shell.settings.max_new_tokens)
    calls = reply.tool_calls or []
    render.plan(shell.console, calls, [irreversible(call, offered) for call in calls])
    for number, call in enumerate(calls, 1):
        if not _run(shell, call, irreversible(call, offered)):
            render.stopped(shell.console, len(calls) - number)
            return


def _run(shell: Shell, call: ToolCall, ask_first: bool) -> bool:
    """Run one call (asking first when ``ask_first``) and show what happened; False if it did not run or failed."""
    if ask_first and not shell.ask(f"{render.call_text(call)} cannot simply be undone. Run it?"):
        render.declined(shell.console, call)
        return False
    try:
        result = sdk.call_tool(shell.agent, [{"name": call.name, "parameters": call.parameters}], shell.url)
    except AIOSError as exc:
        render.error(shell.console, f"{render.call_text(call)}: {exc.message}", exc.status_code)
        return False
    render.tool_result(shell.console, result.results[0])
    return True
