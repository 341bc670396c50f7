"""Storage requests as the AIOS SDK sends them — ``{operation_type, params}`` — checked and normalised.

One parser serves every caller: the HTTP layer (which reports a malformed request as 422 naming the field, a
refused value as 400 in the reply envelope), the handler's ``prepare`` for syscalls made inside the kernel, and
``operate_file`` (calls a model wrote). A problem raises :class:`InvalidRequest` with the field
(``operation_type`` or ``params.<name>``) and what is wrong with it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from aios.params import (
    InvalidRequest,
    OperationRequest,
    Refused,
    Spec,
    agent_name,
    checked_params,
    flag,
    kind_of,
    operation_of,
    point_in_time,
    positive,
    query_text,
    stored_text,
    text,
)
from aios.storage.paths import check_path_text

MAX_RESULTS = 100
MAX_KEYWORDS = 32

__all__ = ["InvalidRequest", "StorageRequest", "parse_request", "OPERATIONS"]


@dataclass(frozen=True)
class StorageRequest(OperationRequest):
    base_url: str | None = None  # the URL the caller reached the kernel at (for share links)


def _path(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"must be a string (a path), not {kind_of(value)}")
    check_path_text(value)
    return value


def _text(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"must be a string (text files only), not {kind_of(value)}")
    return text(value)


def _keywords(value: Any) -> list[str] | None:
    words = [value] if isinstance(value, str) else value  # the upstream tool schema sends one string
    if not isinstance(words, list) or not all(isinstance(w, str) for w in words):
        raise ValueError(f"must be a list of strings, not {kind_of(value)}")
    if len(words) > MAX_KEYWORDS:
        raise Refused(f"has {len(words)} keywords; the limit is {MAX_KEYWORDS}")
    words = [stored_text(w).strip() for w in words]  # compared with the index's text in the store
    if any(not w for w in words):
        raise Refused("must not hold empty keywords")
    return words or None


def _link(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"must be a share URL or token, not {kind_of(value)}")
    if not value.strip():
        raise Refused("must be a share URL or token, not an empty string")
    return value.strip()


# Another agent's files, reached with a grant from it (the access manager checks).
_OWNER: Spec = {"owner": (agent_name, False)}
# Per operation: each parameter's check and whether it is required. Optional ones may be null.
OPERATIONS: dict[str, Spec] = {
    "mount": {"root_dir": (_path, True)},
    "create_file": {"file_path": (_path, True), **_OWNER},
    "create_dir": {"dir_path": (_path, True), **_OWNER},
    "write": {"file_path": (_path, True), "content": (_text, True), **_OWNER},
    "read": {"file_path": (_path, True), "version": (positive(), False), **_OWNER},
    "list": {"dir_path": (_path, False), "recursive": (flag, False), **_OWNER},
    "delete": {"file_path": (_path, False), "dir_path": (_path, False), "recursive": (flag, False), **_OWNER},
    "history": {"file_path": (_path, True), "limit": (positive(), False), **_OWNER},
    "retrieve": {"query_text": (query_text, True), "n": (positive(MAX_RESULTS), False), "keywords": (_keywords, False),
                 **_OWNER},
    "rollback": {"file_path": (_path, True), "n": (positive(), False), "time": (point_in_time, False), **_OWNER},
    "share": {"file_path": (_path, True), "expires_in": (positive(), False)},
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
    operation = operation_of(operation_type, OPERATIONS, OPERATION_ALIASES)
    checked = checked_params(operation, OPERATIONS[operation], params, PARAM_ALIASES,
                             together=lambda given: _check_combination(operation, given))
    return StorageRequest(operation, checked, base_url)


def _check_combination(operation: str, given: set[str]) -> None:
    """Which parameters go together: a wrong set is malformed (a 422 over HTTP), as a missing or an unknown
    parameter is, whatever the values."""
    if operation in _ONE_OF and sum(name in given for name in _ONE_OF[operation]) != 1:
        first, second = _ONE_OF[operation]
        raise InvalidRequest(f"params.{first}", f"{operation!r} takes exactly one of {first} and {second}")
    if operation == "rollback" and "n" in given and "time" in given:
        raise InvalidRequest("params.time", "give n (versions back) or time (a point in time), not both")
