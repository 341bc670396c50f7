"""What a killed kernel leaves in the data dir — spilled KV snapshots, a half-done model conversion — is removed
when the next kernel starts, and nothing of a kernel that is still alive is touched."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

from aios.leases import CONVERSIONS, SNAPSHOTS, Lease, sweep_leftovers
from conftest import data_dir_of_its_own, start_kernel, stop_kernel

SPILL_AND_DIE = """
    import os, signal, sys, torch
    from pathlib import Path
    from aios.context import ContextStore
    store = ContextStore(ram_bytes=0, spill_root=Path(sys.argv[1]) / "snapshots")  # everything goes to disk
    store.save(([torch.ones(4, 1024, 64)], [torch.ones(4, 1024, 64)]))
    assert store.spilled == 1
    os.kill(os.getpid(), signal.SIGKILL)
"""

CONVERT_AND_DIE = """
    import os, signal, sys
    from pathlib import Path
    from aios.leases import CONVERSIONS, Lease
    scratch = Lease(Path(sys.argv[1]) / CONVERSIONS[0], CONVERSIONS[1])
    (scratch.path / "model.safetensors").write_bytes(b"half" * (1 << 18))
    os.kill(os.getpid(), signal.SIGKILL)
"""


def die_leaving(script: str, data_dir: Path) -> None:
    """Run ``script`` in a process that kills itself with SIGKILL, as kill -9 would."""
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(script), str(data_dir)], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == -9, done.stderr


def leased(data_dir: Path, kind: tuple[str, str]) -> list[Path]:
    folder, prefix = kind
    return sorted(p for p in (data_dir / folder).glob(f"{prefix}*") if p.is_dir())


def test_start_up_removes_what_killed_kernels_left_and_keeps_what_live_ones_use(tmp_path: Path) -> None:
    die_leaving(SPILL_AND_DIE, tmp_path)
    die_leaving(CONVERT_AND_DIE, tmp_path)
    assert len(leased(tmp_path, SNAPSHOTS)) == 1 and len(leased(tmp_path, CONVERSIONS)) == 1
    alive = Lease(tmp_path / SNAPSHOTS[0], SNAPSHOTS[1])  # this process's own, in use
    (alive.path / "snapshot-1.safetensors").write_bytes(b"in use")
    unrelated = tmp_path / "models" / "SmolLM2-cache"  # not a kind of leftover: never touched
    unrelated.mkdir()
    try:
        freed = sweep_leftovers(tmp_path)
        assert freed.items == 2 and freed.bytes >= 2 * 4 * 1024 * 64 * 4 + (1 << 20)
        assert leased(tmp_path, SNAPSHOTS) == [alive.path] and leased(tmp_path, CONVERSIONS) == []
        assert (alive.path / "snapshot-1.safetensors").read_bytes() == b"in use" and unrelated.is_dir()
        assert not list((tmp_path / "models").glob("*.lock"))
        assert sweep_leftovers(tmp_path).items == 0
    finally:
        alive.release()
    assert leased(tmp_path, SNAPSHOTS) == [] and not list((tmp_path / "snapshots").iterdir())


def test_a_starting_kernel_says_how_much_it_freed(data_dir: Path, tmp_path: Path) -> None:
    """Planted in a data dir of its own (one kernel per data dir; the converted model is shared), beside a live
    lease: the new kernel removes the dead leftovers, reports it in its log, and leaves the live lease alone."""
    own = data_dir_of_its_own(data_dir, tmp_path / "data")
    die_leaving(SPILL_AND_DIE, own)
    die_leaving(CONVERT_AND_DIE, own)
    dead = leased(own, SNAPSHOTS) + leased(own, CONVERSIONS)
    alive = Lease(own / SNAPSHOTS[0], SNAPSHOTS[1])
    try:
        kernel = start_kernel([], {**os.environ, "AIOS_DATA_DIR": str(own)}, tmp_path / "kernel.log")
        stop_kernel(kernel)
        log = kernel.log.read_text()
        assert re.search(r"removed 2 leftovers of kernels that did not shut down cleanly .* MB freed", log), log
        assert not any(path.exists() for path in dead) and alive.path.is_dir()
    finally:
        alive.release()
