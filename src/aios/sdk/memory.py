"""Memory syscalls: the AIOS SDK's memory functions (same names and arguments) with typed replies. Each raises
:class:`AIOSError` when the kernel refused or failed the operation (``status_code`` 404: no such memory of
this agent; 400: a value the kernel refuses, such as ``k`` over 100 or empty content; 422: a malformed request,
such as a wrong type; both name the field)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from aios.sdk.transport import AIOSError, not_an_envelope, send_query
from aios.sdk.types import Timings


@dataclass(frozen=True)
class MemoryNote:
    """What a reply's ``metadata`` says about a note, as typed fields; ``extra`` holds the agent's own keys."""

    keywords: list[str]
    tags: list[str]
    context: str
    category: str
    links: list[str]  # memory_ids of related notes
    evolution_history: list[dict[str, Any]]  # {time, cause, changes: {field: {from, to} | {added|removed}}}
    retrieval_count: int
    created_at: str  # ISO 8601
    updated_at: str
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_metadata(cls, metadata: dict[str, Any]) -> "MemoryNote":
        kept = ("timestamp", "last_accessed", "agentic", *cls.__dataclass_fields__)
        return cls(metadata.get("keywords") or [], metadata.get("tags") or [], metadata.get("context") or "",
                   metadata.get("category") or "", metadata.get("links") or [], metadata.get("evolution_history") or [],
                   int(metadata.get("retrieval_count") or 0), metadata.get("created_at") or "",
                   metadata.get("updated_at") or "", {k: v for k, v in metadata.items() if k not in kept})


@dataclass(frozen=True)
class SearchResult:
    memory_id: str
    content: str
    # Cosine similarity to the query; results come best first by the fused (meaning + words) rank. None in a
    # list_memories reply, which ranks nothing.
    score: float | None
    metadata: dict[str, Any]

    @property
    def note(self) -> MemoryNote:
        return MemoryNote.from_metadata(self.metadata)


@dataclass(frozen=True)
class MemoryResponse:
    """The AIOS memory reply. ``note`` types its metadata; ``agentic`` says what agentic memory did (for
    ``create_agentic_memory``: analysed, candidates, linked, evolved, problems)."""

    memory_id: str | None
    content: str | None
    metadata: dict[str, Any] | None
    search_results: list[SearchResult] | None
    success: bool
    error: str | None
    status_code: int
    timings: Timings

    @property
    def note(self) -> MemoryNote | None:
        return MemoryNote.from_metadata(self.metadata) if self.metadata is not None else None

    @property
    def agentic(self) -> dict[str, Any] | None:
        return (self.metadata or {}).get("agentic")

    @classmethod
    def from_envelope(cls, envelope: Any) -> "MemoryResponse":
        try:
            response = envelope["response"]
            results = response.get("search_results")
            return cls(response.get("memory_id"), response.get("content"), response.get("metadata"),
                       None if results is None else [SearchResult(r["memory_id"], r["content"], _score(r),
                                                                   r.get("metadata") or {}) for r in results],
                       bool(response.get("success")), response.get("error"), int(response.get("status_code", 200)),
                       Timings.of(envelope))
        except (KeyError, TypeError, ValueError, AttributeError):
            raise not_an_envelope(envelope) from None


def _score(result: dict[str, Any]) -> float | None:
    score = result.get("score")
    return None if score is None else float(score)


def _memory(agent_name: str, operation: str, base_url: str | None, params: dict[str, Any],
            owner: str | None = None) -> MemoryResponse:
    if owner is not None:
        params = {**params, "owner": owner}
    query_data = {"query_class": "memory", "operation_type": operation, "params": params}
    response = MemoryResponse.from_envelope(send_query(agent_name, "memory", query_data, base_url))
    if not response.success or response.status_code >= 400:
        raise AIOSError(response.status_code, response.error or "memory operation failed", response)
    return response


# -- the AIOS memory API ----------------------------------------------------------------------------------------------
def create_memory(agent_name: str, content: str, metadata: dict[str, Any] | None = None,
                  base_url: str | None = None, *, owner: str | None = None) -> MemoryResponse:
    """Keep ``content`` as a new memory of the agent (``.memory_id``). ``metadata``: any JSON object; its
    ``tags``, ``keywords``, ``context`` and ``category`` become the note's fields. ``owner``: another agent's
    memories, with its grant (``write`` here, ``read`` to get, search and list; every function but
    ``create_agentic_memory`` takes it)."""
    return _memory(agent_name, "add_memory", base_url, {"content": content, "metadata": metadata or {}}, owner)


def create_agentic_memory(agent_name: str, content: str, metadata: dict[str, Any] | None = None,
                          base_url: str | None = None) -> MemoryResponse:
    """As ``create_memory``, and the kernel's model derives keywords, context and tags, links the note to
    related memories and evolves them (``.agentic`` says what it did)."""
    return _memory(agent_name, "add_agentic_memory", base_url, {"content": content, "metadata": metadata or {}})


def get_memory(agent_name: str, memory_id: str, base_url: str | None = None, *,
               owner: str | None = None) -> MemoryResponse:
    """The memory's content and metadata; 404 for an id that is not one of this agent's memories."""
    return _memory(agent_name, "get_memory", base_url, {"memory_id": memory_id}, owner)


def update_memory(agent_name: str, memory_id: str, content: str | None = None,
                  metadata: dict[str, Any] | None = None, base_url: str | None = None, *,
                  owner: str | None = None) -> MemoryResponse:
    """Change the content (None keeps it) and merge ``metadata`` in (a key set to None is removed)."""
    params: dict[str, Any] = {"memory_id": memory_id, "content": content}
    if metadata is not None:
        params["metadata"] = metadata
    return _memory(agent_name, "update_memory", base_url, params, owner)


def delete_memory(agent_name: str, memory_id: str, base_url: str | None = None, *,
                  owner: str | None = None) -> MemoryResponse:
    return _memory(agent_name, "remove_memory", base_url, {"memory_id": memory_id}, owner)


def search_memories(agent_name: str, query: str, k: int = 5, base_url: str | None = None, *,
                    tags: list[str] | None = None, category: str | None = None,
                    created_after: float | str | datetime | None = None,
                    created_before: float | str | datetime | None = None, raw: bool = False,
                    owner: str | None = None) -> MemoryResponse:
    """The agent's ``k`` memories best matching ``query`` by meaning and words (``.search_results``), with
    every one of ``tags``, of ``category``, made in the time range (Unix seconds, ISO 8601 or datetime).
    ``raw``: whole notes (``retrieve_memory_raw``)."""
    params: dict[str, Any] = {"content": query, "k": k, "tags": tags, "category": category,
                              "created_after": _time(created_after), "created_before": _time(created_before)}
    operation = "retrieve_memory_raw" if raw else "retrieve_memory"
    return _memory(agent_name, operation, base_url, {key: value for key, value in params.items() if value is not None},
                   owner)


def list_memories(agent_name: str, k: int | None = None, offset: int = 0, base_url: str | None = None, *,
                  owner: str | None = None) -> MemoryResponse:
    """The agent's memories, most recently made first, a page at a time: ``k`` of them (1-100; None: the kernel's
    page of 20) after the first ``offset``, in ``.search_results`` (``score`` None); fewer than ``k`` means the
    list has ended."""
    return _memory(agent_name, "list_memories", base_url, {"k": k, "offset": offset}, owner)


def _time(value: float | str | datetime | None) -> float | str | None:
    return value.isoformat() if isinstance(value, datetime) else value
