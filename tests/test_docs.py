"""The Python examples in the docs run, unchanged, against a real kernel."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import KernelProcess

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
EXAMPLES = [
    pytest.param(doc, code, id=f"{doc.name}-{n}")
    for doc in DOCS
    for n, code in enumerate(re.findall(r"```python\n(.*?)```", doc.read_text(), re.DOTALL))
]


@pytest.mark.parametrize(("doc", "code"), EXAMPLES)
def test_doc_example_runs(kernel: KernelProcess, doc: Path, code: str, tmp_path: Path) -> None:
    script = tmp_path / "example.py"
    script.write_text(code.replace("http://localhost:8000", kernel.url))  # examples written for the default URL
    env = {"AIOS_KERNEL_URL": kernel.url, "PATH": "/usr/bin:/bin"}
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, f"{doc.name} example failed:\n{code}\n{result.stderr}"


def test_the_readme_curl_example_returns_the_documented_envelope(kernel: KernelProcess) -> None:
    readme = (ROOT / "README.md").read_text()
    command = re.search(r"```bash\n(curl .*?)```", readme, re.DOTALL).group(1)
    command = command.replace("localhost:8000", kernel.url)
    result = subprocess.run(["bash", "-c", command], capture_output=True, text=True, timeout=300, check=True)
    import json

    body = json.loads(result.stdout)
    assert set(body) == {"response", "start_times", "end_times", "waiting_times", "turnaround_times"}
    assert "Paris" in body["response"]["response_message"]
