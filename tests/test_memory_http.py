"""Memory over real HTTP, on both stores (SQLite, and a real PostgreSQL): every operation with the exact bodies
the AIOS SDK sends, the reply shapes, updates and their history, filters, isolation between agents, the bad
inputs (and that nothing was lost), concurrent writers, and the SDK's typed functions.

The kernel runs in this process without a model (memory needs none but for agentic memory, tested on the
embedded model in test_memory_agentic.py) and serves on loopback from a thread."""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import Any, Callable, Iterator

import pytest

from aios import sdk
from aios.sdk import AIOSError
from conftest import refused_before_running
from memory_support import MEMORY_REPLY, MemoryServer, body, config_text, dsn_for, served_kernel

RESULT_KEYS = {"memory_id", "content", "score", "metadata", "keywords", "tags", "category", "timestamp"}
RAW_EXTRA = {"id", "context", "links", "retrieval_count", "last_accessed", "evolution_history"}
METADATA_KEYS = {"keywords", "tags", "context", "category", "timestamp", "last_accessed", "created_at", "updated_at",
                 "retrieval_count", "links", "evolution_history"}


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def memory(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
           embedder) -> Iterator[MemoryServer]:  # noqa: ANN001
    postgres = request.getfixturevalue("postgres") if request.param == "postgres" else None
    data = tmp_path_factory.mktemp(f"memory-{request.param}")
    with served_kernel(data, config_text(request.param, dsn_for(request.param, postgres)), embedder,
                       request.param) as server:
        yield server


def test_each_aios_operation_does_what_it_says(memory: MemoryServer) -> None:
    agent = "aios/rememberer"
    added = memory.ok(agent, "add_memory", {"content": "Lena is vegetarian and doesn't eat fish either.",
                                            "metadata": {"tags": ["food", "friends"], "priority": "high"}})
    memory_id = added["memory_id"]
    assert added["content"].startswith("Lena") and added["metadata"]["tags"] == ["food", "friends"]
    assert added["metadata"]["priority"] == "high" and added["search_results"] is None
    got = memory.ok(agent, "get_memory", {"memory_id": memory_id})
    assert (got["memory_id"], got["content"]) == (memory_id, added["content"])
    assert set(METADATA_KEYS) <= set(got["metadata"]) and got["metadata"]["retrieval_count"] == 1
    kept = memory.ok(agent, "update_memory", {"memory_id": memory_id, "content": None,
                                              "metadata": {"category": "people"}})
    assert kept["content"] == added["content"] and kept["metadata"]["category"] == "people"  # null content: kept
    memory.add(agent, "The printer on the second floor jams on double-sided pages.")
    (found, *_) = memory.search(agent, "What can't Lena eat?", k=1)
    assert set(found) == RESULT_KEYS and found["memory_id"] == memory_id and 0 < found["score"] <= 1
    (raw, *_) = memory.ok(agent, "retrieve_memory_raw", {"content": "Lena's diet", "k": 1})["search_results"]
    assert set(raw) == RESULT_KEYS | RAW_EXTRA and raw["id"] == memory_id and raw["metadata"]["category"] == "people"
    removed = memory.ok(agent, "remove_memory", {"memory_id": memory_id})
    assert (removed["memory_id"], removed["success"]) == (memory_id, True)
    gone = memory.query(agent, "get_memory", {"memory_id": memory_id})
    assert (gone["success"], gone["status_code"]) == (False, 404) and memory_id in gone["error"]
    assert [r["memory_id"] for r in memory.search(agent, "Lena vegetarian fish")] != [memory_id]


def test_list_memories_pages_through_an_agent_s_own_memories_newest_first(memory: MemoryServer) -> None:
    agent, other = "aios/lister", "aios/not-listed"
    made = [memory.add(agent, f"Listed note {n}.") for n in range(5)]
    memory.add(other, "Someone else's note.")
    first = memory.ok(agent, "list_memories", {"k": 3})["search_results"]
    assert [r["memory_id"] for r in first] == made[:1:-1]  # the three newest, newest first
    assert set(first[0]) == RESULT_KEYS - {"score"} and first[0]["content"] == "Listed note 4."
    rest = memory.ok(agent, "list_memories", {"k": 3, "offset": 3})["search_results"]
    assert [r["memory_id"] for r in rest] == made[1::-1]
    assert memory.ok(agent, "list_memories", {"offset": 5})["search_results"] == []
    assert len(memory.ok(other, "list_memories", {})["search_results"]) == 1


def test_an_update_is_searchable_at_once_and_recorded_in_the_history(memory: MemoryServer) -> None:
    agent = "aios/updater"
    memory_id = memory.add(agent, "The spare key is under the blue flower pot.", {"tags": ["home"], "room": "hall"})
    memory.add(agent, "The car is parked on level 3 of the garage.")
    updated = memory.ok(agent, "update_memory", {"memory_id": memory_id,
                                                 "content": "The spare key is with our neighbour, Mrs. Lind.",
                                                 "metadata": {"tags": ["home", "neighbours"], "room": None}})
    metadata = updated["metadata"]
    assert "room" not in metadata and metadata["tags"] == ["home", "neighbours"]  # null removes a key
    (entry,) = metadata["evolution_history"]
    assert entry["cause"] == "update_memory" and set(entry["changes"]) == {"content", "tags", "metadata"}
    assert entry["changes"]["content"]["from"].endswith("blue flower pot.")
    assert entry["changes"]["tags"] == {"from": ["home"], "to": ["home", "neighbours"]}
    assert memory.search(agent, "Who has our extra key?", k=1)[0]["memory_id"] == memory_id
    assert memory.search(agent, "key", tags=["neighbours"])[0]["content"].endswith("Mrs. Lind.")
    unchanged = memory.ok(agent, "update_memory", {"memory_id": memory_id, "metadata": {}})
    assert len(unchanged["metadata"]["evolution_history"]) == 1  # nothing changed, nothing recorded


def test_metadata_sent_back_as_a_reply_gave_it_changes_only_what_the_agent_may_set(memory: MemoryServer) -> None:
    """An AIOS agent updates a note with the metadata get_memory gave it: the kernel's own fields in it (links,
    history, counts, times) are left out and keep the kernel's values; the agent's own keys are applied."""
    agent = "aios/roundtrip"
    memory_id = memory.add(agent, "Lunch is at noon.", {"tags": ["food"]})
    given = memory.ok(agent, "get_memory", {"memory_id": memory_id})["metadata"]
    sent = {**given, "tags": ["food", "daily"], "retrieval_count": 999, "links": ["forged"],
            "created_at": "1999-01-01T00:00:00", "evolution_history": []}
    updated = memory.ok(agent, "update_memory", {"memory_id": memory_id, "content": "Lunch is at one.",
                                                 "metadata": sent})["metadata"]
    assert updated["tags"] == ["food", "daily"] and updated["links"] == given["links"]
    assert updated["created_at"] == given["created_at"] and updated["retrieval_count"] != 999
    assert [entry["cause"] for entry in updated["evolution_history"]] == ["update_memory"]
    made = memory.ok(agent, "add_memory", {"content": "Dinner is at seven.", "metadata": {"links": ["x"],
                                                                                        "timestamp": "then"}})
    assert memory.ok(agent, "get_memory", {"memory_id": made["memory_id"]})["metadata"]["links"] == []


def test_search_filters_by_tags_category_time_and_metadata(memory: MemoryServer) -> None:
    agent = "aios/filterer"
    memory.add(agent, "Pasta with tomato sauce for dinner.", {"tags": ["food"], "category": "meals"})
    between = time.time()
    memory.add(agent, "Ran 5 km along the river.", {"tags": ["sport"], "category": "health", "user_id": "u1",
                                                     "sharing_policy": "private"})
    memory.add(agent, "Swam 20 laps at the pool.", {"tags": ["sport", "water"], "category": "health",
                                                     "user_id": "u2"})

    def contents(**filters: Any) -> set[str]:
        return {r["content"].split()[0] for r in memory.search(agent, "what did I do", 10, **filters)}

    assert contents() == {"Pasta", "Ran", "Swam"}
    assert contents(tags=["SPORT"]) == {"Ran", "Swam"} and contents(tags=["sport", "water"]) == {"Swam"}
    assert contents(category="meals") == {"Pasta"}
    assert contents(created_after=between) == {"Ran", "Swam"}
    assert contents(created_before=datetime.fromtimestamp(between).isoformat()) == {"Pasta"}  # naive: local time
    assert contents(user_id="u2") == {"Swam"} and contents(sharing_policy="private") == {"Ran"}
    assert contents(tags=["food"], category="health") == set()


def test_an_agent_never_reaches_another_agents_memory(memory: MemoryServer) -> None:
    secret = memory.add("aios/alice", "Alice's bank PIN is 4921.", {"tags": ["secret"]})
    unknown = "00000000-0000-4000-8000-000000000000"
    for operation, params in (("get_memory", {"memory_id": secret}),
                              ("update_memory", {"memory_id": secret, "content": "hacked"}),
                              ("remove_memory", {"memory_id": secret})):
        theirs = memory.query("aios/mallory", operation, params)
        nobodys = memory.query("aios/mallory", operation, {**params, "memory_id": unknown})
        assert (theirs["status_code"], theirs["success"], theirs["content"]) == (404, False, None)
        # Another agent's id is answered exactly as an unknown one: nothing says that it exists.
        assert theirs["error"].replace(secret, "ID") == nobodys["error"].replace(unknown, "ID")
    assert memory.search("aios/mallory", "bank PIN", tags=["secret"]) == []
    assert memory.search("aios/mallory", "Alice's bank PIN") == []
    assert memory.ok("aios/alice", "get_memory", {"memory_id": secret})["content"] == "Alice's bank PIN is 4921."


KEEP = "guarded/agent"
# Type and shape problems. (id, operation, params, text a 422 problem must contain: the field and what is wrong)
MALFORMED: list[tuple[str, Any, Any, str]] = [
    ("add-without-content", "add_memory", {"metadata": {}}, "params.content: is required for 'add_memory'"),
    ("add-content-number", "add_memory", {"content": 42}, "params.content: must be a string"),
    ("add-content-list", "add_agentic_memory", {"content": ["a"]}, "params.content: must be a string"),
    ("add-content-lone-surrogate", "add_memory", {"content": "\ud800"},
     "body.query_data.params.content: not valid Unicode text"),
    ("metadata-infinity", "add_memory", {"content": "x", "metadata": {"weight": float("inf")}},
     "body.query_data.params.metadata.weight: not a finite number"),
    ("metadata-nan-deep", "update_memory", {"memory_id": "m", "metadata": {"scores": [1.0, float("nan")]}},
     "body.query_data.params.metadata.scores.1: not a finite number"),
    ("metadata-not-object", "add_memory", {"content": "x", "metadata": ["tag"]}, "params.metadata: must be an object"),
    ("metadata-tags-number", "add_memory", {"content": "x", "metadata": {"tags": 5}},
     "params.metadata: tags must be a list of strings"),
    ("metadata-context-number", "add_memory", {"content": "x", "metadata": {"context": 3}},
     "params.metadata: context must be a string"),
    ("get-without-id", "get_memory", {}, "params.memory_id: is required for 'get_memory'"),
    ("get-id-number", "get_memory", {"memory_id": 7}, "params.memory_id: must be a memory id"),
    ("search-without-query", "retrieve_memory", {"k": 3}, "params.content: is required for 'retrieve_memory'"),
    ("search-k-string", "search_memories", {"content": "q", "k": "5"}, "params.k: must be an integer"),
    ("search-k-bool", "retrieve_memory_raw", {"content": "q", "k": True}, "params.k: must be an integer"),
    ("search-tags-number", "retrieve_memory", {"content": "q", "tags": 1}, "params.tags: must be a list of strings"),
    ("search-time-words", "retrieve_memory", {"content": "q", "created_after": "last week"},
     "params.created_after: must be Unix seconds or an ISO 8601"),
    ("list-offset-string", "list_memories", {"offset": "2"}, "params.offset: must be an integer"),
    ("list-offset-bool", "list_memories", {"offset": True}, "params.offset: must be an integer"),
    ("list-with-query", "list_memories", {"content": "q"}, "params.content: is not a parameter"),
    ("unknown-param", "add_memory", {"content": "x", "importance": 5}, "params.importance: is not a parameter"),
    ("id-and-its-alias", "get_memory", {"memory_id": "x", "id": "y"},
     "params.id: and params.memory_id are one parameter (memory_id) of 'get_memory': give it once"),
    ("k-and-limit", "list_memories", {"limit": 5, "k": 5}, "params.k: and params.limit are one parameter (k)"),
    ("params-not-object", "add_memory", "remember this", "params: must be an object"),
    ("unknown-operation", "forget_everything", {}, "operation_type: must be one of add_memory"),
    ("operation-not-string", 3, {}, "operation_type: must be one of"),
    # Malformed beside a refused value sent first: still malformed, whatever the order of the params.
    ("refused-k-then-content-number", "retrieve_memory", {"k": 0, "content": 5}, "params.content: must be a string"),
    ("refused-k-without-content", "retrieve_memory", {"k": 0}, "params.content: is required for 'retrieve_memory'"),
    ("refused-k-then-typo", "list_memories", {"k": 0, "ofset": 1}, "params.ofset: is not a parameter"),
    ("metadata-too-big-and-tags-number", "add_memory", {"content": "x", "metadata": {"blob": "x" * 70_000, "tags": 5}},
     "params.metadata: tags must be a list of strings"),
]


_KEPT: dict[str, str] = {}  # backend -> the memory_id of the note the bad requests must not touch


def _kept(memory: MemoryServer) -> tuple[str, dict[str, Any], list[str]]:
    """The kept note as it is (what reading it counts aside), and which memories its agent has."""
    if memory.backend not in _KEPT:
        _KEPT[memory.backend] = memory.add(KEEP, "A precious memory.", {"tags": ["keep"]})
    got = memory.ok(KEEP, "get_memory", {"memory_id": _KEPT[memory.backend]})
    counted = ("retrieval_count", "last_accessed")
    stored = [r["memory_id"] for r in memory.ok(KEEP, "list_memories", {"k": 100})["search_results"]]
    return got["content"], {k: v for k, v in got["metadata"].items() if k not in counted}, stored


def _post(memory: MemoryServer, operation: Any, params: Any) -> Any:
    # Sent as ASCII JSON (escapes), which is how a lone surrogate can travel at all.
    return memory.client.post("/query", content=json.dumps(body(KEEP, operation, params)),
                              headers={"content-type": "application/json"})


@pytest.mark.parametrize(("operation", "params", "expected"), [m[1:] for m in MALFORMED], ids=[m[0] for m in MALFORMED])
def test_a_malformed_memory_request_is_422_naming_the_field_and_loses_nothing(
        memory: MemoryServer, operation: Any, params: Any, expected: str) -> None:
    before = _kept(memory)
    reply = _post(memory, operation, params)
    assert reply.status_code == 422, reply.text
    problems = [f"{'.'.join(map(str, d['loc']))}: {d['msg']}" for d in reply.json()["detail"]]
    assert any(expected in problem for problem in problems), problems
    assert all(problem.startswith("body.query_data.") for problem in problems)
    assert _kept(memory) == before


# Values of the right type that the kernel refuses: answered in the envelope, as upstream AIOS answers its errors,
# since the AIOS SDK raises on a 422 before an agent could read why. (id, operation, params, text the error must
# contain: the field and what is wrong)
REFUSED_VALUES: list[tuple[str, str, Any, str]] = [
    ("search-time-huge", "retrieve_memory", {"content": "q", "created_after": 10 ** 400},
     "params.created_after: must be a finite number of Unix seconds"),
    ("search-time-before-any-calendar", "retrieve_memory", {"content": "q", "created_before": -1e300},
     "params.created_before: is outside the dates this kernel can place"),
    ("add-empty-content", "add_memory", {"content": "  "}, "params.content: must not be empty"),
    ("add-content-too-long", "add_memory", {"content": "x" * 100_001}, "params.content: is 100001 characters long"),
    ("metadata-tags-empty-string", "add_memory", {"content": "x", "metadata": {"tags": [""]}},
     "params.metadata: tags must hold strings of 1 to 100 characters"),
    ("metadata-too-many-tags", "add_memory", {"content": "x", "metadata": {"tags": [str(n) for n in range(33)]}},
     "params.metadata: tags has 33 entries; the limit is 32"),
    ("metadata-category-empty", "add_memory", {"content": "x", "metadata": {"category": " "}},
     "params.metadata: category must be a string of 1 to 100"),
    ("metadata-too-large", "add_memory", {"content": "x", "metadata": {"blob": "y" * 70_000}},
     "params.metadata: is 70012 bytes as JSON; the limit is 65536"),
    # PostgreSQL text cannot hold NUL: refused on both stores, before a store fails on it (or keeps it in metadata
    # that every later search by metadata then fails to read).
    ("add-content-nul", "add_memory", {"content": "a\u0000b"},
     "params.content: contains the NUL character (\\u0000), which PostgreSQL text cannot hold; remove it"),
    ("metadata-string-nul-deep", "add_memory", {"content": "x", "metadata": {"user": {"names": ["a", "b\u0000"]}}},
     "params.metadata: user.names.1 contains the NUL character (\\u0000)"),
    ("metadata-key-nul", "update_memory", {"memory_id": "m", "metadata": {"k\u0000": 1}},
     "params.metadata: k\\u0000 contains the NUL character"),
    ("metadata-tag-nul", "add_memory", {"content": "x", "metadata": {"tags": ["a\u0000"]}},
     "params.metadata: tags contains the NUL character"),
    ("update-content-nul", "update_memory", {"memory_id": "m", "content": "\u0000"},
     "params.content: contains the NUL character"),
    ("search-user-id-nul", "retrieve_memory", {"content": "q", "user_id": "u\u0000"},
     "params.user_id: contains the NUL character"),
    ("get-id-nul", "get_memory", {"memory_id": "m\u0000"}, "params.memory_id: contains the NUL character"),
    ("get-id-empty", "get_memory", {"memory_id": ""}, "params.memory_id: must not be empty"),
    ("get-id-too-long", "remove_memory", {"memory_id": "m" * 129}, "params.memory_id: is 129 characters long"),
    ("update-content-empty", "update_memory", {"memory_id": "m", "content": ""}, "params.content: must not be empty"),
    ("search-empty-query", "retrieve_memory", {"content": ""}, "params.content: must not be empty"),
    ("search-k-zero", "search_memories", {"content": "q", "k": 0}, "params.k: must be between 1 and 100, not 0"),
    ("search-k-too-many", "retrieve_memory", {"content": "q", "k": 101},
     "params.k: must be between 1 and 100, not 101"),
    ("search-time-reversed", "retrieve_memory", {"content": "q", "created_after": 10, "created_before": 5},
     "params.created_after: is later than created_before"),
    ("search-user-id-empty", "retrieve_memory", {"content": "q", "user_id": ""}, "params.user_id: must be a string"),
    ("list-k-zero", "list_memories", {"k": 0}, "params.k: must be between 1 and 100"),
    ("list-k-too-many", "list_memories", {"k": 101}, "params.k: must be between 1 and 100"),
    ("list-offset-negative", "list_memories", {"offset": -1}, "params.offset: must be from 0 to 9223372036854775807, not -1"),
    ("list-offset-huge", "list_memories", {"offset": 10 ** 400}, "params.offset: must be from 0 to 9223372036854775807"),
]


@pytest.mark.parametrize(("operation", "params", "expected"), [r[1:] for r in REFUSED_VALUES],
                         ids=[r[0] for r in REFUSED_VALUES])
def test_a_refused_memory_value_is_200_with_400_in_the_envelope_naming_the_field_and_stores_nothing(
        memory: MemoryServer, operation: str, params: Any, expected: str) -> None:
    before = _kept(memory)
    response = refused_before_running(_post(memory, operation, params), MEMORY_REPLY)
    assert (response["status_code"], response["success"], response["response_class"]) == (400, False, "memory")
    assert response["error"].startswith("memory request: ") and expected in response["error"], response["error"]
    assert response["memory_id"] is None and response["search_results"] is None
    assert _kept(memory) == before


def test_unknown_query_data_fields_and_another_query_class_are_422(memory: MemoryServer) -> None:
    extra = body("x", "add_memory", {"content": "x"})
    extra["query_data"]["messages"] = []  # the old SDK's MemoryQuery had it
    assert memory.client.post("/query", json=extra).json()["detail"][0]["loc"] == ["body", "query_data", "messages"]
    wrong = body("x", "add_memory", {"content": "x"})
    wrong["query_data"]["query_class"] = "storage"
    detail = memory.client.post("/query", json=wrong).json()["detail"]
    assert detail[0]["loc"] == ["body", "query_data", "query_class"] and "must be 'memory'" in detail[0]["msg"]


REFUSED = [
    ("get-unknown", "get_memory", {"memory_id": "no-such-memory"}),
    ("update-unknown", "update_memory", {"memory_id": "no-such-memory", "content": "x"}),
    ("remove-unknown", "remove_memory", {"memory_id": "no-such-memory"}),
]


@pytest.mark.parametrize(("operation", "params"), [r[1:] for r in REFUSED], ids=[r[0] for r in REFUSED])
def test_an_unknown_memory_is_200_with_404_in_the_envelope_and_loses_nothing(
        memory: MemoryServer, operation: str, params: dict[str, Any]) -> None:
    before = _kept(memory)
    response = memory.query(KEEP, operation, params)
    assert (response["success"], response["status_code"]) == (False, 404)
    assert response["error"] == f"no memory 'no-such-memory' among the memories of agent '{KEEP}'"
    assert response["memory_id"] is None and response["content"] is None and response["search_results"] is None
    assert _kept(memory) == before


def test_twenty_agents_writing_at_once_lose_nothing(memory: MemoryServer) -> None:
    agents = [f"crowd/agent-{n:02d}" for n in range(20)]

    def write(agent: str) -> list[tuple[str, str]]:
        texts = [f"{agent} remembers fact number {i}: the code word is {agent[-2:]}x{i}" for i in range(5)]
        return [(memory.add(agent, text), text) for text in texts]

    with ThreadPoolExecutor(len(agents)) as pool:
        written = dict(zip(agents, pool.map(write, agents)))
    for agent, notes in written.items():  # each agent finds exactly its own five, intact
        assert {(r["memory_id"], r["content"]) for r in memory.search(agent, "fact code word", 100)} == set(notes)


def test_concurrent_updates_of_one_note_all_land(memory: MemoryServer) -> None:
    memory_id = memory.add("crowd/editor", "A shared checklist.")

    def mark(n: int) -> dict[str, Any]:
        return memory.ok("crowd/editor", "update_memory", {"memory_id": memory_id, "metadata": {f"item{n}": True}})

    with ThreadPoolExecutor(20) as pool:
        list(pool.map(mark, range(20)))
    metadata = memory.ok("crowd/editor", "get_memory", {"memory_id": memory_id})["metadata"]
    assert all(metadata[f"item{n}"] is True for n in range(20))
    assert len(metadata["evolution_history"]) == 20


# -- the SDK ------------------------------------------------------------------------------------------------------------
def test_the_sdk_functions_return_typed_replies(memory: MemoryServer) -> None:
    agent, url = "sdk/memory", memory.url
    created = sdk.create_memory(agent, "Ravi's flight from Mumbai lands at 6:40am on Friday.", {"tags": ["travel"]},
                                url)
    assert created.success and created.note.tags == ["travel"] and created.timings.turnaround >= 0
    other = sdk.create_memory(agent, "The dishwasher filter must be cleaned every month.", base_url=url)
    got = sdk.get_memory(agent, created.memory_id, url)
    assert got.content == created.content and got.note.retrieval_count == 1
    updated = sdk.update_memory(agent, created.memory_id, metadata={"airline": "Vistara"}, base_url=url)
    assert updated.content == created.content and updated.note.extra == {"airline": "Vistara"}
    assert updated.note.evolution_history[0]["cause"] == "update_memory"
    found = sdk.search_memories(agent, "When does Ravi arrive?", 1, url)
    assert [r.memory_id for r in found.search_results] == [created.memory_id]
    assert found.search_results[0].note.extra == {"airline": "Vistara"} and found.search_results[0].score > 0.3
    tagged = sdk.search_memories(agent, "anything", 5, url, tags=["travel"], created_before=time.time())
    assert [r.memory_id for r in tagged.search_results] == [created.memory_id]
    raw = sdk.search_memories(agent, "kitchen appliance cleaning", 1, url, raw=True)
    assert raw.search_results[0].memory_id == other.memory_id
    assert sdk.delete_memory(agent, other.memory_id, url).success


SDK_BAD: list[tuple[str, Callable[[str], Any], int, str]] = [
    ("unknown-id", lambda url: sdk.get_memory("sdk/bad", "nope", url), 404, "no memory 'nope'"),
    ("update-unknown", lambda url: sdk.update_memory("sdk/bad", "nope", "x", base_url=url), 404, "no memory"),
    ("delete-unknown", lambda url: sdk.delete_memory("sdk/bad", "nope", url), 404, "no memory"),
    ("empty-content", lambda url: sdk.create_memory("sdk/bad", "", base_url=url), 400,
     "memory request: params.content: must not be empty"),
    ("content-not-string", lambda url: sdk.create_memory("sdk/bad", 5, base_url=url), 422, "must be a string"),  # type: ignore[arg-type]
    ("k-zero", lambda url: sdk.search_memories("sdk/bad", "q", 0, url), 400,
     "memory request: params.k: must be between 1 and 100, not 0"),
    ("tags-number", lambda url: sdk.search_memories("sdk/bad", "q", 5, url, tags=3), 422, "tags"),  # type: ignore[arg-type]
    ("no-kernel", lambda url: sdk.get_memory("sdk/bad", "x", "http://127.0.0.1:9"), 0, "cannot reach the kernel"),
]


@pytest.mark.parametrize(("call", "status", "expected"), [b[1:] for b in SDK_BAD], ids=[b[0] for b in SDK_BAD])
def test_the_sdk_raises_one_error_type_with_the_status_and_why(
        memory: MemoryServer, call: Callable[[str], Any], status: int, expected: str) -> None:
    with pytest.raises(AIOSError) as caught:
        call(memory.url)
    assert caught.value.status_code == status and expected in caught.value.message
    if status not in (0, 422):  # a refusal after parsing carries the typed reply too
        assert isinstance(caught.value.response, sdk.MemoryResponse) and not caught.value.response.success
