"""Crash safety: a writer process killed with SIGKILL at random moments, 20 times. Each time, the file on disk
is one complete version, and once the kernel touches it the history agrees with the disk: versions numbered
without gaps, none recorded as an outside change, the last one being what is on disk."""

from __future__ import annotations

import random
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from storage_support import make_fs, open_store
from storage_writer import AGENT, FILE, content

WRITER = Path(__file__).parent / "storage_writer.py"
KILLS = 20


def one_version(text: str) -> int:
    """The version the text is, checking it is that version complete (not a mix, not cut short)."""
    number = int(text.split(":", 1)[0].removeprefix("version "))
    assert text == content(number), f"the file holds a torn or mixed version {number} ({len(text)} bytes)"
    return number


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
def test_a_writer_killed_at_random_moments_leaves_one_complete_version_and_matching_history(
        kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    dsn = [request.getfixturevalue("postgres")()] if kind == "postgres" else []
    rng = random.Random(20240601)
    disk_file = None
    for _ in range(KILLS):
        writer = subprocess.Popen([sys.executable, str(WRITER), str(tmp_path), *dsn], stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True)
        for _ in range(rng.randint(1, 4)):  # let it write a few versions; it keeps writing while we read
            assert writer.stdout.readline(), writer.stderr.read()  # type: ignore[union-attr]
        with pytest.raises(subprocess.TimeoutExpired):  # a random moment into its next writes (it never exits)
            writer.wait(timeout=rng.uniform(0, 0.03))
        writer.send_signal(signal.SIGKILL)
        writer.wait()
        store = open_store(kind, tmp_path, lambda: dsn[0])
        fs = make_fs(store, tmp_path)
        disk_file = disk_file or Path(fs.history(AGENT, FILE, limit=1)["path"])
        on_disk = one_version(disk_file.read_text())  # before any recovery: complete
        versions = fs.history(AGENT, FILE)["versions"]  # touching the file settles what the kill left
        assert [v["version"] for v in versions] == list(range(len(versions), 0, -1))
        assert {v["kind"] for v in versions} == {"write"}  # the disk never changed behind the history's back
        assert versions[0]["version"] == on_disk
        record = store.file(fs.root_of(AGENT).id, FILE)
        assert record is not None and store.pending(record.id) is None
        for version in versions[:2]:
            assert fs.read(AGENT, FILE, version["version"])["content"] == content(version["version"])
        store.close()
    assert len(versions) >= KILLS


def test_the_writer_stays_light() -> None:
    """The crash test's writer must not load torch (it would take seconds per start)."""
    code = ("import sys; sys.path.insert(0, 'tests'); import storage_writer; "
            "print('torch' in sys.modules, 'transformers' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                            cwd=Path(__file__).parents[1])
    assert result.stdout.split() == ["False", "False"]
