"""Shared helper for benchmark scripts: keep each script's results in its own delimited section of a markdown file."""

from __future__ import annotations

from pathlib import Path


def write_section(path: Path, key: str, markdown: str) -> None:
    """Put ``markdown`` between ``<!-- key:begin -->`` and ``<!-- key:end -->`` in ``path``.

    An existing section is replaced in place; otherwise the section is appended at the end (the file is created if
    missing). Everything outside the section is kept byte for byte, line endings included.
    """
    begin, end = f"<!-- {key}:begin -->", f"<!-- {key}:end -->"
    block = f"{begin}\n{markdown.strip()}\n{end}"
    text = path.read_bytes().decode("utf-8") if path.exists() else ""
    start = text.find(begin)
    stop = text.find(end, start) if start >= 0 else -1
    if start >= 0 and stop >= 0:
        text = text[:start] + block + text[stop + len(end):]
    else:
        sep = "" if not text else "\n" if text.endswith("\n") else "\n\n"
        text = text + sep + block + "\n"
    path.write_bytes(text.encode("utf-8"))
