"""Scheduling policies: each orders the runnable items of one queue and says when a running one should yield.

The same policies order the kernel's syscall queues and the LLM engine's sequences, so an item only needs a
``priority`` (higher runs first under ``priority``) and ``ready_at`` (when it last became runnable).

- ``fifo``: arrival order; nothing is preempted.
- ``rr``: arrival order; a running item yields after ``quantum`` units of work (decode tokens for an LLM) when
  others are waiting, and goes to the back of the queue.
- ``priority``: highest effective priority first, where waiting raises it by ``aging`` per second so that
  nothing starves; a running item yields (after ``quantum``) to a waiting one of higher effective priority.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections import deque
from typing import Generic, Iterator, Protocol, TypeVar


class Schedulable(Protocol):
    priority: int
    ready_at: float


T = TypeVar("T", bound=Schedulable)


class Policy(ABC, Generic[T]):
    """Orders runnable items. Not thread-safe: each queue uses its policy from one thread."""

    name: str

    @abstractmethod
    def push(self, item: T) -> None:
        """Add a runnable item (new, or preempted and waiting to resume)."""

    @abstractmethod
    def pop(self) -> T:
        """Remove and return the item to run next; IndexError when empty."""

    @abstractmethod
    def peek(self) -> T:
        """The item ``pop`` would return; IndexError when empty."""

    @abstractmethod
    def remove(self, item: T) -> None:
        """Take out an item that will not run (cancelled); ValueError if it is not queued."""

    @abstractmethod
    def __len__(self) -> int: ...

    @abstractmethod
    def __iter__(self) -> Iterator[T]:
        """The queued items, in no promised order."""

    def preempts(self, running: T, worked: int, waiting: T) -> bool:
        """Whether ``running``, having done ``worked`` units in its current slice, should yield to ``waiting``."""
        return False


class FifoPolicy(Policy[T]):
    """First come, first served; each item runs to completion."""

    name = "fifo"

    def __init__(self) -> None:
        self._queue: deque[T] = deque()

    def push(self, item: T) -> None:
        self._queue.append(item)

    def pop(self) -> T:
        return self._queue.popleft()

    def peek(self) -> T:
        return self._queue[0]

    def remove(self, item: T) -> None:
        self._queue.remove(item)

    def __len__(self) -> int:
        return len(self._queue)

    def __iter__(self) -> Iterator[T]:
        return iter(list(self._queue))


class RoundRobinPolicy(FifoPolicy[T]):
    """Arrival order with time slices of ``quantum`` units."""

    name = "rr"

    def __init__(self, quantum: int) -> None:
        super().__init__()
        self.quantum = quantum

    def preempts(self, running: T, worked: int, waiting: T) -> bool:
        return worked >= self.quantum


class PriorityPolicy(Policy[T]):
    """Highest effective priority first: ``priority + aging * seconds waited``; ties in arrival order."""

    name = "priority"

    def __init__(self, quantum: int, aging: float, clock: "Clock" = time.time) -> None:
        self.quantum, self.aging, self._clock = quantum, aging, clock
        self._items: list[T] = []

    def score(self, item: T, now: float) -> float:
        return item.priority + self.aging * (now - item.ready_at)

    def push(self, item: T) -> None:
        self._items.append(item)

    def peek(self) -> T:
        if not self._items:
            raise IndexError("no runnable item")
        now = self._clock()
        # Linear scan: effective priorities change as time passes, so a heap would go stale.
        return max(self._items, key=lambda item: (self.score(item, now), -item.ready_at))

    def pop(self) -> T:
        item = self.peek()
        self._items.remove(item)
        return item

    def remove(self, item: T) -> None:
        self._items.remove(item)

    def __len__(self) -> int:
        return len(self._items)

    def __iter__(self) -> Iterator[T]:
        return iter(list(self._items))

    def preempts(self, running: T, worked: int, waiting: T) -> bool:
        # A running item's own aging stopped when it started, so it competes with its base priority.
        return worked >= self.quantum and self.score(waiting, self._clock()) > running.priority


class Clock(Protocol):
    def __call__(self) -> float: ...


POLICY_NAMES = ("fifo", "rr", "priority")


def make_policy(name: str, quantum: int = 32, aging: float = 1.0) -> Policy:
    if name == "fifo":
        return FifoPolicy()
    if name == "rr":
        return RoundRobinPolicy(quantum)
    if name == "priority":
        return PriorityPolicy(quantum, aging)
    raise ValueError(f"unknown scheduling policy {name!r}; known: {', '.join(POLICY_NAMES)}")
