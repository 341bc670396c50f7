"""The kernel's own routes on a real kernel process: models added, listed and removed while it serves (over HTTP
and with `aios models`), a removed model's syscalls in flight finishing first, the kernel-wide model selection,
API keys set at run time, the config file read again, the MCP servers, shutting down — and a table of bad input
for each route, after which nothing has changed.

The API model's provider is a MOCK (the scripted OpenAI-compatible server of test_openai_compat): real APIs are
paid and unreachable here. The kernel, its local models, HTTP and the CLI are real.
"""

from __future__ import annotations

import asyncio
import gc
import os
import subprocess
import sys
import tempfile
import weakref
from pathlib import Path
from typing import Any, Awaitable, Callable, Iterator

import httpx
import pytest
import yaml

from aios.config import ModelConfig, load_config
from aios.errors import Conflict, NotFound
from aios.kernel import Kernel
from aios.llm.handler import LLMQuery
from aios.llm.hf.loader import _embedded_gguf
from aios.syscall import SyscallKind, SyscallStatus
from conftest import KernelProcess, data_dir_of_its_own, start_kernel, stop_kernel
from test_openai_compat import Provider, completion

ROOT = Path(__file__).resolve().parents[1]
MCP_SERVER = ROOT / "tests" / "fixtures" / "mcp_server.py"
EMBEDDED = "HuggingFaceTB/SmolLM2-135M-Instruct"
# The embedded model's GGUF by its path: a second model that loads from the same conversion cache in a second.
SECOND = str(_embedded_gguf())
ASK = [{"role": "user", "content": "What is the capital of France?"}]


def config_text(provider_url: str, *extra_models: str, policy: str = "fifo") -> str:
    models = [{"name": EMBEDDED}, {"name": "gpt-test", "backend": "vllm", "hostname": provider_url},
              *({"name": name} for name in extra_models)]
    return yaml.safe_dump({"llms": {"models": models}, "scheduler": {"policy": policy}, "tools": {"mcp_servers": [
        {"name": "testmcp", "command": sys.executable, "args": [str(MCP_SERVER)], "timeout_s": 20}]}})


class Served:
    def __init__(self, kernel: KernelProcess, data_dir: Path, config: Path, provider: Provider) -> None:
        self.kernel, self.config, self.provider = kernel, config, provider
        self.admin_token = (data_dir / "access" / "admin.token").read_text().strip()
        self.admin = httpx.Client(base_url=kernel.url, headers={"Authorization": f"Bearer {self.admin_token}"},
                                  timeout=httpx.Timeout(300.0, connect=10.0))

    def served(self) -> list[str]:
        return [llm["name"] for llm in self.kernel.client.get("/core/llms/check").json()["llms"]]

    def ask(self, llms: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        reply = self.kernel.query({"agent_name": "test/core", "query_type": "llm", "query_data": {
            "messages": ASK, "temperature": 0, "max_new_tokens": 12, **({"llms": llms} if llms else {})}})
        assert reply.status_code == 200, reply.text
        return reply.json()["response"]

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "aios", *args, "--url", self.kernel.url, "--admin-token",
                               self.admin_token], capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def served(backend: Any, data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    own = data_dir_of_its_own(data_dir, tmp_path_factory.mktemp("core-routes"))
    provider = Provider()
    config = own / "config.yaml"
    config.write_text(config_text(provider.url))
    kernel = start_kernel(["--config", str(config)], {**os.environ, "AIOS_DATA_DIR": str(own)}, own / "kernel.log")
    running = Served(kernel, own, config, provider)
    yield running
    running.admin.close()
    stop_kernel(kernel)
    provider.server.shutdown()
    provider.server.server_close()


def test_a_model_is_added_used_and_removed_with_the_cli_while_the_kernel_serves(served: Served) -> None:
    added = served.cli("models", "add", SECOND)
    assert added.returncode == 0, added.stderr
    assert added.stdout.strip() == f"model {SECOND} added"
    listed = served.cli("models", "list")
    assert f"{SECOND}\thuggingface\tup\t0 in flight" in listed.stdout and f"{EMBEDDED}\thuggingface" in listed.stdout
    assert "Paris" in served.ask([{"name": SECOND}])["response_message"]
    assert {"name": SECOND, "backend": "huggingface"}.items() <= next(
        m for m in served.kernel.client.get("/core/llms/list").json()["llms"] if m["name"] == SECOND).items()
    removed = served.cli("models", "remove", SECOND)
    assert removed.returncode == 0 and "removed (0 syscalls in flight finished first)" in removed.stdout
    assert served.served() == [EMBEDDED, "gpt-test"]
    gone = served.ask([{"name": SECOND}])
    assert gone["status_code"] == 404 and "no configured model matches" in gone["error"]


BAD_ROUTES = [
    ("add-without-token", None, "POST", "/core/llms/add", {"name": SECOND}, 403, "needs the administrator's token"),
    ("add-empty-name", "admin", "POST", "/core/llms/add", {"name": ""}, 422, "at least 1 character"),
    ("add-unknown-field", "admin", "POST", "/core/llms/add", {"name": "m", "bakend": "vllm"}, 422, "Extra inputs"),
    ("add-vllm-without-hostname", "admin", "POST", "/core/llms/add", {"name": "m", "backend": "vllm"}, 422,
     "backend 'vllm' needs 'hostname'"),
    ("add-missing-model", "admin", "POST", "/core/llms/add", {"name": "/no/such/model"}, 404,
     "model '/no/such/model' not found"),
    ("add-served-name", "admin", "POST", "/core/llms/add", {"name": "gpt-test", "backend": "vllm",
                                                              "hostname": "http://127.0.0.1:9"}, 409, "already served"),
    ("add-unknown-provider", "admin", "POST", "/core/llms/add", {"name": "m", "backend": "no_such_provider"}, 400,
     "not a LiteLLM provider"),
    ("add-not-an-object", "admin", "POST", "/core/llms/add", ["m"], 422, "valid dictionary"),
    ("remove-without-token", None, "POST", "/core/llms/remove", {"name": "gpt-test"}, 403, "administrator's token"),
    ("remove-unknown", "admin", "POST", "/core/llms/remove", {"name": "nope"}, 404, "no model 'nope' is served"),
    ("remove-no-name", "admin", "POST", "/core/llms/remove", {}, 422, "Field required"),
    ("select-unknown", None, "POST", "/user/select/llms", [{"name": "nope"}], 404, "no served model matches nope"),
    ("select-not-a-list", None, "POST", "/user/select/llms", {"name": "gpt-test"}, 422, "valid list"),
    ("select-without-name", None, "POST", "/user/select/llms", [{"backend": "vllm"}], 422, "Field required"),
    ("select-hot-temperature", None, "POST", "/user/select/llms", [{"name": EMBEDDED, "temperature": 5}], 400,
     "temperature must be a number from 0 to 2, got 5"),
    ("select-zero-top-p", None, "POST", "/user/select/llms", [{"name": EMBEDDED, "top_p": 0}], 400,
     "top_p must be a number above 0 and at most 1"),
    ("select-wordy-max-tokens", None, "POST", "/user/select/llms", [{"name": EMBEDDED, "max_tokens": "lots"}], 400,
     "max_tokens must be a whole number from 1 to 32768, got 'lots'"),
    ("key-without-token", None, "POST", "/core/config/update", {"provider": "vllm", "api_key": "k"}, 403,
     "administrator's token"),
    ("key-empty", "admin", "POST", "/core/config/update", {"provider": "vllm", "api_key": ""}, 422,
     "at least 1 character"),
    ("key-bad-provider", "admin", "POST", "/core/config/update", {"provider": "a b", "api_key": "k"}, 422,
     "should match pattern"),
    ("key-missing", "admin", "POST", "/core/config/update", {"provider": "vllm"}, 422, "Field required"),
    ("refresh-without-token", None, "POST", "/core/refresh", None, 403, "administrator's token"),
    ("cleanup-without-token", None, "POST", "/core/cleanup", None, 403, "administrator's token"),
]


@pytest.mark.parametrize(("who", "method", "path", "body", "status", "said"), [r[1:] for r in BAD_ROUTES],
                         ids=[r[0] for r in BAD_ROUTES])
def test_bad_input_to_the_core_routes_is_refused_and_changes_nothing(
    served: Served, who: str | None, method: str, path: str, body: Any, status: int, said: str
) -> None:
    listing = served.kernel.client.get("/core/llms/list").json()
    client = served.admin if who == "admin" else served.kernel.client
    reply = client.request(method, path, json=body)
    assert reply.status_code == status, reply.text
    assert said in reply.text
    assert served.kernel.client.get("/core/llms/list").json() == listing
    assert served.kernel.client.get("/user/selected/llms").json()["status"] == "warning"


def test_the_selection_bounds_every_agents_requests_until_it_is_lifted(served: Served) -> None:
    assert served.kernel.client.get("/user/selected/llms").json() == {
        "status": "warning", "message": "No LLM selected", "llms": []}
    chosen = [{"name": "gpt-test", "backend": "vllm"}]
    reply = served.kernel.client.post("/user/select/llms", json=chosen).json()
    assert reply == {"status": "success", "message": f"LLMs {chosen} selected"}
    assert served.kernel.client.get("/user/selected/llms").json()["llms"] == chosen
    try:
        served.provider.script = [(200, completion("from the selected model"))]
        assert served.ask()["response_message"] == "from the selected model"
        refused = served.ask([{"name": EMBEDDED}])
        assert refused["status_code"] == 403 and "not among the models selected for this kernel" in refused["error"]
        # Removing the selected model would leave every agent's requests refused, naming a model no more served.
        kept = served.admin.post("/core/llms/remove", json={"name": "gpt-test"})
        assert kept.status_code == 409 and "among the models selected for every agent" in kept.text
        assert served.served() == [EMBEDDED, "gpt-test"]
    finally:
        lifted = served.kernel.client.post("/user/select/llms", json=[]).json()
    assert lifted == {"status": "warning", "message": "No LLM selected"}
    assert "Paris" in served.ask([{"name": EMBEDDED}])["response_message"]


def test_a_key_set_at_run_time_restarts_the_models_that_use_it_and_is_never_shown(served: Served) -> None:
    reply = served.admin.post("/core/config/update", json={"provider": "vllm", "api_key": "sk-new-key-4242"})
    assert reply.json() == {"status": "success", "message": "Configuration updated and services restarted",
                            "restarted": ["gpt-test"]}
    served.provider.script = [(200, completion("keyed"))]
    assert served.ask([{"name": "gpt-test"}])["response_message"] == "keyed"
    assert served.provider.headers[-1].get("Authorization") == "Bearer sk-new-key-4242"
    for page in ("/status", "/core/llms/list", "/core/llms/check"):
        assert "sk-new-key-4242" not in served.kernel.client.get(page).text


def test_refresh_applies_the_models_of_the_config_file_and_names_what_needs_a_restart(served: Served) -> None:
    served.config.write_text(config_text(served.provider.url, SECOND, policy="rr"))
    reply = served.admin.post("/core/refresh").json()
    assert reply == {"status": "success", "message": "Configuration refreshed and components reinitialized",
                     "added": [SECOND], "restarted": [], "removed": [], "needs_restart": ["scheduler"]}
    assert served.served() == [EMBEDDED, "gpt-test", SECOND]
    served.config.write_text("llms: [not, a, mapping]\n")
    broken = served.admin.post("/core/refresh")
    assert broken.status_code == 400 and "the config file was not applied" in broken.text and "llms" in broken.text
    unknown = yaml.safe_load(config_text(served.provider.url))  # SECOND gone, and a backend that is no provider
    unknown["llms"]["models"].append({"name": "m", "backend": "nosuch"})
    served.config.write_text(yaml.safe_dump(unknown))
    refused = served.admin.post("/core/refresh")
    assert refused.status_code == 400 and "the config file was not applied" in refused.text
    assert "llms.models.2.backend: backend 'nosuch' is not a LiteLLM provider" in refused.text
    assert served.served() == [EMBEDDED, "gpt-test", SECOND]  # nothing of it applied: SECOND still served
    served.config.write_text(config_text(served.provider.url))
    assert served.admin.post("/core/refresh").json()["removed"] == [SECOND]
    assert served.served() == [EMBEDDED, "gpt-test"]


def test_the_mcp_servers_are_shown_as_aios_shows_its_one(served: Served) -> None:
    reply = served.kernel.client.get("/get/mcp/server").json()
    assert reply["status"] == "success" and reply["path"] == f"{sys.executable} {MCP_SERVER}"
    assert reply["servers"] == [{"name": "testmcp", "command": sys.executable, "state": "up"}]


def test_cleanup_stops_the_kernel(served: Served) -> None:
    """Last in this module: it ends the kernel process."""
    reply = served.admin.post("/core/cleanup")
    assert reply.json() == {"status": "success", "message": "All components cleaned up"}
    assert served.kernel.process.wait(timeout=120) == 0


# -- in process: draining, and what may not be removed ---------------------------------------------------------


def test_a_removed_model_finishes_its_syscalls_in_flight_then_closes(config: Any, backend: Any, data_dir: Path) -> None:
    async def main(own: str) -> None:
        # A data dir of its own that shares the converted model: the second model loads from it.
        kernel = Kernel(config.model_copy(update={"data_dir": data_dir_of_its_own(data_dir, Path(own))}), [backend])
        await kernel.start()
        try:
            await kernel.add_model(ModelConfig(name=SECOND))
            second = kernel.router.named(SECOND)
            in_flight = await kernel.submit(SyscallKind.LLM, "test/drain", LLMQuery(
                ASK, llms=[{"name": SECOND}], temperature=0, max_new_tokens=12))
            removed = await kernel.remove_model(SECOND)
            assert removed == {"name": SECOND, "drained": 1}
            assert in_flight.status is SyscallStatus.DONE and "Paris" in in_flight.value.response_message
            assert second.engine.stats()["running"] == 0 and kernel.router.named(SECOND) is None
            with pytest.raises(NotFound):
                await kernel.submit(SyscallKind.LLM, "test/drain", LLMQuery(ASK, llms=[{"name": SECOND}]))
            with pytest.raises(Conflict, match="is the only one served"):
                await kernel.remove_model(backend.name)
        finally:
            await kernel.stop(close_cores=False)

    with tempfile.TemporaryDirectory() as own:
        asyncio.run(main(own))


def test_a_removed_models_syscalls_in_flight_hold_up_no_other_model_change(config: Any, backend: Any,
                                                                         data_dir: Path, tmp_path: Path) -> None:
    """The removal waits for its model's generation to end; another model is added meanwhile (it waited for that
    generation, up to its token cap, and so did every add, removal, key and refresh)."""
    kernel = own_kernel(config, backend, data_dir, tmp_path)

    async def steps() -> None:
        await kernel.add_model(ModelConfig(name=SECOND))
        long = await kernel.submit(SyscallKind.LLM, "test/long", LLMQuery(
            [{"role": "user", "content": "Write a very long story."}], llms=[{"name": SECOND}], temperature=0,
            max_new_tokens=2000))
        removal = asyncio.ensure_future(kernel.remove_model(SECOND))
        added = await asyncio.wait_for(kernel.add_model(api_model("c")), 60)
        assert added["name"] == "c" and not removal.done() and not long.done  # still generating, still draining
        kernel.scheduler.cancel(long)
        assert (await asyncio.wait_for(removal, 60))["drained"] == 1
        assert [core.name for core in kernel.router.cores] == [EMBEDDED, "c"]

    run_in(kernel, steps)


def own_kernel(config: Any, backend: Any, data_dir: Path, own: Path) -> Kernel:
    """A kernel in this process serving the embedded model, on a data dir of its own."""
    return Kernel(config.model_copy(update={"data_dir": data_dir_of_its_own(data_dir, own)}), [backend])


def run_in(kernel: Kernel, steps: Callable[[], Awaitable[None]]) -> None:
    """Start ``kernel``, take ``steps`` with it, stop it (the shared embedded model stays open)."""

    async def main() -> None:
        await kernel.start()
        try:
            await steps()
        finally:
            await kernel.stop(close_cores=False)

    asyncio.run(main())


def api_model(name: str, url: str = "http://127.0.0.1:9") -> ModelConfig:
    """An API model (its provider is only reached when it is asked something)."""
    return ModelConfig(name=name, backend="vllm", hostname=url)


def test_a_removed_model_is_freed(config: Any, backend: Any, data_dir: Path, tmp_path: Path) -> None:
    """Once removed, nothing of the kernel holds the model (its weights, on a GPU its memory): not the router,
    where it was a candidate for a request naming no model, nor the syscall it served."""
    kernel = own_kernel(config, backend, data_dir, tmp_path)

    async def steps() -> None:
        await kernel.add_model(ModelConfig(name=SECOND))
        second = weakref.ref(kernel.router.named(SECOND))
        for llms in ([{"name": SECOND}], None):  # served by it, then by the embedded model (its turn)
            served = await kernel.call(SyscallKind.LLM, "test/freed", LLMQuery(
                ASK, llms=llms, temperature=0, max_new_tokens=2))
            assert served.status is SyscallStatus.DONE
        del served
        await kernel.remove_model(SECOND)
        gc.collect()
        assert second() is None, [type(r).__name__ for r in gc.get_referrers(second())]

    run_in(kernel, steps)


def test_model_changes_take_turns_and_an_add_of_a_name_being_added_is_refused_at_once(
        config: Any, backend: Any, data_dir: Path, tmp_path: Path) -> None:
    kernel = own_kernel(config, backend, data_dir, tmp_path)

    async def steps() -> None:
        for name in ("a", "b"):
            await kernel.add_model(api_model(name))
        # A key restarts a, then b; the removal of b, asked meanwhile, waits for it.
        restarted, removed = await asyncio.gather(kernel.set_api_key("vllm", "sk-1"), kernel.remove_model("b"))
        assert restarted == ["a", "b"] and removed == {"name": "b", "drained": 0}
        assert [core.name for core in kernel.router.cores] == [EMBEDDED, "a"]
        turns = [asyncio.ensure_future(change) for change in (
            kernel.set_api_key("vllm", "sk-2"), kernel.add_model(api_model("b")), kernel.add_model(api_model("b")))]
        done, _ = await asyncio.wait(turns, return_when=asyncio.FIRST_COMPLETED)
        assert done == {turns[2]}  # while the first add waits its turn
        with pytest.raises(Conflict, match="model 'b' is already loading"):
            turns[2].result()
        assert await turns[0] == ["a"] and (await turns[1])["name"] == "b"
        assert [m.name for m in kernel.config.llms.models] == [EMBEDDED, "a", "b"]

    run_in(kernel, steps)


def test_a_removed_model_takes_its_scheduler_workers_back(config: Any, backend: Any, data_dir: Path,
                                                          tmp_path: Path) -> None:
    kernel = own_kernel(config, backend, data_dir, tmp_path)

    async def steps() -> None:
        tasks = len(asyncio.all_tasks())
        for _ in range(3):
            await kernel.add_model(api_model("m"))
            assert len(asyncio.all_tasks()) > tasks  # its workers
            await kernel.remove_model("m")
        assert len(asyncio.all_tasks()) == tasks
        assert (await kernel.call(SyscallKind.LLM, "test/workers", LLMQuery(ASK, max_new_tokens=2))).error is None

    run_in(kernel, steps)


class Refreshing:
    """An in-process kernel started from a config file that the test rewrites, with an API model (``gpt``) whose
    provider is the mock."""

    def __init__(self, kernel: Kernel, file: Path, provider: Provider) -> None:
        self.kernel, self.file, self.provider = kernel, file, provider
        self.gpt = {"name": "gpt-test", "backend": "vllm", "hostname": provider.url}

    def write(self, api_keys: dict[str, str], *models: dict[str, Any]) -> None:
        self.file.write_text(yaml.safe_dump({"api_keys": api_keys, "llms": {"models": [{"name": EMBEDDED}, *models]}}))

    async def key_sent(self, model: str) -> str | None:
        """The Authorization header ``model`` sends its provider."""
        self.provider.script = [(200, completion("hello"))]
        asked = await self.kernel.call(SyscallKind.LLM, "test/keys", LLMQuery(ASK, llms=[{"name": model}]))
        assert asked.error is None and asked.value.response_message == "hello"
        return self.provider.headers[-1].get("Authorization")


@pytest.fixture
def refreshing(config: Any, backend: Any, data_dir: Path, tmp_path: Path) -> Iterator[Refreshing]:
    provider = Provider()
    own = own_kernel(config, backend, data_dir, tmp_path)
    running = Refreshing(own, tmp_path / "config.yaml", provider)
    running.write({})
    own.config_file = (str(running.file), load_config(running.file, env={"AIOS_DATA_DIR": str(tmp_path)}))
    yield running
    provider.server.shutdown()
    provider.server.server_close()


def test_refresh_applies_the_files_api_keys_under_those_set_at_run_time(refreshing: Refreshing) -> None:
    kernel, gpt = refreshing.kernel, refreshing.gpt

    async def steps() -> None:
        refreshing.write({"vllm": "sk-file-1"}, gpt)
        assert (await kernel.refresh())["added"] == ["gpt-test"]
        assert await refreshing.key_sent("gpt-test") == "Bearer sk-file-1"
        refreshing.write({"vllm": "sk-file-2"}, gpt)  # the model's key changed: it restarts with the new one
        assert (await kernel.refresh())["restarted"] == ["gpt-test"]
        assert await refreshing.key_sent("gpt-test") == "Bearer sk-file-2"
        assert await kernel.set_api_key("vllm", "sk-run") == ["gpt-test"]
        refreshing.write({"vllm": "sk-file-3"}, gpt)  # a key set at run time stays over the file's
        assert (await kernel.refresh())["restarted"] == []
        assert await refreshing.key_sent("gpt-test") == "Bearer sk-run"

    run_in(kernel, steps)


def test_a_refresh_that_fails_partway_says_what_it_had_applied(refreshing: Refreshing) -> None:
    kernel, gpt = refreshing.kernel, refreshing.gpt

    async def steps() -> None:
        await kernel.add_model(ModelConfig(**gpt))
        refreshing.write({}, {**gpt, "cost": 3}, {"name": "/no/such/model"})  # a restart, then a failing add
        with pytest.raises(NotFound) as refused:
            await kernel.refresh()
        assert str(refused.value).startswith("the config file was applied in part (restarted gpt-test: that "
                                             "stays), then stopped: model '/no/such/model' not found")
        assert str(refused.value).endswith("Fix that and refresh again")
        assert [(m.name, m.cost) for m in kernel.config.llms.models] == [(EMBEDDED, None), ("gpt-test", 3)]

    run_in(kernel, steps)
