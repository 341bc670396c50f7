"""Path confinement: every path an agent names resolves inside its mount, or is refused naming the path.

Two layers. ``check_path_text`` looks at the text alone (it runs when a request is parsed): no NUL, no line
breaks or other control characters, not too long (in UTF-8 bytes, as file systems count). ``resolve`` then
places the path inside a mount root: a relative path is taken from the root, an absolute one must already be
inside it, and the result is resolved with symlinks followed, so ``..``, an absolute path elsewhere, and a
symlink that leads out are all refused.
"""

from __future__ import annotations

import hashlib
import os
import re
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from aios.errors import BadRequest, Forbidden
from aios.params import Refused

MAX_PATH_BYTES = 4096  # a whole path, as Linux allows (PATH_MAX); file systems count bytes, not characters
MAX_NAME_BYTES = 255  # one path component, as Linux file systems allow
MAX_PATH_DEPTH = 256  # components of a path


def check_path_text(text: str) -> None:
    """Raise ValueError saying what is wrong with a path's text (the caller names the field): :class:`Refused`
    for a path this kernel does not take (too long, a NUL or a control character in it)."""
    size = len(text.encode("utf-8", "surrogatepass"))
    if size > MAX_PATH_BYTES:
        raise Refused(f"is {size} bytes long in UTF-8; the limit is {MAX_PATH_BYTES}")
    if "\x00" in text:
        raise Refused("contains a NUL character, which no file name can hold")
    bad = next((c for c in text if unicodedata.category(c) in ("Cc", "Zl", "Zp")), None)
    if bad is not None:
        raise Refused(f"contains the control character {bad!r} (line breaks and control characters are "
                      "refused in file names)")
    parts = text.split("/")
    for part in parts:
        if len(part.encode("utf-8", "surrogatepass")) > MAX_NAME_BYTES:
            raise Refused(f"has a component longer than {MAX_NAME_BYTES} bytes: {part[:40]!r}...")
    if len(parts) > MAX_PATH_DEPTH:  # deeper trees than any user keeps; Python walks them by recursion
        raise Refused(f"has {len(parts)} components; the limit is {MAX_PATH_DEPTH}")
    if not is_text(text):
        raise ValueError("is not valid Unicode (it holds a lone surrogate)")


NOT_TEXT = "its path is not UTF-8 text (a name made outside the kernel): rename it to keep versions of it"


def is_text(path: str) -> bool:
    """Whether a path read from the disk is UTF-8 text (Python holds the bytes of one that is not as lone
    surrogates, which no reply and no database can carry)."""
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def escaped(path: str) -> str:
    """A path that is not UTF-8 text as text, its other bytes written \\xNN."""
    return path.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


@dataclass(frozen=True)
class Place:
    """A path inside a mount: ``absolute`` (symlinks resolved) and ``relative`` to the root ("" is the root)."""

    absolute: Path
    relative: str


def resolve(root: Path, text: str) -> Place:
    """Where ``text`` points inside the mount ``root`` (an already resolved directory). Raises Forbidden when it
    points outside, naming both."""
    check_or_bad_request(text)
    path = Path(text)
    target = path if path.is_absolute() else root / path
    real = Path(os.path.realpath(target))  # follows every symlink, also in the parents
    if not inside(real, root):
        # Where it leads is not said: a link's target, or the layout of the machine, is no agent's business.
        how = "" if path.is_absolute() or ".." in path.parts else " (a symbolic link on the way leads out)"
        raise Forbidden(f"path {text!r} leads outside the mount {root}{how}; an agent reaches only its own mount")
    return Place(real, real.relative_to(root).as_posix() if real != root else "")


def check_or_bad_request(text: str) -> None:
    try:
        check_path_text(text)
    except ValueError as exc:
        raise BadRequest(f"path {text[:200]!r} {exc}") from None


# A name escaped past 200 characters is cut to 150 and a hash of the whole: ``<150>-<16 hex digits>``.
_CUT_NAME = re.compile(r".{150}-[0-9a-f]{16}", re.DOTALL)


def default_mount(storage_root: Path, agent_name: str) -> Path:
    """``<storage_root>/<agent>``: the agent's name as one directory name, with anything that is not a plain
    name character percent-encoded, so ``a/b`` and ``a`` never share (or nest) a directory. A name that
    escapes to over 200 characters is cut, with a hash of the whole; a name that escapes to that very form is
    refused (Forbidden), or an agent could take the directory of another's long name."""
    name = quote(agent_name, safe="-_.@+")
    if name in (".", ".."):
        name = name.replace(".", "%2E")
    if _CUT_NAME.fullmatch(name):
        raise Forbidden(f"agent name {agent_name[:40]!r}... has the form of a long name's cut directory (150 "
                        "characters, a dash, 16 hex digits), which storage keeps for those names")
    if len(name) > 200:  # still one valid, distinct name when escaping made it too long
        name = f"{name[:150]}-{hashlib.sha256(agent_name.encode()).hexdigest()[:16]}"
    return storage_root / name


def inside(path: Path, directory: Path) -> bool:
    """Whether ``path`` is ``directory`` or somewhere below it."""
    return path == directory or directory in path.parents


def overlaps(a: Path, b: Path) -> bool:
    """Whether one directory is the other or contains it."""
    return a == b or a in b.parents or b in a.parents
