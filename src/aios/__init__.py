"""AIOS: an LLM agent operating system.

Agents make syscalls (LLM, memory, storage, tool) to a kernel that queues, schedules and runs them on shared
resources. Agent code imports :mod:`aios.sdk` only; it stays light (no torch).
"""

__version__ = "0.1.0"
