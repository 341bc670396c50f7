"""The terminal's loop: read a line (with history and completion), run the command its first word names or
send the line to the model (which may answer or act), and show any refusal in one line — the shell outlives
every error."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prompt_toolkit import PromptSession
from prompt_toolkit import prompt as read_line
from prompt_toolkit.history import FileHistory
from rich.console import Console

from aios.sdk import AIOSError
from aios.sdk.transport import get_json
from aios.terminal import render
from aios.terminal.commands import COMMANDS, ExitShell, UsageError, say
from aios.terminal.completion import ShellCompleter

HISTORY_FILE = Path("~/.aios_history")


@dataclass(frozen=True)
class Settings:
    url: str | None  # None: $AIOS_KERNEL_URL, else localhost:8000 (as the SDK decides)
    agent: str  # who the kernel sees as the caller: whose files, memories and syscalls these are
    temperature: float | None = None
    max_new_tokens: int | None = None


@dataclass
class Shell:
    """What the commands work with: the settings, the console, the conversation so far, the file paths seen."""

    settings: Settings
    console: Console
    messages: list[dict[str, Any]] = field(default_factory=list)
    files: set[str] = field(default_factory=set)

    @property
    def url(self) -> str | None:
        return self.settings.url

    @property
    def agent(self) -> str:
        return self.settings.agent

    def ask(self, question: str) -> bool:
        """A yes/no question to the person at the terminal; anything but y/yes (Ctrl-C, Ctrl-D included) is no."""
        try:
            return self._read(f"{question} [y/N] ").strip().lower() in ("y", "yes")
        except (EOFError, KeyboardInterrupt):
            return False

    def read_lines(self, hint: str) -> str:
        """Lines typed until one holding only '.', joined (Ctrl-D ends them too)."""
        self.console.print(hint)
        lines: list[str] = []
        while True:
            try:
                line = self._read("... ")
            except EOFError:
                break
            if line == ".":
                break
            lines.append(line)
        return "\n".join(lines)

    def _read(self, message: str) -> str:
        return read_line(message)  # not the command line's session: answers stay out of its history

    def run_line(self, line: str) -> None:
        """Run one line; raises ExitShell for ``exit``."""
        name, _, rest = line.strip().partition(" ")
        if not name:
            return
        command = COMMANDS.get(name)
        try:
            if command is None:
                say(self, line.strip())
            else:
                command.run(self, rest.strip())
        except UsageError as exc:
            render.error(self.console, f"{exc} (usage: {command.usage if command else 'TEXT'})")
        except AIOSError as exc:
            render.error(self.console, exc.message, exc.status_code)
        except KeyboardInterrupt:
            render.error(self.console, "interrupted")


def run_terminal(settings: Settings, console: Console | None = None) -> int:
    """The interactive loop until ``exit`` or Ctrl-D; 1 if the kernel cannot be reached at the start."""
    console = console or Console()
    try:
        status = get_json("/status", settings.url)
    except AIOSError as exc:
        render.error(console, exc.message, exc.status_code)
        return 1
    shell = Shell(settings, console)
    session: PromptSession[str] = PromptSession(history=FileHistory(str(HISTORY_FILE.expanduser())),
                                                completer=ShellCompleter(COMMANDS, lambda: sorted(shell.files)),
                                                complete_while_typing=False)
    render.banner(console, settings.agent, status)
    while True:
        try:
            shell.run_line(session.prompt(f"{settings.agent}> "))
        except KeyboardInterrupt:
            continue
        except (EOFError, ExitShell):
            return 0
