"""Reading the ``query_data`` of the operation-style subsystems (storage, memory) — ``{query_class,
operation_type, params}`` as the AIOS SDK sends it — into a request. A malformed one is a 422 that names the
field (``body.query_data.params.content``); one whose values the kernel refuses is a BadRequest naming it too,
which ``/query`` answers inside the reply envelope (HTTP 200), where an AIOS agent can read it."""

from __future__ import annotations

from typing import Any, Callable, TypeVar

from fastapi.exceptions import RequestValidationError

from aios.params import InvalidRequest, bad_request

Request = TypeVar("Request")
_KEYS = ("query_class", "operation_type", "params")


def read_operation(query_class: str, query_data: dict[str, Any], parse: Callable[[Any, Any], Request]) -> Request:
    """``parse(operation_type, params)``, after checking the keys around them; raises RequestValidationError
    (malformed) or BadRequest (refused)."""
    problems = [(key, f"unknown field (a {query_class} query has {', '.join(_KEYS)})")
                for key in query_data if key not in _KEYS]
    if query_data.get("query_class", query_class) not in (query_class, None):
        problems.append(("query_class", f"must be {query_class!r} for query_type {query_class}"))
    if problems:
        raise _invalid([(key, message) for key, message in problems])
    try:
        return parse(query_data.get("operation_type"), query_data.get("params"))
    except InvalidRequest as exc:
        if not exc.malformed:
            raise bad_request(query_class, exc) from None
        raise _invalid([(*exc.field.split("."), exc.message)]) from None


def _invalid(problems: list[tuple[str, ...]]) -> RequestValidationError:
    return RequestValidationError([{"loc": ("body", "query_data", *where), "msg": message, "type": "value_error"}
                                   for *where, message in problems])
