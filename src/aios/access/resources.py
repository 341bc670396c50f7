"""What can be protected, and how it is written: ``files:<owner>``, ``memory:<owner>``, ``tool:<author/name>``.

Files and memories belong to the agent that made them; an agent may grant ``read`` or ``write`` (which includes
read) on its own to another agent or a group. Tools belong to the kernel: anyone may call one unless the config
restricts it, and then only agents or groups granted ``call`` on it (by the kernel's administrator)."""

from __future__ import annotations

import re
from dataclasses import dataclass

KINDS = ("files", "memory", "tool")
PERMISSIONS = {"files": ("read", "write"), "memory": ("read", "write"), "tool": ("call",)}
GROUP_PREFIX = "group:"
_NAME = re.compile(r"[^\s:]{1,256}")


@dataclass(frozen=True)
class Resource:
    kind: str
    name: str  # the owner's agent name (files, memory) or the tool's name

    @classmethod
    def parse(cls, text: str) -> "Resource":
        """``files:alice``, ``memory:alice``, ``tool:aios/delete_file``; ValueError saying what is expected."""
        kind, _, name = text.partition(":")
        if kind not in KINDS or not _NAME.fullmatch(name):
            raise ValueError(f"resource {text!r} must be files:<agent>, memory:<agent> or tool:<author/name>")
        return cls(kind, name)

    def __str__(self) -> str:
        return f"{self.kind}:{self.name}"

    @property
    def owner(self) -> str | None:
        """The agent whose resource this is; None for a tool (the kernel's)."""
        return None if self.kind == "tool" else self.name

    def check_permission(self, permission: str) -> None:
        if permission not in PERMISSIONS[self.kind]:
            raise ValueError(f"permission on {self.kind} must be {' or '.join(PERMISSIONS[self.kind])}, "
                             f"not {permission!r}")


def check_grantee(grantee: str) -> None:
    """An agent name, or ``group:<name>``."""
    name = grantee.removeprefix(GROUP_PREFIX)
    if not _NAME.fullmatch(name) or not name:
        raise ValueError(f"grantee {grantee!r} must be an agent name or group:<name>")


def satisfies(held: str, wanted: str) -> bool:
    """Whether a granted permission covers the one asked for (write includes read)."""
    return held == wanted or (held == "write" and wanted == "read")
