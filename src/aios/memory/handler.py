"""The memory syscall handler: the AIOS memory operations on an agent's own notes.

``prepare`` checks a request when it is submitted; ``__call__`` runs it. Store work happens on one I/O thread
(the database connection), embeddings on the shared embedding model's thread and agentic memory's model calls
as LLM syscalls through the scheduler, so the event loop never blocks. A refused operation (an unknown
memory id — including another agent's, which is never told apart from an unknown one) raises a KernelError,
which the reply carries as ``error`` and ``status_code`` (HTTP 200, as upstream).
"""

from __future__ import annotations

import asyncio
import copy
import functools
import json
import logging
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Awaitable, Callable

import numpy as np

from aios.access.manager import AccessManager
from aios.config import Config
from aios.embeddings import Embedder
from aios.errors import Conflict, KernelError, NotAvailable, NotFound
from aios.llm.handler import LLMQuery
from aios.memory import agentic
from aios.memory.agentic import Report, Unusable
from aios.memory.notes import DEFAULT_CATEGORY, NOTE_FIELDS, Note
from aios.memory.requests import NEEDS, MemoryRequest, filters_of, parse_request
from aios.memory.search import nearest_notes, search
from aios.memory.store import MemoryStore
from aios.params import syscall_request
from aios.syscall import Syscall, SyscallKind, SyscallStatus

log = logging.getLogger(__name__)

Call = Callable[[SyscallKind, str, Any], Awaitable[Syscall]]  # the kernel's syscall entry (Kernel.call)
EXCERPT_CHARS = 500  # of old and new content kept in an evolution entry
LIST_PAGE = 20  # memories list_memories returns when k is not given
MAX_ATTEMPTS = 5  # to update a note whose words others keep changing while its new vector is computed


@dataclass
class MemoryResponse:
    """The AIOS memory reply, plus ``status_code`` (as every reply of this kernel has)."""

    response_class: str = "memory"
    memory_id: str | None = None
    content: str | None = None
    metadata: dict[str, Any] | None = None
    search_results: list[dict[str, Any]] | None = None
    success: bool = False
    error: str | None = None
    status_code: int = 200


@dataclass(frozen=True)
class AgenticSettings:
    model: str | None = None  # a configured model's name; None: the router's default
    neighbours: int = 3  # nearest notes shown to the model as link candidates
    min_similarity: float = 0.3  # below this cosine similarity a note is no candidate


def open_store(config: Config) -> MemoryStore:
    memory = config.memory
    try:
        if memory.backend == "postgres":
            from aios.memory.postgres_store import PostgresMemoryStore

            return PostgresMemoryStore(memory.dsn or "")
        from aios.memory.sqlite_store import SQLiteMemoryStore
        from aios.memory.vector_cache import VectorCache

        return SQLiteMemoryStore(memory.database(config.data_dir), VectorCache(max_bytes=memory.vector_cache_mb << 20))
    except Exception as exc:  # a database that cannot be opened stops start-up with one line saying why
        why = " ".join(str(exc).split()) or type(exc).__name__
        raise NotAvailable(f"memory: cannot open the {memory.backend} store: {why}") from exc


class MemoryHandler:
    workers = 16  # syscalls in flight: an agentic note waiting on the model does not hold up a search

    def __init__(self, store: MemoryStore, embedder: Embedder, call: Call, access: AccessManager,
                 settings: AgenticSettings = AgenticSettings(), confirm: frozenset[str] = frozenset(),
                 clock: Callable[[], float] = time.time) -> None:
        """``confirm``: the operations a person must approve first (``access.confirm``)."""
        self.store, self.embedder, self.call, self.access = store, embedder, call, access
        self.settings, self.confirm, self.clock = settings, confirm, clock
        self._io = ThreadPoolExecutor(max_workers=1, thread_name_prefix="memory-io")
        self._operations: dict[str, Callable[[str, dict[str, Any]], Awaitable[MemoryResponse]]] = {
            "add_memory": self._add, "add_agentic_memory": self._add_agentic, "get_memory": self._get,
            "update_memory": self._update, "remove_memory": self._remove, "retrieve_memory": self._retrieve,
            "retrieve_memory_raw": functools.partial(self._retrieve, whole=True), "list_memories": self._list}

    @classmethod
    def from_config(cls, config: Config, embedder: Embedder, call: Call, access: AccessManager) -> "MemoryHandler":
        memory = config.memory
        settings = AgenticSettings(memory.agentic_model, memory.agentic_neighbors, memory.agentic_min_similarity)
        return cls(open_store(config), embedder, call, access, settings, config.access.confirm.asking())

    # -- the syscall ----------------------------------------------------------------------------------------------
    def prepare(self, payload: Any) -> MemoryRequest:
        return syscall_request(payload, MemoryRequest, parse_request, "memory")

    async def admit(self, agent: str, request: MemoryRequest) -> MemoryRequest:
        """The request, with whose memories it works on, once ``agent`` may make it (a person's approval, where one
        is asked, is awaited here, before the syscall is queued: waiting for one holds none of the workers)."""
        return await self.access.admit(agent, "memory", request, NEEDS, self.confirm)

    async def __call__(self, syscall: Syscall) -> MemoryResponse:
        request: MemoryRequest = syscall.payload
        return await self._operations[request.operation](request.admitted_owner(), dict(request.params))

    async def close(self) -> None:
        await self.run_io(self.store.close)
        self._io.shutdown(wait=True)

    async def run_io(self, function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._io, functools.partial(function, *args, **kwargs))

    async def _vector(self, text: str) -> np.ndarray:
        return (await self.embedder.aembed([text]))[0]

    # -- the operations -------------------------------------------------------------------------------------------
    async def _add(self, agent: str, params: dict[str, Any]) -> MemoryResponse:
        note = self._new_note(agent, params["content"], params.get("metadata") or {})
        await self.run_io(self.store.insert, note, await self._vector(note.search_text()))
        return _note_reply(note)

    async def _get(self, agent: str, params: dict[str, Any]) -> MemoryResponse:
        return _note_reply(await self.run_io(self._read, agent, params["memory_id"], touch=True))

    async def _update(self, agent: str, params: dict[str, Any]) -> MemoryResponse:
        vectors: dict[str, np.ndarray] = {}  # search text -> its vector
        for _ in range(MAX_ATTEMPTS):
            outcome = await self.run_io(self._apply_update, agent, params, vectors)
            if isinstance(outcome, Note):
                return _note_reply(outcome)
            vectors[outcome] = await self._vector(outcome)
        raise Conflict(f"memory {params['memory_id']!r} kept changing while it was being updated; try again")

    async def _remove(self, agent: str, params: dict[str, Any]) -> MemoryResponse:
        note = await self.run_io(self._delete, agent, params["memory_id"])
        return MemoryResponse(memory_id=note.memory_id, content=note.content, success=True)

    async def _retrieve(self, agent: str, params: dict[str, Any], whole: bool = False) -> MemoryResponse:
        query, k = params["content"], params.get("k", 5)
        vector = await self._vector(query)
        found = await self.run_io(search, self.store, agent, query, vector, k, filters_of(params), self.clock())
        return MemoryResponse(search_results=[item.note.search_result(item.similarity, whole) for item in found],
                              success=True)

    async def _list(self, agent: str, params: dict[str, Any]) -> MemoryResponse:
        notes = await self.run_io(self.store.recent, agent, params.get("k", LIST_PAGE), params.get("offset", 0))
        return MemoryResponse(search_results=[note.summary() for note in notes], success=True)

    # -- agentic memory ---------------------------------------------------------------------------------------------
    async def _add_agentic(self, agent: str, params: dict[str, Any]) -> MemoryResponse:
        metadata = params.get("metadata") or {}
        note, report = self._new_note(agent, params["content"], metadata), Report()
        try:
            keywords, context, tags = await agentic.analyse(self._ask, agent, note.content)
        except Unusable as exc:  # the plain note, as add_memory would store it
            report.problems.append(f"note construction: {exc}; stored as a plain note")
            await self.run_io(self.store.insert, note, await self._vector(note.search_text()))
            return _note_reply(note, report)
        report.analysed = True
        note.keywords = _merged(note.keywords, keywords)
        note.tags = _merged(note.tags, tags)
        note.context = note.context or context
        vector = await self._vector(note.search_text())
        linked, evolutions = await self._links_and_evolutions(agent, note, vector, report)
        await self.run_io(self._commit_agentic, note, vector, linked, evolutions, report)
        return _note_reply(note, report)

    async def _links_and_evolutions(self, agent: str, note: Note, vector: np.ndarray, report: Report) -> tuple[
            list[Note], dict[str, tuple[Note, np.ndarray | None]]]:
        """The neighbours the model links to ``note``, and each one as it evolves (with its new vector)."""
        settings = self.settings
        candidates = [n for n, _ in await self.run_io(nearest_notes, self.store, agent, vector, settings.neighbours,
                                                      settings.min_similarity)]
        report.candidates = [candidate.memory_id for candidate in candidates]
        if not candidates:
            return [], {}
        try:
            linked = await agentic.choose_links(self._ask, agent, note.content, candidates)
        except Unusable as exc:
            report.problems.append(f"link generation: {exc}")
            return [], {}
        evolutions = await agentic.evolve_all(self._ask, agent, note, linked, report)
        afters = [copy.deepcopy(neighbour) for neighbour in linked]
        for after in afters:
            agentic.apply_evolution(after, note, evolutions[after.memory_id], self.clock())
        # Those whose words changed get new vectors, computed together.
        changed = [i for i, (before, after) in enumerate(zip(linked, afters))
                   if after.search_text() != before.search_text()]
        vectors = await self.embedder.aembed([afters[i].search_text() for i in changed]) if changed else []
        new_vectors: dict[int, np.ndarray] = dict(zip(changed, vectors))
        return linked, {after.memory_id: (after, new_vectors.get(i)) for i, after in enumerate(afters)}

    def _commit_agentic(self, note: Note, vector: np.ndarray, linked: list[Note],
                        evolved: dict[str, tuple[Note, np.ndarray | None]], report: Report) -> None:
        """Store the new note and its links, and the evolved neighbours, in one transaction. A neighbour changed
        meanwhile keeps its change and only gains the link; one deleted meanwhile is left out."""
        with self.store.transaction():
            for before in linked:
                current = self.store.note(note.agent, before.memory_id, for_update=True)
                if current is None:
                    report.problems.append(f"link to {before.memory_id}: it was removed meanwhile")
                    continue
                after, new_vector = evolved[before.memory_id]
                if current.updated != before.updated:
                    report.problems.append(f"evolution of {before.memory_id}: it changed meanwhile; only linked")
                    after, new_vector = current, None
                    agentic.apply_evolution(after, note, None, self.clock())
                self.store.save(after, new_vector)
                note.links.append(after.memory_id)
                report.linked.append(after.memory_id)
                if after.context != current.context or after.tags != current.tags:
                    report.evolved.append(after.memory_id)
            self.store.insert(note, vector)

    async def _ask(self, agent: str, messages: list[dict[str, Any]], schema: dict[str, Any],
                   max_new_tokens: int) -> dict[str, Any]:
        """One LLM syscall of ``agent``, greedy, its reply constrained to ``schema``; raises Unusable."""
        model = self.settings.model
        query = LLMQuery(messages=messages, response_format={"type": "json_schema", "json_schema": {
            "name": "memory_note", "schema": schema}}, temperature=0.0, max_new_tokens=max_new_tokens,
            llms=[{"name": model}] if model else None)
        try:
            syscall = await self.call(SyscallKind.LLM, agent, query)
        except KernelError as exc:
            raise Unusable(str(exc)) from None
        if syscall.status is not SyscallStatus.DONE:
            raise Unusable("the model call was cancelled" if syscall.status is SyscallStatus.CANCELLED
                           else f"the model call failed: {syscall.error}")
        reply = syscall.value
        if reply.error is not None:
            raise Unusable(reply.error)
        try:
            value = json.loads(reply.response_message)
        except (TypeError, ValueError):
            raise Unusable(f"the reply is not JSON: {str(reply.response_message)[:200]!r}") from None
        if not isinstance(value, dict):
            raise Unusable(f"the reply is not a JSON object: {reply.response_message[:200]!r}")
        return value

    # -- blocking steps (on the I/O thread) -------------------------------------------------------------------------
    def _read(self, agent: str, memory_id: str, touch: bool = False, for_update: bool = False) -> Note:
        note = self.store.note(agent, memory_id, for_update)
        if note is None:
            raise NotFound(f"no memory {memory_id!r} among the memories of agent {agent!r}")
        if touch:
            now = self.clock()
            self.store.touch([note.row], now)
            note.retrieval_count, note.last_accessed = note.retrieval_count + 1, now
        return note

    def _apply_update(self, agent: str, params: dict[str, Any], vectors: dict[str, np.ndarray]) -> Note | str:
        """Read, change and save the note in one transaction, so that concurrent updates never undo each other;
        when its words change and no vector for them is at hand yet, save nothing and return the text to embed."""
        with self.store.transaction():
            current = self._read(agent, params["memory_id"], for_update=True)
            changed = _patched(current, params.get("content"), params.get("metadata"), self.clock())
            text = changed.search_text()
            if text == current.search_text():
                self.store.save(changed, None)
            elif text in vectors:
                self.store.save(changed, vectors[text])
            else:
                return text
        return changed

    def _delete(self, agent: str, memory_id: str) -> Note:
        """Remove the note, and the links to it from the notes it was linked with."""
        with self.store.transaction():
            note = self._read(agent, memory_id, for_update=True)
            now = self.clock()
            for other_id in note.links:
                other = self.store.note(agent, other_id, for_update=True)
                if other is not None and memory_id in other.links:
                    other.links = [link for link in other.links if link != memory_id]
                    other.record(now, "remove_memory", {"links": {"removed": [memory_id]}})
                    other.updated = now
                    self.store.save(other, None)
            self.store.delete(note)
        return note

    def _new_note(self, agent: str, content: str, metadata: dict[str, Any]) -> Note:
        now = self.clock()
        own = {key: value for key, value in metadata.items() if key not in NOTE_FIELDS}
        fields = {key: metadata[key] for key in NOTE_FIELDS if metadata.get(key) is not None}
        return Note(str(uuid.uuid4()), agent, content, own, created=now, updated=now, last_accessed=now, **fields)


def _patched(note: Note, content: str | None, metadata: dict[str, Any] | None, when: float) -> Note:
    """A copy of ``note`` with the update applied: new content (None keeps it), and ``metadata`` merged in (a
    key set to null is removed; a note field set to null goes back to its default); the change recorded."""
    after, changes = copy.deepcopy(note), {}
    if content is not None and content != note.content:
        after.content = content
        changes["content"] = {"from": _excerpt(note.content), "to": _excerpt(content)}
    for key, value in (metadata or {}).items():
        if key in NOTE_FIELDS:
            default = DEFAULT_CATEGORY if key == "category" else "" if key == "context" else []
            setattr(after, key, default if value is None else value)
        elif value is None:
            after.metadata.pop(key, None)
        else:
            after.metadata[key] = value
    for key in NOTE_FIELDS:
        if getattr(after, key) != getattr(note, key):
            changes[key] = {"from": getattr(note, key), "to": getattr(after, key)}
    if after.metadata != note.metadata:
        changes["metadata"] = {"from": note.metadata, "to": after.metadata}
    if changes:
        after.record(when, "update_memory", changes)
        after.updated = when
    return after


def _note_reply(note: Note, report: Report | None = None) -> MemoryResponse:
    metadata = note.reply_metadata()
    if report is not None:
        metadata["agentic"] = report.as_dict()
    return MemoryResponse(memory_id=note.memory_id, content=note.content, metadata=metadata, success=True)


def _merged(first: list[str], second: list[str]) -> list[str]:
    unique: dict[str, str] = {}
    for label in (*first, *second):
        unique.setdefault(label.casefold(), label)
    return list(unique.values())


def _excerpt(text: str) -> str:
    return text if len(text) <= EXCERPT_CHARS else text[:EXCERPT_CHARS - 1] + "…"
