"""The prefix cache's radix tree: a cached start of a prompt comes back with the KV its positions had, each token
is stored once however many cached sequences share it, the start that several continue is handed out as one
shared start, and the least recently used sequences go first when it is full."""

from __future__ import annotations

import pytest
import torch

from aios.llm.hf.prefix import PrefixCache

LAYERS, KV_HEADS, DIM = 2, 2, 4
BYTES_PER_TOKEN = 2 * LAYERS * KV_HEADS * DIM * 4  # keys and values, fp32


def kv_of(ids: list[int]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """KV that a position's token and place determine, so any copy of it can be checked against the original."""
    def tensor(layer: int, part: int) -> torch.Tensor:
        per_position = torch.tensor([float(token * 1000 + p) for p, token in enumerate(ids)])
        return (per_position * (layer + 1) * (part + 1))[None, :, None].expand(KV_HEADS, len(ids), DIM).clone()
    return [tensor(layer, 0) for layer in range(LAYERS)], [tensor(layer, 1) for layer in range(LAYERS)]


class Reads:
    """A finished sequence's KV, counting the positions the cache reads of it."""

    def __init__(self, ids: list[int]) -> None:
        self.keys, self.values = kv_of(ids)
        self.positions = 0

    def __call__(self, begin: int, end: int) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        self.positions += end - begin
        return [k[:, begin:end].clone() for k in self.keys], [v[:, begin:end].clone() for v in self.values]


def cache_of(*sequences: list[int], max_bytes: int = 1 << 30) -> PrefixCache:
    cache = PrefixCache(max_bytes)
    for ids in sequences:
        cache.insert(ids, Reads(ids))
    return cache


def assert_kv_is_that_of(kv: tuple[list[torch.Tensor], list[torch.Tensor]], ids: list[int],
                         begin: int = 0) -> None:
    """``kv`` holds what positions ``begin..`` of the sequence ``ids`` had."""
    expected = kv_of(ids)
    for got, want in zip((*kv[0], *kv[1]), (*expected[0], *expected[1])):
        assert torch.equal(got, want[:, begin:])


SYSTEM = list(range(100, 140))
A, B, C = SYSTEM + [1, 2, 3, 4], SYSTEM + [1, 2, 9, 9, 9], SYSTEM + [5, 6]


@pytest.mark.parametrize(("cached", "prompt", "length"), [
    ([A], A + [7, 8], len(A)),  # a next turn: all of the conversation
    ([A], A, len(A) - 1),  # the same prompt again: its last token is left to compute
    ([A, B], B + [0], len(B)),  # a sequence that branches off another
    ([A, B], SYSTEM + [1, 2, 7], len(SYSTEM) + 2),  # inside a node: up to where they part
    ([A, B], SYSTEM[:10] + [0], 10),  # inside the first node
    ([A, B, C], C + [1], len(C)),
    ([A], [99] + A, None),  # no cached start
    ([A], [SYSTEM[0]], None),  # one token: nothing can be reused
])
def test_a_lookup_finds_the_longest_cached_start_with_the_kv_it_had(cached: list[list[int]], prompt: list[int],
                                                                     length: int | None) -> None:
    cache = cache_of(*cached)
    match = cache.lookup(prompt)
    if length is None:
        assert match is None and cache.hits == 0
        return
    assert match is not None and match.length == length and cache.hits == 1
    assert_kv_is_that_of(match.kv(0, length), prompt[:length])
    assert_kv_is_that_of(match.kv(3, length), prompt[:length], begin=3)


def test_sequences_that_share_a_start_store_it_once_and_read_only_what_is_new() -> None:
    cache = PrefixCache(1 << 30)
    reads = [Reads(ids) for ids in (A, B, C)]
    for ids, read in zip((A, B, C), reads):
        cache.insert(ids, read)
    assert [read.positions for read in reads] == [len(A), len(B) - len(SYSTEM) - 2, len(C) - len(SYSTEM)]
    unique = len(SYSTEM) + 2 + 2 + 3 + 2  # the system prompt, [1, 2], then [3, 4], [9, 9, 9] and [5, 6]
    assert cache.nbytes == unique * BYTES_PER_TOKEN and len(cache) == 3
    cache.insert(A[:-1], Reads(A[:-1]))  # a start of a cached sequence: nothing new
    cache.insert(A + [4], Reads(A + [4]))  # a next turn: only its new token
    assert cache.nbytes == (unique + 1) * BYTES_PER_TOKEN and len(cache) == 3
    match = cache.lookup(A + [4, 0])
    assert match is not None and match.length == len(A) + 1
    assert_kv_is_that_of(match.kv(len(SYSTEM), len(A) + 1), A + [4], begin=len(SYSTEM))


def test_the_start_several_cached_sequences_continue_is_one_shared_start_for_all_that_take_it() -> None:
    cache = cache_of(A, B, C)
    matches = [cache.lookup(ids + [0]) for ids in (A, B, C)]
    starts = [cache.shared_start(match, 10) for match in matches]  # type: ignore[arg-type]
    # A and B also continue [1, 2] together, but the shortest start shared is the one all three have.
    assert starts[0] is not None and starts[0].ids == SYSTEM and starts[0] is starts[1] is starts[2]
    assert_kv_is_that_of((starts[0].keys, starts[0].values), SYSTEM)
    assert cache.nbytes == (len(SYSTEM) + 9) * BYTES_PER_TOKEN  # the first node's own tensors: nothing copied
    # Asked for a longer one, A gets the start it shares with B: a copy, and counted.
    deeper = cache.shared_start(matches[0], len(SYSTEM) + 1)  # type: ignore[arg-type]
    assert deeper is not None and deeper.ids == SYSTEM + [1, 2]
    assert deeper is cache.shared_start(matches[1], len(SYSTEM) + 1)  # type: ignore[arg-type]
    assert_kv_is_that_of((deeper.keys, deeper.values), SYSTEM + [1, 2])
    assert cache.nbytes == (len(SYSTEM) + 9 + len(SYSTEM) + 2) * BYTES_PER_TOKEN
    assert cache.shared_start(matches[2], len(SYSTEM) + 1) is None  # type: ignore[arg-type]  # C shares no more
    assert cache.shared_start(cache.lookup(SYSTEM[:20] + [7]), 10) is None  # type: ignore[arg-type]  # not past it
    alone = cache_of(A)
    assert alone.shared_start(alone.lookup(A + [0]), 10) is None  # type: ignore[arg-type]  # no other continues it


def test_a_shared_start_outlives_the_split_of_its_node_and_the_next_prompt_gets_a_new_one() -> None:
    cache = cache_of(A, B)
    shared = cache.shared_start(cache.lookup(A + [0]), 10)  # type: ignore[arg-type]
    assert shared is not None and shared.ids == SYSTEM + [1, 2]
    cache.insert(SYSTEM[:20] + [0], Reads(SYSTEM[:20] + [0]))  # parts the first node
    assert_kv_is_that_of((shared.keys, shared.values), SYSTEM + [1, 2])
    again = cache.shared_start(cache.lookup(A + [0]), 30)  # type: ignore[arg-type]
    assert again is not None and again is not shared and again.ids == SYSTEM + [1, 2]
    assert_kv_is_that_of((again.keys, again.values), SYSTEM + [1, 2])


def test_when_full_the_least_recently_used_sequences_go_first_and_the_starts_they_share_after_them() -> None:
    unique = len(SYSTEM) + 2 + 2 + 3
    cache = cache_of(A, B, max_bytes=(unique + 1) * BYTES_PER_TOKEN)
    assert cache.lookup(A + [0]) is not None  # A is now more recent than B
    cache.insert(C, Reads(C))  # two more tokens: B's own [9, 9, 9] goes
    assert cache.nbytes == (len(SYSTEM) + 2 + 2 + 2) * BYTES_PER_TOKEN
    assert cache.lookup(B + [0]).length == len(SYSTEM) + 2  # type: ignore[union-attr]
    assert cache.lookup(A + [0]).length == len(A)  # type: ignore[union-attr]
    cache.insert(list(range(500, 500 + unique)), Reads(list(range(500, 500 + unique))))  # pushes out all else
    assert len(cache) == 1 and cache.nbytes == unique * BYTES_PER_TOKEN
    assert cache.lookup(A + [0]) is None


def test_a_sequence_larger_than_the_whole_cache_is_not_kept() -> None:
    cache = cache_of(A, max_bytes=len(A) * BYTES_PER_TOKEN)
    cache.insert(list(range(1, 100)), Reads(list(range(1, 100))))
    assert len(cache) == 1 and cache.lookup(A + [0]).length == len(A)  # type: ignore[union-attr]
