"""The shared embedding model: real all-MiniLM-L6-v2 vectors, unit length, meaning-preserving, and concurrent
requests coalesced into fewer forward passes."""

from __future__ import annotations

import asyncio
import threading

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


def idle_model(embedder: Embedder, idle_s: float) -> Embedder:
    """An embedder whose thread ends after ``idle_s`` without work, sharing the fixture's loaded model."""
    embedder.embed(["loads the shared model"])
    model = Embedder(idle_s=idle_s)
    model._model, model._tokenizer = embedder._model, embedder._tokenizer
    return model


def test_the_model_thread_ends_when_idle_and_the_next_request_starts_another(embedder: Embedder) -> None:
    """An idle thread holds no torch worker threads (which would slow the LLM engine's: aios.torch_threads)."""
    model = idle_model(embedder, idle_s=0.05)
    try:
        asked = model._submit(["a kitten asleep on the sofa"])
        thread = model._thread  # it serves this request before it can end
        assert thread is not None
        first = asked.result(timeout=60)
        thread.join(timeout=60)
        assert not thread.is_alive() and model._thread is None
        asked = model._submit(["a kitten asleep on the sofa"])
        assert model._thread is not None and model._thread is not thread
        np.testing.assert_allclose(asked.result(timeout=60), first, atol=1e-6)
        assert model.forward_passes == 2
    finally:
        model.close()


def test_no_request_is_lost_while_the_model_thread_ends_or_closes() -> None:
    """With no idle time at all the thread ends whenever the queue is empty, so requests keep arriving just as it
    decides to end, and a close comes in between: each request is served, by it or by a thread started for it."""
    model = Embedder(idle_s=0)
    model._vectors = lambda texts: np.ones((len(texts), DIMENSION), dtype=np.float32)  # type: ignore[method-assign]
    served: list[int] = []

    def ask(n: int) -> None:
        for i in range(200):
            model._submit([f"{n}-{i}"]).result(timeout=60)
            served.append(1)

    askers = [threading.Thread(target=ask, args=(n,), daemon=True) for n in range(4)]
    for asker in askers:
        asker.start()
    for _ in range(20):
        model.close()
    for asker in askers:
        asker.join(timeout=120)
    model.close()
    assert not any(asker.is_alive() for asker in askers), "a request was never served"
    assert len(served) == 800 and model._thread is None


def test_a_negative_idle_time_is_refused() -> None:
    with pytest.raises(ValueError, match="idle_s must be 0 or more seconds, not -1"):
        Embedder(idle_s=-1)
