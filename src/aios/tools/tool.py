"""What a tool is to the kernel: a name, a description, a JSON Schema for its parameters, and ``run``.

``run(params, context)`` may be a plain function (it then runs on the tool threads, so a blocking tool never
stalls the kernel) or a coroutine function (it runs on the event loop: it must not block). It returns text, or
any JSON value. ``context`` says which agent is calling and lets a tool make syscalls as that agent.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable

from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError

from aios.jsonvalues import not_an_object

NAME = re.compile(r"[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+")
EMPTY_PARAMETERS: dict[str, Any] = {"type": "object", "properties": {}}


class ToolError(Exception):
    """A tool ran and failed in a way it wants to report plainly (the message is the whole story)."""


class InvalidTool(ValueError):
    """A tool definition the kernel cannot use; the message says which tool and what is wrong."""


@dataclass(frozen=True)
class ToolContext:
    agent_name: str
    # Make a syscall as the calling agent: ``await call(kind, agent_name, payload)`` (the kernel's ``call``).
    call: Callable[..., Awaitable[Any]]
    # A person approved this call when it was admitted: a storage operation it makes is not asked about again.
    approved: bool = False


@dataclass(frozen=True)
class Tool:
    name: str  # "author/name"
    description: str
    parameters: dict[str, Any]  # JSON Schema of the parameters object
    run: Callable[[dict[str, Any], ToolContext], Any]
    timeout_s: float | None = None  # None: the kernel's tools.default_timeout_s
    # How many calls may run at once; 1 is AIOS's conflict rule (never two at a time); None: no limit.
    max_concurrency: int | None = None
    requires_confirmation: bool = False  # irreversible: a person may have to approve each call
    source: str = "builtin"  # where it was loaded from, for GET /tools
    validator: Draft202012Validator = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not NAME.fullmatch(self.name):
            raise InvalidTool(f"tool name {self.name!r} must be author/name (letters, digits, _ . -)")
        if not isinstance(self.parameters, dict):
            raise InvalidTool(f"tool {self.name}: parameters must be a JSON Schema object")
        try:
            Draft202012Validator.check_schema(self.parameters)
        except SchemaError as exc:
            raise InvalidTool(f"tool {self.name}: parameters is not a valid JSON Schema: {exc.message}") from None
        if (why := not_an_object(self.parameters)) is not None:
            raise InvalidTool(f"tool {self.name}: parameters {why}")
        # Types checked too: a config.json may hold "5" or "false", which would compare badly or read as true.
        if self.timeout_s is not None and not (_number(self.timeout_s) and self.timeout_s > 0):
            raise InvalidTool(f"tool {self.name}: timeout_s must be a positive number of seconds, "
                              f"not {self.timeout_s!r}")
        if self.max_concurrency is not None and not (_number(self.max_concurrency, (int,))
                                                     and self.max_concurrency >= 1):
            raise InvalidTool(f"tool {self.name}: max_concurrency must be a whole number, 1 or more, "
                              f"not {self.max_concurrency!r}")
        if not isinstance(self.requires_confirmation, bool):
            raise InvalidTool(f"tool {self.name}: requires_confirmation must be true or false, "
                              f"not {self.requires_confirmation!r}")
        object.__setattr__(self, "validator", Draft202012Validator(self.parameters))

    def call_format(self) -> dict[str, Any]:
        """The tool as an OpenAI function tool, the form models and the AIOS SDK's ``tools`` take."""
        return {"type": "function", "function": {"name": self.name, "description": self.description,
                                                 "parameters": self.parameters}}

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "description": self.description, "parameters": self.parameters,
                "timeout_s": self.timeout_s, "max_concurrency": self.max_concurrency,
                "requires_confirmation": self.requires_confirmation, "source": self.source}


def _number(value: Any, types: tuple[type, ...] = (int, float)) -> bool:
    """``value`` is one of ``types``, and not a bool (which Python counts as an int)."""
    return isinstance(value, types) and not isinstance(value, bool)
