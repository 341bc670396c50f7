"""``top``: the scheduler, live — each model's running and waiting generations, its preemptions, and the
queue of every syscall kind, from the kernel's ``GET /status``, redrawn every interval until a key is pressed
(or Ctrl-C). The wait between redraws is a wait for a key, with the interval as its timeout."""

from __future__ import annotations

import os
import select
import sys
import termios
import tty
from contextlib import contextmanager
from typing import Callable, Iterator

from rich.console import Console
from rich.live import Live

from aios.sdk.transport import get_json
from aios.terminal import render


def top(console: Console, url: str | None, interval: float) -> None:
    with _keys() as pressed, Live(console=console, auto_refresh=False, transient=False) as live:
        try:
            while True:
                live.update(render.scheduler(get_json("/status", url)), refresh=True)
                if pressed(interval):
                    return
        except KeyboardInterrupt:
            return


@contextmanager
def _keys() -> Iterator[Callable[[float], bool]]:
    """A function that waits up to its argument's seconds for a key (taken, not echoed) and says if one came.
    On a terminal, keys arrive one at a time (cbreak mode) for as long as the view is up."""
    fd = sys.stdin.fileno()
    saved = termios.tcgetattr(fd) if os.isatty(fd) else None

    def pressed(timeout: float) -> bool:
        ready, _, _ = select.select([fd], [], [], timeout)
        if ready:
            os.read(fd, 64)
        return bool(ready)

    if saved is not None:
        tty.setcbreak(fd)
    try:
        yield pressed
    finally:
        if saved is not None:
            termios.tcsetattr(fd, termios.TCSADRAIN, saved)
