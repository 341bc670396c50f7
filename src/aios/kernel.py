"""The Kernel: owns the LLM cores, the router and the scheduler; agents reach them only through syscalls."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
import logging
import time
from typing import Any, Iterator, Protocol

from aios.access.manager import AccessManager
from aios.agents.runtime import AgentRuntime
from aios.config import OPENAI_COMPATIBLE, Config, ModelConfig, load_config
from aios.errors import (
    BadRequest,
    ConfigError,
    Conflict,
    KernelError,
    ModelNotFound,
    NotAvailable,
    NotFound,
    Unavailable,
)
from aios.embeddings import Embedder
from aios.leases import sweep_leftovers
from aios.llm.core import LLMCore
from aios.llm.handler import FileOperator, LLMHandler
from aios.llm.router import Router
from aios.llm.routing import make_strategy
from aios.memory.handler import MemoryHandler
from aios.memory.personalization import Personalization
from aios.scheduler import Scheduler, make_policy
from aios.scheduler.feed import SchedulerFeed
from aios.storage.handler import StorageHandler
from aios.storage.operate import FILE_TOOLS, operate_files, with_instructions
from aios.syscall import Syscall, SyscallKind
from aios.tools.handler import ToolHandler, run_model_calls

log = logging.getLogger(__name__)

LLM_IN_FLIGHT = 512  # LLM syscalls handed to each core's engine at once
API_COST = 1000.0  # smart routing's cost of an API model that sets none: dearer than any local model


class SyscallHandler(Protocol):
    def prepare(self, payload: Any) -> Any:
        """Validate and route a payload when it is submitted; raise a KernelError to refuse it."""
        ...

    async def admit(self, agent: str, request: Any) -> Any:
        """The prepared request as ``agent`` may make it, once the access checks pass (a person's approval may
        take minutes: this is before it is queued); raise a KernelError to refuse it."""
        ...

    async def __call__(self, syscall: Syscall) -> Any: ...


def load_cores(config: Config) -> list[LLMCore]:
    """Load every configured model (blocking: this is the slow part of start-up), after removing what a killed
    kernel left in the data dir (a half-done model conversion, spilled KV snapshots)."""
    sweep_leftovers(config.data_dir)
    return [_load_core(model, config) for model in config.llms.models]


def model_cost(model: ModelConfig, core: LLMCore) -> float:
    """The model's cost for smart routing: as configured, else its size in billions of parameters (API: API_COST)."""
    if model.cost is not None:
        return model.cost
    return float(getattr(core, "parameters_b", API_COST))


async def close_core(core: LLMCore) -> None:
    closing = core.close()
    if inspect.isawaitable(closing):
        await closing


def _api_key(model: ModelConfig, config: Config) -> str | None:
    """The key an API model starts with: its own ``api_key``, else ``api_keys.<backend>`` (a local model, none)."""
    if model.backend == "huggingface":
        return None
    key = model.api_key or config.api_keys.get(model.backend)
    return key if isinstance(key, str) and key else None


def _load_core(model: ModelConfig, config: Config) -> LLMCore:
    key = _api_key(model, config)
    if model.backend in OPENAI_COMPATIBLE:
        from aios.llm.openai_compat import OpenAICompatBackend

        return OpenAICompatBackend(model.name, model.backend, model.api_url, api_key=key)
    if model.backend != "huggingface":  # any other provider, through LiteLLM
        from aios.llm.litellm_backend import LiteLLMBackend

        return LiteLLMBackend(model.name, model.backend, api_key=key, api_base=model.hostname)
    from aios.llm.hf import HfLocalBackend  # heavy import, kept off the SDK's path
    from aios.llm.hf.engine import EngineSettings

    log.info("loading %s (%s)", model.name, model.backend)
    scheduler = config.scheduler
    settings = EngineSettings(
        max_batch=model.max_batch, policy=scheduler.policy, quantum_tokens=scheduler.quantum_tokens,
        aging=scheduler.aging, snapshot_ram_mb=scheduler.snapshot_ram_mb, prefix_cache_mb=model.prefix_cache_mb,
        kv_budget_mb=model.kv_budget_mb, prefill_chunk=model.prefill_chunk, kv_classes=model.kv_classes,
    )
    return HfLocalBackend(model.name, model.max_gpu_memory, model.eval_device, data_dir=config.data_dir,
                          settings=settings, structured_output=model.structured_output, weights=model.weights)


# Config sections /core/refresh compares (llms.models it applies; the others take effect at the next start).
# api_keys is left out: refresh applies it too (the file's keys, with those set by /core/config/update on top).
_SECTIONS = ("llms.models", "llms.router", "scheduler", "server", "storage", "tools", "access", "memory")


def _section(config: Config, dotted: str) -> Any:
    value: Any = config
    for part in dotted.split("."):
        value = getattr(value, part)
    return value


class Kernel:
    """Build with loaded cores, ``await start()`` inside the event loop, then ``submit``/``call`` syscalls."""

    def __init__(self, config: Config, cores: list[LLMCore], embedder: Embedder | None = None) -> None:
        """``embedder``: an embedding model to use instead of the kernel's own (its owner closes it)."""
        self.config = config
        routing = config.llms.router
        self.router = Router(cores, make_strategy(routing.strategy, routing.smart_threshold, routing.smart_min_samples),
                             routing.sticky, {m.name: model_cost(m, c) for m, c in zip(config.llms.models, cores)})
        self._loading: set[str] = set()  # models being added (from before they wait for their turn)
        # Adding, removing and restarting models, setting keys and refresh take turns: each sees the models as the
        # one before left them (a model removed while set_api_key went through the models was a 500).
        self._changing = asyncio.Lock()
        self._keys_set: dict[str, str] = {}  # api_keys set at run time: refresh keeps them over the file's
        # The config file and what it said at start (before command-line overrides): /core/refresh reads the file
        # again and compares with it.
        self.config_file: tuple[str, Config] | None = None
        self._owns_embedder = embedder is None
        self.embedder = embedder or Embedder()  # loads on first use
        self.access = AccessManager(config.access, config.data_dir)
        self.storage = StorageHandler.from_config(config, self.embedder, self.access)
        self.memory = MemoryHandler.from_config(config, self.embedder, self.call, self.access)
        max_calls = config.storage.operate_file_max_calls
        run_file_calls = lambda agent, reply: operate_files(self.call, agent, reply, max_calls)  # noqa: E731
        files = FileOperator(FILE_TOOLS, with_instructions, run_file_calls, max_calls=max_calls)
        self.tools = ToolHandler(config, self.call, self.access)
        self.agents = AgentRuntime(config.agents, config.data_dir, self.access)  # agent processes, and the hub
        run_calls = functools.partial(run_model_calls, self.call)
        self.llm = LLMHandler(self.router, files, run_calls, Personalization.from_config(self.call, config.memory))
        self.handlers: dict[SyscallKind, SyscallHandler] = {SyscallKind.LLM: self.llm, SyscallKind.STORAGE: self.storage,
                                                            SyscallKind.MEMORY: self.memory,
                                                            SyscallKind.TOOL: self.tools}
        self.scheduler = Scheduler()
        policy = config.scheduler
        for kind, handler in self.handlers.items():
            llm = kind is SyscallKind.LLM
            # LLM syscalls go on to their core's engine, which batches, preempts and orders them by the same
            # policy and records their slices; the kernel queue only holds what exceeds LLM_IN_FLIGHT.
            workers = LLM_IN_FLIGHT * len(cores) if llm else getattr(handler, "workers", 1)
            self.scheduler.add_queue(kind, make_policy(policy.policy, policy.quantum_tokens, policy.aging), handler,
                                     workers=workers, handler_times_slices=llm)
        self.feed = SchedulerFeed(self.scheduling_state)  # what the scheduler does, for watchers
        self.started_at = time.time()

    @classmethod
    def from_config(cls, config: Config) -> "Kernel":
        return cls(config, load_cores(config))

    async def start(self) -> None:
        await self.scheduler.start()
        self.feed.start()
        await self.storage.start()
        await self.tools.start()

    async def stop(self, close_cores: bool = True) -> None:
        """Stop serving and let go of what the kernel holds (its storage database among them, so another kernel
        may use the data dir). ``close_cores=False`` leaves the cores running for whoever shares them."""
        await self.agents.close()  # agents first: they make syscalls until they end
        await self.access.approvals.close()  # operations waiting for a person end, denied
        await self.feed.close()
        await self.scheduler.stop()
        await self.tools.close()
        await self.storage.close()
        await self.memory.close()
        await self.access.close()
        if self._owns_embedder:
            await asyncio.to_thread(self.embedder.close)
        if not close_cores:
            return
        for core in self.router.cores:
            await close_core(core)

    async def submit(self, kind: SyscallKind, agent_name: str, payload: Any, priority: int = 0) -> Syscall:
        """Queue a syscall; raises a KernelError at once if it cannot be served."""
        if kind is SyscallKind.LLM:
            syscall = Syscall(kind, agent_name, self.llm.prepare(payload, agent_name), priority)
            self.router.track(syscall.payload.route, syscall)  # counted against its core until it ends
        else:
            handler = self.handlers[kind]
            # Admitted before it becomes a syscall: a wait for a person holds no worker, and its times start here.
            syscall = Syscall(kind, agent_name, await handler.admit(agent_name, handler.prepare(payload)), priority)
        try:
            await self.scheduler.submit(syscall)
        except BaseException:
            syscall.cancel()  # never queued: it ends here
            raise
        syscall.observer = self.feed.changed  # from its id on, the feed follows it
        self.feed.changed(syscall)
        return syscall

    async def call(self, kind: SyscallKind, agent_name: str, payload: Any, priority: int = 0) -> Syscall:
        """Submit and wait until the syscall ends (done, failed or cancelled); a waiter that is cancelled
        (its client went away) cancels the syscall too, so no slot is held for nobody."""
        syscall = await self.submit(kind, agent_name, payload, priority)
        try:
            await syscall.wait()
        except asyncio.CancelledError:
            self.scheduler.cancel(syscall)
            raise
        return syscall

    # -- models added and removed while serving -------------------------------------------------------------------

    async def add_model(self, model: ModelConfig) -> dict[str, Any]:
        """Load ``model`` on a thread (other models keep serving) and route to it; returns its listing. Another
        add of the same name is refused at once, even while this one waits for its turn."""
        with self._claimed(model.name):
            async with self._changing:
                return await self._add(model)

    async def remove_model(self, name: str) -> dict[str, Any]:
        """Route nothing more to model ``name``, let the syscalls it is serving finish, then close it (the other
        model changes do not wait for those syscalls)."""
        async with self._changing:
            removed, old = await self._remove(name)
        await self._retire(old)
        return removed

    async def set_api_key(self, provider: str, key: str) -> list[str]:
        """Use ``key`` as ``api_keys.<provider>`` from now on: the models that take their key from there are
        restarted with it (each after its syscalls in flight finish). Returns their names."""
        retiring: list[LLMCore] = []
        try:
            async with self._changing:
                self._keys_set[provider] = key
                self.config = self.config.model_copy(update={"api_keys": {**self.config.api_keys, provider: key}})
                users = [m for m in self.config.llms.models
                         if m.backend == provider != "huggingface" and m.api_key is None]
                for model in users:
                    retiring.append(await self._restart(model))
                return [model.name for model in users]
        finally:
            await self._retire(*retiring)

    async def refresh(self) -> dict[str, list[str]]:
        """Read the config file again and apply its ``llms.models`` while serving: added, removed (after
        draining) and changed models (restarted), with its ``api_keys`` (those set at run time on top). Other
        sections changed are named in ``needs_restart``. A change that fails stops the refresh; its error says
        which changes were applied before it (they stay)."""
        if self.config_file is None:
            raise NotAvailable("this kernel was started without a config file: there is nothing to read again")
        path, at_start = self.config_file
        try:
            fresh = await asyncio.to_thread(load_config, path, check_providers=True)
        except ConfigError as exc:
            raise BadRequest(f"the config file was not applied: {exc}") from None
        changes: dict[str, list[str]] = {"added": [], "restarted": [], "removed": []}
        retiring: list[LLMCore] = []
        try:
            async with self._changing:
                before = self.config
                self.config = before.model_copy(update={"api_keys": {**fresh.api_keys, **self._keys_set}})
                try:
                    await self._apply_models(before, fresh.llms.models, changes, retiring)
                except KernelError as exc:
                    applied = [f"{what} {', '.join(names)}" for what, names in changes.items() if names]
                    if self.config.api_keys != before.api_keys:
                        applied.insert(0, "its api_keys")
                    raise type(exc)(f"the config file was applied in part ({'; '.join(applied) or 'no change'}: "
                                    f"that stays), then stopped: {exc}. Fix that and refresh again") from None
        finally:
            await self._retire(*retiring)
        changes["needs_restart"] = [section for section in _SECTIONS if section != "llms.models"
                                    and _section(fresh, section) != _section(at_start, section)]
        return changes

    async def _apply_models(self, before: Config, models: list[ModelConfig], changes: dict[str, list[str]],
                            retiring: list[LLMCore]) -> None:
        """Serve ``models`` where ``before`` served its own, with the keys now set: a model whose settings or key
        changed restarts. Each change is recorded in ``changes`` once made; the cores no longer routed to go into
        ``retiring``, for the caller to close once their syscalls end."""
        current = {model.name: model for model in before.llms.models}
        wanted = {model.name: model for model in models}
        for name, model in wanted.items():
            if name not in current:
                with self._claimed(name):
                    await self._add(model)
                changes["added"].append(name)
            elif model != current[name] or _api_key(model, self.config) != _api_key(current[name], before):
                retiring.append(await self._restart(model))
                changes["restarted"].append(name)
        for name in current.keys() - wanted.keys():  # after the additions: some model always serves
            retiring.append((await self._remove(name))[1])
            changes["removed"].append(name)

    # The steps below run in turn (the caller holds ``_changing``); the cores they take out of service are retired
    # by the caller once it has let go of it.

    @contextlib.contextmanager
    def _claimed(self, name: str) -> Iterator[None]:
        """Mark model ``name`` as being added while the block runs; Conflict if it is served or being added."""
        if self.router.named(name) is not None or name in self._loading:
            raise Conflict(f"model {name!r} is already {'loading' if name in self._loading else 'served'}")
        self._loading.add(name)
        try:
            yield
        finally:
            self._loading.discard(name)

    async def _add(self, model: ModelConfig) -> dict[str, Any]:
        core = await self._load(model)
        self.router.add(core, model_cost(model, core))
        self._set_models([*self.config.llms.models, model])
        self.scheduler.add_workers(SyscallKind.LLM, LLM_IN_FLIGHT)
        log.info("model %s (%s) added", model.name, model.backend)
        return model.listing()

    async def _remove(self, name: str) -> tuple[dict[str, Any], LLMCore]:
        core = self.router.named(name)
        if core is None:
            raise NotFound(f"no model {name!r} is served; served: {', '.join(c.name for c in self.router.cores)}")
        if len(self.router.cores) == 1:
            raise Conflict(f"model {name!r} is the only one served: add another before removing it")
        if name == self.config.memory.agentic_model:
            raise Conflict(f"model {name!r} is memory.agentic_model: agentic memory needs it")
        if self.router.is_selected(core):  # every LLM syscall would then be refused, naming it
            raise Conflict(f"model {name!r} is among the models selected for every agent (POST /user/select/llms): "
                           "select others, or [] to lift the selection, before removing it")
        self.router.remove(core)
        self._set_models([m for m in self.config.llms.models if m.name != name])
        await self.scheduler.remove_workers(SyscallKind.LLM, LLM_IN_FLIGHT)  # the share it brought
        return {"name": name, "drained": self.router.in_flight(core)}, core

    async def _restart(self, model: ModelConfig) -> LLMCore:
        """Serve ``model`` from a new core; returns the old one, to retire."""
        old = self.router.named(model.name)
        if old is None:
            raise Conflict(f"model {model.name!r} is not served, so it cannot be restarted: add it instead")
        new = await self._load(model)
        self.router.replace(old, new, model_cost(model, new))
        self._set_models([model if m.name == model.name else m for m in self.config.llms.models])
        return old

    async def _retire(self, *cores: LLMCore) -> None:
        """Close cores no longer routed to, once the syscalls each is serving have ended. Outside the turns of
        model changes: a long generation on a removed model holds up no other change."""
        for core in cores:
            drained = self.router.in_flight(core)
            await self.router.drain(core)
            await close_core(core)
            log.info("model %s closed after its %d syscalls in flight ended", core.name, drained)

    async def _load(self, model: ModelConfig) -> LLMCore:
        """Load a model on a thread; whatever stops it is the caller's error, and nothing changes."""
        try:
            return await asyncio.to_thread(_load_core, model, self.config)
        except ModelNotFound as exc:
            raise NotFound(str(exc)) from None
        except KernelError:
            raise
        except Exception as exc:  # noqa: BLE001 - an out-of-memory, a broken file: said, and the kernel serves on
            raise Unavailable(f"model {model.name!r} could not be loaded: {type(exc).__name__}: {exc}") from None

    def _set_models(self, models: list[ModelConfig]) -> None:
        llms = self.config.llms.model_copy(update={"models": models})
        self.config = self.config.model_copy(update={"llms": llms})

    def components(self) -> dict[str, str]:
        served = {kind.value for kind in self.handlers}
        return {
            "llms": "active" if self.models_down() != [core.name for core in self.router.cores] else "inactive",
            **{name: "active" if name in served else "inactive" for name in ("memory", "storage", "tool")},
            "scheduler": "active",
            "factory": "active",  # AIOS's name for the part that runs agents: the agent runtime
        }

    def models_down(self) -> list[str]:
        """Models that cannot serve now (their engine failed and could not be restarted)."""
        return [core.name for core in self.router.cores if getattr(core, "down", None)]

    def scheduling_state(self) -> dict[str, Any]:
        """Per model, what its engine runs and holds waiting; per kind, the kernel's queue."""
        models = []
        for core in self.router.cores:
            described = core.describe()
            engine = described.get("engine", {})
            models.append({"name": core.name, "state": described.get("state", "up"),
                           "max_batch": described.get("max_batch"), **{key: engine.get(key) for key in
                                                                       ("policy", "running", "waiting", "preemptions")}})
        return {"models": models, "queues": self.scheduler.stats()}

    def status(self) -> dict[str, Any]:
        return {
            "uptime_s": round(time.time() - self.started_at, 3),
            "llms": [core.describe() for core in self.router.cores],
            "queues": self.scheduler.stats(),
            "tools": self.tools.status(),
            "agents": {"sandbox": self.agents.confinement},
        }

