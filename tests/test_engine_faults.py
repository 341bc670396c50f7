"""The engine cannot be stopped by a request: sampling parameters at their edges are safe, a failing step fails
only its own batch, a failing recovery resets the batch, and an engine whose loop ends anyway fails everything
waiting at once and is replaced — or, failing again and again, reports the model down instead of hanging.

Faults the fixed engine can no longer meet by itself are injected by wrapping one of the engine's own methods
on one instance: the model, the tokenizer and every other part stay real."""

from __future__ import annotations

import asyncio
import itertools
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from aios.config import EMBEDDED_MODEL, load_config
from aios.errors import Unavailable
from aios.kernel import Kernel
from aios.llm.core import Generation, GenerationRequest, SamplingParams
from aios.llm.hf import HfLocalBackend
from aios.llm.hf.engine import EngineSettings, StepFailed

CAPITAL = [{"role": "user", "content": "What is the capital of France?"}]
STORY = [{"role": "user", "content": "Write a long story about a lighthouse keeper."}]

EDGE_TEMPERATURES = [0, 1e-300, 1e-45, 1e-5, 1e-4, 2]
EDGE_TOP_PS = [1e-300, 1e-45, 0.5, 1]


def request(messages: list[dict[str, Any]], max_new_tokens: int = 8, **sampling: Any) -> GenerationRequest:
    return GenerationRequest(messages, SamplingParams(max_new_tokens=max_new_tokens, **sampling))


async def outcomes(backend: HfLocalBackend, requests: list[GenerationRequest]) -> list[Generation | BaseException]:
    return list(await asyncio.gather(*(backend.complete(r) for r in requests), return_exceptions=True))


@pytest.fixture
def own_backend(data_dir: Path) -> Iterator[HfLocalBackend]:
    """A backend of its own, so that faults injected into its engine touch no other test."""
    backend = HfLocalBackend(EMBEDDED_MODEL, data_dir=data_dir, settings=EngineSettings(max_batch=1))
    yield backend
    backend.close()


def failing(times: int, method: Callable[..., Any]) -> Callable[..., Any]:
    """``method``, except that its first ``times`` calls raise."""
    calls = itertools.count()

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if next(calls) < times:
            raise RuntimeError("injected fault")
        return method(*args, **kwargs)

    return wrapper


def test_sampling_parameters_at_their_edges_never_stop_the_engine(backend: HfLocalBackend) -> None:
    """Every temperature and top_p the API accepts, all in one batch with a greedy control: each request gets a
    reply, the control's is the one it gets alone, and a normal request is served afterwards."""
    control = backend.generate(request(CAPITAL, 12, temperature=0)).text
    edges = [request(CAPITAL, 6, temperature=t, top_p=p) for t, p in itertools.product(EDGE_TEMPERATURES, EDGE_TOP_PS)]
    results = asyncio.run(outcomes(backend, [request(CAPITAL, 12, temperature=0), *edges]))
    assert all(isinstance(r, Generation) and r.completion_tokens > 0 for r in results), results
    assert results[0].text == control  # type: ignore[union-attr]
    assert backend.engine.stats()["failed_steps"] == 0
    assert "Paris" in backend.generate(request(CAPITAL, 24, temperature=0)).text


@pytest.mark.parametrize(("temperature", "top_p"), [(1e-300, 1), (1e-45, 1), (1.0, 1e-300), (2.0, 1e-45)],
                         ids=["temperature-1e-300", "temperature-1e-45", "top-p-1e-300", "top-p-1e-45"])
def test_a_vanishing_temperature_or_top_p_decodes_greedily(backend: HfLocalBackend, temperature: float,
                                                           top_p: float) -> None:
    greedy = backend.generate(request(CAPITAL, 12, temperature=0)).text
    assert backend.generate(request(CAPITAL, 12, temperature=temperature, top_p=top_p)).text == greedy


def test_a_failing_step_fails_its_batch_with_a_clear_error_and_the_engine_goes_on(
        own_backend: HfLocalBackend) -> None:
    engine = own_backend.engine
    engine._forward = failing(1, engine._forward)  # type: ignore[method-assign]
    with pytest.raises(StepFailed, match="the model failed while generating this reply .*injected fault"):
        own_backend.generate(request(CAPITAL))
    assert "Paris" in own_backend.generate(request(CAPITAL, 24, temperature=0)).text
    assert engine.stats()["failed_steps"] == 1 and own_backend.engine is engine


def test_when_failing_the_batch_fails_too_the_batch_is_reset_and_the_engine_goes_on(
        own_backend: HfLocalBackend) -> None:
    engine = own_backend.engine
    engine._forward = failing(1, engine._forward)  # type: ignore[method-assign]
    engine._release = failing(1, engine._release)  # type: ignore[method-assign]
    with pytest.raises(StepFailed):
        own_backend.generate(request(CAPITAL))
    assert engine.running == [] and "Paris" in own_backend.generate(request(CAPITAL, 24, temperature=0)).text
    assert own_backend.engine is engine


def test_an_engine_whose_loop_ends_fails_every_waiting_request_at_once_and_is_replaced(
        own_backend: HfLocalBackend) -> None:
    """One slot: a long story runs and a question waits; then a step fails and so does its recovery. Both get
    an error at once (nothing hangs), a new engine takes over and answers the next request."""
    old = own_backend.engine

    async def main() -> list[Generation | BaseException]:
        story = request(STORY, 400, temperature=0)
        running, queued = asyncio.Event(), asyncio.Event()
        loop = asyncio.get_running_loop()
        story.on_running = lambda now: now and loop.call_soon_threadsafe(running.set)
        tasks = [asyncio.ensure_future(own_backend.complete(story))]
        await running.wait()
        submit = old.submit

        def submitted(sequence: Any) -> None:
            submit(sequence)
            loop.call_soon_threadsafe(queued.set)

        old.submit = submitted  # type: ignore[method-assign]
        tasks.append(asyncio.ensure_future(own_backend.complete(request(CAPITAL))))
        # The faults only once the question is in the old engine's queue: it is read into tokens on a thread
        # first, and one that reached the engine only after the old one ended would be answered by the new one.
        await queued.wait()
        old._recover = failing(1, old._recover)  # type: ignore[method-assign]
        old._forward = failing(1, old._forward)  # type: ignore[method-assign]
        return list(await asyncio.gather(*tasks, return_exceptions=True))

    results = asyncio.run(main())
    assert all(isinstance(r, Unavailable) and "engine failed" in str(r) for r in results), results
    assert own_backend.engine is not old and own_backend.describe()["engine_restarts"] == 1
    assert own_backend.describe()["state"] == "up"
    assert "Paris" in own_backend.generate(request(CAPITAL, 24, temperature=0)).text


def test_a_model_whose_engine_keeps_failing_is_reported_down_and_refuses_requests_at_once(
        own_backend: HfLocalBackend, tmp_path: Path) -> None:
    own_backend.max_restarts = 0
    engine = own_backend.engine
    engine._recover = failing(1, engine._recover)  # type: ignore[method-assign]
    engine._forward = failing(1, engine._forward)  # type: ignore[method-assign]
    with pytest.raises(Unavailable):
        own_backend.generate(request(CAPITAL))
    facts = own_backend.describe()
    assert facts["state"] == "down" and "injected fault" in facts["down_because"]
    with pytest.raises(Unavailable, match=f"model {EMBEDDED_MODEL} is down: .*restart the kernel"):
        own_backend.generate(request(CAPITAL))

    async def kernel_view() -> tuple[dict[str, str], list[str]]:
        kernel = Kernel(load_config(env={"AIOS_DATA_DIR": str(tmp_path)}), [own_backend])
        try:
            return kernel.components(), kernel.models_down()
        finally:
            await kernel.storage.close()

    components, down = asyncio.run(kernel_view())
    assert components["llms"] == "inactive" and down == [EMBEDDED_MODEL]


def test_an_engine_that_is_stopped_refuses_new_work_with_503(data_dir: Path) -> None:
    backend = HfLocalBackend(EMBEDDED_MODEL, data_dir=data_dir)
    backend.close()
    with pytest.raises(Unavailable, match="shut down"):
        backend.generate(request(CAPITAL))
