"""The agent side of a run: ``python launch.py RUN_DIR`` imports the package's entry class, makes it with the
agent's name, calls ``run(task)`` and writes what came of it to ``RUN_DIR/work/result.json`` for the kernel.

Standard library only, and run by its path, so it works under any interpreter (one that has the AIOS SDK,
cerebrum, installed and not this project, say). ``RUN_DIR/request.json`` says what to run:
``{"folder", "entry", "module", "agent_name", "task", "sandbox", "kernel_pid"}`` (``folder`` relative to ``RUN_DIR``
when the package was unpacked there; ``sandbox``, unless null, how to confine the process: ``{"read": what it may
read besides, "hidden": the data folder, "required"}``, see ``sandbox.py``; ``kernel_pid``, the kernel's process:
on Linux this one is killed when the kernel dies, even by SIGKILL, rather than run on unwatched).

The result is sent as JSON, what JSON has no type for converted as AIOS's kernel converts it (``_as_json``); a
value that still is not JSON (an ``object()``, NaN, text with a lone surrogate) fails the run, naming it, rather
than leaving a repr where a caller expects the value.

The process ends as soon as the result is written: a thread the agent left running (not a daemon) would otherwise
hold it until the kernel kills it at its time limit, result lost. So the agent's ``atexit`` functions do not run.

Exit status: 0 done; 1 ``run`` raised, or returned something that is not JSON; 2 the agent could not be loaded (or
confined, where that is required); anything else is the agent's own (``exit(3)``) or a signal's. The traceback of
a failure (or, for a result that is not JSON, the error) goes to stderr, which the kernel keeps.
"""

from __future__ import annotations

import dataclasses
import datetime
import decimal
import enum
import importlib.util
import json
import os
import signal
import sys
import traceback
import uuid
from pathlib import Path, PurePath
from typing import Any

RAISED, UNLOADABLE = 1, 2
# The agent's own folder in its run folder: its working directory, and (confined) the one place it may write. The
# result goes there too; the kernel's files (the logs, the status) stay beside it, out of the agent's reach.
WORK = "work"
RESULT = f"{WORK}/result.json"
NO_LANDLOCK = "this system has no Landlock (Linux 5.13 or later, enabled)"
PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def main(run_dir: Path) -> int:
    request = json.loads((run_dir / "request.json").read_text(encoding="utf-8"))
    _die_with_the_kernel(request.get("kernel_pid"))
    folder = run_dir / request["folder"]  # one that is absolute stays as it is
    sandbox = request.get("sandbox")
    if sandbox is not None:
        try:
            confined = _confine(sandbox, folder, run_dir)
        except OSError as exc:  # Landlock is there, and refused: nothing of the agent runs
            return _failed(run_dir, UNLOADABLE, f"the agent could not be confined: {exc}", trace=False)
        if not confined and sandbox["required"]:
            return _failed(run_dir, UNLOADABLE, f"the agent could not be confined: {NO_LANDLOCK}, and "
                                                "agents.sandbox is 'required'", trace=False)
        if not confined:
            print(f"aios: this agent runs unconfined: {NO_LANDLOCK}", file=sys.stderr)
    try:
        agent = _load(folder, request["entry"], request["module"])(request["agent_name"])
    except Exception as exc:
        return _failed(run_dir, UNLOADABLE, f"the agent could not be loaded: {type(exc).__name__}: {exc}")
    try:
        result = agent.run(request["task"])
    except Exception as exc:
        return _failed(run_dir, RAISED, f"the agent's run() raised {type(exc).__name__}: {exc}")
    try:
        outcome = _as_json(result)
    except Exception as exc:  # noqa: BLE001 - ValueError: NaN, or a value in itself; any: an object's own conversion
        why = str(exc)
        return _failed(run_dir, RAISED, f"the agent's run() returned a value that is not JSON: "
                                        f"{why[:1].lower()}{why[1:]}", trace=False)
    (run_dir / RESULT).write_text(outcome, encoding="utf-8")
    return 0


def _die_with_the_kernel(kernel_pid: int | None) -> None:
    """On Linux, have this process killed when the kernel dies (the kernel ends runs as it stops, but one killed
    by SIGKILL, or crashing, cannot): it was started in a session of its own, so nothing else would end it. The
    signal comes when the thread that started this process ends, the kernel's event loop. Set here, in the process
    that runs the agent, as the kernel's code may not run between fork and exec (it has threads); the kernel may
    have died already, before it was set. Elsewhere (or without ctypes), nothing is done."""
    if sys.platform != "linux" or kernel_pid is None:
        return
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (ImportError, OSError, AttributeError):
        return
    if os.getppid() != kernel_pid and not _alive(kernel_pid):  # (agents.python may be a wrapper that forks)
        os.kill(os.getpid(), signal.SIGKILL)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's: the pid was taken again
        return False
    return True


def _as_json(result: Any) -> str:
    """``{"result": ...}`` as JSON (NaN and lone surrogates refused: the kernel could not send them). What JSON
    has no type for is converted as AIOS's kernel converts it, so an agent written for AIOS gets back what it got
    there: by FastAPI's ``jsonable_encoder`` where this interpreter has FastAPI (the kernel's has), else by
    ``_plain``."""
    try:
        return _dumped({"result": result})
    except TypeError:
        pass
    try:
        from fastapi.encoders import jsonable_encoder
    except ImportError:
        converted = result
    else:
        try:
            converted = jsonable_encoder(result)
        except Exception:  # noqa: BLE001 - json.dumps below names the value that is not JSON
            converted = result
    return _dumped({"result": converted}, default=_plain)


def _dumped(value: Any, default: Any = None) -> str:
    """JSON that UTF-8 can carry: a string with a lone surrogate (from bytes decoded with surrogateescape, as
    ``os.fsdecode`` does) raises ValueError, naming it."""
    text = json.dumps(value, allow_nan=False, ensure_ascii=False, default=default)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError(f"it holds {exc.object[exc.start:exc.end]!r}, a lone surrogate, which is not text (bytes "
                         "decoded with surrogateescape, as os.fsdecode does? decode them with errors='replace')"
                         ) from None
    return text


def _plain(value: Any) -> Any:
    """The common values JSON has no type for, as ``jsonable_encoder`` converts them: a pydantic model or a
    dataclass as an object, a set as a list, a date or time in ISO 8601, an enum as its value, a Decimal as a
    number, a path or a UUID as a string, bytes decoded, a secret masked, and any other object as ``dict(obj)``,
    else its attributes. What none of these fits raises."""
    if isinstance(value, type):
        raise TypeError(f"the class {value.__name__} is not JSON serializable")
    if type(value).__name__ in ("SecretStr", "SecretBytes"):
        return str(value)  # pydantic masks it: "**********"
    if callable(getattr(value, "model_dump", None)):
        return value.model_dump(mode="json", by_alias=True)
    if dataclasses.is_dataclass(value):
        return dataclasses.asdict(value)
    if isinstance(value, (set, frozenset)):
        return list(value)
    if isinstance(value, (datetime.date, datetime.time)):
        return value.isoformat()
    if isinstance(value, datetime.timedelta):
        return value.total_seconds()
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, decimal.Decimal):
        exponent = value.as_tuple().exponent
        return int(value) if isinstance(exponent, int) and exponent >= 0 else float(value)
    if isinstance(value, (PurePath, uuid.UUID)):
        return str(value)
    if isinstance(value, bytes):
        return value.decode()
    for convert in (dict, vars):
        try:
            return convert(value)
        except Exception:  # noqa: BLE001, S112 - as jsonable_encoder, try the next way
            continue
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def _confine(sandbox: dict[str, Any], package: Path, run_dir: Path) -> bool:
    """Confine this process (and what it starts) before any of the agent's code runs: to read its run folder, its
    package, what the kernel names and this interpreter's files; to write in its own folder. See ``sandbox.py``,
    loaded by its path under a name no agent's module can have. False where the system has no Landlock (nothing
    done); OSError where it has, and confining failed."""
    spec = importlib.util.spec_from_file_location("_aios_sandbox", Path(__file__).with_name("sandbox.py"))
    assert spec is not None and spec.loader is not None
    confining = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(confining)
    if not confining.abi_version():
        return False
    readable = [str(run_dir), str(package), *sandbox["read"], *confining.python_paths()]
    confining.confine(readable, [str(run_dir / WORK)], sandbox["hidden"])
    return True


def _load(folder: Path, entry: str, class_name: str) -> Any:
    sys.path.insert(0, str(folder))  # the entry file may import its siblings, as under Cerebrum
    spec = importlib.util.spec_from_file_location(class_name, folder / entry)
    if spec is None or spec.loader is None:
        raise ImportError(f"{entry} cannot be imported")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if not hasattr(module, class_name):
        raise ImportError(f"{entry} has no class {class_name!r} (build.module)")
    return getattr(module, class_name)


def _failed(run_dir: Path, code: int, error: str, trace: bool = True) -> int:
    """Says why in stderr: the traceback, or (``trace`` false: the json module's would only show the encoder) the
    error itself. A lone surrogate in it (an exception's message naming a path decoded with surrogateescape) is
    written as its escape, ``\\udce9``: the kernel sends the error as text."""
    error = error.encode("utf-8", "backslashreplace").decode("utf-8")
    if trace:
        traceback.print_exc()
    else:
        print(error, file=sys.stderr)
    (run_dir / RESULT).write_text(json.dumps({"error": error}), encoding="utf-8")
    return code


def _exit(code: int) -> None:
    """End now, the result written: not waiting for the threads the agent left running (``sys.exit`` would)."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # closed by the agent, or its reader gone: nothing more can be said there
            pass
    os._exit(code)


if __name__ == "__main__":
    _exit(main(Path(sys.argv[1])))
