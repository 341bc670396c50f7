"""Routing: each strategy's choice, stickiness per agent, the kernel-wide selection, draining a removed core, and
smart routing learning from real outcomes of real cores.

The cores in the strategy tests are STAND-INS (name, backend and a running-token count): the strategies read
only those numbers and the router's own counts, which real cores cannot be made to show on demand. The last
tests use real cores: the embedded model, and a LiteLLM core whose provider is a loopback port nobody listens on.
"""

from __future__ import annotations

import asyncio
import socket
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from aios.config import ModelConfig
from aios.errors import Forbidden, NotFound, Unavailable
from aios.kernel import Kernel, model_cost
from aios.llm.core import GenerationRequest, SamplingParams
from aios.llm.handler import LLMQuery
from aios.llm.hf import HfLocalBackend
from aios.llm.hf.engine import EngineSettings
from aios.llm.hf.loader import _embedded_gguf
from aios.llm.litellm_backend import LiteLLMBackend
from aios.llm.router import Router
from aios.llm.routing import LeastLoaded, Smart, make_strategy, query_kind
from aios.syscall import Syscall, SyscallKind
from test_engine_faults import failing


@dataclass(eq=False)
class StandIn:
    """A stand-in core: what the router weighs, nothing more (it never generates)."""

    name: str
    backend: str = "huggingface"
    tokens: int = 0

    def running_tokens(self) -> int:
        return self.tokens


A, B, C = StandIn("a"), StandIn("b"), StandIn("c")


def names(router: Router, times: int, llms: list[dict[str, Any]] | None = None, agent: str = "") -> list[str]:
    return [router.pick(llms, agent).core.name for _ in range(times)]


def test_sequential_takes_the_allowed_models_in_turn_each_set_with_its_own_turn() -> None:
    router = Router([A, B, C])
    assert names(router, 4) == ["a", "b", "c", "a"]
    only_ac = [{"name": "c"}, {"name": "a"}]
    assert names(router, 3, only_ac) == ["c", "a", "c"]  # in the order the request gives, never b
    assert names(router, 1) == ["b"]  # the full set's turn went on where it was


def test_least_loaded_weighs_syscalls_in_flight_then_running_tokens() -> None:
    async def main() -> None:
        a, b, c = StandIn("a", tokens=500), StandIn("b", tokens=10), StandIn("c", tokens=10)
        router = Router([a, b, c], LeastLoaded())
        held = Syscall(SyscallKind.LLM, "x", None)
        route = router.pick([{"name": "b"}])
        router.track(route, held)  # b now serves one syscall
        assert router.pick(None).core is c  # a holds more tokens; b has one in flight
        assert router.pick([{"name": "a"}, {"name": "b"}]).core is a
        held.finish(None)
        assert router.in_flight(b) == 0 and router.pick(None).core is b

    asyncio.run(main())


def test_smart_serves_with_the_cheapest_model_until_it_fails_on_that_kind_of_query() -> None:
    smart = Smart(threshold=0.75, min_samples=4)
    router = Router([A, B, C], smart, costs={"a": 3.0, "b": 1.0, "c": 2.0})
    short, long = query_kind("chat", "text", 40), query_kind("chat", "text", 4000)
    assert router.pick(None, kind=short).core is B
    for success in (True, False, False, True):  # b: 2 of 4 on short queries
        smart.record("b", short, success)
    assert router.pick(None, kind=short).core is C  # the next cheapest, not yet judged
    assert router.pick(None, kind=long).core is B  # other queries still go to the cheapest
    for model in ("c", "a"):
        for _ in range(4):
            smart.record(model, short, False)
    assert router.pick(None, kind=short).core is B  # all below the bar: the best observed rate serves


def test_query_kinds_are_alike_within_a_power_of_two_of_prompt_length() -> None:
    assert query_kind("chat", "text", 600) == query_kind("chat", "text", 1000)
    assert query_kind("chat", "text", 100) != query_kind("chat", "text", 1000)
    assert query_kind("chat", "json", 600) != query_kind("chat", "text", 600)


def test_an_agent_sticks_to_its_model_while_it_stays_allowed() -> None:
    router = Router([A, B, C], sticky=True)
    assert names(router, 3, agent="alice") == ["a", "a", "a"]
    assert names(router, 2, agent="bob") == ["b", "b"]
    assert names(router, 1, [{"name": "c"}], agent="alice") == ["c"]  # a is not allowed: alice moves
    assert names(router, 1, agent="alice") == ["c"]  # and stays where she went
    router.remove(C)
    assert names(router, 1, agent="alice") == ["a"]


def test_the_kernel_wide_selection_bounds_every_request() -> None:
    router = Router([A, B, C])
    router.select([{"name": "b"}, {"name": "c", "backend": "huggingface"}])
    assert names(router, 3) == ["b", "c", "b"]
    assert names(router, 1, [{"name": "c"}]) == ["c"]
    with pytest.raises(Forbidden, match=r"llms names a, not among the models selected for this kernel"):
        router.pick([{"name": "a"}])
    with pytest.raises(NotFound, match=r"no served model matches gpt-9 \(openai\); served: a \(huggingface\)"):
        router.select([{"name": "gpt-9", "backend": "openai"}])
    assert [e["name"] for e in router.selected] == ["b", "c"]  # a refused selection changes nothing
    router.select([])
    assert names(router, 1, [{"name": "a"}]) == ["a"]


def test_a_removed_core_gets_nothing_new_and_drains_what_it_serves() -> None:
    async def main() -> None:
        router = Router([A, B])
        first, second = Syscall(SyscallKind.LLM, "x", None), Syscall(SyscallKind.LLM, "y", None)
        for syscall in (first, second):
            router.track(router.pick([{"name": "a"}]), syscall)
        router.remove(A)
        draining = asyncio.ensure_future(router.drain(A))
        assert names(router, 2) == ["b", "b"]
        with pytest.raises(NotFound):
            router.pick([{"name": "a"}])
        first.finish(None)
        assert not draining.done() and router.in_flight(A) == 1
        second.fail(RuntimeError("the provider went away"))
        await asyncio.wait_for(draining, 10)

    asyncio.run(main())


def test_strategy_names_from_the_config() -> None:
    assert [make_strategy(n).name for n in ("sequential", "least_loaded", "smart")] == [
        "sequential", "least_loaded", "smart"]


# -- real cores ---------------------------------------------------------------------------------------------------


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_smart_routing_learns_to_leave_a_failing_cheap_model_for_the_local_one(config: Any, backend: Any) -> None:
    """A cheaper API model (cost 0) whose host refuses connections fails its first queries, each with a clear
    error; after ``smart_min_samples`` of them, similar queries go to the embedded model, which answers."""
    unreachable = LiteLLMBackend("cheap-model", "anthropic", api_key="sk-ant-fake-key-1234",
                                 api_base=f"http://127.0.0.1:{closed_port()}")
    routing = config.llms.router.model_copy(update={"strategy": "smart", "smart_min_samples": 2})
    settings = config.model_copy(update={"llms": config.llms.model_copy(update={
        "router": routing, "models": [ModelConfig(name="cheap-model", backend="anthropic", cost=0.0),
                                      *config.llms.models]})})
    ask = [{"role": "user", "content": "What is the capital of France?"}]

    async def main(data_dir: str) -> list[Syscall]:
        kernel = Kernel(settings.model_copy(update={"data_dir": Path(data_dir)}), [unreachable, backend])
        await kernel.start()
        try:
            return [await kernel.call(SyscallKind.LLM, "test/smart", LLMQuery(ask, temperature=0, max_new_tokens=12))
                    for _ in range(3)]
        finally:
            await kernel.stop(close_cores=False)

    with tempfile.TemporaryDirectory() as data_dir:
        first, second, third = asyncio.run(main(data_dir))
    for failed in (first, second):
        message = str(failed.error)
        assert "provider anthropic, model cheap-model" in message and "sk-ant-fake-key-1234" not in message
    assert third.error is None and "Paris" in third.value.response_message


def test_a_model_that_is_down_is_passed_over_while_an_allowed_one_is_up(backend: Any, data_dir: Path) -> None:
    """A second model (the embedded one's GGUF) is made down as test_engine_faults does. It refuses at once, so
    it looks idle: every strategy would send it the requests that name no model. Each gives them to the model
    that is up; a request allowing only the down model still reaches it, and gets its 503."""
    down = HfLocalBackend(str(_embedded_gguf()), data_dir=data_dir, settings=EngineSettings(max_batch=1))
    try:
        down.max_restarts = 0
        down.engine._recover = failing(1, down.engine._recover)  # type: ignore[method-assign]
        down.engine._forward = failing(1, down.engine._forward)  # type: ignore[method-assign]
        with pytest.raises(Unavailable):
            down.generate(GenerationRequest([{"role": "user", "content": "Hi"}], SamplingParams(max_new_tokens=2)))
        assert down.down
        for strategy in ("sequential", "least_loaded", "smart"):
            router = Router([down, backend], make_strategy(strategy), costs={down.name: 0.0, backend.name: 1.0})
            assert names(router, 3) == [backend.name] * 3, strategy
            assert router.pick([{"name": down.name}]).core is down
        with pytest.raises(Unavailable, match="is down"):
            down.generate(GenerationRequest([{"role": "user", "content": "Hi"}], SamplingParams(max_new_tokens=2)))
    finally:
        down.close()


def test_a_local_model_costs_its_size_and_an_api_model_more(backend: Any) -> None:
    assert model_cost(ModelConfig(name=backend.name), backend) == pytest.approx(0.135, abs=0.01)
    assert model_cost(ModelConfig(name=backend.name, cost=7), backend) == 7
    assert model_cost(ModelConfig(name="gpt", backend="openai"), StandIn("gpt", "openai")) == 1000.0
