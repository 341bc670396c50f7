"""What the example agents return from ``run``: the result as text, and how long their last syscall waited and
took, so that a report (``aios demo``) can show both."""

from __future__ import annotations

from typing import Any

from aios.sdk import Timings


def report(result: str, timings: Timings) -> dict[str, Any]:
    return {"result": result, "waiting_s": timings.waiting, "turnaround_s": timings.turnaround}
