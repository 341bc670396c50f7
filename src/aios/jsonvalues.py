"""What a JSON value the kernel takes may hold, checked before anything else reads it: Python's JSON reader takes
more than JSON (NaN, infinities, strings with lone surrogates) and any depth, and a later step would fail on
them far from where they came in (a reply that cannot be written, a check that recurses past Python's limit)."""

from __future__ import annotations

import math
from typing import Any

# JSON nested deeper than this is refused before anything walks it: real schemas and messages stay far below,
# and every check after this one can then recurse safely.
MAX_JSON_DEPTH = 64


def json_problem(value: Any) -> tuple[list[Any], str] | None:
    """``(path, what)`` for the first part of a parsed JSON value that is nested too deeply, is a string with a
    lone surrogate, or is NaN or an infinity; None when there is none. Iterative, so any depth is safe to walk."""
    stack: list[tuple[Any, tuple[Any, ...]]] = [(value, ())]
    while stack:
        item, path = stack.pop()
        if len(path) > MAX_JSON_DEPTH:
            return list(path[:4]), f"nested more than {MAX_JSON_DEPTH} levels deep"
        if isinstance(item, dict):
            for key, child in item.items():
                if not _encodable(key):
                    return list(path), "a key is not valid Unicode (it holds a lone surrogate)"
                stack.append((child, (*path, key)))
        elif isinstance(item, list):
            stack.extend((child, (*path, index)) for index, child in enumerate(item))
        elif isinstance(item, str) and not _encodable(item):
            return list(path), "not valid Unicode text (it holds a lone surrogate such as \\ud800)"
        elif isinstance(item, float) and not math.isfinite(item):
            return list(path), (f"not a finite number (it reads as {item}: NaN, infinities and numbers beyond "
                                "±1.8e308 are refused)")
    return None


def _encodable(text: str) -> bool:
    if text.isascii():
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def not_an_object(schema: dict[str, Any]) -> str | None:
    """Why a parameters schema cannot describe an object (its ``type`` names others: calls pass their parameters
    by name, as one object); None when it can. A schema without ``type`` may still allow other values: the
    calls themselves are checked for an object."""
    kind = schema.get("type", "object")
    if kind == "object" or kind == ["object"]:
        return None
    return f"must describe an object (type: object), not type {kind!r}"
