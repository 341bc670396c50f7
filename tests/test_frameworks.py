"""Agent frameworks, unpatched, on the embedded model through the kernel's /v1: the runnable examples in
docs/examples/frameworks/ run as they are against a real kernel, each with its framework's own OpenAI settings.

The model is tiny; what is checked is the protocol: a reply arrives, tools are called with arguments that fit
their schema (the grammar sees to it), a pydantic parse succeeds, a team takes its turns.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import KernelProcess

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "docs" / "examples" / "frameworks"
# Open Interpreter cannot install beside the kernel's pins (psutil<6): `make install` gives it a venv of its own.
PYTHON = {"open_interpreter.py": ROOT / ".venv-interpreter" / "bin" / "python"}
# Tried, and cannot install on Python 3.11 here, even in a virtual environment of its own.
NOT_INSTALLABLE = {
    "metagpt": "metagpt==0.8.2, its latest release, pins lancedb==0.4.0, and no lancedb release older than 0.14.0 "
               "installs on Python 3.11 here (none is offered), even in a virtual environment of its own",
}

# What each example prints when its framework did its part.
EXPECTED = {
    "openai_client.py": ["models: ['HuggingFaceTB/SmolLM2-135M-Instruct']", "sync: ", "stream: ",
                         "tool call: get_weather {'city': ", "parsed: Capital(country=", "async: "],
    "langchain_tools.py": ["chat: ", "tool call: get_weather {'city': "],
    "autogen_team.py": ["user: Write a line about the sea.", "writer: ", "critic: "],
    "openai_agents.py": ["final output: It is sunny in "],
    "open_interpreter.py": ["reply: "],
}


def test_every_example_is_tested() -> None:
    assert sorted(p.name for p in EXAMPLES.glob("*.py")) == sorted(EXPECTED)


@pytest.mark.parametrize("example", sorted(EXPECTED))
def test_framework_example_runs_against_the_kernel(kernel: KernelProcess, example: str, tmp_path: Path) -> None:
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "AIOS_KERNEL_URL": kernel.url, "HOME": str(tmp_path)}
    python = PYTHON.get(example, Path(sys.executable))
    assert python.exists(), f"{python} is missing: `make install` makes it"
    result = subprocess.run([str(python), str(EXAMPLES / example)], capture_output=True, text=True, timeout=300,
                            env=env, cwd=EXAMPLES)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.splitlines()
    for start in EXPECTED[example]:
        assert any(line.startswith(start) for line in lines), f"no line starts {start!r}:\n{result.stdout}"


@pytest.mark.parametrize("framework", sorted(NOT_INSTALLABLE))
def test_framework_that_cannot_install_here(framework: str) -> None:
    pytest.skip(NOT_INSTALLABLE[framework])
