"""Checking the requests of the operation-style subsystems (storage, memory): ``{operation_type, params}`` as
the AIOS SDK sends them, read against a table of each operation's parameters.

A problem raises :class:`InvalidRequest` naming the field (``operation_type`` or ``params.<name>``) and what is
wrong with it, and whether the request is malformed (a wrong type, an unknown or missing parameter) or only
refused (a value of the right type that the kernel does not take: see :class:`Refused`). The HTTP layer answers
a malformed one as 422 located at that field and a refused one as 400 in the reply envelope; a syscall made
inside the kernel gets 400 for either.
"""

from __future__ import annotations

import math
import reprlib
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable, TypeVar

from aios.errors import BadRequest

MAX_QUERY_CHARS = 10_000

Check = Callable[[Any], Any]  # returns the value as the operation takes it; raises ValueError (Refused) saying why not
Spec = dict[str, tuple[Check, bool]]  # per parameter: its check, and whether it is required


class Refused(ValueError):
    """A value of the type and form a parameter takes that the kernel refuses: out of range, empty, too long, too
    many entries. Kept apart from a plain ValueError (a malformed request) because the HTTP layer answers it in the
    reply envelope (HTTP 200) rather than as 422: the AIOS SDK raises on any non-2xx status before it reads the
    body, so an AIOS agent learns why only from the envelope, as upstream AIOS answers such values. A value not of
    the form a parameter takes (a date that does not parse, an operation's unknown name) stays malformed."""


class InvalidRequest(ValueError):
    """What is wrong with a request, at ``field``; ``malformed``: its shape or a type is wrong (not merely a value
    the kernel refuses)."""

    def __init__(self, field: str, message: str, malformed: bool = True) -> None:
        super().__init__(f"{field}: {message}")
        self.field, self.message, self.malformed = field, message, malformed


@dataclass(frozen=True)
class OperationRequest:
    operation: str  # one of the subsystem's operations
    params: dict[str, Any] = field(default_factory=dict)  # checked; absent (and null) ones are left out
    # Whose resource it works on, once the access checks admitted it (the handler's admit). The fields from here
    # on are named, never positional: a subclass's own fields (StorageRequest.base_url) follow them.
    owner: str | None = field(default=None, kw_only=True)
    # A person approved it already: the tool call that makes it was asked about when it was admitted. Set only
    # inside the kernel (no wire request can), so the operation is not asked about twice.
    approved: bool = field(default=False, kw_only=True)

    def admitted_owner(self) -> str:
        """Whose resource it works on; a request that was not admitted (``Kernel.submit`` admits each) has none."""
        if self.owner is None:
            raise RuntimeError(f"a {self.operation} request ran without being admitted (Kernel.submit admits each)")
        return self.owner


Request = TypeVar("Request", bound=OperationRequest)


def syscall_request(payload: Any, kind: type[Request], parse: Callable[[Any, Any], Request], what: str) -> Request:
    """A syscall's payload as a request of ``kind``: one already checked, or ``{operation_type, params}`` to
    check; a problem is a BadRequest naming it."""
    if isinstance(payload, kind):
        return payload
    if isinstance(payload, dict):
        try:
            return parse(payload.get("operation_type"), payload.get("params"))
        except InvalidRequest as exc:
            raise bad_request(what, exc) from None
    raise BadRequest(f"a {what} syscall takes a {kind.__name__}, not {type(payload).__name__}")


def bad_request(what: str, problem: InvalidRequest) -> BadRequest:
    """``problem`` of a ``what`` request (``memory``, ``storage``) as the error a caller is answered with."""
    return BadRequest(f"{what} request: {problem}")


def operation_of(operation_type: Any, operations: dict[str, Spec], aliases: dict[str, str]) -> str:
    """The operation ``operation_type`` names (directly or by an alias)."""
    name = aliases.get(operation_type, operation_type) if isinstance(operation_type, str) else None
    if name not in operations:
        raise InvalidRequest("operation_type", f"must be one of {', '.join(operations)}, not {operation_type!r}"[:300])
    return name  # type: ignore[return-value]


def checked_params(operation: str, spec: Spec, params: Any, aliases: dict[str, str] | None = None,
                   together: Callable[[set[str]], None] | None = None) -> dict[str, Any]:
    """``params`` checked against ``spec``: every value as its check returns it, null ones (and absent optional
    ones) left out. ``aliases``: other names a parameter may be sent under; ``together``: checks which parameters
    were given (by their names in ``spec``) and raises InvalidRequest for a set that does not go together.

    A malformed request (an unknown, missing or mistyped parameter, a wrong set) is reported before a refused
    value, whatever the order of the params: the first decides between a 422 and a refusal in the envelope."""
    if params is None:
        params = {}
    if not isinstance(params, dict):
        raise InvalidRequest("params", f"must be an object, not {kind_of(params)}")
    aliases = aliases or {}
    checked: dict[str, Any] = {}
    given: dict[str, str] = {}  # parameter -> the name it was sent under
    refused: InvalidRequest | None = None
    for raw_name, value in params.items():
        name = aliases.get(raw_name, raw_name) if raw_name not in spec else raw_name
        if name not in spec:
            raise InvalidRequest(f"params.{raw_name}"[:120], f"is not a parameter of {operation!r} (it takes "
                                 f"{', '.join(spec)})")
        if value is not None:
            if name in given:  # under its name and an alias: which one was meant is not ours to guess
                raise InvalidRequest(f"params.{raw_name}", f"and params.{given[name]} are one parameter ({name}) of "
                                     f"{operation!r}: give it once")
            given[name] = raw_name
            try:
                checked[name] = spec[name][0](value)
            except Refused as exc:
                refused = refused or InvalidRequest(f"params.{raw_name}", str(exc), malformed=False)
            except ValueError as exc:
                raise InvalidRequest(f"params.{raw_name}", str(exc)) from None
    missing = [name for name, (_, required) in spec.items() if required and name not in given]
    if missing:
        raise InvalidRequest(f"params.{missing[0]}", f"is required for {operation!r}")
    if together is not None:
        together(set(given))
    if refused is not None:
        raise refused
    return checked


# -- checks shared by the subsystems -------------------------------------------------------------------------------
def text(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"must be a string, not {kind_of(value)}")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("is not valid Unicode (it holds a lone surrogate)") from None
    return value


def non_empty_text(limit: int) -> Check:
    """A string that is not only white space, of at most ``limit`` characters."""

    def check(value: Any) -> str:
        found = text(value)
        if not found.strip():
            raise Refused("must not be empty")
        if len(found) > limit:
            raise Refused(f"is {len(found)} characters long; the limit is {limit}")
        return found

    return check


query_text = non_empty_text(MAX_QUERY_CHARS)  # search text

NUL_REFUSAL = "contains the NUL character (\\u0000), which PostgreSQL text cannot hold; remove it"


def storable(check: Check) -> Check:
    """``check`` for text that a store keeps or compares, refusing also the NUL character: PostgreSQL text cannot
    hold it, and the kernel refuses it on SQLite too, so a request is answered alike on both backends."""

    def checked(value: Any) -> str:
        found = check(value)
        if "\x00" in found:
            raise Refused(NUL_REFUSAL)
        return found

    return checked


stored_text = storable(text)


MAX_INTEGER = 2**63 - 1  # the largest integer the stores (SQLite, PostgreSQL bigint) can hold


def positive(limit: int = MAX_INTEGER) -> Check:
    """An integer from 1 to ``limit``."""

    def check(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"must be an integer, not {kind_of(value)}")
        if limit != MAX_INTEGER and not 1 <= value <= limit:
            raise Refused(f"must be between 1 and {limit}, not {reprlib.repr(value)}")
        if value < 1:
            raise Refused(f"must be at least 1, not {reprlib.repr(value)}")
        if value > limit:
            raise Refused(f"must be at most {limit} (a 64-bit integer), not {reprlib.repr(value)}")
        return value

    return check


def flag(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"must be true or false, not {kind_of(value)}")
    return value


def point_in_time(value: Any) -> float:
    """Unix seconds, or an ISO 8601 date-time (one without a time zone is the kernel's local time)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        try:
            finite = math.isfinite(value)
        except OverflowError:  # an integer too large for a float
            finite = False
        if not finite:
            raise Refused(f"must be a finite number of Unix seconds, not {reprlib.repr(value)}")
        return _placeable(float(value), f"{reprlib.repr(value)} seconds")
    if isinstance(value, str):
        try:
            when = datetime.fromisoformat(value)
        except ValueError:
            raise ValueError(f"must be Unix seconds or an ISO 8601 date-time such as 2025-01-31T12:00:00, "
                             f"not {value[:60]!r}") from None
        try:
            seconds = when.timestamp()
        except (OverflowError, OSError, ValueError):  # a date this platform's clock cannot place
            raise Refused(f"is outside the dates this kernel can place: {value[:60]!r}") from None
        return _placeable(seconds, repr(value[:60]))
    raise ValueError(f"must be Unix seconds or an ISO 8601 date-time, not {kind_of(value)}")


def _placeable(seconds: float, said: str) -> float:
    """``seconds``, once sure the kernel can write them as a UTC date-time (as its replies and errors do)."""
    try:
        datetime.fromtimestamp(seconds, timezone.utc)
    except (OverflowError, OSError, ValueError):
        raise Refused(f"is outside the dates this kernel can place: {said}") from None
    return seconds


def agent_name(value: Any) -> str:
    """Another agent's name (``owner``: whose files or memories to reach; the access manager checks the grant)."""
    if not isinstance(value, str):
        raise ValueError(f"must be an agent's name, not {kind_of(value)}")
    if not value.strip() or len(value) > 256:
        raise Refused(f"must be an agent's name, not {value[:60]!r}")
    return value


def kind_of(value: Any) -> str:
    return "null" if value is None else type(value).__name__
