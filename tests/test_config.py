"""Config loading: defaults with no file, the AIOS layout, environment overrides, and one clear line per error."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from aios.config import EMBEDDED_MODEL, Config, load_config
from aios.errors import ConfigError


def write(tmp_path: Path, text: str | bytes) -> Path:
    path = tmp_path / "config.yaml"
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def test_no_file_runs_the_embedded_model_on_loopback(tmp_path: Path) -> None:
    config = load_config(env={"AIOS_DATA_DIR": str(tmp_path)})
    assert [m.name for m in config.llms.models] == [EMBEDDED_MODEL]
    assert config.llms.models[0].backend == "huggingface"
    assert (config.server.host, config.server.port) == ("127.0.0.1", 8000)
    assert config.data_dir == tmp_path and config.scheduler.policy == "fifo"


def test_an_aios_config_file_loads_with_its_other_sections_kept(tmp_path: Path) -> None:
    path = write(tmp_path, """
api_keys: {openai: ""}
llms:
  models:
    - name: "HuggingFaceTB/SmolLM2-135M-Instruct"
      backend: "huggingface"
      max_gpu_memory: {0: "24GB"}
      eval_device: "cuda:0"
  log_mode: console
  use_context_manager: false
memory: {log_mode: console}
storage: {root_dir: root, use_vector_db: true}
server: {host: 0.0.0.0, port: 9001}
""")
    config = load_config(path, env={})
    model = config.llms.models[0]
    assert model.max_gpu_memory == {0: "24GB"} and model.eval_device == "cuda:0"
    assert (config.server.host, config.server.port) == ("0.0.0.0", 9001)
    assert config.storage.root_dir == "root" and config.storage.use_vector_db is True
    assert config.storage.root(config.data_dir) == (config.data_dir / "root").resolve()


def test_aios_config_and_data_dir_come_from_the_environment(tmp_path: Path) -> None:
    path = write(tmp_path, "server: {port: 8123}\n")
    config = load_config(env={"AIOS_CONFIG": str(path), "AIOS_DATA_DIR": str(tmp_path / "d")})
    assert config.server.port == 8123 and config.data_dir == tmp_path / "d"


def test_a_relative_data_dir_is_taken_from_the_current_directory_once(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """Agents' processes start in their own folders: a data dir left relative would name another place there."""
    monkeypatch.chdir(tmp_path)
    assert load_config(env={"AIOS_DATA_DIR": "data"}).data_dir == tmp_path / "data"
    assert Config(data_dir="data").data_dir == tmp_path / "data"  # a config made in code, too


def test_use_context_manager_selects_round_robin_unless_a_policy_is_given(tmp_path: Path) -> None:
    assert load_config(write(tmp_path, "llms: {use_context_manager: true}\n"), env={}).scheduler.policy == "rr"
    both = "llms: {use_context_manager: true}\nscheduler: {policy: priority}\n"
    assert load_config(write(tmp_path, both), env={}).scheduler.policy == "priority"


def test_routing_settings_and_litellm_providers_load(tmp_path: Path) -> None:
    text = ("llms:\n  models: [{name: claude-x, backend: anthropic, cost: 3}, {name: m}]\n"
            "  router: {strategy: smart, sticky: true, smart_threshold: 0.6, smart_min_samples: 2}\n")
    llms = load_config(write(tmp_path, text), env={}).llms
    assert (llms.models[0].backend, llms.models[0].cost, llms.models[1].cost) == ("anthropic", 3.0, None)
    assert llms.router.model_dump(exclude_none=True) == {"strategy": "smart", "sticky": True, "smart_threshold": 0.6,
                                                         "smart_min_samples": 2}


def test_an_empty_file_means_defaults(tmp_path: Path) -> None:
    assert load_config(write(tmp_path, ""), env={}).server.port == 8000


def test_prefill_chunk_is_left_to_the_engine_unless_given(tmp_path: Path) -> None:
    """Unset or null, the engine picks it by device (512 on a CPU, 4096 on a GPU); 0 still means whole prompts."""
    path = write(tmp_path, "llms: {models: [{name: a}, {name: b, prefill_chunk: null}, {name: c, prefill_chunk: 0}]}\n")
    assert [m.prefill_chunk for m in load_config(path, env={}).llms.models] == [None, None, 0]



def test_agent_runs_are_kept_10000_at_a_time_unless_null_keeps_them_all(tmp_path: Path) -> None:
    assert load_config(write(tmp_path, ""), env={}).agents.keep_runs == 10_000
    # the spelling models see, taken as the kernel names the tool
    assert load_config(write(tmp_path, "access: {restricted_tools: [aios__delete_file]}\n"), env={}
                       ).access.restricted_tools == ["aios/delete_file"]
    assert load_config(write(tmp_path, "agents: {keep_runs: null, max_log_mb: 0.5}\n"), env={}).agents.keep_runs is None


BAD_CONFIGS = [
    ("missing-file", None, "config file not found"),
    ("not-yaml", "llms: [unclosed\n", "not valid YAML (line 2)"),
    ("top-level-list", "- a\n- b\n", "the top level must be a mapping"),
    ("unknown-section", "sever: {port: 1}\n", "sever: unknown field"),
    ("typo-in-model", "llms: {models: [{name: m, backnd: huggingface}]}\n", "llms.models.0.backnd: unknown field"),
    ("backend-not-a-provider-name", "llms: {models: [{name: m, backend: Gemini Pro}]}\n", "llms.models.0.backend: Value error, must be huggingface, openai, vllm, sglang, ollama or a LiteLLM provider name such as anthropic (lowercase letters, digits, _), not 'Gemini Pro'"),
    ("negative-cost", "llms: {models: [{name: m, cost: -1}]}\n", "llms.models.0.cost: Input should be greater than or equal to 0"),
    ("cost-as-text", "llms: {models: [{name: m, cost: cheap}]}\n", "llms.models.0.cost: Input should be a valid number"),
    ("unknown-strategy", "llms: {router: {strategy: random}}\n", "llms.router.strategy: Input should be 'sequential', 'least_loaded' or 'smart'"),
    ("sticky-not-bool", "llms: {router: {sticky: 'yes'}}\n", "llms.router.sticky: Input should be a valid boolean"),
    ("threshold-above-one", "llms: {router: {smart_threshold: 1.5}}\n", "llms.router.smart_threshold: Input should be less than or equal to 1"),
    ("min-samples-zero", "llms: {router: {smart_min_samples: 0}}\n", "llms.router.smart_min_samples: Input should be greater than or equal to 1"),
    ("router-typo", "llms: {router: {stratgy: smart}}\n", "llms.router.stratgy: unknown field"),
    ("api-backend-without-hostname", "llms: {models: [{name: m, backend: vllm}]}\n", "llms.models.0: Value error, backend 'vllm' needs 'hostname'"),
    ("hostname-not-url", "llms: {models: [{name: m, backend: ollama, hostname: 'localhost:11434'}]}\n", "llms.models.0.hostname: Value error, must be an http(s) URL"),
    ("local-setting-on-api-model", "llms: {models: [{name: m, backend: openai, max_batch: 4}]}\n", "llms.models.0: Value error, backend 'openai' does not use max_batch (local models only)"),
    ("api-key-number", "llms: {models: [{name: m, backend: openai, api_key: 12}]}\n", "llms.models.0.api_key: Input should be a valid string"),
    ("empty-models", "llms: {models: []}\n", "llms.models: List should have at least 1 item"),
    ("model-without-name", "llms: {models: [{backend: huggingface}]}\n", "llms.models.0.name: Field required"),
    ("duplicate-names", "llms: {models: [{name: m}, {name: m}]}\n", "model names must be unique; repeated: m"),
    ("bad-device", "llms: {models: [{name: m, eval_device: gpu}]}\n", "llms.models.0.eval_device: Value error, must be 'cpu'"),
    ("zero-max-batch", "llms: {models: [{name: m, max_batch: 0}]}\n", "llms.models.0.max_batch: Input should be greater than or equal to 1"),
    ("port-too-big", "server: {port: 70000}\n", "server.port: Input should be less than or equal to 65535"),
    ("port-not-number", "server: {port: eighty}\n", "server.port: Input should be a valid integer"),
    ("tools-folders-not-list", "tools: {folders: docs}\n", "tools.folders: Input should be a valid list"),
    ("tools-empty-folder", "tools: {folders: ['']}\n", "tools.folders.0: String should have at least 1 character"),
    ("tools-builtins-string", "tools: {builtins: 'yes'}\n", "tools.builtins: Input should be a valid boolean"),
    ("tools-zero-timeout", "tools: {default_timeout_s: 0}\n", "tools.default_timeout_s: Input should be greater than 0"),
    ("tools-zero-threads", "tools: {max_threads: 0}\n", "tools.max_threads: Input should be greater than or equal to 1"),
    ("tools-typo", "tools: {mcp_server: []}\n", "tools.mcp_server: unknown field"),
    ("mcp-without-command", "tools: {mcp_servers: [{name: fs}]}\n", "tools.mcp_servers.0.command: Field required"),
    ("mcp-bad-name", "tools: {mcp_servers: [{name: 'my server', command: x}]}\n",
     "tools.mcp_servers.0.name: Value error, must be letters, digits, _ . -"),
    ("mcp-args-not-list", "tools: {mcp_servers: [{name: fs, command: x, args: '-y'}]}\n",
     "tools.mcp_servers.0.args: Input should be a valid list"),
    ("mcp-duplicate-names", "tools: {mcp_servers: [{name: fs, command: x}, {name: fs, command: y}]}\n",
     "tools.mcp_servers: Value error, MCP server names must be unique; repeated: fs"),
    ("mcp-zero-timeout", "tools: {mcp_servers: [{name: fs, command: x, timeout_s: 0}]}\n",
     "tools.mcp_servers.0.timeout_s: Input should be greater than 0"),
    ("access-auth-unknown", "access: {auth: maybe}\n", "access.auth: Input should be 'auto', 'required' or 'off'"),
    ("access-groups-not-map", "access: {groups: [team]}\n", "access.groups: Input should be a valid dictionary"),
    ("access-group-members-not-list", "access: {groups: {team: alice}}\n", "access.groups.team: Input should be a valid list"),
    ("access-restricted-not-list", "access: {restricted_tools: aios/calculator}\n",
     "access.restricted_tools: Input should be a valid list"),
    ("access-restricted-no-author", "access: {restricted_tools: [calculator]}\n",
     "access.restricted_tools: Value error, 'calculator' names no tool: write author/name"),
    ("access-restricted-too-deep", "access: {restricted_tools: [a/b/c]}\n",
     "access.restricted_tools: Value error, 'a/b/c' names no tool"),
    ("confirm-mode-unknown", "access: {confirm: {mode: sometimes}}\n",
     "access.confirm.mode: Input should be 'off', 'ask', 'auto_approve' or 'auto_deny'"),
    ("confirm-zero-timeout", "access: {confirm: {timeout_s: 0}}\n", "access.confirm.timeout_s: Input should be greater than 0"),
    ("confirm-unknown-operation", "access: {confirm: {operations: [format]}}\n",
     "access.confirm.operations.0: Input should be 'rollback', 'delete', 'share' or 'remove_memory'"),
    ("access-typo", "access: {authentication: off}\n", "access.authentication: unknown field"),
    ("max-body-zero", "server: {max_body_mb: 0}\n", "server.max_body_mb: Input should be greater than 0"),
    ("max-body-negative", "server: {max_body_mb: -8}\n", "server.max_body_mb: Input should be greater than 0"),
    ("max-body-huge", "server: {max_body_mb: 5000}\n", "server.max_body_mb: Input should be less than or equal to 1024"),
    ("max-body-quoted", 'server: {max_body_mb: "8"}\n', "server.max_body_mb: Input should be a valid number, not the quoted string '8'"),
    ("max-body-bool", "server: {max_body_mb: true}\n", "server.max_body_mb: Input should be a valid number, not a boolean"),
    ("max-body-inf", "server: {max_body_mb: .inf}\n", "server.max_body_mb: Input should be less than or equal to 1024"),
    ("unknown-policy", "scheduler: {policy: lottery}\n", "scheduler.policy: Input should be 'fifo', 'rr' or 'priority'"),
    ("zero-quantum", "scheduler: {quantum_tokens: 0}\n", "scheduler.quantum_tokens: Input should be greater than or equal to 1"),
    ("negative-aging", "scheduler: {aging: -1}\n", "scheduler.aging: Input should be greater than or equal to 0"),
    ("negative-snapshot-ram", "scheduler: {snapshot_ram_mb: -5}\n", "scheduler.snapshot_ram_mb"),
    ("zero-kv-budget", "llms: {models: [{name: m, kv_budget_mb: 0}]}\n", "llms.models.0.kv_budget_mb"),
    ("negative-prefix-cache", "llms: {models: [{name: m, prefix_cache_mb: -1}]}\n", "llms.models.0.prefix_cache_mb"),
    ("negative-prefill-chunk", "llms: {models: [{name: m, prefill_chunk: -1}]}\n",
     "llms.models.0.prefill_chunk: Input should be greater than or equal to 0"),
    ("prefill-chunk-quoted", 'llms: {models: [{name: m, prefill_chunk: "64"}]}\n',
     "llms.models.0.prefill_chunk: Input should be a valid integer, not the quoted string '64'"),
    ("kv-classes-word", "llms: {models: [{name: m, kv_classes: yes please}]}\n",
     "llms.models.0.kv_classes: Input should be a valid boolean"),
    ("kv-classes-number", "llms: {models: [{name: m, kv_classes: 1}]}\n",
     "llms.models.0.kv_classes: Input should be a valid boolean"),
    ("kv-classes-on-api-model", "llms: {models: [{name: gpt-4o, backend: openai, kv_classes: true}]}\n",
     "does not use kv_classes (local models only)"),
    ("unknown-weights", "llms: {models: [{name: m, weights: fp8}]}\n",
     "llms.models.0.weights: Input should be 'native', 'bf16', 'int8' or 'int4'"),
    ("weights-bool", "llms: {models: [{name: m, weights: true}]}\n",
     "llms.models.0.weights: Input should be 'native', 'bf16', 'int8' or 'int4'"),
    ("weights-on-api-model", "llms: {models: [{name: gpt-4o, backend: openai, weights: int8}]}\n",
     "does not use weights (local models only)"),
    ("not-utf8", b"server: {host: caf\xe9}\n", "not UTF-8 text"),
    ("port-bool", "server: {port: true}\n", "server.port: Input should be a valid integer, not a boolean"),
    ("port-quoted", 'server: {port: "8000"}\n', "server.port: Input should be a valid integer, not the quoted string '8000'"),
    ("port-fractional", "server: {port: 8000.0}\n", "server.port: Input should be a valid integer, not 8000.0"),
    ("max-batch-bool", "llms: {models: [{name: m, max_batch: true}]}\n", "llms.models.0.max_batch: Input should be a valid integer, not a boolean"),
    ("quantum-quoted", 'scheduler: {quantum_tokens: "8"}\n', "scheduler.quantum_tokens: Input should be a valid integer, not the quoted string '8'"),
    ("snapshot-ram-bool", "scheduler: {snapshot_ram_mb: false}\n", "scheduler.snapshot_ram_mb: Input should be a valid integer, not a boolean"),
    ("aging-inf", "scheduler: {aging: .inf}\n", "scheduler.aging: Input should be a finite number"),
    ("aging-nan", "scheduler: {aging: .nan}\n", "scheduler.aging: Input should be"),
    ("aging-bool", "scheduler: {aging: true}\n", "scheduler.aging: Input should be a valid number, not a boolean"),
    ("aging-quoted", 'scheduler: {aging: "0.5"}\n', "scheduler.aging: Input should be a valid number, not the quoted string '0.5'"),
    ("context-manager-string", 'llms: {use_context_manager: "true"}\n', "llms.use_context_manager: Input should be a valid boolean"),
    ("context-manager-int", "llms: {use_context_manager: 1}\n", "llms.use_context_manager: Input should be a valid boolean"),
    ("empty-data-dir", "data_dir: ''\n", "data_dir: Value error, must not be empty"),
    ("device-cuda-banana", "llms: {models: [{name: m, eval_device: 'cuda:banana'}]}\n", "llms.models.0.eval_device: Value error, must be 'cpu'"),
    ("device-cuda-empty-index", "llms: {models: [{name: m, eval_device: 'cuda:'}]}\n", "llms.models.0.eval_device"),
    ("gpu-key-name", "llms: {models: [{name: m, max_gpu_memory: {gpu0: 24GB}}]}\n", "llms.models.0.max_gpu_memory: Value error, keys must be GPU indices"),
    ("gpu-key-bool", "llms: {models: [{name: m, max_gpu_memory: {true: 24GB}}]}\n", "llms.models.0.max_gpu_memory: Value error, keys must be GPU indices"),
    ("gpu-key-negative", "llms: {models: [{name: m, max_gpu_memory: {-1: 24GB}}]}\n", "llms.models.0.max_gpu_memory: Value error, keys must be GPU indices"),
    ("gpu-size-no-unit", "llms: {models: [{name: m, max_gpu_memory: {0: 24}}]}\n", "llms.models.0.max_gpu_memory: Value error, limits must be sizes"),
    ("gpu-size-words", "llms: {models: [{name: m, max_gpu_memory: {0: lots}}]}\n", "llms.models.0.max_gpu_memory: Value error, limits must be sizes"),
    ("unknown-structured-output", "llms: {models: [{name: m, structured_output: regex}]}\n", "llms.models.0.structured_output: Input should be 'grammar' or 'prompt'"),
    ("structured-output-bool", "llms: {models: [{name: m, structured_output: true}]}\n", "llms.models.0.structured_output: Input should be 'grammar' or 'prompt'"),
    ("gpu-not-mapping", "llms: {models: [{name: m, max_gpu_memory: [24GB]}]}\n", "llms.models.0.max_gpu_memory: Input should be a valid dictionary"),
    ("storage-not-mapping", "storage: root\n", "storage: Input should be a valid dictionary"),
    ("storage-unknown-field", "storage: {root_dri: x}\n", "storage.root_dri: unknown field"),
    ("storage-empty-root", "storage: {root_dir: ''}\n", "storage.root_dir: String should have at least 1 character"),
    ("storage-root-number", "storage: {root_dir: 5}\n", "storage.root_dir: Input should be a valid string"),
    ("storage-vector-db-string", "storage: {use_vector_db: 'yes'}\n", "storage.use_vector_db: Input should be a valid boolean"),
    ("storage-unknown-backend", "storage: {backend: redis}\n", "storage.backend: Input should be 'sqlite' or 'postgres'"),
    ("storage-postgres-without-dsn", "storage: {backend: postgres}\n", "storage: Value error, backend 'postgres' needs 'dsn'"),
    ("storage-dsn-with-sqlite", "storage: {dsn: 'postgresql://x/y'}\n", "storage: Value error, 'dsn' is used only with backend: postgres"),
    ("storage-empty-dsn", "storage: {backend: postgres, dsn: ''}\n", "storage.dsn: String should have at least 1 character"),
    ("storage-zero-file-size", "storage: {max_file_mb: 0}\n", "storage.max_file_mb: Input should be greater than 0"),
    ("storage-huge-file-size", "storage: {max_file_mb: 5000}\n", "storage.max_file_mb: Input should be less than or equal to 1024"),
    ("storage-file-size-quoted", 'storage: {max_file_mb: "16"}\n', "storage.max_file_mb: Input should be a valid number, not the quoted string '16'"),
    ("storage-negative-expiry", "storage: {share_expiry_days: -1}\n", "storage.share_expiry_days: Input should be greater than 0"),
    ("storage-expiry-over-max", "storage: {share_expiry_days: 30, share_max_expiry_days: 7}\n", "storage: Value error, share_expiry_days (30.0) is longer than share_max_expiry_days (7.0)"),
    ("storage-expiry-bool", "storage: {share_expiry_days: true}\n", "storage.share_expiry_days: Input should be a valid number, not a boolean"),
    ("storage-public-url-not-url", "storage: {public_url: 'kernel.example'}\n", "storage.public_url: Value error, must be an http(s) URL"),
    ("storage-mount-roots-empty", "storage: {mount_roots: []}\n", "storage.mount_roots: List should have at least 1 item"),
    ("storage-mount-roots-string", "storage: {mount_roots: /srv}\n", "storage.mount_roots: Input should be a valid list"),
    ("storage-mount-root-empty", "storage: {mount_roots: ['']}\n", "storage.mount_roots.0: String should have at least 1 character"),
    ("storage-blob-dir-empty", "storage: {blob_dir: ''}\n", "storage.blob_dir: String should have at least 1 character"),
    ("storage-max-calls-zero", "storage: {operate_file_max_calls: 0}\n", "storage.operate_file_max_calls: Input should be greater than or equal to 1"),
    ("storage-max-calls-float", "storage: {operate_file_max_calls: 2.0}\n", "storage.operate_file_max_calls: Input should be a valid integer, not 2.0"),
    ("memory-not-mapping", "memory: sqlite\n", "memory: Input should be a valid dictionary"),
    ("memory-unknown-field", "memory: {auto_injct: true}\n", "memory.auto_injct: unknown field"),
    ("memory-provider-mem0", "memory: {provider: mem0}\n", "memory.provider: Value error, 'mem0' is not available in this kernel; its memory is 'in-house'"),
    ("memory-provider-zep", "memory: {provider: zep}\n", "memory.provider: Value error, 'zep' is not available"),
    ("memory-unknown-backend", "memory: {backend: chroma}\n", "memory.backend: Input should be 'sqlite' or 'postgres'"),
    ("memory-postgres-without-dsn", "memory: {backend: postgres}\n", "memory: Value error, backend 'postgres' needs 'dsn'"),
    ("memory-dsn-with-sqlite", "memory: {dsn: 'postgresql://x/y'}\n", "memory: Value error, 'dsn' is used only with backend: postgres"),
    ("memory-inject-string", "memory: {auto_inject: 'yes'}\n", "memory.auto_inject: Input should be a valid boolean"),
    ("memory-extract-number", "memory: {auto_extract: 1}\n", "memory.auto_extract: Input should be a valid boolean"),
    ("memory-threshold-too-high", "memory: {relevance_threshold: 1.5}\n", "memory.relevance_threshold: Input should be less than or equal to 1"),
    ("memory-threshold-quoted", 'memory: {relevance_threshold: "0.5"}\n', "memory.relevance_threshold: Input should be a valid number, not the quoted string '0.5'"),
    ("memory-injected-zero", "memory: {max_injected_memories: 0}\n", "memory.max_injected_memories: Input should be greater than or equal to 1"),
    ("memory-tokens-float", "memory: {max_memory_tokens: 1500.5}\n", "memory.max_memory_tokens: Input should be a valid integer"),
    ("memory-agentic-model-unknown", "memory: {agentic_model: gpt-9}\n", "memory.agentic_model 'gpt-9' is not in llms.models (HuggingFaceTB/SmolLM2-135M-Instruct)"),
    ("memory-neighbours-zero", "memory: {agentic_neighbors: 0}\n", "memory.agentic_neighbors: Input should be greater than or equal to 1"),
    ("memory-neighbours-many", "memory: {agentic_neighbors: 50}\n", "memory.agentic_neighbors: Input should be less than or equal to 10"),
    ("memory-similarity-bool", "memory: {agentic_min_similarity: true}\n", "memory.agentic_min_similarity: Input should be a valid number, not a boolean"),
    ("memory-cache-negative", "memory: {vector_cache_mb: -1}\n", "memory.vector_cache_mb: Input should be greater than or equal to 0"),
    ("agents-zero-limit", "agents: {time_limit_s: 0}\n", "agents.time_limit_s: Input should be greater than 0"),
    ("agents-limit-text", "agents: {time_limit_s: ten}\n", "agents.time_limit_s: Input should be a valid number"),
    ("agents-limit-quoted", "agents: {time_limit_s: '60'}\n", "agents.time_limit_s: Input should be a valid number, "
     "not the quoted string '60'"),
    ("agents-limit-past-a-week", "agents: {time_limit_s: 1000000}\n", "agents.time_limit_s: Input should be less than or "
     "equal to 604800"),
    ("agents-zero-concurrent", "agents: {max_concurrent: 0}\n", "agents.max_concurrent: Input should be greater than "
     "or equal to 1"),
    ("agents-concurrent-float", "agents: {max_concurrent: 2.5}\n", "agents.max_concurrent: Input should be a valid integer"),
    ("agents-negative-hub-size", "agents: {hub_max_package_mb: -1}\n", "agents.hub_max_package_mb: Input should be "
     "greater than 0"),
    ("agents-empty-python", "agents: {python: ''}\n", "agents.python: String should have at least 1 character"),
    ("agents-zero-log", "agents: {max_log_mb: 0}\n", "agents.max_log_mb: Input should be greater than 0"),
    ("agents-log-text", "agents: {max_log_mb: lots}\n", "agents.max_log_mb: Input should be a valid number"),
    ("agents-log-past-a-terabyte", "agents: {max_log_mb: 2000000}\n", "agents.max_log_mb: Input should be less "
     "than or equal to 1048576"),
    ("agents-keep-no-runs", "agents: {keep_runs: 0}\n", "agents.keep_runs: Input should be greater than or equal to 1"),
    ("agents-keep-runs-float", "agents: {keep_runs: 2.5}\n", "agents.keep_runs: Input should be a valid integer"),
    ("agents-keep-runs-text", "agents: {keep_runs: all}\n", "agents.keep_runs: Input should be a valid integer"),
    ("agents-sandbox-yes", "agents: {sandbox: yes}\n", "agents.sandbox: Input should be 'auto', 'required' or 'off'"),
    ("agents-sandbox-unknown", "agents: {sandbox: strict}\n",
     "agents.sandbox: Input should be 'auto', 'required' or 'off'"),
    ("agents-env-not-a-list", "agents: {env: PATH}\n", "agents.env: Input should be a valid list"),
    ("agents-env-empty-name", "agents: {env: ['']}\n", "agents.env.0: String should match pattern"),
    ("agents-env-assignment", "agents: {env: ['KEY=value']}\n", "agents.env.0: String should match pattern"),
    ("agents-env-number", "agents: {env: [7]}\n", "agents.env.0: Input should be a valid string"),
    ("agents-typo", "agents: {time_limit: 5}\n", "agents.time_limit: unknown field"),
    ("memory-write-barrier-list", "memory: {write_barrier: [on]}\n", "memory.write_barrier: Input should be a valid dictionary"),
]


@pytest.mark.parametrize(("text", "expected"), [(t, e) for _, t, e in BAD_CONFIGS], ids=[i for i, _, _ in BAD_CONFIGS])
def test_a_bad_config_is_one_line_naming_file_field_and_problem(
    tmp_path: Path, text: str | bytes | None, expected: str
) -> None:
    path = tmp_path / "config.yaml" if text is None else write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_config(path, env={})
    message = str(caught.value)
    assert expected in message, message
    assert message.startswith(str(path)) and "\n" not in message


def test_gpu_limits_accept_index_strings_and_size_spellings(tmp_path: Path) -> None:
    path = write(tmp_path, 'llms: {models: [{name: m, max_gpu_memory: {0: 24GB, "1": 512mib, 2: 80GiB, 3: "1.5 GB"}}]}\n')
    limits = load_config(path, env={}).llms.models[0].max_gpu_memory
    assert limits == {0: "24GB", 1: "512mib", 2: "80GiB", 3: "1.5 GB"}


def test_numbers_and_booleans_written_plainly_still_load(tmp_path: Path) -> None:
    path = write(tmp_path, "llms: {use_context_manager: yes, models: [{name: m, max_batch: 4, eval_device: cuda:12}]}\n"
                           "scheduler: {quantum_tokens: 8, aging: 2, snapshot_ram_mb: 0}\nserver: {port: 0}\n")
    config = load_config(path, env={})
    assert config.llms.use_context_manager is True and config.llms.models[0].max_batch == 4
    assert config.llms.models[0].eval_device == "cuda:12"
    assert (config.scheduler.quantum_tokens, config.scheduler.aging, config.server.port) == (8, 2.0, 0)


def test_storage_settings_load_and_relative_paths_start_at_the_data_dir(tmp_path: Path) -> None:
    path = write(tmp_path, "storage: {root_dir: agents, backend: postgres, dsn: 'postgresql://u@h/db', "
                           "blob_dir: /srv/blobs, mount_roots: [agents, /srv/projects], max_file_mb: 2.5, "
                           "share_expiry_days: 1, public_url: 'https://kernel.example', use_vector_db: false, "
                           "vector_db_config: {persist: true}, operate_file_max_calls: 3}\n")
    config = load_config(path, env={"AIOS_DATA_DIR": str(tmp_path / "data")})
    storage, data = config.storage, (tmp_path / "data").resolve()
    assert storage.root(config.data_dir) == data / "agents" and storage.blobs(config.data_dir) == Path("/srv/blobs")
    assert storage.mountable(config.data_dir) == [data / "agents", Path("/srv/projects")]
    assert (storage.backend, storage.max_file_mb, storage.use_vector_db) == ("postgres", 2.5, False)
    assert "postgresql" not in repr(storage)  # the DSN may hold a password
    defaults = load_config(env={"AIOS_DATA_DIR": str(tmp_path)}).storage
    assert defaults.root(tmp_path) == (tmp_path / "storage").resolve() and defaults.share_expiry_days == 7


def test_an_aios_memory_section_loads_unchanged_and_ours_beside_it(tmp_path: Path) -> None:
    path = write(tmp_path, """
memory:
  provider: in-house
  auto_extract: true
  auto_inject: true
  relevance_threshold: 0.4
  max_injected_memories: 10
  max_memory_tokens: 2000
  write_barrier: {enabled: true, timeout_ms: 5000}
  mem0: {user_id: default, llm: {provider: ollama}}
  log_mode: console
""")
    memory = load_config(path, env={"AIOS_DATA_DIR": str(tmp_path)}).memory
    assert (memory.auto_extract, memory.auto_inject, memory.relevance_threshold) == (True, True, 0.4)
    assert (memory.max_injected_memories, memory.max_memory_tokens, memory.backend) == (10, 2000, "sqlite")
    assert memory.database(tmp_path) == tmp_path / "memory" / "memory.db"
    ours = write(tmp_path, "memory: {backend: postgres, dsn: 'postgresql://u:secret@h/db', agentic_neighbors: 5, "
                           "agentic_model: m, agentic_min_similarity: 0.2}\nllms: {models: [{name: m}]}\n")
    memory = load_config(ours, env={}).memory
    assert (memory.backend, memory.agentic_neighbors, memory.agentic_model) == ("postgres", 5, "m")
    assert "secret" not in repr(memory)
    defaults = load_config(env={}).memory
    assert (defaults.auto_inject, defaults.auto_extract, defaults.agentic_neighbors) == (False, False, 3)


def test_aios_serve_with_a_bad_config_stops_with_one_line(tmp_path: Path) -> None:
    path = write(tmp_path, "server: {port: eighty}\n")
    result = subprocess.run([sys.executable, "-m", "aios", "serve", "--config", str(path)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip() == f"aios: {path}: server.port: Input should be a valid integer, unable to parse string as an integer"
    assert result.stdout == ""
