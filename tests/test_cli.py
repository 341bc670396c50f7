"""The ``aios`` command as a user runs it: demo, chat, serve and prepare; every command's help; the administrator's
commands when the kernel is out of reach or refuses."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from aios import cli
from conftest import KernelProcess, data_dir_of_its_own


def aios(*args: str, data_dir: Path, stdin: str | None = None, extra_env: dict[str, str] | None = None,
         timeout: int = 600) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "AIOS_DATA_DIR": str(data_dir), "COLUMNS": "200", **(extra_env or {})}
    return subprocess.run([sys.executable, "-m", "aios", *args], input=stdin, capture_output=True, text=True,
                          timeout=timeout, env=env)


def test_demo_runs_six_agents_concurrently_and_prints_their_results(backend, data_dir: Path,  # noqa: ANN001
                                                                    tmp_path: Path) -> None:
    result = aios("demo", data_dir=data_dir_of_its_own(data_dir, tmp_path / "data"))
    assert result.returncode == 0, result.stderr
    out = result.stdout
    for agent in ("example/chat", "example/extractor", "example/weather", "example/calculator", "example/archivist",
                  "example/rememberer"):
        assert agent in out
    flat = " ".join(out.replace("│", " ").split())  # the table folds long cells over lines
    assert "retrieved trips/kyoto.txt" in flat and "it reads again: Kyoto in April" in flat
    assert "run 2 recalls: The kettle in the office kitchen is broken" in flat  # what run 1 kept
    assert "Paris" in out and '"city": "Rome"' in out
    assert 'call demo/get_weather({"city": "Paris"})' in out  # constrained decoding: the tool is called
    assert '"result": 84' in flat and "ran aios/calculator" in flat  # the kernel ran the model's call
    assert "waiting s" in out and "turnaround s" in out
    assert "all agents done" in out and "Traceback" not in result.stderr


def test_chat_keeps_the_conversation_and_exits_on_eof(kernel: KernelProcess, data_dir: Path) -> None:
    result = aios("chat", "--url", kernel.url, "--temperature", "0", "--max-new-tokens", "24",
                  data_dir=data_dir, stdin="What is the capital of France?\nAnd of Italy?\n")
    assert result.returncode == 0, result.stderr
    replies = [line for line in result.stdout.splitlines() if "aios> " in line]
    assert len(replies) == 2 and "Paris" in replies[0]


def test_serve_with_a_storage_database_it_cannot_open_stops_with_one_line(backend, data_dir: Path,  # noqa: ANN001
                                                                         tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("storage: {backend: postgres, dsn: 'postgresql://nobody@127.0.0.1:9/none?connect_timeout=5'}\n")
    result = aios("serve", "--config", str(config), "--port", "0", data_dir=data_dir, timeout=300)
    assert result.returncode == 1 and result.stdout == ""
    line = result.stderr.strip().splitlines()[-1]  # after the model's loading progress
    assert line.startswith("aios: storage: cannot open the postgres store: ") and "127.0.0.1" in line
    assert "Traceback" not in result.stderr


def test_chat_reports_an_unreachable_kernel_and_exits(data_dir: Path) -> None:
    result = aios("chat", "--url", "http://127.0.0.1:9", data_dir=data_dir, stdin="hello\n")
    assert result.returncode == 1
    assert "cannot reach the kernel at http://127.0.0.1:9" in result.stderr


def test_chat_rejects_a_bad_flag_value(data_dir: Path) -> None:
    result = aios("chat", "--temperature", "-1", data_dir=data_dir, stdin="")
    assert result.returncode == 2 and "--temperature" in result.stderr


def test_serve_with_a_missing_model_stops_with_one_line_naming_what_was_tried(tmp_path: Path, data_dir: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("llms: {models: [{name: nobody/missing-model, backend: huggingface}]}\n")
    result = aios("serve", "--config", str(config), data_dir=data_dir, extra_env={"HF_HUB_OFFLINE": "1"})
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1].startswith("aios: model 'nobody/missing-model' not found; tried:")


def test_serve_with_a_backend_that_is_no_api_provider_stops_naming_the_file_and_field(tmp_path: Path,
                                                                                      data_dir: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("llms: {models: [{name: some-model, backend: nosuch}]}\n")
    result = aios("serve", "--config", str(config), data_dir=data_dir, timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip() == (f"aios: {config}: llms.models.0.backend: backend 'nosuch' is not a LiteLLM "
                                     "provider (e.g. anthropic, gemini, groq, deepseek, mistral); see "
                                     "https://docs.litellm.ai/docs/providers")


def test_serve_rejects_a_bad_port(data_dir: Path) -> None:
    result = aios("serve", "--port", "70000", data_dir=data_dir)
    assert result.returncode == 2 and "--port" in result.stderr


def test_prepare_reports_the_model_ready_from_the_cache(backend, data_dir: Path) -> None:  # noqa: ANN001
    result = aios("prepare", data_dir=data_dir)
    assert result.returncode == 0, result.stderr
    assert "ready: HuggingFaceTB/SmolLM2-135M-Instruct on cpu (float32)" in result.stdout
    assert "Converting" not in result.stderr  # the cache made by the first load is reused


def test_serve_with_a_restricted_tool_it_does_not_have_stops_naming_the_tool(backend, data_dir: Path,  # noqa: ANN001
                                                                             tmp_path: Path) -> None:
    """A misspelt restricted tool would restrict nothing and leave the tool it meant open to every agent."""
    config = tmp_path / "config.yaml"
    config.write_text("access: {restricted_tools: [aios__delete_file, aios/calculatr]}\n")
    result = aios("serve", "--config", str(config), "--port", "0",
                  data_dir=data_dir_of_its_own(data_dir, tmp_path / "data"), timeout=300)
    assert result.returncode == 1 and result.stdout == "" and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1] == ("aios: access.restricted_tools: this kernel has no tool named "
                                                      "'aios/calculatr'; did you mean aios/calculator?")


def test_serve_with_a_tool_folder_that_cannot_load_stops_with_one_line(backend, data_dir: Path,  # noqa: ANN001
                                                                       tmp_path: Path) -> None:
    folder = tmp_path / "broken_tool"
    folder.mkdir()
    (folder / "config.json").write_text("{not json")
    config = tmp_path / "config.yaml"
    config.write_text(f"tools: {{folders: ['{folder}']}}\n")
    result = aios("serve", "--config", str(config), "--port", "0",
                  data_dir=data_dir_of_its_own(data_dir, tmp_path / "data"), timeout=300)
    assert result.returncode == 1 and result.stdout == ""
    line = result.stderr.strip().splitlines()[-1]
    assert line.startswith("aios: tools: ") and "config.json cannot be read as JSON" in line
    assert "Traceback" not in result.stderr


def _commands(group: Any, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every command and sub-command of the ``aios`` command line, as the words that name it."""
    found = [path]
    for name, command in getattr(group, "commands", {}).items():
        found += _commands(command, (*path, name))
    return found


COMMANDS = _commands(typer.main.get_command(cli.app))


@pytest.mark.parametrize("words", COMMANDS, ids=[" ".join(words) or "aios" for words in COMMANDS])
def test_every_command_s_help_prints_its_usage(words: tuple[str, ...]) -> None:
    """Help texts are plain text (a hub id's ``[/version]`` once crashed ``run-agent --help`` as bad markup)."""
    result = CliRunner().invoke(cli.app, [*words, "--help"], prog_name="aios")
    assert result.exit_code == 0, result.output
    assert result.output.lstrip().startswith(f"Usage: aios {' '.join(words)}".rstrip())


ADMIN_COMMANDS = [("token", "create", "dave"), ("token", "revoke", "dave"), ("token", "list"), ("approvals",),
                  ("models", "list"), ("models", "add", "some/model"), ("models", "remove", "some/model")]


@pytest.mark.parametrize("words", ADMIN_COMMANDS, ids=[" ".join(words) for words in ADMIN_COMMANDS])
def test_the_administrator_s_commands_report_an_unreachable_kernel_in_one_line(words: tuple[str, ...]) -> None:
    result = CliRunner().invoke(cli.app, [*words, "--url", "http://127.0.0.1:9", "--admin-token", "t"])
    assert result.exit_code == 1
    said = result.stderr.splitlines()[-1]
    assert said.startswith("aios: cannot reach the kernel at http://127.0.0.1:9 (") and said.endswith(
        "); is `aios serve` running?")
    assert "Traceback" not in result.output


@pytest.mark.parametrize("token", ["", "two words", "a\nline", "a\x07bell"],
                         ids=["empty", "space", "newline", "control"])
@pytest.mark.parametrize("words", [("agents", "ps"), ("agents", "logs", "1"), ("agents", "cancel", "1"),
                                   ("run-agent", "example/chat", "--task", "x")], ids=" ".join)
def test_the_agents_commands_refuse_a_token_that_cannot_be_sent(words: tuple[str, ...], token: str) -> None:
    result = CliRunner().invoke(cli.app, [*words, "--url", "http://127.0.0.1:9", "--token", token])
    assert result.exit_code == 2
    said = " ".join(result.stderr.split())  # the usage error's box may fold the line
    assert f"Invalid value for '--token': a token is one word of printable characters, not {token!r}" in said


def test_a_refused_token_request_says_which_field_is_wrong(kernel: KernelProcess, data_dir: Path) -> None:
    result = aios("token", "create", "", "--url", kernel.url, data_dir=data_dir)
    assert result.returncode == 1
    assert result.stderr.strip() == ("aios: the kernel answered 422: body.agent_name: String should have at least 1 "
                                     "character")
