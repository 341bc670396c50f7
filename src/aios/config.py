"""Kernel configuration: a YAML file in the AIOS ``config.yaml`` layout, environment overrides, and defaults
that run with no file at all (the embedded model on this machine's CPU).

Environment:
  ``AIOS_CONFIG``    path of the YAML file (``--config`` on the command line wins over it)
  ``AIOS_DATA_DIR``  where the kernel keeps its data (model cache, ...); default: the platform's user data dir
  ``OPENAI_API_KEY`` the key for ``openai`` models (overrides ``api_keys.openai``; a model's ``api_key`` wins)

Sections of a real AIOS ``config.yaml`` that this kernel does not use yet (``api_keys``, ``agent_factory``) are accepted and kept, so an AIOS config loads unchanged; unknown keys are errors, so that
a typo never silently falls back to a default.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Any, Callable, Literal, Mapping

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    ValidationError,
    ValidatorFunctionWrapHandler,
    WrapValidator,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from aios.errors import ConfigError
from aios.urls import ServiceURL, parse_service_url, redact_url

EMBEDDED_MODEL = "HuggingFaceTB/SmolLM2-135M-Instruct"

OPENAI_URL = "https://api.openai.com/v1"
_URL = re.compile(r"https?://[^\s/]+(/\S*)?")
_DEVICE = re.compile(r"cpu|cuda|auto|cuda:[0-9]+")
_GPU_INDEX = re.compile(r"[0-9]+")
# The sizes accelerate's ``max_memory`` understands: "24GB", "512MiB", "80GiB", "1.5GB".
_SIZE = re.compile(r"[0-9]+(\.[0-9]+)?\s*[KMG]i?B", re.IGNORECASE)


def _uncoerced(kind: str) -> WrapValidator:
    """YAML already types numbers, but pydantic's lax mode would still read ``true`` as 1, ``"8"`` as 8 and
    ``2.0`` as 2: in a config file each is a mistake to report, not to guess at.

    A string that is no number at all is left to pydantic, so its message ("unable to parse string as an
    integer") stays the one the docs show.
    """

    def check(value: Any, handler: ValidatorFunctionWrapHandler) -> Any:
        if isinstance(value, bool):
            raise PydanticCustomError("strict_type", "Input should be {kind}, not a boolean", {"kind": kind})
        if isinstance(value, str) and _is_number(value):
            raise PydanticCustomError("strict_type", "Input should be {kind}, not the quoted string {value}",
                                      {"kind": kind, "value": repr(value)})
        result = handler(value)
        if isinstance(value, float) and isinstance(result, int):
            raise PydanticCustomError("strict_type", "Input should be {kind}, not {value}",
                                      {"kind": kind, "value": repr(value)})
        return result

    return WrapValidator(check)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _matching(pattern: re.Pattern[str], expected: str, shown: Callable[[str], str] = repr) -> AfterValidator:
    """A string check: it must match ``pattern`` in full, else the error says what was ``expected`` and shows
    the value as ``shown`` renders it (a URL with its credentials masked)."""

    def check(value: str) -> str:
        if not pattern.fullmatch(value):
            raise ValueError(f"must be {expected}, not {shown(value)}")
        return value

    return AfterValidator(check)


_Int = Annotated[int, _uncoerced("a valid integer")]
_Float = Annotated[float, _uncoerced("a valid number"), Field(allow_inf_nan=False)]
_Device = Annotated[str, _matching(_DEVICE, "'cpu', 'cuda', 'cuda:N' or 'auto'")]
_Url = Annotated[str, _matching(_URL, "an http(s) URL such as http://localhost:8000", lambda url: repr(redact_url(url)))]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# API backends served by the kernel's own OpenAI-compatible client; any other API provider goes through LiteLLM.
OPENAI_COMPATIBLE = frozenset({"openai", "vllm", "sglang", "ollama"})
_Backend = Annotated[str, _matching(re.compile(r"[a-z0-9_]+"), "huggingface, openai, vllm, sglang, ollama or a "
                                   "LiteLLM provider name such as anthropic (lowercase letters, digits, _)")]

# Settings of the local backend (its device, engine and grammar), refused on an API backend's entry.
_LOCAL_ONLY = frozenset({"max_gpu_memory", "eval_device", "max_batch", "prefix_cache_mb", "kv_budget_mb",
                         "prefill_chunk", "kv_classes", "weights", "structured_output"})


class ModelConfig(_Section):
    """One entry of ``llms.models``."""

    name: str = Field(min_length=1, description="HF model id, local directory, or .gguf path; for an API "
                      "backend, the provider's model name")
    backend: _Backend = Field(default="huggingface", description="huggingface (local); openai, vllm, sglang, ollama "
                              "(OpenAI-compatible HTTP); any other LiteLLM provider: anthropic, gemini, groq, ...")
    api_key: str | None = Field(default=None, repr=False, description="API backends; else api_keys.<backend> ($OPENAI_API_KEY, "
                                "when set, over the file's api_keys.openai), else the provider's own variable "
                                "(ANTHROPIC_API_KEY, ...) for LiteLLM providers")
    max_gpu_memory: dict[int, str] | None = Field(
        default=None, description='per-GPU limit, e.g. {0: "24GB"}; used only when CUDA is present'
    )
    eval_device: _Device | None = Field(default=None, description='"cpu", "cuda", "cuda:1"; default: automatic')
    hostname: _Url | None = Field(default=None, repr=False, description="API backends: the server's URL, e.g. "
                                 "http://localhost:8000 (vllm), http://localhost:11434 (ollama); credentials in it "
                                 "(user:pass@, ?token=) are used and never shown")
    max_batch: _Int = Field(default=16, ge=1, le=256, description="sequences decoded together in one step")
    prefix_cache_mb: _Int = Field(default=256, ge=0, description="KV of recent prompts kept for reuse; 0 = off")
    kv_budget_mb: _Int = Field(default=4096, ge=1, description="most memory the batch's KV cache may take")
    prefill_chunk: _Int | None = Field(default=None, ge=0, description="prompt tokens read per engine step, over "
                                       "all prompts; a longer prompt is read over several steps while others "
                                       "decode; 0 = whole prompts at once; default: 512 on a CPU, 4096 on a GPU")
    kv_classes: StrictBool | None = Field(default=None, description="KV rows in size classes, each about its own "
                                    "length, rather than all as long as the longest; default: on a CPU, not on a "
                                    "GPU; Llama-family models only")
    weights: Literal["native", "bf16", "int8", "int4"] = Field(
        default="native", description="weight format of a Llama-family model: native (as loaded: fp32 on CPU), "
        "bf16, int8 or int4 (weight-only, CPU); the output layer stays native")
    cost: _Float | None = Field(default=None, ge=0, description="smart routing: the relative price of a query; "
                                "default: a local model's size in billions of parameters, 1000 for an API model")
    structured_output: Literal["grammar", "prompt"] = Field(
        default="grammar", description="JSON and tool-call replies: 'grammar' constrains decoding (valid by "
        "construction); 'prompt' only asks in the prompt, then checks the reply and retries once")

    @model_validator(mode="after")
    def _fields_fit_the_backend(self) -> "ModelConfig":
        if self.backend == "huggingface":
            return self
        misplaced = sorted(_LOCAL_ONLY & self.model_fields_set)
        if misplaced:
            raise ValueError(f"backend {self.backend!r} does not use {', '.join(misplaced)} (local models only)")
        if self.backend in OPENAI_COMPATIBLE - {"openai"} and self.hostname is None:
            raise ValueError(f"backend {self.backend!r} needs 'hostname', the URL of its server")
        return self

    def listing(self) -> dict[str, Any]:
        """What ``/core/llms/list`` shows of this model: never its API key or the credentials in its hostname,
        nor settings its backend ignores."""
        hidden = {"api_key"} | (set() if self.backend == "huggingface" else _LOCAL_ONLY)
        shown = self.model_dump(exclude_none=True, exclude=hidden)
        if self.hostname is not None:
            shown["hostname"] = redact_url(self.hostname)
        return shown

    @property
    def api_url(self) -> ServiceURL:
        """The OpenAI-compatible API root of an API backend (``.../v1``), its credentials apart."""
        return parse_service_url(self.hostname or OPENAI_URL, api_path="/v1")

    @field_validator("max_gpu_memory", mode="before")
    @classmethod
    def _gpu_limits(cls, value: Any) -> Any:
        # Checked before pydantic's own parsing, which would turn a key `true` into GPU 1.
        if not isinstance(value, dict):
            return value
        return {_gpu_index(key): _memory_size(size) for key, size in value.items()}


def _unique(names: list[str], what: str) -> None:
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ValueError(f"{what} must be unique; repeated: {', '.join(repeated)}")


def _gpu_index(key: Any) -> int:
    if isinstance(key, int) and not isinstance(key, bool) and key >= 0:
        return key
    if isinstance(key, str) and _GPU_INDEX.fullmatch(key):
        return int(key)
    raise ValueError(f"keys must be GPU indices such as 0 or 1, not {key!r}")


def _memory_size(size: Any) -> str:
    if isinstance(size, str) and _SIZE.fullmatch(size.strip()):
        return size.strip()
    raise ValueError(f'limits must be sizes such as "24GB", "512MiB" or "80GiB", not {size!r}')


class RouterConfig(_Section):
    """How each LLM syscall is given a model (see docs/config.md, "Routing")."""

    strategy: Literal["sequential", "least_loaded", "smart"] = Field(
        default="sequential", description="sequential: round-robin over the allowed models; least_loaded: the "
        "fewest syscalls in flight, then the fewest running tokens; smart: the cheapest model that succeeds on "
        "similar queries")
    sticky: StrictBool = Field(default=False, description="an agent keeps its model while that model stays allowed "
                               "(its prefix cache stays warm)")
    smart_threshold: _Float = Field(default=0.8, ge=0, le=1, description="smart: the least observed success rate "
                                    "on similar queries for a cheaper model to keep serving them")
    smart_min_samples: _Int = Field(default=5, ge=1, description="smart: outcomes seen before a model's rate counts")
    bootstrap_url: str | None = None


class LLMsConfig(_Section):
    models: list[ModelConfig] = Field(default_factory=lambda: [ModelConfig(name=EMBEDDED_MODEL)], min_length=1)
    router: RouterConfig = RouterConfig()
    use_context_manager: StrictBool = False
    log_mode: str = "console"

    @field_validator("models")
    @classmethod
    def _unique_names(cls, models: list[ModelConfig]) -> list[ModelConfig]:
        _unique([m.name for m in models], "model names")
        return models



class SchedulerConfig(_Section):
    policy: Literal["fifo", "rr", "priority"] = "fifo"
    quantum_tokens: _Int = Field(default=32, ge=1, description="decode tokens per time slice (rr, priority)")
    aging: _Float = Field(default=1.0, ge=0, description="priority gained per second of waiting (priority)")
    snapshot_ram_mb: _Int = Field(default=1024, ge=0, description="suspended generations kept in RAM; rest on disk")
    log_mode: str = "console"


class ServerConfig(_Section):
    host: str = Field(default="127.0.0.1", min_length=1)
    port: _Int = Field(default=8000, ge=0, le=65535, description="0 picks a free port")
    max_body_mb: _Float = Field(default=8.0, gt=0, le=1024, description="larger request bodies are refused (413) "
                                "before they are read")


class StorageConfig(_Section):
    """The AIOS ``storage`` section (``root_dir``, ``use_vector_db``, ``vector_db_config``) and ours beside it.
    Relative paths are taken from the data dir."""

    root_dir: str = Field(default="storage", min_length=1, description="where each agent's own directory (its "
                          "default mount) lives")
    use_vector_db: StrictBool = Field(default=True, description="false: retrieve by keywords only (no embedding "
                                      "model is loaded)")
    vector_db_config: dict[str, Any] | None = Field(default=None, description="AIOS's ChromaDB settings; accepted, "
                                                    "unused")
    backend: Literal["sqlite", "postgres"] = "sqlite"
    dsn: str | None = Field(default=None, min_length=1, repr=False, description="postgres: the connection string")
    blob_dir: str | None = Field(default=None, min_length=1, description="content-addressed versions; default "
                                 "<data_dir>/lsfs/blobs (postgres: a directory every kernel mounts)")
    mount_roots: list[Annotated[str, Field(min_length=1)]] | None = Field(
        default=None, min_length=1, description="directories inside which agents may mount besides their own "
        "directory; default: root_dir")
    max_file_mb: _Float = Field(default=4.0, gt=0, le=1024, description="largest file content an agent may write "
                                "(over HTTP, server.max_body_mb bounds it too: keep this below it)")
    share_expiry_days: _Float = Field(default=7.0, gt=0, description="how long a share link works by default")
    share_max_expiry_days: _Float = Field(default=365.0, gt=0, description="the longest expires_in allowed")
    public_url: _Url | None = Field(default=None, description="the kernel's URL as others reach it, for share "
                                    "links; default: the URL the agent used")
    operate_file_max_calls: _Int = Field(default=1, ge=1, le=32, description="file operations one operate_file "
                                         "request may make; raise it for models that plan several steps well")
    log_mode: str = "console"

    @model_validator(mode="after")
    def _consistent(self) -> "StorageConfig":
        _check_backend(self.backend, self.dsn)
        if self.share_expiry_days > self.share_max_expiry_days:
            raise ValueError(f"share_expiry_days ({self.share_expiry_days}) is longer than share_max_expiry_days "
                             f"({self.share_max_expiry_days})")
        return self

    def root(self, data_dir: Path) -> Path:
        return _under(data_dir, self.root_dir)

    def metadata_dir(self, data_dir: Path) -> Path:
        return _under(data_dir, "lsfs")  # resolved, as mount paths are, so that comparing them means something

    def blobs(self, data_dir: Path) -> Path:
        return _under(data_dir, self.blob_dir) if self.blob_dir else self.metadata_dir(data_dir) / "blobs"

    def mountable(self, data_dir: Path) -> list[Path]:
        return [_under(data_dir, path) for path in self.mount_roots or [self.root_dir]]


class MemoryConfig(_Section):
    """The AIOS ``memory`` section (``provider``, ``auto_inject``, ``auto_extract``, ``relevance_threshold``,
    ``max_injected_memories``, ``max_memory_tokens``, and the settings of providers this kernel does not have)
    and ours beside it."""

    provider: str = Field(default="in-house", description="AIOS's memory provider; this kernel's is in-house "
                          "(SQLite, or PostgreSQL with backend: postgres)")
    backend: Literal["sqlite", "postgres"] = "sqlite"
    dsn: str | None = Field(default=None, min_length=1, repr=False, description="postgres: the connection string")
    auto_inject: StrictBool = Field(default=False, description="add an agent's relevant memories to its chat calls")
    auto_extract: StrictBool = Field(default=False, description="keep each chat exchange as a memory of its agent")
    relevance_threshold: _Float = Field(default=0.3, ge=-1, le=1, description="auto_inject: the least cosine "
                                        "similarity to the last user message a memory needs")
    max_injected_memories: _Int = Field(default=5, ge=1, le=100, description="auto_inject: memories per call")
    max_memory_tokens: _Int = Field(default=1500, ge=1, description="auto_inject: about how many tokens they may take")
    agentic_model: str | None = Field(default=None, min_length=1, description="the model agentic memory asks "
                                      "(a name in llms.models); default: the first")
    agentic_neighbors: _Int = Field(default=3, ge=1, le=10, description="nearest memories shown to the model as "
                                    "link candidates")
    agentic_min_similarity: _Float = Field(default=0.3, ge=-1, le=1, description="the least cosine similarity a "
                                           "link candidate needs")
    vector_cache_mb: _Int = Field(default=1024, ge=0, description="sqlite: RAM for copies of large agents' vectors "
                                  "(4,096 notes or more; 1.5 KB each), which make their searches fast; 0 = off")
    # AIOS settings with nothing to do here, accepted so that an AIOS config loads unchanged: writes are committed
    # before their reply (what write_barrier waits for), and the providers they configure are not this kernel's.
    write_barrier: dict[str, Any] | None = None
    mem0: dict[str, Any] | None = None
    zep: dict[str, Any] | None = None
    memory_limit: _Int | None = None
    eviction_k: _Int | None = None
    log_mode: str = "console"

    @field_validator("provider")
    @classmethod
    def _in_house(cls, provider: str) -> str:
        if provider != "in-house":
            raise ValueError(f"{provider!r} is not available in this kernel; its memory is 'in-house' (SQLite, or "
                             "PostgreSQL with memory.backend: postgres)")
        return provider

    @model_validator(mode="after")
    def _consistent(self) -> "MemoryConfig":
        _check_backend(self.backend, self.dsn)
        return self

    def database(self, data_dir: Path) -> Path:
        return data_dir / "memory" / "memory.db"


def _check_backend(backend: str, dsn: str | None) -> None:
    if backend == "postgres" and not dsn:
        raise ValueError("backend 'postgres' needs 'dsn', e.g. postgresql://user@host/db")
    if backend == "sqlite" and dsn is not None:
        raise ValueError("'dsn' is used only with backend: postgres")


def _under(data_dir: Path, path: str) -> Path:
    """``path`` (``~`` expanded) resolved, taken from ``data_dir`` when relative."""
    return Path(os.path.realpath(data_dir / Path(path).expanduser()))


_McpName = Annotated[str, _matching(re.compile(r"[A-Za-z0-9_.-]+"), "letters, digits, _ . - (it names the "
                                     "server's tools: <name>/<tool>)")]


class McpServerConfig(_Section):
    """An MCP server the kernel starts (over stdio) and whose tools it offers as ``<name>/<tool>``."""

    name: _McpName
    command: str = Field(min_length=1, description="the program, e.g. python or npx")
    args: list[str] = Field(default_factory=list)
    env: dict[str, str] = Field(default_factory=dict, description="added to the kernel's environment")
    timeout_s: _Float = Field(default=30.0, gt=0, description="each call of its tools")


class ToolsConfig(_Section):
    builtins: StrictBool = Field(default=True, description="calculator, clocks, units, text statistics, files")
    folders: list[Annotated[str, Field(min_length=1)]] = Field(
        default_factory=list, description="tool folders (AIOS layout), or folders holding them; relative paths "
        "start at the current directory")
    entry_points: StrictBool = Field(default=True, description="tools of installed packages (group aios.tools)")
    mcp_servers: list[McpServerConfig] = Field(default_factory=list)
    default_timeout_s: _Float = Field(default=30.0, gt=0, description="a call of a tool that sets none")
    max_threads: _Int = Field(default=16, ge=1, le=1024, description="tool calls running on threads at once")

    @field_validator("mcp_servers")
    @classmethod
    def _unique_servers(cls, servers: list[McpServerConfig]) -> list[McpServerConfig]:
        _unique([server.name for server in servers], "MCP server names")
        return servers


class ConfirmConfig(_Section):
    """Which irreversible operations wait for a person's approval, and how it is given."""

    mode: Literal["off", "ask", "auto_approve", "auto_deny"] = Field(
        default="off", description="ask: wait for `aios approvals` or POST /access/approvals/{id}")
    timeout_s: _Float = Field(default=60.0, gt=0, description="an unanswered request is denied after this")
    operations: list[Literal["rollback", "delete", "share", "remove_memory"]] = Field(
        default_factory=lambda: ["rollback", "delete", "share", "remove_memory"], description="storage and memory "
        "operations asked about; tools marked requires_confirmation always are")

    def asking(self) -> frozenset[str]:
        """The operations that wait for a person's approval: none while ``mode`` is off."""
        return frozenset(self.operations) if self.mode != "off" else frozenset()


class AccessConfig(_Section):
    auth: Literal["auto", "required", "off"] = Field(
        default="auto", description="bearer tokens on the HTTP API: auto = required unless bound to loopback "
        "(and a non-loopback host then needs auth set explicitly)")
    groups: dict[Annotated[str, Field(min_length=1)], list[Annotated[str, Field(min_length=1)]]] = Field(
        default_factory=dict, description="privilege groups: {group: [agent, ...]}")
    restricted_tools: list[Annotated[str, Field(min_length=1)]] = Field(
        default_factory=list, description="tools only agents or groups granted `call` on tool:<name> may call "
        "(author/name; the spelling models see, author__name, is taken too); each must be a tool the kernel has")
    confirm: ConfirmConfig = ConfirmConfig()

    @field_validator("restricted_tools")
    @classmethod
    def _tool_names(cls, names: list[str]) -> list[str]:
        """Each as the kernel names tools: a name it does not match would leave that tool open to every agent."""
        canonical = [name.replace("__", "/") for name in names]
        for name, written in zip(canonical, names):
            author, _, tool = name.partition("/")
            if not (author and tool) or "/" in tool:
                raise ValueError(f"{written!r} names no tool: write author/name, as `aios tools` lists them")
        return canonical


# The kernel's environment variables an agent's process gets by default: what programs need to run (paths, the
# locale, proxies, certificates, thread counts), no secrets. A provider's API key is not among them.
AGENT_ENV = ("PATH", "HOME", "USER", "LOGNAME", "SHELL", "LANG", "LANGUAGE", "LC_*", "TZ", "TERM", "PYTHON*",
             "VIRTUAL_ENV", "LD_LIBRARY_PATH", "*_proxy", "*_PROXY", "SSL_CERT_*", "REQUESTS_CA_BUNDLE",
             "CURL_CA_BUNDLE", "CUDA_VISIBLE_DEVICES", "OMP_*", "GOMP_SPINCOUNT", "MKL_NUM_THREADS", "HF_HUB_OFFLINE",
             "TRANSFORMERS_OFFLINE", "HF_HOME", "HF_HUB_CACHE", "TRANSFORMERS_CACHE", "TMPDIR", "XDG_*")


class AgentsConfig(_Section):
    """Agents the kernel runs as processes (``/agents/submit``, ``aios run-agent``) and the local hub."""

    time_limit_s: _Float = Field(default=600.0, gt=0, le=7 * 24 * 3600, description="wall-clock limit of a run; "
                                 "a submission may ask for less")
    max_concurrent: _Int = Field(default=32, ge=1, le=4096, description="agent processes at once; more wait")
    hub_max_package_mb: _Float = Field(default=20.0, gt=0, le=4096, description="an uploaded package's files, "
                                       "decoded, and an unpacked archive")
    python: str | None = Field(default=None, min_length=1, description="the interpreter agents run with (one "
                               "that has the AIOS SDK, cerebrum, for AIOS agents); default: the kernel's own")
    max_log_mb: _Float = Field(default=16.0, gt=0, le=1024 * 1024, description="what a run keeps of its stdout "
                               "and of its stderr, each: the start, and the last 256 KB; the middle is dropped")
    keep_runs: _Int | None = Field(default=10_000, ge=1, description="ended runs whose folders are kept, those "
                                   "that ended last; older ones are deleted. null keeps every run")
    sandbox: Literal["auto", "required", "off"] = Field(
        default="auto", description="confine each agent's process (Linux Landlock): it reads the system's and Python's "
        "files and its package, writes only in its own folder (work/ in its run folder), and cannot reach the data "
        "folder. auto: where the system has Landlock (else its stderr says it runs unconfined); required: a run that "
        "cannot be confined fails; off: agents can do on disk what the kernel's user can")
    env: list[Annotated[str, Field(pattern=r"^[A-Za-z0-9_*]+$")]] = Field(
        default_factory=lambda: list(AGENT_ENV), description="the kernel's environment variables an agent gets: "
        "names, where * stands for any characters (['*']: all of them); the others, API keys among them, stay with "
        "the kernel. AIOS_* and CEREBRUM_* never pass: the kernel sets the agent's own")


class Config(_Section):
    llms: LLMsConfig = LLMsConfig()
    scheduler: SchedulerConfig = SchedulerConfig()
    server: ServerConfig = ServerConfig()
    storage: StorageConfig = StorageConfig()
    tools: ToolsConfig = ToolsConfig()
    access: AccessConfig = AccessConfig()
    memory: MemoryConfig = MemoryConfig()
    agents: AgentsConfig = AgentsConfig()
    # AIOS sections kept for compatibility; their subsystems read them when they exist.
    api_keys: dict[str, Any] = Field(default_factory=dict)
    agent_factory: dict[str, Any] = Field(default_factory=dict)
    data_dir: Path = Field(default_factory=lambda: default_data_dir(), validate_default=True)

    @model_validator(mode="after")
    def _context_manager_selects_round_robin(self) -> "Config":
        # AIOS's switch for preemptive scheduling; an explicit scheduler.policy wins over it.
        if self.llms.use_context_manager and "policy" not in self.scheduler.model_fields_set:
            object.__setattr__(self, "scheduler", self.scheduler.model_copy(update={"policy": "rr"}))
        return self

    @model_validator(mode="after")
    def _agentic_model_is_configured(self) -> "Config":
        names = [model.name for model in self.llms.models]
        if self.memory.agentic_model is not None and self.memory.agentic_model not in names:
            raise ValueError(f"memory.agentic_model {self.memory.agentic_model!r} is not in llms.models "
                             f"({', '.join(names)})")
        return self

    @field_validator("data_dir", mode="before")
    @classmethod
    def _data_dir_given(cls, value: Any) -> Any:
        # Path("") is the current directory: an empty value is a mistake, not a request for ".".
        if isinstance(value, str) and not value.strip():
            raise ValueError("must not be empty")
        return value

    @field_validator("data_dir")
    @classmethod
    def _data_dir_absolute(cls, value: Path) -> Path:
        # Agents' processes start in their run folders, where a relative data dir would name another place.
        return value.expanduser().absolute()


def default_data_dir() -> Path:
    from platformdirs import user_data_dir

    return Path(user_data_dir("aios", appauthor=False))


def load_config(path: str | os.PathLike[str] | None = None, env: Mapping[str, str] | None = None,
                check_providers: bool = False) -> Config:
    """Build the config from ``path`` (else ``$AIOS_CONFIG``, else defaults) and environment overrides.

    Raises :class:`ConfigError` with one line naming the file, the field and the problem. ``check_providers``
    (a kernel about to start): a backend that is none of ours must be a LiteLLM provider, which takes importing
    LiteLLM (seconds), so only what serves the models checks it; elsewhere the model's start refuses it.
    """
    env = os.environ if env is None else env
    path = path or env.get("AIOS_CONFIG") or None
    raw: dict[str, Any] = _read_yaml(Path(path)) if path else {}
    if env.get("AIOS_DATA_DIR"):
        raw["data_dir"] = env["AIOS_DATA_DIR"]
    if env.get("OPENAI_API_KEY") and isinstance(raw.get("api_keys", {}), dict):
        raw["api_keys"] = {**raw.get("api_keys", {}), "openai": env["OPENAI_API_KEY"]}
    where = str(path) if path else "config"
    try:
        config = Config.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(f"{where}: {_first_problem(exc)}") from None
    for index, model in enumerate(config.llms.models if check_providers else []):
        if model.backend not in OPENAI_COMPATIBLE | {"huggingface"}:
            from aios.llm.litellm_backend import provider_problem

            problem = provider_problem(model.backend)
            if problem is not None:
                raise ConfigError(f"{where}: llms.models.{index}.backend: {problem}")
    return config


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (bad byte at offset {exc.start}); save it as UTF-8") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config file: {exc.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f" (line {mark.line + 1})" if mark else ""
        raise ConfigError(f"{path}: not valid YAML{line}: {getattr(exc, 'problem', exc)}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections, got {type(data).__name__}")
    return data


def _first_problem(exc: ValidationError) -> str:
    error = exc.errors()[0]
    field = ".".join(str(part) for part in error["loc"]) or "(top level)"
    message = error["msg"]
    if error["type"] == "extra_forbidden":
        message = "unknown field (check the spelling; see docs/config.md)"
    more = len(exc.errors()) - 1
    return f"{field}: {message}" + (f" (and {more} more problem{'s' * (more > 1)})" if more else "")
