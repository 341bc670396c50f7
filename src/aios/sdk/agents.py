"""Agents the kernel runs: submit one (``agent_id``: ``example/chat``, a hub package ``author/name[/version]``,
or a path to a package folder or archive on the kernel's machine), follow it, read its logs, cancel it. Each
raises :class:`AIOSError` naming the problem when the kernel refuses (404 no such agent or execution, 400 an
invalid package, 403 not allowed, 409 already ended, 422 a malformed request)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from aios.sdk.transport import call_route, get_json

LONG_POLL_S = 30.0  # each status request waits up to this long on the kernel for the run to end


@dataclass(frozen=True)
class AgentStatus:
    execution_id: int
    status: str  # running | completed | failed
    result: Any  # what the agent's run() returned (completed)
    error: str | None  # why it failed: its exception, its exit code, the time limit, a cancel
    exit_code: int | None

    @classmethod
    def of(cls, reply: dict[str, Any]) -> "AgentStatus":
        return cls(int(reply["execution_id"]), reply["status"], reply.get("result"), reply.get("error"),
                   reply.get("exit_code"))


@dataclass(frozen=True)
class AgentProcess:
    execution_id: int
    agent_id: str
    agent_name: str
    task: str
    status: str
    pid: int | None
    exit_code: int | None
    error: str | None
    submitted_at: float
    started_at: float | None
    ended_at: float | None
    time_limit_s: float | None  # seconds the run may take before it is killed; None from a kernel that does not say

    @classmethod
    def of(cls, item: dict[str, Any]) -> "AgentProcess":
        return cls(**{name: item.get(name) for name in cls.__dataclass_fields__})


@dataclass(frozen=True)
class AgentLogs:
    stdout: str
    stderr: str


def submit_agent(agent_id: str, task: str, base_url: str | None = None, *,
                 time_limit_s: float | None = None) -> int:
    """Start an agent on ``task``; its execution id."""
    config: dict[str, Any] = {"task": task, **({"time_limit_s": time_limit_s} if time_limit_s is not None else {})}
    return int(call_route("POST", "/agents/submit", None, base_url, {"agent_id": agent_id, "agent_config": config})
               ["execution_id"])


def agent_status(execution_id: int, base_url: str | None = None, *, wait: float = 0) -> AgentStatus:
    """Where a run stands; with ``wait``, the kernel holds the answer up to that many seconds (at most 60) until
    the run ends."""
    return AgentStatus.of(get_json(f"/agents/{execution_id}/status?wait={wait}", base_url, timeout=wait + 30))


def wait_agent(execution_id: int, base_url: str | None = None) -> AgentStatus:
    """The run's status once it has ended (completed or failed); the time limit bounds the wait."""
    while True:
        status = agent_status(execution_id, base_url, wait=LONG_POLL_S)
        if status.status != "running":
            return status


def list_agents(base_url: str | None = None) -> list[AgentProcess]:
    """Every run this kernel knows (with tokens required: the caller's own), oldest first."""
    return [AgentProcess.of(item) for item in get_json("/agents/ps", base_url).get("processes", [])]


def cancel_agent(execution_id: int, base_url: str | None = None) -> AgentStatus:
    """Kill a running agent (its whole process group); its status afterwards (failed, error ``cancelled``)."""
    call_route("POST", f"/agents/{execution_id}/cancel", None, base_url)
    return agent_status(execution_id, base_url)


def agent_logs(execution_id: int, base_url: str | None = None, *, tail_kb: int = 64) -> AgentLogs:
    """The last ``tail_kb`` KiB of what the agent wrote to stdout and stderr."""
    reply = get_json(f"/agents/{execution_id}/logs?tail_kb={tail_kb}", base_url)
    return AgentLogs(reply.get("stdout", ""), reply.get("stderr", ""))

