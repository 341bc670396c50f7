"""Typed replies of the kernel, as agents see them."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from aios.sdk.transport import not_an_envelope


@dataclass(frozen=True)
class ToolCall:
    name: str  # "author/name", as the tool was offered
    parameters: dict[str, Any]
    id: str


@dataclass(frozen=True)
class Timings:
    """One entry per scheduling slice; Unix seconds (times) and seconds (durations)."""

    start_times: list[float] = field(default_factory=list)
    end_times: list[float] = field(default_factory=list)
    waiting_times: list[float] = field(default_factory=list)
    turnaround_times: list[float] = field(default_factory=list)

    @classmethod
    def of(cls, envelope: dict[str, Any]) -> "Timings":
        """The timing lists of a reply envelope."""
        return cls(**{k: list(envelope.get(k) or []) for k in cls.__dataclass_fields__})

    @property
    def waiting(self) -> float:
        """Total time the syscall spent queued."""
        return sum(self.waiting_times)

    @property
    def turnaround(self) -> float:
        """From submission to the end of the last slice."""
        return self.turnaround_times[-1] if self.turnaround_times else 0.0


@dataclass(frozen=True)
class LLMResponse:
    """An LLM syscall's reply. ``finish_reason`` says why it ended: ``stop`` (a natural end: then ``finished``
    is true), ``length`` (``max_new_tokens`` or the model's context), ``kv_budget`` (the model's KV-cache budget
    could not hold it), ``cancelled``, or ``error``; None from a kernel that does not say."""

    response_message: str | None
    tool_calls: list[ToolCall] | None
    finished: bool
    error: str | None
    status_code: int
    timings: Timings
    finish_reason: str | None = None
    usage: dict[str, int] | None = None  # {"prompt_tokens", "completion_tokens"}; None when no generation ended

    def json(self) -> Any:
        """The reply parsed as JSON (for ``llm_chat_with_json_output``)."""
        if self.response_message is None:
            raise ValueError("the reply has no message to parse")
        return json.loads(self.response_message)

    @classmethod
    def from_envelope(cls, envelope: Any) -> "LLMResponse":
        """Parse a kernel reply; anything else raises :class:`AIOSError` (status 0), never a KeyError."""
        try:
            return cls._parse(envelope)
        except (KeyError, TypeError, ValueError, AttributeError):
            raise not_an_envelope(envelope) from None

    @classmethod
    def _parse(cls, envelope: dict[str, Any]) -> "LLMResponse":
        response = envelope["response"]
        calls = response.get("tool_calls")
        return cls(
            response_message=response.get("response_message"),
            tool_calls=None if calls is None else [ToolCall(c["name"], c.get("parameters") or {}, c["id"]) for c in calls],
            finished=bool(response.get("finished")),
            error=response.get("error"),
            status_code=int(response.get("status_code", 200)),
            timings=Timings.of(envelope),
            finish_reason=response.get("finish_reason"),
            usage=response.get("usage"),
        )
