"""Compile one of the engine's C kernels (a ``*.c`` file beside this module) for this machine and load it.

A kernel is compiled when a model loads (a fraction of a second), with ``cc`` or the compiler ``$CC`` names, once
per process and set of compile-time constants, and called through ctypes. Its OpenMP is torch's own (see
:func:`build`). Where it cannot be had, :class:`KernelUnavailable` says why and the caller computes in torch.
"""

from __future__ import annotations

import ctypes
import functools
import logging
import os
import re
import shlex
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

# -march=native: the library is built on the machine that runs it. A kernel's own flags (e.g. -ffast-math) go
# to the compile step only: linked with -ffast-math, some compilers add code that makes the loading thread flush
# denormal numbers to zero, for the whole process's later work on that thread.
COMPILE = ("-O3", "-march=native", "-fopenmp", "-fPIC", "-c")
LINK = ("-shared", "-fopenmp")
COMPILE_TIMEOUT_S = 120

log = logging.getLogger(__name__)
Kernel = TypeVar("Kernel")


class KernelUnavailable(Exception):
    """A kernel cannot serve this model here; the message says why."""


@functools.cache
def build(source: str, flags: tuple[str, ...] = (), defines: tuple[tuple[str, int], ...] = ()) -> ctypes.CDLL:
    """The kernel ``source`` (a file name beside this module) compiled with its own ``flags`` and ``defines`` as
    ``-DNAME=VALUE``, and loaded; take its functions with :func:`bind`."""
    compiler = shlex.split(os.environ.get("CC") or "cc")
    flags = [*COMPILE, *flags, *(f"-D{name}={value}" for name, value in defines)]
    with tempfile.TemporaryDirectory(prefix="aios-kernel-") as folder:
        objects, library = Path(folder) / "kernel.o", Path(folder) / "kernel.so"
        _run(compiler, [*flags, "-o", str(objects), str(Path(__file__).with_name(source))], Path(folder))
        _run(compiler, [*LINK, "-o", str(library), str(objects), "-lm"], Path(folder))
        # Loaded after torch: where torch's OpenMP is libgomp (its Linux wheels), the kernel's is that same
        # library (one soname), so it runs on torch's threads. The file can go once loaded.
        runtimes = openmp_runtimes()
        try:
            loaded = ctypes.CDLL(str(library))
        except OSError as exc:  # e.g. a temp dir mounted noexec
            raise KernelUnavailable(f"the compiled kernel does not load: {exc}") from exc
    added = openmp_runtimes() - runtimes
    if runtimes and added:
        # Another OpenMP (torch built with Intel's or LLVM's): its threads and torch's would contend for the cores.
        raise KernelUnavailable(f"it would bring a second OpenMP runtime ({', '.join(sorted(added))}) beside "
                                f"torch's ({', '.join(sorted(runtimes))})")
    return loaded


def bind(library: ctypes.CDLL, name: str, argtypes: tuple[type, ...],
         restype: type | None = None) -> ctypes._CFuncPtr:
    """The function ``name`` of a built kernel, taking ``argtypes`` and returning ``restype`` (nothing by default;
    a binding of its own: another of the same name keeps its types)."""
    try:
        loaded = library[name]
    except AttributeError as exc:  # e.g. CC compiles C++ (mangled names) or hides symbols
        raise KernelUnavailable(f"the compiled kernel has no function {name!r}") from exc
    loaded.argtypes, loaded.restype = list(argtypes), restype
    return loaded


def built_or_why(make: Callable[[], Kernel], work: str) -> tuple[Kernel | None, str]:
    """A kernel from ``make`` and the status's word ``c-kernel``; where it cannot be had, ``None`` and ``torch
    (why)``, with a warning that ``work`` runs in torch."""
    try:
        return make(), "c-kernel"
    except KernelUnavailable as exc:
        log.warning("%s runs in torch: %s", work, exc)
        return None, f"torch ({exc})"


def openmp_runtimes() -> set[str]:
    """The OpenMP libraries mapped into this process (Linux; elsewhere none are seen)."""
    try:
        with open("/proc/self/maps") as maps:
            paths = {line.split()[-1] for line in maps if len(line.split()) >= 6}
    except OSError:
        return set()
    return {path for path in paths if re.search(r"/lib(g|i|)omp[^/]*\.so", path)}


def _run(compiler: list[str], arguments: list[str], folder: Path) -> None:
    """Run the compiler; its output goes to a file, so that a timeout ends the wait even if the programs it
    started (cc1, as, ld) hold on."""
    with open(folder / "compiler.log", "w+") as log:
        try:
            done = subprocess.run([*compiler, *arguments], stdout=log, stderr=subprocess.STDOUT,
                                  stdin=subprocess.DEVNULL, timeout=COMPILE_TIMEOUT_S)
        except OSError as exc:
            raise KernelUnavailable(f"cannot run the C compiler {compiler[0]!r}: {exc.strerror or exc} "
                                    "(set CC to one)") from exc
        except subprocess.TimeoutExpired as exc:
            raise KernelUnavailable(f"the C compiler {compiler[0]!r} took over {COMPILE_TIMEOUT_S} s") from exc
        if done.returncode != 0:
            log.seek(0)
            lines = log.read().strip().splitlines()
            raise KernelUnavailable(f"the C compiler {compiler[0]!r} failed: "
                                    f"{lines[-1] if lines else f'exit status {done.returncode}'}")
