"""The continuous-batching engine with the real embedded model: batching never changes a greedy answer,
sequences join and leave at token boundaries, and a cancelled or finished one frees its place at once."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from conftest import data_dir_of_its_own

from aios.config import EMBEDDED_MODEL
from aios.llm.core import Generation, GenerationRequest, SamplingParams
from aios.llm.hf import HfLocalBackend
from aios.llm.hf.engine import EngineSettings, StepFailed
from aios.llm.hf.kv import SlotKV
from aios.llm.hf.sequence import Sequence

QUESTIONS = ["What is the capital of France?", "Write a haiku about the sea.", "List three fruits.",
             "What is 2+2?", "Who wrote Hamlet?"]


def ask(question: str, max_new_tokens: int = 24, temperature: float = 0) -> GenerationRequest:
    return GenerationRequest([{"role": "user", "content": question}],
                             SamplingParams(temperature=temperature, max_new_tokens=max_new_tokens))


def started(request: GenerationRequest) -> asyncio.Event:
    """An event set once the engine first runs ``request`` (keeps any on_running already there)."""
    loop, event, before = asyncio.get_running_loop(), asyncio.Event(), request.on_running

    def on_running(running: bool) -> None:
        if before is not None:
            before(running)
        if running:
            loop.call_soon_threadsafe(event.set)

    request.on_running = on_running
    return event


async def together(backend: HfLocalBackend, requests: list[GenerationRequest]) -> list[Generation]:
    return list(await asyncio.gather(*(backend.complete(r) for r in requests)))


def in_one_step(backend: HfLocalBackend, requests: list[GenerationRequest]) -> list[str | BaseException]:
    """Submit ``requests`` together (the engine takes them all in one step, and with prompts of one length they
    then decode in step); each reply's text, or what it failed with."""
    replies: dict[int, Generation | BaseException] = {}
    done = threading.Event()

    def on_done(index: int) -> Callable[[Generation | BaseException], None]:
        def record(outcome: Generation | BaseException) -> None:
            replies[index] = outcome
            if len(replies) == len(requests):
                done.set()
        return record

    backend.engine.submit_all([Sequence(request, backend.prompt_ids(request), on_done(index))
                               for index, request in enumerate(requests)])
    assert done.wait(120)
    return [getattr(replies[index], "text", replies[index]) for index in range(len(requests))]


@pytest.fixture(scope="module")
def two_slots(backend: HfLocalBackend, data_dir: Path) -> HfLocalBackend:
    """A second engine over the same model with room for only two sequences at a time."""
    small = HfLocalBackend(EMBEDDED_MODEL, data_dir=data_dir, settings=EngineSettings(max_batch=2))
    yield small
    small.close()


def test_batched_greedy_answers_equal_the_answers_given_alone(backend: HfLocalBackend) -> None:
    alone = [backend.generate(ask(q)).text for q in QUESTIONS]
    batched = asyncio.run(together(backend, [ask(q) for q in QUESTIONS]))
    assert [g.text for g in batched] == alone
    assert "Paris" in batched[0].text


def test_prompts_taken_in_one_step_get_their_rows_in_one_growth_of_the_kv_and_their_alone_replies(
        backend: HfLocalBackend, monkeypatch: pytest.MonkeyPatch) -> None:
    """Sixteen prompts arrive together and are admitted in one step: their rows are placed together,
    so their size class's buffers are made and grown once, not again at each doubling of its rows (2, 4, 8,
    16: a copy of everything the class holds each time). Every reply is the one the prompt gets alone."""
    requests = [ask(f"Count from {n} to {n + 3}.", 8) for n in range(16)]
    alone = [backend.generate(request).text for request in requests]
    engine, made, admitting = backend.engine, [], [False]
    set_buffers, admit = SlotKV._set, engine._admit_waiting

    def counted(kv: SlotKV, keys: torch.Tensor, values: torch.Tensor) -> None:
        if admitting[0]:
            made.append(tuple(keys.shape))
        set_buffers(kv, keys, values)

    def admitting_all() -> None:
        admitting[0] = len(engine.policy) == len(requests)
        try:
            admit()
        finally:
            admitting[0] = False

    monkeypatch.setattr(SlotKV, "_set", counted)
    monkeypatch.setattr(engine, "_admit_waiting", admitting_all)
    assert in_one_step(backend, requests) == alone
    assert len(made) <= 2 and made[-1][1] == 16, made  # the class's cache made, then its rows for all 16


def test_more_requests_than_slots_wait_their_turn_and_all_complete(backend: HfLocalBackend,
                                                                  two_slots: HfLocalBackend) -> None:
    alone = [backend.generate(ask(q, 12)).text for q in QUESTIONS]
    results = asyncio.run(together(two_slots, [ask(q, 12) for q in QUESTIONS]))
    assert [g.text for g in results] == alone


def test_a_short_request_leaves_the_batch_while_a_long_one_keeps_going(two_slots: HfLocalBackend) -> None:
    async def main() -> tuple[Generation, bool]:
        long_request = ask("Write a long story about a dragon.", 120)
        running = started(long_request)
        long = asyncio.create_task(two_slots.complete(long_request))
        await running.wait()
        short = await two_slots.complete(ask("What is the capital of France?", 24))
        still_running = not long.done()
        await long
        return short, still_running

    short, long_still_running = asyncio.run(main())
    assert "Paris" in short.text and long_still_running


def test_a_cancelled_sequence_frees_its_slot_for_the_waiting_ones(two_slots: HfLocalBackend) -> None:
    async def main() -> list[Generation]:
        hog_requests = [ask("Tell me a very long story.", 2000) for _ in range(2)]
        both_running = [started(r) for r in hog_requests]
        hogs = [asyncio.create_task(two_slots.complete(r)) for r in hog_requests]
        for event in both_running:
            await event.wait()
        waiting = asyncio.create_task(two_slots.complete(ask("What is the capital of France?")))
        await asyncio.sleep(0.5)
        assert not waiting.done()  # both slots are taken by the long stories
        for hog in hogs:
            hog.cancel()
        return [await waiting]

    (answer,) = asyncio.run(main())
    assert "Paris" in answer.text and answer.finish_reason == "stop"


def test_sampled_and_greedy_sequences_share_a_batch_without_changing_the_greedy_one(
    backend: HfLocalBackend,
) -> None:
    alone = backend.generate(ask(QUESTIONS[0])).text
    mixed = asyncio.run(together(backend, [ask(QUESTIONS[0]), ask(QUESTIONS[1], temperature=1.2),
                                           ask(QUESTIONS[2], temperature=0.7)]))
    assert mixed[0].text == alone
    assert all(g.text for g in mixed[1:])


def test_a_prompt_longer_than_the_model_takes_is_refused(backend: HfLocalBackend) -> None:
    from aios.errors import BadRequest

    with pytest.raises(BadRequest, match="takes at most"):
        backend.generate(ask("word " * 9000))


STORY = "Write a story about a lighthouse keeper."
RIVAL = "Describe the ocean in great detail."


def engine_backend(data_dir: Path, **settings: object) -> HfLocalBackend:
    return HfLocalBackend(EMBEDDED_MODEL, data_dir=data_dir, settings=EngineSettings(**settings))  # type: ignore[arg-type]


def run_with_rival(backend: HfLocalBackend, target: GenerationRequest, rival: GenerationRequest) -> Generation:
    """Run ``target`` while ``rival`` competes for the batch; once the target is done, cancel the rival and wait
    until the engine has let go of it (its reply says so), so that nothing of it is left when this returns."""
    async def main() -> Generation:
        running = started(target)
        first = asyncio.create_task(backend.complete(target))
        await running.wait()  # the target runs first
        other = asyncio.create_task(backend.complete(rival))
        result = await first
        rival.cancelled.set()
        backend.engine.poke()
        assert (await other).finish_reason == "cancelled"
        return result

    return asyncio.run(main())


# quantum that makes a 24-token generation yield exactly k times: ceil(24 / quantum) - 1 == k
QUANTUM_FOR_PREEMPTIONS = {0: 24, 1: 12, 2: 8, 3: 6, 4: 5, 5: 4}


@pytest.mark.parametrize("preemptions", sorted(QUANTUM_FOR_PREEMPTIONS))
def test_a_greedy_generation_preempted_k_times_gives_the_uninterrupted_tokens(
    backend: HfLocalBackend, data_dir: Path, preemptions: int
) -> None:
    """One slot, round-robin: the story and a rival take turns; each switch saves the story's KV (spilled to
    disk for odd k) and restores it later without recomputation. The tokens are those of a run alone."""
    alone = backend.generate(ask(STORY, 24))
    assert alone.completion_tokens == 24
    switched = engine_backend(data_dir, max_batch=1, policy="rr", quantum_tokens=QUANTUM_FOR_PREEMPTIONS[preemptions],
                              snapshot_ram_mb=0 if preemptions % 2 else 1024)
    try:
        slices: list[bool] = []
        target = ask(STORY, 24)
        target.on_running = slices.append
        result = run_with_rival(switched, target, ask(RIVAL, 500))
        assert result.text == alone.text and result.completion_tokens == 24
        assert slices.count(False) == preemptions and slices.count(True) == preemptions + 1
        if preemptions % 2:
            assert switched.engine.contexts.spilled >= preemptions  # the snapshots went through the disk
        assert len(switched.engine.contexts) == 0  # restored or discarded: none left behind
    finally:
        switched.close()


def test_round_robin_lets_a_short_request_through_while_a_long_one_holds_the_only_slot(data_dir: Path) -> None:
    def short_finishes_first(policy: str) -> bool:
        engine = engine_backend(data_dir, max_batch=1, policy=policy, quantum_tokens=4)
        try:
            async def main() -> bool:
                long_request = ask(STORY, 48)
                running = started(long_request)
                long = asyncio.create_task(engine.complete(long_request))
                await running.wait()
                short = await engine.complete(ask("What is the capital of France?"))
                assert "Paris" in short.text
                first = not long.done()
                await long
                return first
            return asyncio.run(main())
        finally:
            engine.close()

    assert short_finishes_first("rr") is True
    assert short_finishes_first("fifo") is False


def test_a_higher_priority_request_preempts_a_lower_one(data_dir: Path) -> None:
    engine = engine_backend(data_dir, max_batch=1, policy="priority", quantum_tokens=2, aging=0)
    try:
        async def main() -> bool:
            low_request = ask(STORY, 48)
            running = started(low_request)
            low = asyncio.create_task(engine.complete(low_request))
            await running.wait()
            urgent = ask("What is the capital of France?")
            urgent.priority = 10
            answer = await engine.complete(urgent)
            assert "Paris" in answer.text
            first = not low.done()
            await low
            return first
        assert asyncio.run(main()) is True
        assert engine.engine.preemptions >= 1
    finally:
        engine.close()


def test_prefix_reuse_gives_the_same_next_turn_as_computing_it_all(backend: HfLocalBackend, data_dir: Path) -> None:
    """An agent's second turn repeats its first: with reuse only the new suffix is computed, and the answer is
    the same as without reuse."""
    no_reuse = engine_backend(data_dir, prefix_cache_mb=0)
    reuse = engine_backend(data_dir)
    try:
        first = [{"role": "user", "content": "What is the capital of France?"}]
        reply = reuse.generate(GenerationRequest(first, SamplingParams(temperature=0, max_new_tokens=24))).text
        second = first + [{"role": "assistant", "content": reply},
                          {"role": "user", "content": "And what is the capital of Italy?"}]
        request = lambda: GenerationRequest(second, SamplingParams(temperature=0, max_new_tokens=24))  # noqa: E731
        with_reuse, without = reuse.generate(request()), no_reuse.generate(request())
        assert with_reuse.text == without.text
        assert reuse.engine.stats()["prefix_hits"] == 1 and no_reuse.engine.stats()["prefix_hits"] == 0
    finally:
        no_reuse.close()
        reuse.close()


def test_streamed_pieces_arrive_one_by_one_and_add_up_to_the_reply(backend: HfLocalBackend) -> None:
    whole = backend.generate(ask(STORY, 32)).text

    async def main() -> list[str]:
        return [piece async for piece in backend.stream(ask(STORY, 32))]

    pieces = asyncio.run(main())
    assert len(pieces) > 5 and "".join(pieces) == whole


def test_a_reply_cut_by_the_token_limit_inside_a_character_ends_before_it(backend: HfLocalBackend) -> None:
    """The model answers with emoji, each spelled by several byte tokens: a token limit that falls inside one
    leaves its first bytes, which decode to U+FFFD. The reply, and what was streamed of it, end before it."""
    question = "Reply with only this emoji: 🌟"
    whole = backend.generate(ask(question, 12)).text
    ids = backend.tokenizer(whole, add_special_tokens=False)["input_ids"]
    inside = [n for n in range(1, 6) if backend.tokenizer.decode(ids[:n]).endswith("\ufffd")]
    assert whole.startswith("🌟") and inside, (whole, ids)  # else this test no longer cuts a character

    async def streamed(request: GenerationRequest) -> list[str]:
        return [piece async for piece in backend.stream(request)]

    for n in inside:
        cut = backend.generate(ask(question, n))
        assert cut.finish_reason == "length" and cut.text == backend.tokenizer.decode(ids[:n])[:-1], n
        assert "".join(asyncio.run(streamed(ask(question, n)))) == cut.text


def test_a_streamed_reply_never_shows_a_stop_string(backend: HfLocalBackend) -> None:
    full = backend.generate(ask("What is the capital of France?")).text
    request = ask("What is the capital of France?")
    request.sampling.stop = [" is "]

    async def main() -> list[str]:
        return [piece async for piece in backend.stream(request)]

    assert "".join(asyncio.run(main())) == full[: full.index(" is ")]


def test_when_kv_memory_is_short_the_engine_preempts_instead_of_failing(backend: HfLocalBackend,
                                                                        data_dir: Path) -> None:
    """A budget that holds one 128-position row but not two: two 80-token stories start together, then the
    longer one is swapped out to the context store until the other is done, and both equal their runs alone."""
    alone = [backend.generate(ask(q, 80)).text for q in (STORY, RIVAL)]
    tight = engine_backend(data_dir, kv_budget_mb=7)  # one row of 128 positions is 5.6 MB; two are 11.2 MB
    try:
        results = asyncio.run(together(tight, [ask(STORY, 80), ask(RIVAL, 80)]))
        assert [g.text for g in results] == alone
        assert tight.engine.preemptions >= 1 and tight.engine.stats()["kv_cache_mb"] <= 7
    finally:
        tight.close()


def test_a_prompt_too_big_for_the_kv_budget_is_refused_and_a_lone_overflow_ends_with_kv_budget(
    data_dir: Path,
) -> None:
    from aios.errors import CapacityExceeded

    tight = engine_backend(data_dir, kv_budget_mb=3)  # 64 positions (2.8 MB)
    try:
        with pytest.raises(CapacityExceeded, match="raise llms.models\\[\\].kv_budget_mb"):
            tight.generate(ask("word " * 200))
        overflow = tight.generate(ask(STORY, 200))
        assert overflow.finish_reason == "kv_budget" and 0 < overflow.completion_tokens < 64
    finally:
        tight.close()


def test_a_suspended_generation_that_cannot_spill_to_disk_stays_in_ram_and_resumes_exactly(
    backend: HfLocalBackend, data_dir: Path, tmp_path: Path
) -> None:
    """The spill folder cannot be made (a file is where it goes, as a full or read-only disk would refuse it):
    snapshots stay in RAM past their budget, and the preempted story still gives its tokens alone."""
    alone = backend.generate(ask(STORY, 24))
    own = data_dir_of_its_own(data_dir, tmp_path / "data")
    (own / "snapshots").write_text("not a folder")
    switched = HfLocalBackend(EMBEDDED_MODEL, data_dir=own, settings=EngineSettings(
        max_batch=1, policy="rr", quantum_tokens=8, snapshot_ram_mb=0))
    try:
        slices: list[bool] = []
        target = ask(STORY, 24)
        target.on_running = slices.append
        assert run_with_rival(switched, target, ask(RIVAL, 500)).text == alone.text
        assert slices.count(False) == 2 and switched.engine.contexts.spilled == 0
    finally:
        switched.close()


def test_a_snapshot_lost_from_disk_fails_its_own_generation_and_no_other(
    backend: HfLocalBackend, data_dir: Path, tmp_path: Path
) -> None:
    """Three generations take turns in two rows, each one's KV spilled to disk while it waits. The file of the
    first one swapped out is deleted (a temp-folder cleaner, a disk error): that one fails when it is taken back,
    saying so, and the two others go on to their tokens alone."""
    questions = QUESTIONS[:3]
    alone = [backend.generate(ask(q, 24)).text for q in questions]
    own = data_dir_of_its_own(data_dir, tmp_path / "data")
    switched = HfLocalBackend(EMBEDDED_MODEL, data_dir=own, settings=EngineSettings(
        max_batch=2, policy="rr", quantum_tokens=4, snapshot_ram_mb=0))
    requests, lost = [ask(q, 24) for q in questions], []

    def losing(index: int) -> Callable[[bool], None]:
        def on_running(running: bool) -> None:  # on the engine thread, right after the snapshot is written
            if not running and not lost:
                lost.append(index)
                for path in (own / "snapshots").rglob("snapshot-*"):
                    path.unlink()
        return on_running

    for index, request in enumerate(requests):
        request.on_running = losing(index)

    async def main() -> list[Generation | BaseException]:
        return list(await asyncio.gather(*(switched.complete(r) for r in requests), return_exceptions=True))

    try:
        results = asyncio.run(main())
        (failed,) = lost
        texts = [r.text if isinstance(r, Generation) else repr(r) for r in results]
        assert texts[:failed] + texts[failed + 1:] == alone[:failed] + alone[failed + 1:]
        assert isinstance(results[failed], StepFailed)
        assert "taking this request into the batch failed (FileNotFoundError" in str(results[failed])
        assert len(switched.engine.contexts) == 0 and switched.engine.failed_steps == 0
    finally:
        switched.close()


def test_a_request_whose_kv_cannot_be_allocated_fails_alone_and_the_running_one_goes_on(data_dir: Path) -> None:
    """Growing the KV buffers for a joining request fails (a stand-in for a GPU out of memory, which cannot
    happen on a CPU at will): that request gets the error, and the story already running keeps its row, its KV
    and its tokens alone."""
    engine_of = engine_backend(data_dir, max_batch=2)
    try:
        alone = engine_of.generate(ask(STORY, 48)).text
        engine, reserve, armed = engine_of.engine, engine_of.engine._reserve, [True]

        def failing_reserve(cls: int, positions: int) -> None:
            if len(engine.running) == 2 and armed:  # the second request is joining: fail its growth, once
                armed.clear()
                raise torch.OutOfMemoryError("stand-in: no memory for the joining row")
            reserve(cls, positions)

        async def main() -> list[Generation | BaseException]:
            story = ask(STORY, 48)
            running = started(story)
            first = asyncio.create_task(engine_of.complete(story))
            await running.wait()
            engine._reserve = failing_reserve
            second = await asyncio.gather(engine_of.complete(ask(RIVAL, 8)), return_exceptions=True)
            return [await first, *second]

        story, rival = asyncio.run(main())
        assert story.text == alone
        assert isinstance(rival, StepFailed) and "OutOfMemoryError: stand-in" in str(rival)
    finally:
        engine_of.close()


def test_time_slices_apply_when_kv_memory_keeps_requests_waiting(backend: HfLocalBackend, data_dir: Path) -> None:
    """A batch with rows to spare but KV memory for two sequences: under round-robin the running ones still
    yield every quantum to those waiting for memory, so each of four generations gets many slices — and its
    tokens are those it gets alone."""
    questions = [STORY, RIVAL, "Describe a forest at night.", "Write about a city in the rain."]
    alone = [backend.generate(ask(q, 24)).text for q in questions]
    tight = engine_backend(data_dir, max_batch=16, policy="rr", quantum_tokens=4, kv_budget_mb=7)
    try:
        requests = [ask(q, 24) for q in questions]
        slices: list[list[bool]] = [[] for _ in requests]
        for request, record in zip(requests, slices):
            request.on_running = record.append
        results = asyncio.run(together(tight, requests))
        assert [g.text for g in results] == alone
        assert min(record.count(True) for record in slices) >= 3, slices  # 24 tokens in slices of 4
    finally:
        tight.close()
