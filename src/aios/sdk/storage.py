"""Storage syscalls: the AIOS SDK's file functions (same names and arguments), the ones it lacks (read, list,
delete, history, unshare), and ``llm_operate_file``. Each returns a typed reply and raises :class:`AIOSError`
when the kernel refused or failed the operation (``status_code`` says why: 400 a value it refuses, naming the
field, 403 outside the mount, 404 no such file or version, 409 a clash, 413 too large, 422 a malformed request,
...)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields
from datetime import datetime
from typing import Any, TypeVar

from aios.sdk.tools import ToolResponse, ToolResult
from aios.sdk.transport import AIOSError, not_an_envelope, send_query
from aios.sdk.types import Timings


@dataclass(frozen=True)
class RetrievedFile:
    file_path: str  # relative to the mount
    path: str  # absolute, on the kernel's machine
    score: float  # the fused rank score: higher is better
    similarity: float | None  # cosine similarity of the best chunk to the query (None: found by keywords only)
    snippet: str  # the best-matching chunk
    version: int


@dataclass(frozen=True)
class FileVersion:
    version: int
    time: float  # Unix seconds
    iso_time: str
    size: int
    hash: str | None  # None: the file did not exist in this version (a deletion)
    agent: str | None  # None: changed outside the kernel
    kind: str  # create | write | rollback | delete | external
    restored_from: int | None


@dataclass(frozen=True)
class DirEntry:
    name: str
    file_path: str
    type: str  # file | dir | link
    size: int | None
    version: int | None  # the file's current version; None when the kernel has not recorded it yet


@dataclass(frozen=True)
class StorageResponse:
    """The AIOS storage reply, with what ``response_message`` (a JSON object) says as typed fields."""

    response_message: str | None
    finished: bool
    error: str | None
    status_code: int
    timings: Timings
    result: dict[str, Any] = field(default_factory=dict)  # the parsed response_message

    @property
    def message(self) -> str | None:
        """One line saying what happened."""
        return self.result.get("message")

    path = property(lambda self: self.result.get("path"), doc="absolute path on the kernel's machine")
    file_path = property(lambda self: self.result.get("file_path"), doc="path relative to the mount")
    version = property(lambda self: self.result.get("version"), doc="the version made (or read, or shared)")
    content = property(lambda self: self.result.get("content"), doc="read: the text")
    url = property(lambda self: self.result.get("url"), doc="share: the link")
    expires_at = property(lambda self: self.result.get("expires_at"), doc="share: ISO 8601 time")
    root = property(lambda self: self.result.get("root"), doc="mount, retrieve: the mount's directory")

    @property
    def files(self) -> list[RetrievedFile]:
        """retrieve: the files found (a mount's ``files`` is a count: see ``result``)."""
        return _records(RetrievedFile, self.result.get("files"))

    @property
    def versions(self) -> list[FileVersion]:
        return _records(FileVersion, self.result.get("versions"))

    @property
    def entries(self) -> list[DirEntry]:
        return _records(DirEntry, self.result.get("entries"))

    @classmethod
    def from_envelope(cls, envelope: Any) -> "StorageResponse":
        try:
            response = envelope["response"]
            message = response.get("response_message")
            return cls(response_message=message, finished=bool(response.get("finished")), error=response.get("error"),
                       status_code=int(response.get("status_code", 200)), timings=Timings.of(envelope),
                       result=json.loads(message) if message else {})
        except (KeyError, TypeError, ValueError, AttributeError):
            raise not_an_envelope(envelope) from None


# llm_operate_file's reply: each storage operation the model called, run as the agent, with its real result
# (what StorageResponse.result would hold) or error — the shape of a tool call's reply.
FileOperation = ToolResult


class FileOperationsResponse(ToolResponse):
    """``response_message`` has one line per operation: what it did, or why it failed."""

    @property
    def operations(self) -> list[ToolResult]:
        return self.results


_Record = TypeVar("_Record")


def _records(kind: type[_Record], items: Any) -> list[_Record]:
    """``kind`` from each item's fields that this SDK knows: a newer kernel may send more (ignored here), an
    older one fewer (None)."""
    if not isinstance(items, list):
        return []
    names = [f.name for f in fields(kind)]  # type: ignore[arg-type]
    return [kind(**{name: item.get(name) for name in names}) for item in items if isinstance(item, dict)]


def _storage(agent_name: str, operation: str, base_url: str | None, **params: Any) -> StorageResponse:
    query_data = {"query_class": "storage", "operation_type": operation, "params": params}
    response = StorageResponse.from_envelope(send_query(agent_name, "storage", query_data, base_url))
    if response.error is not None or response.status_code >= 400:
        raise AIOSError(response.status_code, response.error or "storage operation failed", response)
    return response


# -- the AIOS storage API ---------------------------------------------------------------------------------------------
def mount(agent_name: str, root_dir: str, base_url: str | None = None) -> StorageResponse:
    """Make ``root_dir`` the agent's mount (relative: under the kernel's storage root) and record its files."""
    return _storage(agent_name, "mount", base_url, root_dir=root_dir)


def create_file(agent_name: str, file_path: str, base_url: str | None = None, *,
                owner: str | None = None) -> StorageResponse:
    """Create an empty file (version 1); 409 if it exists."""
    return _storage(agent_name, "create_file", base_url, file_path=file_path, owner=owner)


def create_dir(agent_name: str, dir_path: str, base_url: str | None = None, *,
               owner: str | None = None) -> StorageResponse:
    return _storage(agent_name, "create_dir", base_url, dir_path=dir_path, owner=owner)


def write_file(agent_name: str, file_path: str, content: str, base_url: str | None = None, *,
               owner: str | None = None) -> StorageResponse:
    """Write ``content`` as the file's next version (the file and its directories are created if needed).
    ``owner``: another agent's file, with its write grant (every function here but ``mount``, ``share_file``,
    ``unshare_file`` and ``llm_operate_file`` takes it)."""
    return _storage(agent_name, "write", base_url, file_path=file_path, content=content, owner=owner)


def retrieve_file(agent_name: str, query_text: str, n: int, keywords: list[str] | None = None,
                  base_url: str | None = None, *, owner: str | None = None) -> StorageResponse:
    """The ``n`` files of the mount that best match ``query_text`` (by meaning and words), each with its best
    snippet, in ``.files``; with ``keywords``, only files containing every one of them."""
    return _storage(agent_name, "retrieve", base_url, query_text=query_text, n=n, keywords=keywords, owner=owner)


def rollback_file(agent_name: str, file_path: str, n: int = 1, base_url: str | None = None, *,
                  time: float | str | datetime | None = None, owner: str | None = None) -> StorageResponse:
    """Bring back the content of ``n`` versions ago — or, with ``time``, as it was then — as a new version."""
    # The kernel refuses n and time together, so only the one that applies is sent.
    when = {"n": n} if time is None else {"time": time.isoformat() if isinstance(time, datetime) else time}
    return _storage(agent_name, "rollback", base_url, file_path=file_path, owner=owner, **when)


def share_file(agent_name: str, file_path: str, base_url: str | None = None, *,
               expires_in: int | None = None) -> StorageResponse:
    """A read-only link (``.url``) to the file's current version, served by the kernel, expiring after
    ``expires_in`` seconds (default 7 days)."""
    return _storage(agent_name, "share", base_url, file_path=file_path, expires_in=expires_in)


retrieve = retrieve_file  # the names of older AIOS SDK versions
roll_back = rollback_file


# -- beyond the AIOS API ------------------------------------------------------------------------------------------------
def read_file(agent_name: str, file_path: str, base_url: str | None = None, *,
              version: int | None = None, owner: str | None = None) -> StorageResponse:
    """The file's text (``.content``), now or at ``version``."""
    return _storage(agent_name, "read", base_url, file_path=file_path, version=version, owner=owner)


def list_dir(agent_name: str, dir_path: str = "", recursive: bool = False,
             base_url: str | None = None, *, owner: str | None = None) -> StorageResponse:
    return _storage(agent_name, "list", base_url, dir_path=dir_path, recursive=recursive, owner=owner)


def delete_file(agent_name: str, file_path: str, base_url: str | None = None, *,
                owner: str | None = None) -> StorageResponse:
    """Delete a file; its history keeps every version, and ``rollback_file`` brings it back."""
    return _storage(agent_name, "delete", base_url, file_path=file_path, owner=owner)


def delete_dir(agent_name: str, dir_path: str, recursive: bool = False,
               base_url: str | None = None, *, owner: str | None = None) -> StorageResponse:
    return _storage(agent_name, "delete", base_url, dir_path=dir_path, recursive=recursive, owner=owner)


def file_history(agent_name: str, file_path: str, base_url: str | None = None, *,
                 limit: int | None = None, owner: str | None = None) -> StorageResponse:
    """The file's versions, newest first, in ``.versions``."""
    return _storage(agent_name, "history", base_url, file_path=file_path, limit=limit, owner=owner)


def unshare_file(agent_name: str, link: str | None = None, base_url: str | None = None, *,
                 file_path: str | None = None) -> StorageResponse:
    """Revoke one share link (its URL or token), or every link to ``file_path``."""
    return _storage(agent_name, "unshare", base_url, link=link, file_path=file_path)


def llm_operate_file(agent_name: str, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None = None,
                     base_url: str | None = None, llms: list[dict[str, Any]] | None = None, *,
                     temperature: float | None = None, max_new_tokens: int | None = None) -> FileOperationsResponse:
    """Let the model turn a file request in words into storage operations, run them as this agent, and report
    each one (``.operations``) with its real result or error; raises :class:`AIOSError` if any failed.

    The arguments are in Cerebrum's order. ``tools`` is taken for that order only and not sent: the kernel offers
    the model its own file operations as tools (``create_file``, ``write_file``, ``read_file``, ...) whatever a
    caller passes. A string in its place is the kernel URL, where this SDK's earlier order had ``base_url`` (and
    ``llms`` after it)."""
    if isinstance(tools, str) and (base_url is None or isinstance(base_url, list)):
        tools, base_url, llms = None, tools, base_url if llms is None else llms  # the earlier order
    query_data = {key: value for key, value in (("messages", messages), ("llms", llms), ("temperature", temperature),
                                                ("max_new_tokens", max_new_tokens)) if value is not None}
    envelope = send_query(agent_name, "llm", {**query_data, "action_type": "operate_file"}, base_url)
    response = FileOperationsResponse.from_envelope(envelope)
    if response.error is not None and response.status_code >= 400:
        raise AIOSError(response.status_code, response.error, response)
    return response
