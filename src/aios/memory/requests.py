"""Memory requests as the AIOS SDK sends them — ``{operation_type, params}`` — checked and normalised.

One parser serves the HTTP layer (a malformed request is a 422 naming the field, a refused value a 400 in the
reply envelope), the handler's ``prepare`` for syscalls made inside the kernel (personalization), and tests.
``metadata`` is the agent's own: any JSON object, whose ``keywords``, ``tags``, ``context`` and ``category``
become the note's fields; the fields the kernel keeps (links, times, counts, history) cannot be set through it.
"""

from __future__ import annotations

import json
import reprlib
from dataclasses import dataclass
from typing import Any

from aios.memory.notes import KERNEL_FIELDS
from aios.memory.store import Filters
from aios.params import (
    MAX_INTEGER,
    NUL_REFUSAL,
    InvalidRequest,
    OperationRequest,
    Refused,
    Spec,
    agent_name,
    checked_params,
    kind_of,
    non_empty_text,
    operation_of,
    point_in_time,
    positive,
    query_text,
    storable,
    stored_text,
)

MAX_CONTENT_CHARS = 100_000
MAX_METADATA_BYTES = 64 * 1024
MAX_RESULTS = 100
MAX_LABELS = 32  # tags or keywords per note
MAX_LABEL_CHARS = 100
MAX_CONTEXT_CHARS = 2_000
MAX_ID_CHARS = 128

__all__ = ["InvalidRequest", "MemoryRequest", "parse_request", "OPERATIONS"]


@dataclass(frozen=True)
class MemoryRequest(OperationRequest):
    """A memory operation (one of OPERATIONS) and its checked params."""


_content = storable(non_empty_text(MAX_CONTENT_CHARS))
_id_text = storable(non_empty_text(MAX_ID_CHARS))


def _memory_id(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"must be a memory id (a string), not {kind_of(value)}")
    return _id_text(value)


def _metadata(value: Any) -> dict[str, Any]:
    """The agent's metadata: a JSON object; its note fields checked. The kernel's own fields are left out: an
    agent may send back the metadata a reply gave it (AIOS agents do, and AIOS ignores them too), and the
    kernel's values stand."""
    if not isinstance(value, dict):
        raise ValueError(f"must be an object, not {kind_of(value)}")
    checked = {key: item for key, item in value.items() if key not in KERNEL_FIELDS}
    for name, check in (("keywords", _labels), ("tags", _labels), ("context", _context), ("category", _category)):
        if checked.get(name) is not None:
            try:
                checked[name] = check(checked[name])
            except ValueError as exc:
                raise type(exc)(f"{name} {exc}") from None  # a refused value stays refused
    where = _nul_at(checked)
    if where is not None:
        where = where.replace("\x00", "\\u0000")  # the key that holds it, written out
        raise Refused(f"{where} {NUL_REFUSAL}")
    # The size last: a field of the wrong type is malformed (422) whatever the size.
    size = len(json.dumps(value, ensure_ascii=False).encode())
    if size > MAX_METADATA_BYTES:
        raise Refused(f"is {size} bytes as JSON; the limit is {MAX_METADATA_BYTES}")
    return checked


def _nul_at(value: Any, path: str = "") -> str | None:
    """Where in ``value`` (JSON at ``path``) a key or a string holds the NUL character; None if none does."""
    if isinstance(value, str):
        return path if "\x00" in value else None
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, item in items:
        inner = f"{path}.{key}" if path else str(key)
        found = inner if "\x00" in str(key) else _nul_at(item, inner)
        if found is not None:
            return found
    return None


def _labels(value: Any) -> list[str]:
    """Tags or keywords: a list of strings (or one string), trimmed, each once (case-insensitive)."""
    labels = [value] if isinstance(value, str) else value
    if not isinstance(labels, list) or not all(isinstance(label, str) for label in labels):
        raise ValueError(f"must be a list of strings, not {kind_of(value)}")
    if len(labels) > MAX_LABELS:
        raise Refused(f"has {len(labels)} entries; the limit is {MAX_LABELS}")
    unique: dict[str, str] = {}
    for label in (stored_text(label).strip() for label in labels):
        if not label or len(label) > MAX_LABEL_CHARS:
            raise Refused(f"must hold strings of 1 to {MAX_LABEL_CHARS} characters, not {label[:40]!r}")
        unique.setdefault(label.casefold(), label)
    return list(unique.values())


def _context(value: Any) -> str:
    found = stored_text(value).strip()
    if len(found) > MAX_CONTEXT_CHARS:
        raise Refused(f"is {len(found)} characters long; the limit is {MAX_CONTEXT_CHARS}")
    return found


def _category(value: Any) -> str:
    found = stored_text(value).strip()
    if not found or len(found) > MAX_LABEL_CHARS:
        raise Refused(f"must be a string of 1 to {MAX_LABEL_CHARS} characters")
    return found


def _offset(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"must be an integer, not {kind_of(value)}")
    if not 0 <= value <= MAX_INTEGER:
        raise Refused(f"must be from 0 to {MAX_INTEGER}, not {reprlib.repr(value)}")
    return value


def _filter_value(value: Any) -> str:
    found = stored_text(value)
    if not found or len(found) > MAX_LABEL_CHARS:
        raise Refused(f"must be a string of 1 to {MAX_LABEL_CHARS} characters")
    return found


_ADD: Spec = {"content": (_content, True), "metadata": (_metadata, False)}
# Another agent's memories, reached with a grant from it (the access manager checks). Not for agentic memory: its
# model calls are the note's owner's own thinking.
_OWNER: Spec = {"owner": (agent_name, False)}
_SEARCH: Spec = {"content": (query_text, True), "k": (positive(MAX_RESULTS), False), "tags": (_labels, False),
                 "category": (_category, False), "created_after": (point_in_time, False),
                 "created_before": (point_in_time, False),
                 # Newer AIOS SDKs send these; here they filter the agent's own memories by their metadata.
                 "user_id": (_filter_value, False), "sharing_policy": (_filter_value, False), **_OWNER}
# Per operation: each parameter's check and whether it is required. Optional ones may be null.
OPERATIONS: dict[str, Spec] = {
    "add_memory": {**_ADD, **_OWNER},
    "add_agentic_memory": _ADD,
    "get_memory": {"memory_id": (_memory_id, True), **_OWNER},
    "update_memory": {"memory_id": (_memory_id, True), "content": (_content, False), "metadata": (_metadata, False),
                      **_OWNER},
    "remove_memory": {"memory_id": (_memory_id, True), **_OWNER},
    "retrieve_memory": _SEARCH,
    "retrieve_memory_raw": _SEARCH,
    # Ours: the agent's memories, most recent first, a page at a time (k of them, after the first offset).
    "list_memories": {"k": (positive(MAX_RESULTS), False), "offset": (_offset, False), **_OWNER},
}
# What reaching another agent's memories takes, per operation.
NEEDS = {"add_memory": "write", "get_memory": "read", "update_memory": "write", "remove_memory": "write",
         "retrieve_memory": "read", "retrieve_memory_raw": "read", "list_memories": "read"}
# Other names the AIOS SDKs and kernels use.
OPERATION_ALIASES = {"create_memory": "add_memory", "create_agentic_memory": "add_agentic_memory",
                     "read_memory": "get_memory", "delete_memory": "remove_memory", "search_memories": "retrieve_memory"}
PARAM_ALIASES = {"id": "memory_id", "query": "content", "limit": "k"}


def parse_request(operation_type: Any, params: Any) -> MemoryRequest:
    operation = operation_of(operation_type, OPERATIONS, OPERATION_ALIASES)
    checked = checked_params(operation, OPERATIONS[operation], params, PARAM_ALIASES)
    if operation.startswith("retrieve"):
        _check_time_range(checked)
    return MemoryRequest(operation, checked)


def _check_time_range(checked: dict[str, Any]) -> None:
    after, before = checked.get("created_after"), checked.get("created_before")
    if after is not None and before is not None and after > before:
        raise InvalidRequest("params.created_after", "is later than created_before: no memory can match",
                             malformed=False)


def filters_of(params: dict[str, Any]) -> Filters:
    """The search filters among a retrieve request's params."""
    metadata = tuple((key, params[key]) for key in ("user_id", "sharing_policy") if key in params)
    return Filters(tags=tuple(params.get("tags") or ()), category=params.get("category"),
                   created_after=params.get("created_after"), created_before=params.get("created_before"),
                   metadata=metadata)
