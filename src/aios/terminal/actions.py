"""The model acting through the kernel's tools, in the open: ``do TEXT`` (the model must call tools) and any line
that is not a command (the model may answer in prose or call tools: ``tool_choice: auto``).

The model's syscall decides and runs nothing (``chat_with_tool_call_output`` for ``do``; a streamed chat
offering the tools for a plain line, whose prose is shown as it is written); the terminal then runs each
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
from aios.sdk import AIOSError, ToolCall
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
    reply = sdk.llm_chat_with_tool_call_output(shell.agent, messages, _offered(shell), shell.url,
                                               temperature=shell.settings.temperature,
                                               max_new_tokens=shell.settings.max_new_tokens)
    run_calls(shell, reply.tool_calls or [], asking)


def converse(shell: Shell, text: str, may_act: bool) -> None:
    """One turn of the conversation: the model answers in prose (streamed as it is written) or, when ``may_act``
    (a plain line; not ``chat``), acts with the kernel's tools; either way the turn joins the conversation."""
    asking = _asking(shell) if may_act else frozenset()
    system = [{"role": "system", "content": MAY_ACT}] if may_act else []
    shell.messages.append({"role": "user", "content": text})
    stream = sdk.llm_chat_stream(shell.agent, [*system, *shell.messages], shell.url,
                                 tools=_offered(shell) if may_act else None, temperature=shell.settings.temperature,
                                 max_new_tokens=shell.settings.max_new_tokens)
    try:
        prose = render.streamed(shell.console, stream)
    except BaseException:
        shell.messages.pop()  # the turn did not happen: the conversation stays as it was
        raise
    calls = stream.response.tool_calls if stream.response is not None else None
    # What was done, and with what result, is the assistant's turn: a follow-up may ask about it.
    outcome = run_calls(shell, calls, asking) if calls else prose
    shell.messages.append({"role": "assistant", "content": outcome})


def run_calls(shell: Shell, calls: list[ToolCall], asking: frozenset[str]) -> str:
    """Show the plan, then run the calls one at a time (asking first where ``asking`` names the tool) until one
    is declined or fails; what happened, one line per call, as text."""
    render.plan(shell.console, calls, [call.name in asking for call in calls])
    lines = []
    for number, call in enumerate(calls, 1):
        line, ran = _run(shell, call, call.name in asking)
        lines.append(line)
        if not ran:
            render.stopped(shell.console, len(calls) - number)
            break
    return "\n".join(lines)


def _asking(shell: Shell) -> frozenset[str]:
    """The tools whose calls the kernel counts as irreversible (asked afresh: its tools and config may change)."""
    return frozenset(sdk.confirmations(shell.agent, shell.url)["tools"])


def _offered(shell: Shell) -> list[dict[str, Any]]:
    return [info.call_format() for info in sdk.list_tools(shell.url)]


def _run(shell: Shell, call: ToolCall, ask_first: bool) -> tuple[str, bool]:
    """Run one call (asking first when ``ask_first``) and show what happened; that, in one line, and whether
    the call ran and succeeded."""
    if ask_first and not shell.ask(f"{render.call_text(call)} cannot simply be undone. Run it?"):
        return render.declined(shell.console, call), False
    try:
        result = sdk.call_tool(shell.agent, [{"name": call.name, "parameters": call.parameters}], shell.url)
    except AIOSError as exc:
        return render.error(shell.console, f"{render.call_text(call)}: {exc.message}", exc.status_code), False
    return render.tool_result(shell.console, result.results[0]), True
