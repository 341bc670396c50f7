"""The shared embedding model: real all-MiniLM-L6-v2 vectors, unit length, meaning-preserving, and concurrent
requests coalesced into fewer forward passes."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import numpy as np
import pytest

from aios.embeddings import DIMENSION, Embedder


def test_vectors_are_unit_length_in_the_callers_order_and_capture_meaning(embedder: Embedder) -> None:
    texts = ["A kitten is sleeping on the sofa.", "The stock market fell sharply today.", "A young cat naps on a couch."]
    vectors = embedder.embed(texts)
    assert vectors.shape == (3, DIMENSION) and vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    similar, unrelated = float(vectors[0] @ vectors[2]), float(vectors[0] @ vectors[1])
    assert similar > 0.6 > unrelated
    again = embedder.embed([texts[2], texts[0]])  # batch-independent: the same text, the same vector
    assert np.allclose(again, vectors[[2, 0]], atol=1e-5)


def test_edge_inputs(embedder: Embedder) -> None:
    assert embedder.embed([]).shape == (0, DIMENSION)
    long = embedder.embed(["word " * 5000, ""])  # truncated to the model's 256 tokens; empty text still a vector
    assert long.shape == (2, DIMENSION) and np.isfinite(long).all()
    with pytest.raises(TypeError, match="not one string"):
        embedder.embed("one string")  # type: ignore[arg-type]


def test_concurrent_requests_share_forward_passes_and_run_off_the_event_loop() -> None:
    """A fresh model: its first pass waits for the load, and every request made meanwhile joins one batch."""
    model = Embedder()
    try:
        async def many() -> list[np.ndarray]:
            ticks = 0

            async def ticker() -> None:  # the event loop keeps running while the model works
                nonlocal ticks
                while True:
                    ticks += 1
                    await asyncio.sleep(0)

            task = asyncio.create_task(ticker())
            results = await asyncio.gather(*(model.aembed([f"request number {i}"]) for i in range(16)))
            task.cancel()
            assert ticks > 16
            return results

        results = asyncio.run(many())
        assert all(r.shape == (1, DIMENSION) for r in results)
        assert model.forward_passes < 16  # coalesced: at most a few passes for 16 requests
        threads = [threading.Thread(target=model.embed, args=([f"thread {i}"],)) for i in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        model.close()


class HeldEmbedder(Embedder):
    """The real model, whose first batch waits at a gate the test opens: so a request can be cancelled while its
    batch is in the forward pass, and another while it is still queued behind that batch."""

    def __init__(self) -> None:
        super().__init__()
        self.in_pass, self.gate = threading.Event(), threading.Event()

    def _vectors(self, texts: list[str]) -> np.ndarray:
        if not self.gate.is_set():
            self.in_pass.set()
            assert self.gate.wait(120), "the test never opened the gate"
        return super()._vectors(texts)


def test_a_cancelled_request_does_not_stop_the_model_for_everyone_after_it() -> None:
    model = HeldEmbedder()
    try:
        async def cancel_two_then_embed() -> np.ndarray:
            in_pass = asyncio.create_task(model.aembed(["cancelled while its batch runs"]))
            assert await asyncio.to_thread(model.in_pass.wait, 120)
            queued = asyncio.create_task(model.aembed(["cancelled while it waits in the queue"]))
            await asyncio.sleep(0)  # one turn of the loop: the queued request is submitted
            for task in (in_pass, queued):
                task.cancel()
            await asyncio.gather(in_pass, queued, return_exceptions=True)
            model.gate.set()
            return await asyncio.wait_for(model.aembed(["asked after both were cancelled"]), 60)

        vectors = asyncio.run(cancel_two_then_embed())
        assert vectors.shape == (1, DIMENSION) and np.isfinite(vectors).all()
        assert model.embed(["and from a thread"]).shape == (1, DIMENSION)
    finally:
        model.close()


class RecordingEmbedder(Embedder):
    """Keeps every thread it starts, so a test can wait for one to end."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.started: list[threading.Thread] = []

    def _start(self) -> None:
        super()._start()
        assert self._thread is not None
        self.started.append(self._thread)


def test_the_model_thread_ends_when_idle_and_the_next_request_starts_another(embedder: Embedder) -> None:
    """An idle thread holds no torch worker threads (which would slow the LLM engine's: aios.torch_threads)."""
    embedder.embed(["loads the shared model"])
    model = RecordingEmbedder(idle_s=0.05)
    model._model, model._tokenizer = embedder._model, embedder._tokenizer
    try:
        first = model._submit(["a kitten asleep on the sofa"]).result(timeout=60)
        (thread,) = model.started
        thread.join(timeout=60)
        assert not thread.is_alive() and model._thread is None
        again = model._submit(["a kitten asleep on the sofa"]).result(timeout=60)
        assert len(model.started) == 2 and model.started[1] is not thread
        np.testing.assert_allclose(again, first, atol=1e-6)
        assert model.forward_passes == 2
    finally:
        model.close()


def ones(texts: list[str]) -> np.ndarray:
    return np.ones((len(texts), DIMENSION), dtype=np.float32)


def test_no_request_is_lost_while_the_model_thread_ends_or_closes() -> None:
    """With no idle time at all the thread ends whenever the queue is empty, so requests keep arriving just as it
    decides to end, and closes come in between: each request is served, by it or by a thread started for it, and
    after the last close no thread is left."""
    model = RecordingEmbedder(idle_s=0)
    model._vectors = ones  # type: ignore[method-assign]
    served: list[int] = []

    def ask(n: int) -> None:
        for i in range(200):
            model._submit([f"{n}-{i}"]).result(timeout=60)
            served.append(1)

    def close() -> None:  # a close that never returns fails the test instead of hanging the suite
        closing = threading.Thread(target=model.close, daemon=True)
        closing.start()
        closing.join(timeout=60)
        assert not closing.is_alive(), "close() never returned"

    askers = [threading.Thread(target=ask, args=(n,), daemon=True) for n in range(4)]
    for asker in askers:
        asker.start()
    while any(asker.is_alive() for asker in askers) and len(served) < 800:
        close()
    for asker in askers:
        asker.join(timeout=120)
    close()
    assert not any(asker.is_alive() for asker in askers), "a request was never served"
    assert len(served) == 800 and model._thread is None
    for thread in model.started:  # each ends on its own, having nothing left to serve
        thread.join(timeout=60)
    assert not any(thread.is_alive() for thread in model.started)


def test_a_thread_that_cannot_start_fails_its_request_and_the_next_one_starts_one(
        monkeypatch: pytest.MonkeyPatch) -> None:
    model = Embedder()
    model._vectors = ones  # type: ignore[method-assign]
    real_start = threading.Thread.start

    def refused(thread: threading.Thread) -> None:
        raise RuntimeError("can't start new thread")

    monkeypatch.setattr(threading.Thread, "start", refused)
    with pytest.raises(RuntimeError, match="can't start new thread"):
        model.embed(["first"])
    monkeypatch.setattr(threading.Thread, "start", real_start)
    try:
        assert model._submit(["second"]).result(timeout=60).shape == (1, DIMENSION)
    finally:
        model.close()


@pytest.mark.parametrize("idle_s", [-1, float("nan"), float("inf"), threading.TIMEOUT_MAX * 2])
def test_an_idle_time_the_thread_cannot_wait_is_refused(idle_s: float) -> None:
    with pytest.raises(ValueError, match=r"idle_s must be from 0 to \d+ seconds, not "):
        Embedder(idle_s=idle_s)


def test_a_closed_thread_serves_what_was_queued_before_it_ends() -> None:
    model = HeldEmbedder()
    in_pass = model._submit(["in the forward pass when the thread is told to end"])
    assert model.in_pass.wait(60)
    queued = model._submit(["queued behind it"])
    thread = model._detach()  # what close() does before it waits for the thread
    assert thread is not None and model._thread is None
    model.gate.set()
    thread.join(timeout=120)
    assert not thread.is_alive()
    assert in_pass.result(timeout=0).shape == queued.result(timeout=0).shape == (1, DIMENSION)
