"""What Tab offers: command names for the first word; after a command that takes a file, the file paths the
shell has seen (listed by ``ls``, written by ``write``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Iterable, Iterator, Mapping

from prompt_toolkit.completion import CompleteEvent, Completer, Completion
from prompt_toolkit.document import Document

if TYPE_CHECKING:
    from aios.terminal.commands import Command


class ShellCompleter(Completer):
    def __init__(self, commands: Mapping[str, Command], files: Callable[[], Iterable[str]]) -> None:
        self._commands, self._files = commands, files

    def get_completions(self, document: Document, complete_event: CompleteEvent) -> Iterator[Completion]:
        before = document.text_before_cursor.lstrip()
        if " " not in before:
            yield from _starting_with(before, self._commands, " ")
            return
        command = self._commands.get(before.split(" ", 1)[0])
        if command is not None and command.completes_files:
            yield from _starting_with(document.get_word_before_cursor(WORD=True), self._files())


def _starting_with(prefix: str, words: Iterable[str], after: str = "") -> Iterator[Completion]:
    for word in words:
        if word.startswith(prefix):
            yield Completion(word + after, start_position=-len(prefix), display=word)
