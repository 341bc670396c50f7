"""Scheduling policies in isolation: order, preemption decisions, aging (with a clock the test controls)."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from aios.scheduler.policy import FifoPolicy, PriorityPolicy, RoundRobinPolicy


@dataclass(eq=False)
class Item:
    name: str
    priority: int = 0
    ready_at: float = 0.0


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def drain(policy) -> list[str]:  # noqa: ANN001
    return [policy.pop().name for _ in range(len(policy))]


def test_fifo_keeps_arrival_order_and_never_preempts() -> None:
    policy = FifoPolicy()
    for name in "abc":
        policy.push(Item(name))
    assert policy.peek().name == "a"
    assert not policy.preempts(Item("r"), 10_000, policy.peek())
    assert drain(policy) == ["a", "b", "c"]


def test_round_robin_preempts_after_the_quantum_and_requeues_at_the_back() -> None:
    policy = RoundRobinPolicy(quantum=4)
    running, waiting = Item("running"), Item("waiting")
    policy.push(waiting)
    assert not policy.preempts(running, 3, waiting)
    assert policy.preempts(running, 4, waiting)
    policy.push(running)  # what the engine does on preemption
    assert drain(policy) == ["waiting", "running"]


def test_priority_runs_the_highest_first_and_ties_in_arrival_order() -> None:
    clock = Clock()
    policy = PriorityPolicy(quantum=1, aging=0, clock=clock)
    for item in (Item("low", 0, 1), Item("high-late", 5, 3), Item("high-early", 5, 2), Item("mid", 2, 0)):
        policy.push(item)
    assert drain(policy) == ["high-early", "high-late", "mid", "low"]


def test_priority_aging_lets_a_long_waiting_low_priority_item_overtake() -> None:
    clock = Clock()
    policy = PriorityPolicy(quantum=1, aging=1.0, clock=clock)
    policy.push(Item("patient", priority=0, ready_at=0.0))
    clock.now = 1.0
    policy.push(Item("urgent", priority=5, ready_at=1.0))
    assert policy.pop().name == "urgent"  # 5 > 0 + 1 s of aging
    clock.now = 6.0
    policy.push(Item("another-urgent", priority=5, ready_at=6.0))
    assert policy.pop().name == "patient"  # 0 + 6 s > 5: a flood of urgent work does not starve it


def test_priority_preempts_only_for_a_higher_effective_priority_after_the_quantum() -> None:
    clock = Clock()
    policy = PriorityPolicy(quantum=2, aging=0, clock=clock)
    running = Item("running", priority=1)
    assert policy.preempts(running, 2, Item("higher", priority=3))
    assert not policy.preempts(running, 1, Item("higher", priority=3))  # its slice is not used up
    assert not policy.preempts(running, 5, Item("equal", priority=1))


@pytest.mark.parametrize("policy", [FifoPolicy(), RoundRobinPolicy(2), PriorityPolicy(2, 1.0)],
                         ids=["fifo", "rr", "priority"])
def test_removing_a_queued_item_takes_it_out_and_an_empty_policy_raises(policy) -> None:  # noqa: ANN001
    a, b = Item("a"), Item("b")
    policy.push(a)
    policy.push(b)
    policy.remove(a)
    assert list(policy) == [b] and len(policy) == 1
    assert policy.pop() is b
    with pytest.raises(IndexError):
        policy.pop()
    with pytest.raises(ValueError):
        policy.remove(a)
