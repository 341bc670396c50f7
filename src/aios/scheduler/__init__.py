"""Scheduling: policies order each resource's runnable syscalls; the scheduler runs them on their handlers."""

from aios.scheduler.core import Handler, Scheduler
from aios.scheduler.policy import FifoPolicy, Policy, make_policy

__all__ = ["FifoPolicy", "Handler", "Policy", "Scheduler", "make_policy"]
