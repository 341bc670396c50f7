"""Storage requests as the AIOS SDK sends them — ``{operation_type, params}`` — checked and normalised.

One parser serves every caller: the HTTP layer (which reports a problem as 422 naming the field), the handler's
``prepare`` for syscalls made inside the kernel, and ``operate_file`` (calls a model wrote). A problem raises
:class:`InvalidRequest` with the field (``operation_type`` or ``params.<name>``) and what is wrong with it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Callable

from aios.storage.paths import check_path_text

MAX_QUERY_CHARS = 10_000
MAX_RESULTS = 100
MAX_KEYWORDS = 32


class InvalidRequest(ValueError):
    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field, self.message = field, message


@dataclass(frozen=True)
class StorageRequest:
    operation: str  # one of OPERATIONS
    params: dict[str, Any] = field(default_factory=dict)  # checked; absent optional ones are left out
    base_url: str | None = None  # the URL the caller reached the kernel at (for share links)


def _path(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"must be a string (a path), not {_kind(value)}")
    check_path_text(value)
    return value


def _text(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"must be a string (text files only), not {_kind(value)}")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("is not valid Unicode (it holds a lone surrogate)") from None
    return value


def _query(value: Any) -> str:
    text = _text(value)
    if not text.strip():
        raise ValueError("must not be empty")
    if len(text) > MAX_QUERY_CHARS:
        raise ValueError(f"is {len(text)} characters long; the limit is {MAX_QUERY_CHARS}")
    return text


def _positive(limit: int | None = None) -> Callable[[Any], int]:
    def check(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"must be an integer, not {_kind(value)}")
        if value < 1 or (limit is not None and value > limit):
            raise ValueError(f"must be between 1 and {limit}, not {value}" if limit else f"must be at least 1, not {value}")
        return value

    return check


def _flag(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"must be true or false, not {_kind(value)}")
    return value


def _keywords(value: Any) -> list[str] | None:
    words = [value] if isinstance(value, str) else value  # the upstream tool schema sends one string
    if not isinstance(words, list) or not all(isinstance(w, str) for w in words):
        raise ValueError(f"must be a list of strings, not {_kind(value)}")
    if len(words) > MAX_KEYWORDS:
        raise ValueError(f"has {len(words)} keywords; the limit is {MAX_KEYWORDS}")
    words = [_text(w).strip() for w in words]
    if any(not w for w in words):
        raise ValueError("must not hold empty keywords")
    return words or None


def _time(value: Any) -> float:
    """Unix seconds, or an ISO 8601 date-time (one without a time zone is the kernel's local time)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if not math.isfinite(value):
            raise ValueError("must be a finite number of Unix seconds")
        return float(value)
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value).timestamp()
        except ValueError:
            raise ValueError(f"must be Unix seconds or an ISO 8601 date-time such as 2025-01-31T12:00:00, "
                             f"not {value[:60]!r}") from None
    raise ValueError(f"must be Unix seconds or an ISO 8601 date-time, not {_kind(value)}")


def _link(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"must be a share URL or token, not {_kind(value)}")
    return value.strip()


def _agent(value: Any) -> str:
    if not isinstance(value, str) or not value.strip() or len(value) > 256:
        raise ValueError(f"must be an agent's name, not {_kind(value) if not isinstance(value, str) else repr(value[:60])}")
    return value


Check = Callable[[Any], Any]
# Another agent's files, reached with a grant from it (the access manager checks).
_OWNER = {"owner": (_agent, False)}
# Per operation: each parameter's check and whether it is required. Optional ones may be null.
OPERATIONS: dict[str, dict[str, tuple[Check, bool]]] = {
    "mount": {"root_dir": (_path, True)},
    "create_file": {"file_path": (_path, True), **_OWNER},
    "create_dir": {"dir_path": (_path, True), **_OWNER},
    "write": {"file_path": (_path, True), "content": (_text, True), **_OWNER},
    "read": {"file_path": (_path, True), "version": (_positive(), False), **_OWNER},
    "list": {"dir_path": (_path, False), "recursive": (_flag, False), **_OWNER},
    "delete": {"file_path": (_path, False), "dir_path": (_path, False), "recursive": (_flag, False), **_OWNER},
    "history": {"file_path": (_path, True), "limit": (_positive(), False), **_OWNER},
    "retrieve": {"query_text": (_query, True), "n": (_positive(MAX_RESULTS), False), "keywords": (_keywords, False),
                 **_OWNER},
    "rollback": {"file_path": (_path, True), "n": (_positive(), False), "time": (_time, False), **_OWNER},
    "share": {"file_path": (_path, True), "expires_in": (_positive(), False)},
    "unshare": {"link": (_link, False), "file_path": (_path, False)},
}
# What reaching another agent's files takes, per operation (the others work on the caller's own only).
NEEDS = {"read": "read", "list": "read", "history": "read", "retrieve": "read", "create_file": "write",
         "create_dir": "write", "write": "write", "delete": "write", "rollback": "write"}
# Other names for operations and parameters that AIOS kernels and SDK versions use.
OPERATION_ALIASES = {"read_file": "read", "list_dir": "list", "delete_file": "delete", "delete_dir": "delete",
                     "roll_back": "rollback", "link": "share", "write_file": "write", "rollback_file": "rollback",
                     "share_file": "share", "retrieve_file": "retrieve", "unshare_file": "unshare",
                     "file_history": "history"}
PARAM_ALIASES = {"root": "root_dir", "k": "n", "url": "link", "token": "link"}
# Exactly one of these must be given.
_ONE_OF = {"delete": ("file_path", "dir_path"), "unshare": ("link", "file_path")}


def parse_request(operation_type: Any, params: Any, base_url: str | None = None) -> StorageRequest:
    if not isinstance(operation_type, str) or not isinstance(OPERATIONS.get(
            OPERATION_ALIASES.get(operation_type, operation_type)), dict):
        known = ", ".join(OPERATIONS)
        raise InvalidRequest("operation_type", f"must be one of {known}, not {operation_type!r}"[:300])
    operation = OPERATION_ALIASES.get(operation_type, operation_type)
    if params is None:
        params = {}
    if not isinstance(params, dict):
        raise InvalidRequest("params", f"must be an object, not {_kind(params)}")
    spec = OPERATIONS[operation]
    checked: dict[str, Any] = {}
    for raw_name, value in params.items():
        name = PARAM_ALIASES.get(raw_name, raw_name) if raw_name not in spec else raw_name
        if name not in spec:
            raise InvalidRequest(f"params.{raw_name}"[:120], f"is not a parameter of {operation!r} (it takes "
                                 f"{', '.join(spec)})")
        if value is not None:
            try:
                checked[name] = spec[name][0](value)
            except ValueError as exc:
                raise InvalidRequest(f"params.{raw_name}", str(exc)) from None
    _check_combination(operation, spec, checked)
    return StorageRequest(operation, checked, base_url)


def _check_combination(operation: str, spec: dict[str, tuple[Check, bool]], checked: dict[str, Any]) -> None:
    missing = [name for name, (_, required) in spec.items() if required and name not in checked]
    if missing:
        raise InvalidRequest(f"params.{missing[0]}", f"is required for {operation!r}")
    if operation in _ONE_OF and sum(name in checked for name in _ONE_OF[operation]) != 1:
        first, second = _ONE_OF[operation]
        raise InvalidRequest(f"params.{first}", f"{operation!r} takes exactly one of {first} and {second}")
    if operation == "rollback" and "n" in checked and "time" in checked:
        raise InvalidRequest("params.time", "give n (versions back) or time (a point in time), not both")


def _kind(value: Any) -> str:
    return "null" if value is None else type(value).__name__
