"""What an agent's process may touch on disk, enforced by Linux Landlock (kernel 5.13 and later): read and run
the system's and Python's files, read its run folder and package, write only in its own folder (``work/`` in
its run folder); the kernel's data folder (the administrator's token, every agent's files, memories and runs,
the hub) is out of its reach, and so is everything else, the user's home included.

Landlock lets an unprivileged process give up access for itself and every process it starts; nothing can give
it back. It also stops a confined process from tracing one outside it (the kernel) or reading its memory, and
(from ABI 6, Linux 6.12) from signalling it or connecting to its abstract unix sockets. Unix sockets with a path
it does not check: a seccomp filter refuses making any. The network is left as it is: an agent reaches the
kernel, and the web, over it.

Standard library only: ``launch.py`` loads this file by its path under whatever interpreter runs the agent, and
confines itself before it imports the agent's code.
"""

from __future__ import annotations

import ctypes
import errno
import os
import socket
import stat
import sys
from pathlib import Path

# The system calls (the same numbers on every architecture that has them) and their constants: <linux/landlock.h>.
_CREATE_RULESET, _ADD_RULE, _RESTRICT_SELF = 444, 445, 446
_CREATE_RULESET_VERSION, _RULE_PATH_BENEATH, _PR_SET_NO_NEW_PRIVS = 1, 1, 38

EXECUTE, WRITE_FILE, READ_FILE, READ_DIR = 1 << 0, 1 << 1, 1 << 2, 1 << 3
REFER, TRUNCATE, IOCTL_DEV = 1 << 13, 1 << 14, 1 << 15
# From ABI 6: no signals to processes outside the sandbox (the kernel, other agents), no abstract unix sockets
# of theirs.
SCOPE_ABSTRACT_UNIX_SOCKET, SCOPE_SIGNAL = 1 << 0, 1 << 1
READ = EXECUTE | READ_FILE | READ_DIR
_ON_FILES = EXECUTE | WRITE_FILE | READ_FILE | TRUNCATE | IOCTL_DEV  # a rule on a file may give only these

# Read (and run) beneath these; of /run, the resolver's files that /etc links to (not the rest: the user's
# runtime folder, secrets a container mounts in /run/secrets). Of /dev, the devices every program may use (not
# the user's cameras, disks or terminals), and /dev/shm as multiprocessing's locks and queues use it (shared with
# every process of the user). Of /proc, the system's files and this process's own folder: not other processes'
# (the kernel's environment is readable by its user, and Landlock does not stop that).
SYSTEM = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/etc", "/sys", "/run/systemd/resolve",
          "/run/resolvconf")
DEVICES = tuple(f"/dev/{name}" for name in ("null", "zero", "full", "random", "urandom", "tty"))
SHARED_MEMORY = "/dev/shm"


class _RulesetAttr(ctypes.Structure):
    # ABI 6's layout; older ABIs take its first field alone (the size passed says which).
    _fields_ = [("handled_access_fs", ctypes.c_uint64), ("handled_access_net", ctypes.c_uint64),
                ("scoped", ctypes.c_uint64)]


class _PathBeneathAttr(ctypes.Structure):
    _pack_ = 1
    _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]


def abi_version() -> int:
    """Landlock's ABI version on this machine; 0 where it has none (not Linux, an older kernel, Landlock
    disabled, or a container whose seccomp profile refuses the call)."""
    if sys.platform != "linux":
        return 0
    try:
        return max(0, _syscall(_CREATE_RULESET, None, 0, _CREATE_RULESET_VERSION))
    except OSError:
        return 0


def describe() -> str:
    """What confines agents' processes here, for status pages."""
    version = abi_version()
    return f"landlock (ABI {version})" if version else "none (this system has no Landlock)"


def confine(readable: list[str], writable: list[str], hidden: str) -> None:
    """Allow this process, from now on, to read beneath the system folders and ``readable``, to write beneath
    ``writable`` (and to the devices), and nothing else on disk; nor to signal processes outside. A readable
    path that holds ``hidden`` is left out (allowing it would allow all beneath it). A path that cannot be
    allowed (gone, a loop, no access) is left out, saying so on stderr. Raises OSError where Landlock is
    missing or refuses."""
    version = abi_version()
    if not version:
        raise OSError("this system has no Landlock (Linux 5.13 or later, enabled) to confine the agent with")
    exposed = [path for path in SYSTEM if _holds(path, hidden)]
    if exposed:  # its rule would allow the data folder: no agent runs rather than one that reads it
        raise OSError(f"the data folder {hidden} is inside {exposed[0]}, which agents may read: move it elsewhere")
    handled = (1 << 13) - 1 | (REFER if version >= 2 else 0) | (TRUNCATE if version >= 3 else 0) \
        | (IOCTL_DEV if version >= 5 else 0)
    ruleset = _RulesetAttr(handled, 0, SCOPE_ABSTRACT_UNIX_SOCKET | SCOPE_SIGNAL)
    size = ctypes.sizeof(ruleset) if version >= 6 else _RulesetAttr.handled_access_net.offset
    fd = _syscall(_CREATE_RULESET, ctypes.byref(ruleset), size, 0)
    try:
        shown = [path for path in readable if not _holds(path, hidden)]
        rules = [(path, READ) for path in (*SYSTEM, *_proc(), *shown)]
        rules += [(path, READ | WRITE_FILE | TRUNCATE | IOCTL_DEV) for path in DEVICES]
        rules += [(path, handled) for path in (SHARED_MEMORY, *writable)]
        for path, access in rules:
            _allow(fd, path, access & handled)
        if _libc().prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS) failed")
        _syscall(_RESTRICT_SELF, fd, 0)
    finally:
        os.close(fd)
    _no_unix_sockets()


def _no_unix_sockets() -> None:
    """Refuse this process (and what it starts) new unix sockets: Landlock does not check connecting to one by
    its path, and sockets of the user's (the session's D-Bus, which starts programs; Docker's; an ssh agent)
    would reach out of the sandbox. A seccomp filter refuses ``socket(AF_UNIX, ...)`` and io_uring (which makes
    sockets without that call); socket pairs, which reach nothing, stay (asyncio uses them). On an architecture
    this does not know, it says so on stderr and leaves them."""
    arch = _ARCHES.get(os.uname().machine)
    if arch is None:
        print(f"aios: the sandbox leaves unix sockets open on {os.uname().machine}", file=sys.stderr)
        return
    audit_arch, socket_call = arch
    refuse, allow = (_RET, 0, 0, 0x00050000 | errno.EACCES), (_RET, 0, 0, 0x7FFF0000)  # SECCOMP_RET_ERRNO, _ALLOW
    program = [
        (_LOAD, 0, 0, 4), (_JEQ, 1, 0, audit_arch), refuse,  # another architecture's calls: none
        (_LOAD, 0, 0, 0), (_JGE, 0, 1, 0x40000000), refuse,  # x32's numbering: none
        (_JEQ, 0, 1, _IO_URING_SETUP), refuse,
        (_JEQ, 0, 3, socket_call), (_LOAD, 0, 0, 16), (_JEQ, 0, 1, socket.AF_UNIX), refuse,
        allow,
    ]
    filters = (_SockFilter * len(program))(*(_SockFilter(*instruction) for instruction in program))
    fprog = _SockFprog(len(program), filters)
    if _libc().prctl(_PR_SET_SECCOMP, _SECCOMP_MODE_FILTER, ctypes.byref(fprog), 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_SECCOMP) failed")


# seccomp's classic BPF (<linux/filter.h>, <linux/seccomp.h>): load a word of seccomp_data (nr at 0, arch at 4,
# the first argument's low half at 16), compare, return.
_LOAD, _JEQ, _JGE, _RET = 0x20, 0x15, 0x35, 0x06
_PR_SET_SECCOMP, _SECCOMP_MODE_FILTER, _IO_URING_SETUP = 22, 2, 425
_ARCHES = {"x86_64": (0xC000003E, 41), "aarch64": (0xC00000B7, 198)}  # AUDIT_ARCH_*, socket's number


class _SockFilter(ctypes.Structure):
    _fields_ = [("code", ctypes.c_uint16), ("jt", ctypes.c_uint8), ("jf", ctypes.c_uint8), ("k", ctypes.c_uint32)]


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.POINTER(_SockFilter))]


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def _holds(path: str, hidden: str) -> bool:
    try:
        return Path(hidden).is_relative_to(Path(path).resolve())
    except (OSError, RuntimeError):  # a loop: it is no folder to allow
        return True


def _proc() -> list[str]:
    """/proc's entries but processes' folders, and this process's own. (Not its children's: they are made later;
    their ``/proc/self`` is out of their reach.)"""
    return [f"/proc/{name}" for name in os.listdir("/proc") if not name.isdigit() or name == str(os.getpid())]


def _allow(ruleset: int, path: str, access: int) -> None:
    try:
        parent = os.open(path, os.O_PATH | os.O_CLOEXEC)
    except FileNotFoundError:
        return  # nothing there to allow (no /lib32 on this system, say)
    except OSError as exc:  # a loop, a folder of another user's: left out, not a reason to run unconfined
        print(f"aios: the sandbox leaves out {path}: {exc.strerror}", file=sys.stderr)
        return
    try:
        if not stat.S_ISDIR(os.fstat(parent).st_mode):
            access &= _ON_FILES
        rule = _PathBeneathAttr(access, parent)
        _syscall(_ADD_RULE, ruleset, _RULE_PATH_BENEATH, ctypes.byref(rule), 0)
    finally:
        os.close(parent)


def python_paths() -> list[str]:
    """This interpreter's own folders and its import path."""
    return sorted({sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix, *(p for p in sys.path if p)})


def _syscall(number: int, *args: object) -> int:
    libc = _libc()
    libc.syscall.restype = ctypes.c_long
    result = libc.syscall(ctypes.c_long(number), *(ctypes.c_long(a) if isinstance(a, int) else a for a in args))
    if result < 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))
    return result
