"""Scheduling policies: each orders the runnable syscalls of one resource queue.

A policy only decides *which* syscall runs next; the scheduler owns the queues' workers and the syscalls' life
cycle. Round-robin and priority policies plug in here by implementing :class:`Policy`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections import deque

from aios.syscall import Syscall


class Policy(ABC):
    """Orders runnable syscalls. Not thread-safe: used only from the kernel's event loop."""

    name: str

    @abstractmethod
    def push(self, syscall: Syscall) -> None:
        """Add a runnable syscall (new, or resumed after a preemption)."""

    @abstractmethod
    def pop(self) -> Syscall:
        """Remove and return the syscall to run next; IndexError when empty."""

    @abstractmethod
    def __len__(self) -> int: ...


class FifoPolicy(Policy):
    """First come, first served; each syscall runs to completion."""

    name = "fifo"

    def __init__(self) -> None:
        self._queue: deque[Syscall] = deque()

    def push(self, syscall: Syscall) -> None:
        self._queue.append(syscall)

    def pop(self) -> Syscall:
        return self._queue.popleft()

    def __len__(self) -> int:
        return len(self._queue)


_POLICIES: dict[str, type[Policy]] = {FifoPolicy.name: FifoPolicy}


def make_policy(name: str) -> Policy:
    try:
        return _POLICIES[name]()
    except KeyError:
        raise ValueError(f"unknown scheduling policy {name!r}; known: {', '.join(sorted(_POLICIES))}") from None
