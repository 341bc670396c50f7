"""The continuous-batching engine with the real embedded model: batching never changes a greedy answer,
sequences join and leave at token boundaries, and a cancelled or finished one frees its place at once."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from aios.config import EMBEDDED_MODEL
from aios.llm.core import Generation, GenerationRequest, SamplingParams
from aios.llm.hf import HfLocalBackend

QUESTIONS = ["What is the capital of France?", "Write a haiku about the sea.", "List three fruits.",
             "What is 2+2?", "Who wrote Hamlet?"]


def ask(question: str, max_new_tokens: int = 24, temperature: float = 0) -> GenerationRequest:
    return GenerationRequest([{"role": "user", "content": question}],
                             SamplingParams(temperature=temperature, max_new_tokens=max_new_tokens))


async def together(backend: HfLocalBackend, requests: list[GenerationRequest]) -> list[Generation]:
    return list(await asyncio.gather(*(backend.complete(r) for r in requests)))


@pytest.fixture(scope="module")
def two_slots(backend: HfLocalBackend, data_dir: Path) -> HfLocalBackend:
    """A second engine over the same model with room for only two sequences at a time."""
    small = HfLocalBackend(EMBEDDED_MODEL, data_dir=data_dir, max_batch=2)
    yield small
    small.close()


def test_batched_greedy_answers_equal_the_answers_given_alone(backend: HfLocalBackend) -> None:
    alone = [backend.generate(ask(q)).text for q in QUESTIONS]
    batched = asyncio.run(together(backend, [ask(q) for q in QUESTIONS]))
    assert [g.text for g in batched] == alone
    assert "Paris" in batched[0].text


def test_more_requests_than_slots_wait_their_turn_and_all_complete(backend: HfLocalBackend,
                                                                  two_slots: HfLocalBackend) -> None:
    alone = [backend.generate(ask(q, 12)).text for q in QUESTIONS]
    results = asyncio.run(together(two_slots, [ask(q, 12) for q in QUESTIONS]))
    assert [g.text for g in results] == alone


def test_a_short_request_leaves_the_batch_while_a_long_one_keeps_going(two_slots: HfLocalBackend) -> None:
    async def main() -> tuple[Generation, bool]:
        long = asyncio.create_task(two_slots.complete(ask("Write a long story about a dragon.", 120)))
        await asyncio.sleep(0)
        short = await two_slots.complete(ask("What is the capital of France?", 24))
        still_running = not long.done()
        await long
        return short, still_running

    short, long_still_running = asyncio.run(main())
    assert "Paris" in short.text and long_still_running


def test_a_cancelled_sequence_frees_its_slot_for_the_waiting_ones(two_slots: HfLocalBackend) -> None:
    async def main() -> list[Generation]:
        hogs = [asyncio.create_task(two_slots.complete(ask("Tell me a very long story.", 2000))) for _ in range(2)]
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
