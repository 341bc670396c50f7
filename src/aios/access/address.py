"""Where the kernel of a data dir serves, kept beside its administrator's token (``access/admin.url``).

The command line sends the token it reads from the data dir only to that address, and only while the process
that wrote it lives: sent to any loopback port, it would go to whoever listens there — on a shared machine,
another user's program on a port the kernel left.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

RECORD = "admin.url"


WILDCARDS = {"0.0.0.0": "127.0.0.1", "::": "[::1]"}  # bound to every address: reached on this machine at these


def record(access_dir: Path, url: str) -> None:
    """Say that this process serves the data dir at ``url`` (replacing what an earlier kernel said)."""
    parts = urlsplit(url)
    if parts.hostname in WILDCARDS:
        url = urlunsplit(parts._replace(netloc=f"{WILDCARDS[parts.hostname]}:{parts.port}"))
    partial = access_dir / f".{RECORD}.{os.getpid()}"
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as file:
        json.dump({"url": url, "pid": os.getpid(), "started": _started(os.getpid())}, file)
    os.replace(partial, access_dir / RECORD)


def forget(access_dir: Path) -> None:
    """Take back what this process recorded (a later kernel's record stays)."""
    if _recorded(access_dir).get("pid") == os.getpid():
        (access_dir / RECORD).unlink(missing_ok=True)


def serving(access_dir: Path) -> str | None:
    """The address the data dir's kernel serves at, if one of this user's processes recorded it and still runs."""
    said = _recorded(access_dir)
    pid, url = said.get("pid"), said.get("url")
    if not isinstance(pid, int) or not isinstance(url, str) or pid <= 0:
        return None
    try:
        os.kill(pid, 0)  # no signal: only whether it lives, and is this user's
    except OSError:
        return None
    # The same process, not another that got its pid after a crash left the record behind.
    return url if said.get("started") == _started(pid) else None


def _started(pid: int) -> int | None:
    """When process ``pid`` started, in clock ticks since boot (None where there is no /proc to say)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[19])  # field 22; the name before it may hold spaces


def _recorded(access_dir: Path) -> dict:
    try:
        said = json.loads((access_dir / RECORD).read_text())
    except (OSError, ValueError):
        return {}
    return said if isinstance(said, dict) else {}
