"""Reading an agent's file from the disk, where anything may have been put by other means: only a regular file
is read, opening it never blocks and never follows a link, and no more than the size limit is read.

A FIFO opened for reading would wait for a writer, holding the storage I/O thread (and every agent's file
operations behind it) forever; a device or a file grown outside the kernel could be endless. So the file is
opened with ``O_NONBLOCK | O_NOFOLLOW``, its type and size are checked on the open descriptor (``fstat``: what is
checked is what is read), and reading stops one byte past the limit. ``regular_file_facts`` checks the same
without opening (``lstat``), for a file whose fingerprint may spare the read.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

from aios.errors import Conflict, TooLarge

_NOT_REGULAR = {stat.S_IFIFO: "a FIFO (named pipe)", stat.S_IFSOCK: "a socket", stat.S_IFCHR: "a character device",
                stat.S_IFBLK: "a block device"}


def regular_file_facts(path: Path, name: str, limit: int) -> os.stat_result | None:
    """What ``lstat`` says of the file at ``path`` (``name``: how the agent calls it), None if nothing is there.
    Refuses a directory, anything else that is not a regular file, and more than ``limit`` bytes."""
    try:
        facts = os.lstat(path)
    except FileNotFoundError:
        return None
    except NotADirectoryError:
        raise _parent_is_a_file(name) from None
    if stat.S_ISLNK(facts.st_mode):  # resolving left a link: one that loops (or one made since), as O_NOFOLLOW says
        raise OSError(errno.ELOOP, os.strerror(errno.ELOOP), str(path))
    _check_regular(facts, name, limit)
    return facts


def read_regular_file(path: Path, name: str, limit: int) -> tuple[bytes, os.stat_result] | None:
    """The bytes of the regular file at ``path`` and the facts of what was read; None if nothing is there.
    Refuses as ``regular_file_facts`` does, checking the file it opened."""
    try:
        descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    except NotADirectoryError:
        raise _parent_is_a_file(name) from None
    except OSError as exc:
        if exc.errno == errno.ENXIO:  # a socket (or a device with nothing behind it): nothing to open
            raise Conflict(f"{name} is a socket or a device, not a regular file; the kernel keeps regular "
                           "files only") from None
        raise
    try:
        facts = os.fstat(descriptor)
        _check_regular(facts, name, limit)
        with os.fdopen(descriptor, "rb", closefd=False) as handle:
            data = handle.read(limit + 1)
    finally:
        os.close(descriptor)
    if len(data) > limit:
        raise TooLarge(f"{name} grew past the limit of {limit} bytes (storage.max_file_mb) while it was read")
    return data, facts


def _parent_is_a_file(name: str) -> Conflict:
    return Conflict(f"{name}: a parent of this path is a file, not a directory")


def _check_regular(facts: os.stat_result, name: str, limit: int) -> None:
    kind = stat.S_IFMT(facts.st_mode)
    if kind == stat.S_IFDIR:
        raise Conflict(f"{name or '(the mount root)'} is a directory, not a file")
    if kind != stat.S_IFREG:
        what = _NOT_REGULAR.get(kind, "not a regular file")
        raise Conflict(f"{name} is {what}, not a regular file; the kernel keeps regular files only")
    if facts.st_size > limit:
        raise TooLarge(f"{name} is {facts.st_size} bytes on disk (put there outside the kernel); the limit is "
                       f"{limit} (storage.max_file_mb)")
