"""What an operating-system error while serving a file operation means to the agent that asked: a refusal with
the HTTP status that says why (a path it may not touch, a name the file system cannot hold, a full disk, ...),
naming the path, instead of an internal error. Errors that no request can cause (an I/O error of the disk)
stay what they are."""

from __future__ import annotations

import errno

from aios.errors import BadRequest, Conflict, Forbidden, InsufficientStorage, KernelError, NotFound

# errno → (the kernel error, what to tell the agent after the path).
_MEANINGS: dict[int, tuple[type[KernelError], str]] = {
    errno.EACCES: (Forbidden, "permission denied: the kernel may not read or change it"),
    errno.EPERM: (Forbidden, "operation not permitted on it"),
    errno.EROFS: (Forbidden, "it is on a read-only file system"),
    errno.ENAMETOOLONG: (BadRequest, "the name is too long for the file system"),
    errno.ELOOP: (BadRequest, "too many levels of symbolic links (a link that leads to itself?)"),
    errno.ENOSPC: (InsufficientStorage, "no space left on the device"),
    errno.EDQUOT: (InsufficientStorage, "the disk quota is exhausted"),
    errno.ENOTDIR: (Conflict, "a part of the path is a file, not a directory"),
    errno.EISDIR: (Conflict, "it is a directory, not a file"),
    errno.EEXIST: (Conflict, "something already exists there"),
    errno.ENOENT: (NotFound, "no such file or directory (it went away meanwhile?)"),
}


def refusal(exc: OSError) -> KernelError | None:
    """The refusal ``exc`` amounts to, naming its path; None for an error no request can cause."""
    meaning = _MEANINGS.get(exc.errno or 0)
    if meaning is None:
        return None
    kind, why = meaning
    where = exc.filename if exc.filename is not None else "a file of the mount"
    return kind(f"{where}: {why}")
