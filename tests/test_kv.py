"""The batch's KV cache and the attention over it: rows copy, move and split as the engine asks, and a prompt
start stored once (SharedKV) gives every row that attends to it what the same keys in its own row give."""

from __future__ import annotations

from collections import Counter

import pytest
import torch

from aios.llm.hf.kv import BatchKV, SharedKV, SlotKV, capacity_for
from aios.llm.hf.runner import Chunk, _Plan

LAYERS, KV_HEADS, HEADS, DIM = 2, 2, 4, 8


def filled(rows: int, positions: int) -> SlotKV:
    kv = SlotKV(LAYERS, rows, KV_HEADS, DIM, torch.float32, torch.device("cpu"), rows=rows, capacity=positions)
    for buffer in (*kv.keys, *kv.values):
        buffer.copy_(torch.randn(buffer.shape))
    return kv


def test_splitting_a_row_returns_its_start_and_moves_the_rest_to_the_front() -> None:
    kv = filled(2, 16)
    before = kv.read_row(0, 10)
    other = kv.read_row(1, 16)
    keys, values = kv.split_row(0, 4, 10)
    assert torch.equal(keys[1], before[0][1][:, :4]) and torch.equal(values[0], before[1][0][:, :4])
    after = kv.read_row(0, 6)
    assert torch.equal(after[0][1], before[0][1][:, 4:10]) and torch.equal(after[1][1], before[1][1][:, 4:10])
    assert all(torch.equal(a, b) for a, b in zip(kv.read_row(1, 16)[0], other[0]))  # other rows untouched


def test_positions_are_read_written_and_copied_between_offsets_and_caches() -> None:
    kv = filled(2, 16)
    source = kv.read_row(0, 16)
    kv.write_row(1, source, 3, 7, at=1)  # positions 3..6 of the source at offsets 1..4
    assert torch.equal(kv.keys[0][1, :, 1:5], source[0][0][:, 3:7])
    middle = kv.read_row(0, 13, begin=8)  # offsets 8..12
    assert torch.equal(middle[1][1], kv.values[1][0, :, 8:13]) and middle[1][1].shape[1] == 5
    kv.copy_positions(0, 8, 1, 10, 5)  # offsets 8..12 of row 0 at offsets 10..14 of row 1
    assert torch.equal(kv.values[1][1, :, 10:15], kv.values[1][0, :, 8:13])
    other = filled(1, 32)  # another size class's cache
    kv.copy_positions(0, 8, 0, 20, 5, into=other)
    assert torch.equal(other.keys[1][0, :, 20:25], kv.keys[1][0, :, 8:13])
    assert torch.equal(kv.values[1][1, :, 10:15], middle[1][1])  # the source's rows are as they were


def attend(chunks: list[Chunk], kv: SlotKV, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    plan = _Plan(chunks, kv, torch.device("cpu"), torch.float32)
    return torch.cat([plan.attend(q, k, v, layer) for layer in range(LAYERS)])


def shared_start(n: int) -> SharedKV:
    return SharedKV(list(range(n)), [torch.randn(KV_HEADS, n, DIM) for _ in range(LAYERS)],
                    [torch.randn(KV_HEADS, n, DIM) for _ in range(LAYERS)])


def copied_in_front(shared: SharedKV, own: SlotKV) -> SlotKV:
    """``own``'s rows with ``shared`` copied in front of each."""
    copied, n = filled(own.rows, own.capacity), len(shared)
    for layer in range(LAYERS):
        for buffer, mine, start in ((copied.keys[layer], own.keys[layer], shared.keys[layer]),
                                    (copied.values[layer], own.values[layer], shared.values[layer])):
            buffer[:, :, :n] = start
            buffer[:, :, n:] = mine[:, :, :own.capacity - n]
    return copied


@pytest.mark.parametrize("lengths", [[5, 9, 2], [1, 1, 1], [12, 3, 7]])
def test_rows_attending_to_a_shared_start_get_what_its_copy_in_their_rows_gives(lengths: list[int]) -> None:
    """Three rows start with the same 6 tokens: two attend to them as a SharedKV, one to a copy in its row."""
    shared, rows = shared_start(6), len(lengths)
    own = filled(rows, 32)  # each row's tokens after the start
    copied = copied_in_front(shared, own)
    own.write_row(2, copied.read_row(2, 32), 0, 32)  # the third row has no base: its whole cache is in its row
    q, k, v = torch.randn(rows, HEADS, DIM), torch.randn(rows, KV_HEADS, DIM), torch.randn(rows, KV_HEADS, DIM)
    bases = [shared, shared, None]
    with_shared = attend([Chunk(r, [1], 6 + n, base=bases[r]) for r, n in enumerate(lengths)], own, q, k, v)
    plain = attend([Chunk(r, [1], 6 + n) for r, n in enumerate(lengths)], copied, q, k, v)
    assert torch.allclose(with_shared, plain, atol=1e-5)


def test_a_prompt_piece_read_after_a_shared_start_attends_to_it_and_is_written_after_it() -> None:
    shared, n = shared_start(6), 5
    own = filled(1, 16)
    copied = copied_in_front(shared, own)
    q, k, v = torch.randn(n, HEADS, DIM), torch.randn(n, KV_HEADS, DIM), torch.randn(n, KV_HEADS, DIM)
    with_shared = attend([Chunk(0, list(range(n)), 6, base=shared)], own, q, k, v)
    plain = attend([Chunk(0, list(range(n)), 6)], copied, q, k, v)
    assert torch.allclose(with_shared, plain, atol=1e-5)
    assert torch.equal(own.keys[1][0, :, :n], copied.keys[1][0, :, 6:6 + n])


def test_rows_read_written_and_moved_together_keep_each_row_s_positions() -> None:
    """Rows that change class in one step go in one copy: read together from one cache, written together into
    rows of another of a larger capacity; within a cache, rows move into freed rows (a class kept dense)."""
    kv, larger = filled(4, 16), filled(4, 32)
    rows = [kv.read_row(row, 16) for row in range(4)]
    keys, values = kv.read_rows([3, 1], 10)
    assert keys.shape == values.shape == (LAYERS, 2, KV_HEADS, 10, DIM)
    larger.write_rows([0, 2], (keys, values))
    for target, source in ((0, 3), (2, 1)):
        assert all(torch.equal(larger.keys[layer][target, :, :10], rows[source][0][layer][:, :10])
                   and torch.equal(larger.values[layer][target, :, :10], rows[source][1][layer][:, :10])
                   for layer in range(LAYERS))
    kv.move_rows([3, 2], [0, 1], 16)  # the last two rows into the first two
    assert all(torch.equal(kv.keys[layer][target], rows[source][0][layer])
               for layer in range(LAYERS) for target, source in ((0, 3), (1, 2)))
    assert torch.equal(kv.keys[0][3], rows[3][0][0])  # a moved row's old place is left as it was


def test_buffers_four_times_larger_than_needed_are_cut_down_keeping_what_rows_hold() -> None:
    kv = filled(4, 256)
    held = kv.read_row(1, 40)
    kv.reserve(2, 65)  # half the rows, 128 positions: within four times, kept as they are
    assert (kv.rows, kv.capacity) == (4, 256)
    kv.reserve(2, 40)  # 64 positions are enough now
    assert (kv.rows, kv.capacity) == (2, 64)
    assert all(torch.equal(a, b) for a, b in zip(kv.read_row(1, 40)[0], held[0]))
    kv.reserve(2, 100)  # and it grows again by doubling
    assert kv.capacity == 128


@pytest.mark.parametrize(("needs", "in_classes", "in_one"), [
    ([10], 64, 64),
    ([10, 65, 65], 64 + 2 * 128, 4 * 128),  # 3 rows of 128 take 4 rows
    ([1000] + [30] * 15, 1024 + 16 * 64, 16 * 1024),  # one long row beside fifteen short ones
    ([30] * 17, 32 * 64, 32 * 64),  # 17 rows take 32: rows double too
    ([], 0, 0),
])
def test_size_classes_take_memory_for_each_row_s_own_length(needs: list[int], in_classes: int, in_one: int) -> None:
    """Positions taken by rows that need these many positions: in size classes (a CPU), against one class
    sized to the longest row (a GPU)."""
    made = [BatchKV(LAYERS, 32, KV_HEADS, DIM, torch.float32, torch.device("cpu"), classes) for classes in (True, False)]
    per_position = 2 * LAYERS * KV_HEADS * DIM * 4
    assert [kv.bytes_for(needs) for kv in made] == [in_classes * per_position, in_one * per_position]
    counted = Counter(capacity_for(need) for need in needs)  # rows counted by capacity, as the engine admits them
    assert [kv.bytes_of(counted) for kv in made] == [in_classes * per_position, in_one * per_position]
    assert [kv.class_of(65) for kv in made] == [128, 0]
