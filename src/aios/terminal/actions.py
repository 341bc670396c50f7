"""The model acting through the kernel's tools, in the open: ``do TEXT`` (the model must call tools) and any line
that is not a command (the model may answer in prose or call tools: ``tool_choice: auto``).

The model's syscall decides and runs nothing (``chat_with_tool_call_output``); the terminal then runs each
call itself, in order, through ``call_tool`` — a syscall of this agent, so the kernel's access checks apply as
to any call — and shows its real result before the next one. A call that cannot simply be undone is shown and
asked about first, after the results of the calls before it: which ones those are is the kernel's word
(``GET /access/confirm``: the tools making an operation of ``access.confirm.operations``, and those marked
``requires_confirmation``). The first call declined or failed ends the run: later calls may depend on it.
(``call_tool`` / ``operate_file`` action types would run every call inside one syscall, leaving no moment to
show a result or ask.)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aios import sdk
from aios.sdk import AIOSError, LLMResponse, ToolCall
from aios.terminal import render

if TYPE_CHECKING:
    from aios.terminal.shell import Shell

MUST_ACT = "You act for the user by calling the tools. Call only what the request asks for."
MAY_ACT = ("You are a helpful assistant. Answer in plain words; call a tool only when the user asks you to do "
           "something with files, memories or tools.")


def act(shell: Shell, text: str) -> None:
    """``do TEXT``: the model must call tools; the calls run as above."""
    messages = [{"role": "system", "content": MUST_ACT}, {"role": "user", "content": text}]
    asking = _asking(shell)
    run_calls(shell, _propose(shell, messages, "required").tool_calls or [], asking)


def converse(shell: Shell, text: str) -> None:
    """A plain line: the model answers in prose, or acts; either way the turn joins the conversation. The reply
    is not streamed: the kernel reads a reply that may be a tool call whole (a structured reply streams nothing)."""
    asking = _asking(shell)
    shell.messages.append({"role": "user", "content": text})
    try:
        reply = _propose(shell, [{"role": "system", "content": MAY_ACT}, *shell.messages], "auto")
    except BaseException:
        shell.messages.pop()  # the turn did not happen: the conversation stays as it was
        raise
    if reply.tool_calls:
        # What was done, and with what result, is the assistant's turn: a follow-up may ask about it.
        outcome = run_calls(shell, reply.tool_calls, asking)
    else:
        outcome = reply.response_message or ""
        render.reply(shell.console, outcome, reply.finish_reason)
    shell.messages.append({"role": "assistant", "content": outcome})


def run_calls(shell: Shell, calls: list[ToolCall], asking: frozenset[str]) -> str:
    """Show the plan, then run the calls one at a time (asking first where ``asking`` names the tool) until one
    is declined or fails; what happened, one line per call, as text."""
    render.plan(shell.console, calls, [call.name in asking for call in calls])
    lines = []
    for number, call in enumerate(calls, 1):
        line = _run(shell, call, call.name in asking)
        lines.append(line or f"{render.call_text(call)}: not run")
        if line is None:
            render.stopped(shell.console, len(calls) - number)
            break
    return "\n".join(lines)


def _asking(shell: Shell) -> frozenset[str]:
    """The tools whose calls the kernel counts as irreversible (asked afresh: its tools and config may change)."""
    return frozenset(sdk.confirmations(shell.agent, shell.url)["tools"])


def _propose(shell: Shell, messages: list[dict[str, Any]], tool_choice: str) -> LLMResponse:
    offered = [info.call_format() for info in sdk.list_tools(shell.url)]
    return sdk.llm_chat_with_tool_call_output(
        shell.agent, messages, offered, shell.url, tool_choice=tool_choice,
        temperature=shell.settings.temperature, max_new_tokens=shell.settings.max_new_tokens)


def _run(shell: Shell, call: ToolCall, ask_first: bool) -> str | None:
    """Run one call (asking first when ``ask_first``) and show what happened: its result line, or None if it
    did not run or failed."""
    if ask_first and not shell.ask(f"{render.call_text(call)} cannot simply be undone. Run it?"):
        render.declined(shell.console, call)
        return None
    try:
        result = sdk.call_tool(shell.agent, [{"name": call.name, "parameters": call.parameters}], shell.url)
    except AIOSError as exc:
        render.error(shell.console, f"{render.call_text(call)}: {exc.message}", exc.status_code)
        return None
    return render.tool_result(shell.console, result.results[0])
