"""The memory side of the HTTP API: reading a memory ``query_data`` into a request (422 naming the field when
it is malformed, a BadRequest naming it when the kernel refuses a value)."""

from __future__ import annotations

from typing import Any

from aios.memory.requests import MemoryRequest, parse_request
from aios.server.operation_data import read_operation


def memory_request(query_data: dict[str, Any]) -> MemoryRequest:
    """``{query_class: "memory", operation_type, params}`` as the AIOS SDK sends it, checked."""
    return read_operation("memory", query_data, parse_request)
