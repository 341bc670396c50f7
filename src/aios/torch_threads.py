"""Which threads run torch's parallel operations, and why as few as possible should outlive their work.

torch's Linux builds run parallel operations (matrix products, large element-wise ops) on OpenMP (libgomp). Each
thread that runs one gets a pool of worker threads of its own, kept until that thread ends. Once the pools of the
live threads hold more threads than the machine has cores, libgomp's workers stop spinning between operations and
sleep after about a hundred spins, so every parallel operation of every thread first wakes its workers. A decode
step runs about a thousand of them: on a 2-core machine, one pool left on the kernel's main thread (the model
loaded there at start-up) made the engine's decode steps about 40% slower (57 against 81 ms at 16 rows).

So work that runs once (loading a model) runs on a thread that then ends, and a thread that serves requests only
now and then (the embedder) ends when idle: the engine's own thread is then the only one holding a pool while
agents decode.

How long a worker spins before it sleeps is set once, from the environment, when torch loads; ``aios`` sets it
(:func:`spin_briefly`) unless the environment already does. Sleeping at once (``OMP_WAIT_POLICY=PASSIVE``) costs
every operation a wake-up; libgomp's default spin (about 3 ms) holds a core long after the work, which on a
machine busy with other work slowed decoding several times. ``SPIN_COUNT`` spins bridge the gaps between a decode
step's operations and no more (BENCHMARKS.md, "How torch's threads wait").
"""

from __future__ import annotations

import sys
import threading
from typing import Callable, MutableMapping, TypeVar

T = TypeVar("T")

# Spins (libgomp's GOMP_SPINCOUNT, roughly 0.1 ms) a worker waits for the next parallel operation before it sleeps.
# A decode step of the embedded model at 16 rows on 2 cores: 58.8 ms with it, 57.4 with libgomp's default
# (300,000), 69.8 with 3,000, 82.6 sleeping at once.
SPIN_COUNT = 10_000


def spin_briefly(environ: MutableMapping[str, str], platform: str = sys.platform) -> None:
    """Have torch's OpenMP workers spin ``SPIN_COUNT`` times before sleeping, unless ``environ`` already says how
    they wait (``OMP_WAIT_POLICY`` or ``GOMP_SPINCOUNT``). Call it before torch loads: libgomp reads it then.

    torch's Linux wheels use libgomp; elsewhere (LLVM's OpenMP on macOS, whose default spin is 200 ms) the
    workers sleep at once, as measured to be safe on a busy machine. A Linux build of torch on another OpenMP
    runtime ignores ``GOMP_SPINCOUNT`` and waits its own way: set ``OMP_WAIT_POLICY`` there."""
    if "OMP_WAIT_POLICY" in environ or "GOMP_SPINCOUNT" in environ:
        return
    if platform.startswith("linux"):
        environ["GOMP_SPINCOUNT"] = str(SPIN_COUNT)
    else:
        environ["OMP_WAIT_POLICY"] = "PASSIVE"


def on_passing_thread(work: Callable[[], T], name: str) -> T:
    """``work()``, run on a new thread that ends when it returns (its OpenMP pool with it); its exception is
    raised here. The thread is a daemon, so Ctrl-C while waiting for it ends the process without waiting for
    the work (a model conversion cut off so is cleaned up at the next start)."""
    outcome: dict[str, object] = {}

    def run() -> None:
        try:
            outcome["value"] = work()
        except BaseException as exc:  # noqa: BLE001 - raised again on the caller's thread
            outcome["error"] = exc

    thread = threading.Thread(target=run, name=name, daemon=True)
    thread.start()
    thread.join()
    error = outcome.pop("error", None)
    if error is not None:
        try:
            raise error  # type: ignore[misc]
        finally:
            del error  # this frame does not keep it (and, by its traceback, the failed work's frames) alive
    return outcome["value"]  # type: ignore[return-value]
