"""The Kernel: owns the LLM cores, the router and the scheduler; agents reach them only through syscalls."""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
import time
from typing import Any, Protocol

from aios.access.manager import AccessManager
from aios.agents.runtime import AgentRuntime
from aios.config import Config, ModelConfig
from aios.embeddings import Embedder
from aios.leases import sweep_leftovers
from aios.llm.core import LLMCore
from aios.llm.handler import FileOperator, LLMHandler
from aios.llm.router import Router
from aios.memory.handler import MemoryHandler
from aios.memory.personalization import Personalization
from aios.scheduler import Scheduler, make_policy
from aios.storage.handler import StorageHandler
from aios.storage.operate import FILE_TOOLS, operate_files, with_instructions
from aios.syscall import Syscall, SyscallKind
from aios.tools.handler import ToolHandler, run_model_calls

log = logging.getLogger(__name__)

LLM_IN_FLIGHT = 512  # LLM syscalls handed to each core's engine at once


class SyscallHandler(Protocol):
    def prepare(self, payload: Any) -> Any:
        """Validate and route a payload when it is submitted; raise a KernelError to refuse it."""
        ...

    async def __call__(self, syscall: Syscall) -> Any: ...


def load_cores(config: Config) -> list[LLMCore]:
    """Load every configured model (blocking: this is the slow part of start-up), after removing what a killed
    kernel left in the data dir (a half-done model conversion, spilled KV snapshots)."""
    sweep_leftovers(config.data_dir)
    return [_load_core(model, config) for model in config.llms.models]


def _load_core(model: ModelConfig, config: Config) -> LLMCore:
    if model.backend != "huggingface":
        from aios.llm.openai_compat import OpenAICompatBackend

        key = model.api_key or config.api_keys.get(model.backend)
        return OpenAICompatBackend(model.name, model.backend, model.api_url,
                                   api_key=key if isinstance(key, str) and key else None)
    from aios.llm.hf import HfLocalBackend  # heavy import, kept off the SDK's path
    from aios.llm.hf.engine import EngineSettings

    log.info("loading %s (%s)", model.name, model.backend)
    scheduler = config.scheduler
    settings = EngineSettings(
        max_batch=model.max_batch, policy=scheduler.policy, quantum_tokens=scheduler.quantum_tokens,
        aging=scheduler.aging, snapshot_ram_mb=scheduler.snapshot_ram_mb, prefix_cache_mb=model.prefix_cache_mb,
        kv_budget_mb=model.kv_budget_mb,
    )
    return HfLocalBackend(model.name, model.max_gpu_memory, model.eval_device, data_dir=config.data_dir,
                          settings=settings, structured_output=model.structured_output)


class Kernel:
    """Build with loaded cores, ``await start()`` inside the event loop, then ``submit``/``call`` syscalls."""

    def __init__(self, config: Config, cores: list[LLMCore], embedder: Embedder | None = None) -> None:
        """``embedder``: an embedding model to use instead of the kernel's own (its owner closes it)."""
        self.config = config
        self.router = Router(cores)
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
        llm = LLMHandler(self.router, files, run_calls, Personalization.from_config(self.call, config.memory))
        self.handlers: dict[SyscallKind, SyscallHandler] = {SyscallKind.LLM: llm, SyscallKind.STORAGE: self.storage,
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
        self.started_at = time.time()

    @classmethod
    def from_config(cls, config: Config) -> "Kernel":
        return cls(config, load_cores(config))

    async def start(self) -> None:
        await self.scheduler.start()
        await self.storage.start()
        await self.tools.start()

    async def stop(self, close_cores: bool = True) -> None:
        """Stop serving and let go of what the kernel holds (its storage database among them, so another kernel
        may use the data dir). ``close_cores=False`` leaves the cores running for whoever shares them."""
        await self.agents.close()  # agents first: they make syscalls until they end
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
            closing = core.close()
            if inspect.isawaitable(closing):
                await closing

    async def submit(self, kind: SyscallKind, agent_name: str, payload: Any, priority: int = 0) -> Syscall:
        """Queue a syscall; raises a KernelError at once if it cannot be served."""
        handler = self.handlers[kind]
        syscall = Syscall(kind, agent_name, handler.prepare(payload), priority)
        return await self.scheduler.submit(syscall)

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

    def status(self) -> dict[str, Any]:
        return {
            "uptime_s": round(time.time() - self.started_at, 3),
            "llms": [core.describe() for core in self.router.cores],
            "queues": self.scheduler.stats(),
            "tools": self.tools.status(),
        }

