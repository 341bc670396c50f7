"""A kernel that requires tokens, for the web UI's tests (a data dir of its own, sharing the converted model)."""

from __future__ import annotations

import json
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import httpx

from conftest import KernelProcess, data_dir_of_its_own, start_kernel, stop_kernel


class Secured:
    """The kernel, the administrator's token and agent alice's."""

    def __init__(self, kernel: KernelProcess, data_dir: Path) -> None:
        self.kernel = kernel
        self.admin = (data_dir / "access" / "admin.token").read_text().strip()
        self.alice = self.client(self.admin).post("/access/agents", json={"agent_name": "alice"}).json()["token"]

    def client(self, token: str | None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.kernel.url, headers=headers, timeout=httpx.Timeout(60.0))


@contextmanager
def secured_kernel(shared_data: Path, home: Path) -> Iterator[Secured]:
    own_data = data_dir_of_its_own(shared_data, home / "data")
    (home / "config.yaml").write_text(json.dumps({"access": {"auth": "required"}}))
    kernel = start_kernel(["--config", str(home / "config.yaml")], {**os.environ, "AIOS_DATA_DIR": str(own_data)},
                          home / "kernel.log")
    try:
        yield Secured(kernel, own_data)
    finally:
        stop_kernel(kernel)
