"""The tool manager in this process: the built-in tools, loading tools from the AIOS folder layout, and running
calls — schema checks before anything runs, timeouts, concurrency limits, failures that stay with their call,
and blocking tools that never stall the event loop. Real tools and real threads throughout."""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import textwrap
import threading
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pytest

from aios.errors import BadRequest, NotFound
from aios.tools.builtin.calculator import calculate
from aios.tools.builtin.clock import TOOLS as CLOCK_TOOLS
from aios.tools.builtin.text import MAX_TEXT, text_stats
from aios.tools.builtin.text import TOOL as TEXT_TOOL
from aios.tools.builtin.units import TOOL as UNITS_TOOL
from aios.tools.builtin.units import convert
from aios.tools.folder import load_tool_folder, load_tool_folders
from aios.tools.handler import reply
from aios.tools.registry import ToolRegistry
from aios.tools.runner import CallOutcome, ToolRunner
from aios.tools.tool import InvalidTool, Tool, ToolContext, ToolError

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE_TOOLS = ROOT / "docs" / "examples" / "tools"
NUMBER = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
BOUND_S = 30  # how long a test waits for a process before it fails: never reached when the kernel behaves


async def _no_syscalls(*args: Any) -> None:
    raise AssertionError("these tools make no syscalls")


CONTEXT = ToolContext("test/agent", _no_syscalls)


# --- built-in tools ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("expression", "value"), [
    ("2 + 3 * 4", 14), ("(2 + 3) * 4", 20), ("2^10 + sqrt(16)", 1028.0), ("2**3**2", 512), ("-3^2", -9),
    ("7 // 2", 3), ("7 % 4", 3), ("10 / 4", 2.5), ("max(1, 5, 3)", 5), ("round(pi, 3)", 3.142), ("factorial(6)", 720),
    ("1e3 * 2", 2000.0), ("+".join(["1"] * 400), 400),  # a sum of 400 numbers (it was refused past 100)
])
def test_the_calculator_computes_arithmetic(expression: str, value: float) -> None:
    assert calculate(expression) == value


@pytest.mark.parametrize(("expression", "problem"), [
    ("__import__('os').system('true')", "is not allowed"),
    ("open('/etc/passwd')", "is not allowed"),
    ("(1).real", "is not allowed"),
    ("[x for x in range(9)]", "is not allowed"),
    ("x + 1", "'x' is not allowed"),
    ("9 ** 9 ** 9", "more than 4300 digits"),
    ("10 ** 100000", "more than 4300 digits"),
    ("10 ** 4299 * 10", "'10 ** 4299 * 10' has more than 4300 digits"),  # past what Python writes as text
    ("factorial(100000)", "factorial takes a whole number from 0 to 1500"),
    ("round(5, -100000)", "round takes a number of digits from -4300 to 4300, not -100000"),  # 10 ** 100000
    ("-" * 999 + "1", "the expression nests more than 400 operations in one another"),
    ("+".join(["1"] * 450), "the expression nests more than 400 operations in one another"),
    ("1 / 0", "division by zero"),
    ("1e308 * 10", "not a finite number"),
    ("2 +", "not an arithmetic expression"),
    ("1" * 1001, "at most 1000"),
    ("sqrt(-1)", "cannot compute it"),
    ("(-8) ** (1/3)", "(-8) ** 0.3333333333333333 is not a real number"),
    ("abs((-8) ^ 0.5)", "(-8) ** 0.5 is not a real number"),  # not the size of a complex number, silently
], ids=["import", "open", "attribute", "comprehension", "name", "tower", "huge-power", "huge-product",
        "huge-factorial", "huge-round", "deep-signs", "deep-powers", "zero-division", "infinite", "syntax",
        "too-long", "domain", "complex", "complex-inside"])
def test_the_calculator_refuses_what_is_not_safe_arithmetic_saying_why(expression: str, problem: str) -> None:
    with pytest.raises(ToolError, match=re.escape(problem)):
        calculate(expression)


def test_the_calculators_largest_result_is_written_as_json() -> None:
    """Its digits are bounded by what Python converts to text, so the reply can be written."""
    assert json.dumps(calculate("9 * 10 ** 4299 + (10 ** 4299 - 1)")) == "9" * 4300


@pytest.mark.parametrize(("value", "source", "target", "expected"), [
    (1, "km", "m", 1000), (1, "mile", "km", 1.609344), (100, "F", "C", 37.7777777778), (0, "celsius", "K", 273.15),
    (1, "GiB", "MB", 1073.741824), (2, "hours", "min", 120), (1, "gal", "l", 3.785411784), (1, "knot", "km/h", 1.852),
    (1, "acre", "m2", 4046.8564224), (16, "oz", "lb", 1.0),
])
def test_units_convert_within_their_kind(value: float, source: str, target: str, expected: float) -> None:
    assert convert(value, source, target) == pytest.approx(expected)


@pytest.mark.parametrize(("source", "target", "problem"), [
    ("km", "kg", "cannot convert length (km) to mass (kg)"),
    ("parsec", "m", "unknown unit 'parsec'"),
    ("C", "m", "cannot convert temperature"),
])
def test_units_of_different_kinds_or_unknown_units_are_refused(source: str, target: str, problem: str) -> None:
    with pytest.raises(ToolError, match=re.escape(problem)):
        convert(1, source, target)


def test_below_absolute_zero_is_refused() -> None:
    with pytest.raises(ToolError, match="below absolute zero"):
        convert(-300, "C", "K")


@pytest.mark.parametrize(("params", "problem"), [
    ({"value": 1e308, "from_unit": "km", "to_unit": "m"}, "1e+308 km in m is too large a number"),
    ({"value": 1e308, "from_unit": "C", "to_unit": "F"}, "1e+308 C in F is too large a number"),
    ({"value": 10 ** 400, "from_unit": "km", "to_unit": "m"},
     "the value is too large a number (at most about 1.8e+308)"),  # an integer of 401 digits, as JSON may hold
    ({"value": -10 ** 400, "from_unit": "C", "to_unit": "K"}, "the value is too large a number"),
])
def test_a_conversion_past_what_a_number_holds_is_refused(params: dict[str, Any], problem: str) -> None:
    with pytest.raises(ToolError, match=re.escape(problem)):  # not infinity: a reply holding it is not JSON
        UNITS_TOOL.run(params, CONTEXT)


@pytest.mark.parametrize(("params", "problem"), [
    ({"time": "9999-12-31T23:59", "from_timezone": "Etc/GMT+12", "to_timezone": "Etc/GMT-14"},
     "time '9999-12-31T23:59' in Etc/GMT-14 falls outside the years 1 to 9999"),
    ({"time": "0001-01-01T00:00", "from_timezone": "Etc/GMT-14", "to_timezone": "UTC"},
     "time '0001-01-01T00:00' in UTC falls outside the years 1 to 9999"),
])
def test_a_time_converted_past_the_calendar_is_refused(params: dict[str, Any], problem: str) -> None:
    convert_time = next(t for t in CLOCK_TOOLS if t.name == "aios/convert_time")
    with pytest.raises(ToolError, match=re.escape(problem)):
        convert_time.run(params, CONTEXT)


def test_times_convert_between_zones_with_daylight_saving() -> None:
    convert_time = next(t for t in CLOCK_TOOLS if t.name == "aios/convert_time")
    summer = convert_time.run({"time": "2026-07-01T12:00", "from_timezone": "Europe/Paris",
                               "to_timezone": "America/New_York"}, CONTEXT)
    winter = convert_time.run({"time": "2026-01-15T12:00", "from_timezone": "Europe/Paris",
                               "to_timezone": "America/New_York"}, CONTEXT)
    assert summer["iso"] == "2026-07-01T06:00:00-04:00" and winter["iso"] == "2026-01-15T06:00:00-05:00"
    with pytest.raises(ToolError, match="unknown time zone 'Mars/Olympus'"):
        convert_time.run({"time": "2026-01-15T12:00", "to_timezone": "Mars/Olympus"}, CONTEXT)
    with pytest.raises(ToolError, match="not ISO 8601"):
        convert_time.run({"time": "next Tuesday", "to_timezone": "UTC"}, CONTEXT)


def test_the_current_time_is_in_the_zone_asked_for() -> None:
    now = next(t for t in CLOCK_TOOLS if t.name == "aios/current_time")
    tokyo = now.run({"timezone": "Asia/Tokyo"}, CONTEXT)
    assert tokyo["utc_offset"] == "+0900" and abs(tokyo["unix"] - time.time()) < 60


def test_text_statistics_count_what_a_reader_sees() -> None:
    stats = text_stats("The cat sat. The cat ran!\n\nIt's over.")
    assert (stats["words"], stats["sentences"], stats["paragraphs"], stats["lines"]) == (8, 3, 2, 3)
    assert stats["most_common_words"][0] == {"word": "the", "count": 2}
    assert text_stats("")["words"] == 0


def test_text_stats_refuses_a_text_past_its_limit_before_running() -> None:
    runner = runner_with(TEXT_TOOL)
    long_text = re.escape(f"tool call 0 (aios/text_stats): parameter text: '{'.' * 59}... ({MAX_TEXT + 1} characters) "
                          "is too long")  # not the megabyte of dots, repeated back
    with pytest.raises(BadRequest, match=long_text):
        runner.check([{"name": "aios/text_stats", "parameters": {"text": "." * (MAX_TEXT + 1)}}])


def test_text_stats_counts_the_longest_text_allowed_of_one_run_of_dots() -> None:
    """The sentence ends are found in one pass: searched from every dot of a run, the counting would take hours
    (and hold the interpreter's lock, stalling the kernel all along). In a process of its own, so that the test
    fails at its bound rather than hang."""
    count = ("from aios.tools.builtin.text import MAX_TEXT, text_stats\n"
             "print(text_stats('.' * (MAX_TEXT - 1) + 'x')['sentences'])")
    counted = subprocess.run([sys.executable, "-c", count], capture_output=True, text=True, timeout=BOUND_S)
    assert counted.stdout == "1\n", counted.stderr


# --- tool definitions and folders -------------------------------------------------------------------------------

@pytest.mark.parametrize(("fields", "problem"), [
    ({"name": "calculator"}, "must be author/name"),
    ({"name": "a/b c"}, "must be author/name"),
    ({"parameters": {"type": "objekt"}}, "not a valid JSON Schema"),
    ({"parameters": "a string"}, "must be a JSON Schema object"),
    ({"timeout_s": 0}, "timeout_s must be a positive"),
    ({"max_concurrency": 0}, "max_concurrency must be a whole number, 1 or more, not 0"),
    ({"max_concurrency": True}, "max_concurrency must be a whole number, 1 or more, not True"),
    ({"max_concurrency": "2"}, "max_concurrency must be a whole number, 1 or more, not '2'"),
    ({"timeout_s": "5"}, "timeout_s must be a positive number of seconds, not '5'"),
    ({"requires_confirmation": "false"}, "requires_confirmation must be true or false, not 'false'"),
    ({"parameters": {"type": "string"}}, r"parameters must describe an object \(type: object\), not type 'string'"),
], ids=["no-author", "space", "bad-schema", "schema-not-object", "zero-timeout", "zero-concurrency",
        "bool-concurrency", "text-concurrency", "text-timeout", "text-confirmation", "parameters-of-a-string"])
def test_a_tool_definition_the_kernel_cannot_use_is_refused_naming_the_problem(fields: dict[str, Any],
                                                                               problem: str) -> None:
    with pytest.raises(InvalidTool, match=problem):
        Tool(**{"name": "test/tool", "description": "", "parameters": NUMBER, "run": lambda p, c: 1, **fields})


def test_the_documented_example_tool_folder_loads_and_runs() -> None:
    tool = load_tool_folder(EXAMPLE_TOOLS / "bmi")
    assert tool.name == "example/bmi" and tool.timeout_s == 5 and tool.source.startswith("folder ")
    assert tool.parameters["required"] == ["weight_kg", "height_m"]
    assert tool.run({"weight_kg": 70, "height_m": 1.75}, CONTEXT) == {"bmi": 22.9, "band": "normal"}
    assert [t.name for t in load_tool_folders([EXAMPLE_TOOLS])] == ["example/bmi"]


def _folder(tmp_path: Path, config: Any, source: str | None = "class Tool:\n    def run(self, params):\n"
            "        return 'ok'\n") -> Path:
    folder = tmp_path / "tool"
    folder.mkdir()
    (folder / "config.json").write_text(config if isinstance(config, str) else json.dumps(config))
    if source is not None:
        (folder / "tool.py").write_text(source)
    return folder


GOOD_CONFIG = {"name": "t", "meta": {"author": "me"}, "build": {"entry": "tool.py", "module": "Tool"}}


@pytest.mark.parametrize(("config", "source", "problem"), [
    ("{not json", None, "cannot be read as JSON"),
    ([1, 2], None, "must hold a JSON object"),
    ({"name": "t", "build": GOOD_CONFIG["build"]}, None, "needs a string 'name' and 'meta'"),
    ({"name": "t", "meta": {"author": "me"}}, None, "needs 'build'"),
    ({**GOOD_CONFIG, "build": {"entry": "../outside.py", "module": "Tool"}}, None, "is not a file inside"),
    ({**GOOD_CONFIG, "build": {"entry": "tool.py", "module": "Missing"}}, None, "has no class 'Missing'"),
    (GOOD_CONFIG, "from cerebrum.tool.base import BaseTool\n", "imports 'cerebrum', which is not installed"),
    (GOOD_CONFIG, "raise RuntimeError('boom')\n", "loading tool.py failed: RuntimeError: boom"),
    (GOOD_CONFIG, "class Tool:\n    pass\n", "has no run(params) method"),
    (GOOD_CONFIG, "class Tool:\n    def run(self, params): ...\n    def get_tool_call_format(self): return 3\n",
     "must return an OpenAI function tool"),
    ({**GOOD_CONFIG, "timeout_s": -1}, None, "timeout_s must be a positive"),
    ({**GOOD_CONFIG, "timeout_s": "5"}, None, "tool me/t: timeout_s must be a positive number of seconds, not '5'"),
    ({**GOOD_CONFIG, "requires_confirmation": "false"}, None,
     "tool me/t: requires_confirmation must be true or false, not 'false'"),  # not read as true
], ids=["bad-json", "not-object", "no-author", "no-build", "entry-escapes", "no-class", "needs-cerebrum",
        "import-fails", "no-run", "bad-call-format", "bad-timeout", "text-timeout", "text-confirmation"])
def test_a_broken_tool_folder_is_refused_saying_what_is_wrong(tmp_path: Path, config: Any, source: str | None,
                                                             problem: str) -> None:
    kwargs = {} if source is None else {"source": source}
    with pytest.raises(InvalidTool, match=re.escape(problem)):
        load_tool_folder(_folder(tmp_path, config, **kwargs))


def test_a_folder_tool_with_an_async_run_is_awaited(tmp_path: Path) -> None:
    source = "class Tool:\n    async def run(self, params):\n        return {'got': params}\n"
    runner = runner_with(load_tool_folder(_folder(tmp_path, GOOD_CONFIG, source)))
    ran, = run_calls(runner, [{"name": "me/t", "parameters": {"n": 1}}])
    assert (ran.status_code, ran.result) == (200, {"got": {"n": 1}})


def test_a_folder_without_config_json_is_named(tmp_path: Path) -> None:
    with pytest.raises(InvalidTool, match="has no config.json"):
        load_tool_folder(tmp_path)


def test_two_tools_of_one_name_are_refused_naming_both_sources() -> None:
    registry = ToolRegistry()
    registry.add(Tool("a/t", "", NUMBER, lambda p, c: 1, source="folder one"))
    with pytest.raises(InvalidTool, match="two tools are named a/t: from folder one and from folder two"):
        registry.add(Tool("a/t", "", NUMBER, lambda p, c: 2, source="folder two"))


@pytest.mark.parametrize(("asked", "hint"), [
    ("aios/calculater", "; did you mean aios/calculator?"),  # not aios/create_dir: the namespace is no likeness
    ("calculator", "; did you mean aios/calculator?"),
    ("aios/writefile", "; did you mean aios/write_file, aios/read_file?"),  # the closest first
    ("example/calculator", "; did you mean aios/calculator?"),
    ("aios/nothing_like_it", "; GET /tools lists them"),
])
def test_an_unknown_tool_is_not_found_with_close_names(asked: str, hint: str) -> None:
    registry = ToolRegistry()
    for name in ("aios/calculator", "aios/create_dir", "aios/write_file", "aios/read_file"):
        registry.add(Tool(name, "", NUMBER, lambda p, c: 1))
    with pytest.raises(NotFound) as caught:
        registry.get(asked)
    assert str(caught.value).endswith(hint)


def test_close_names_of_the_asked_namespace_come_first() -> None:
    registry = ToolRegistry()
    for name in ("aios/calculator", "x/calculator"):
        registry.add(Tool(name, "", NUMBER, lambda p, c: 1))
    for asked, hint in (("x/calculater", "x/calculator, aios/calculator"), ("aios/calculater",
                                                                          "aios/calculator, x/calculator")):
        with pytest.raises(NotFound, match=f"did you mean {hint}\\?$"):
            registry.get(asked)


# --- running calls ----------------------------------------------------------------------------------------------

def runner_with(*tools: Tool, default_timeout_s: float = 30.0) -> ToolRunner:
    registry = ToolRegistry()
    registry.add_all(tools)
    return ToolRunner(registry, default_timeout_s, max_threads=16)


def run_calls(runner: ToolRunner, calls: list[dict[str, Any]]) -> list[CallOutcome]:
    async def main() -> list[CallOutcome]:
        return list(await asyncio.gather(*(runner.run(call, CONTEXT) for call in runner.check(calls))))

    return asyncio.run(main())


@pytest.mark.parametrize(("parameters", "problem"), [
    ({}, "parameter (the parameters object): 'n' is a required property"),
    ({"n": "seven"}, "parameter n: 'seven' is not of type 'integer'"),
    ({"n": 1.5}, "parameter n: 1.5 is not of type 'integer'"),
])
def test_parameters_the_schema_does_not_take_are_refused_before_anything_runs(parameters: dict[str, Any],
                                                                              problem: str) -> None:
    ran = []
    runner = runner_with(Tool("t/counter", "", NUMBER, lambda p, c: ran.append(p)))
    with pytest.raises(BadRequest, match=re.escape(f"tool call 1 (t/counter): {problem}")):
        runner.check([{"name": "t/counter", "parameters": {"n": 1}}, {"name": "t/counter", "parameters": parameters}])
    assert ran == []


def test_a_call_past_its_timeout_fails_alone_and_the_tool_is_not_left_locked() -> None:
    release = threading.Event()

    def slow(params: dict[str, Any], context: ToolContext) -> str:
        if params["n"] == 0:
            release.wait(30)  # the first call hangs until the test lets it go
        return f"done {params['n']}"

    runner = runner_with(Tool("t/slow", "", NUMBER, slow, timeout_s=0.2, max_concurrency=1))
    try:
        hung, = run_calls(runner, [{"name": "t/slow", "parameters": {"n": 0}}])
        after, = run_calls(runner, [{"name": "t/slow", "parameters": {"n": 1}}])
    finally:
        release.set()
    assert (hung.status_code, hung.error, hung.result) == (504, "timed out after 0.2 s", None)
    assert (after.status_code, after.result) == (200, "done 1")


def hanging_tools(names: list[str], release: threading.Event, ran: list[int]) -> ToolRunner:
    """A runner on 8 threads with tools ``names`` whose calls hang until ``release`` (each notes its ``n`` in
    ``ran``), and ``t/quick``."""
    def hanging(params: dict[str, Any], context: ToolContext) -> str:
        ran.append(params["n"])
        release.wait(60)
        return "late"

    registry = ToolRegistry()
    # A second: time for each call's thread to start before its timeout, however busy the machine.
    registry.add_all([*(Tool(name, "", NUMBER, hanging, timeout_s=1.0) for name in names),
                      Tool("t/quick", "", NUMBER, lambda p, c: p["n"] * 2, timeout_s=5)])
    return ToolRunner(registry, 30.0, max_threads=8)


async def at_once(runner: ToolRunner, name: str, numbers: range) -> list[CallOutcome]:
    calls = runner.check([{"name": name, "parameters": {"n": n}} for n in numbers])
    return list(await asyncio.gather(*(runner.run(call, CONTEXT) for call in calls)))


def test_a_tool_whose_calls_all_hang_leaves_a_quarter_of_the_threads_to_the_others() -> None:
    """Threads cannot be stopped: each call of a hanging tool keeps one after its timeout. Without a share per
    tool, eight such calls at once would take all eight threads, and every plain-function tool would then time out
    waiting for one."""
    release, ran = threading.Event(), []
    runner = hanging_tools(["t/hang"], release, ran)

    async def main() -> tuple[list[CallOutcome], dict[str, int], list[CallOutcome], CallOutcome, CallOutcome]:
        hung = await at_once(runner, "t/hang", range(8))
        overdue = dict(runner.overdue)
        quick = await at_once(runner, "t/quick", range(6))
        refused, = await at_once(runner, "t/hang", range(8, 9))
        release.set()
        for _ in range(1000):  # the released calls end, and are counted off on this loop (bounded)
            if not runner.overdue["t/hang"]:
                break
            await asyncio.sleep(0.01)
        return hung, overdue, quick, refused, (await at_once(runner, "t/hang", range(9, 10)))[0]

    try:
        hung, overdue, quick, refused, after = asyncio.run(main())
    finally:
        release.set()
        runner.close()
    assert runner.share == 6
    assert [o.status_code for o in hung] == [504] * 8  # 6 on threads, 2 waiting for one of the tool's share
    assert overdue == {"t/hang": 6}
    assert [(o.status_code, o.result) for o in quick] == [(200, n * 2) for n in range(6)]  # on the other 2
    assert (refused.status_code, refused.error) == (503, (
        "tool t/hang holds all the threads it may (6), 6 of them with calls past their timeout, which cannot be "
        "stopped; it takes no more calls until one of them ends"))
    assert (after.status_code, after.result) == (200, "late")  # once its calls ended, it takes calls again
    assert sorted(ran) == [0, 1, 2, 3, 4, 5, 9]  # the waiting and the refused calls never ran


def test_tools_that_hang_together_stop_taking_calls_once_they_hold_half_the_threads() -> None:
    """Two tools each hang three calls (under their share of 6 of the 8 threads): past their timeouts they hold
    6 threads. A new call to either is refused at once rather than take a seventh; other tools keep the last 2."""
    release, ran = threading.Event(), []
    runner = hanging_tools(["t/hang", "t/stuck"], release, ran)

    async def main() -> tuple[list[CallOutcome], list[CallOutcome], list[CallOutcome]]:
        hung = await at_once(runner, "t/hang", range(3)) + await at_once(runner, "t/stuck", range(3, 6))
        refused = await at_once(runner, "t/hang", range(6, 7)) + await at_once(runner, "t/stuck", range(7, 8))
        return hung, refused, await at_once(runner, "t/quick", range(2))

    try:
        hung, refused, quick = asyncio.run(main())
    finally:
        release.set()
        runner.close()
    assert [o.status_code for o in hung] == [504] * 6
    assert [(o.status_code, o.error) for o in refused] == [(503, (
        f"tool {name} has 3 calls past their timeout, which cannot be stopped, and the tools with such calls hold "
        "6 of the 8 threads, where they may hold 4; it takes no more calls until one of them ends"))
        for name in ("t/hang", "t/stuck")]
    assert [(o.status_code, o.result) for o in quick] == [(200, 0), (200, 2)]
    assert sorted(ran) == list(range(6))  # the refused calls never ran


def test_a_tool_that_raises_fails_its_own_call_and_runs_again_next_time() -> None:
    def flaky(params: dict[str, Any], context: ToolContext) -> str:
        if params["n"] < 0:
            raise ValueError("negative")
        if params["n"] == 0:
            raise ToolError("zero is not allowed here")
        return str(params["n"])

    runner = runner_with(Tool("t/flaky", "", NUMBER, flaky, max_concurrency=1))
    failed, plain, fine = run_calls(runner, [{"name": "t/flaky", "parameters": {"n": n}} for n in (-1, 0, 3)])
    assert (failed.status_code, failed.error) == (500, "the tool failed: ValueError: negative")
    assert (plain.status_code, plain.error) == (422, "zero is not allowed here")
    assert (fine.status_code, fine.result, fine.error) == (200, "3", None)


def test_fifty_concurrent_calls_never_run_more_than_the_limit_at_once_and_none_is_lost() -> None:
    lock, running, most = threading.Lock(), [0], [0]

    def counted(params: dict[str, Any], context: ToolContext) -> int:
        with lock:
            running[0] += 1
            most[0] = max(most[0], running[0])
        time.sleep(0.01)  # the tool's own work, long enough for calls to overlap
        with lock:
            running[0] -= 1
        return params["n"]

    runner = runner_with(Tool("t/limited", "", NUMBER, counted, max_concurrency=2))
    outcomes = run_calls(runner, [{"name": "t/limited", "parameters": {"n": n}} for n in range(50)])
    assert sorted(o.result for o in outcomes) == list(range(50)) and all(o.error is None for o in outcomes)
    assert most[0] == 2


def test_a_blocking_tool_never_stalls_the_event_loop() -> None:
    release = threading.Event()
    runner = runner_with(Tool("t/blocking", "", NUMBER, lambda p, c: release.wait(30) and "released"))

    async def main() -> tuple[CallOutcome, bool]:
        (call,) = runner.check([{"name": "t/blocking", "parameters": {"n": 1}}])
        blocked = asyncio.create_task(runner.run(call, CONTEXT))
        await asyncio.sleep(0)  # the loop goes on while the tool blocks its thread
        still_running = not blocked.done()
        release.set()
        return await blocked, still_running

    outcome, still_running = asyncio.run(main())
    assert still_running and outcome.result == "released"


def test_a_timeout_the_tool_raises_itself_is_its_failure_not_the_kernels_timeout() -> None:
    def remote(params: dict[str, Any], context: ToolContext) -> str:
        raise TimeoutError("timed out")  # as a socket's timeout reads

    runner = runner_with(Tool("t/remote", "", NUMBER, remote, timeout_s=30))
    failed, = run_calls(runner, [{"name": "t/remote", "parameters": {"n": 1}}])
    assert (failed.status_code, failed.error) == (500, "the tool failed: TimeoutError: timed out")


def test_a_result_holding_a_lone_surrogate_fails_its_call_alone_and_the_reply_is_utf8() -> None:
    """A file name decoded as os.fsdecode does (a Latin-1 name on a UTF-8 system) is not text: the reply holding
    it could not be written, and would fail every call in it."""
    runner = runner_with(Tool("t/name", "", NUMBER, lambda p, c: os.fsdecode(b"report-\xe9t\xe9.txt")),
                         Tool("t/fine", "", NUMBER, lambda p, c: "caf\u00e9"))
    named, fine = run_calls(runner, [{"name": "t/name", "parameters": {"n": 1}},
                                     {"name": "t/fine", "parameters": {"n": 2}}])
    assert (named.status_code, named.result) == (500, None) and named.error.startswith(
        "the tool's result is not JSON: it holds '\\udce9', a lone surrogate, which is not text")
    assert (fine.status_code, fine.result) == (200, "caf\u00e9")
    json.dumps(asdict(reply([named, fine])), ensure_ascii=False).encode()  # the whole reply is UTF-8


def test_a_result_that_is_not_json_is_an_error_not_a_crash() -> None:
    runner = runner_with(Tool("t/odd", "", NUMBER, lambda p, c: object()),
                         Tool("t/nan", "", NUMBER, lambda p, c: {"x": float("nan")}))
    odd, nan = run_calls(runner, [{"name": "t/odd", "parameters": {"n": 1}}, {"name": "t/nan", "parameters": {"n": 1}}])
    assert odd.status_code == 500 and "not JSON" in odd.error
    assert nan.status_code == 500 and "not JSON" in nan.error


HANGING_PROCESS = """
    import asyncio, threading
    from aios.tools.registry import ToolRegistry
    from aios.tools.runner import ToolRunner
    from aios.tools.tool import Tool, ToolContext

    async def main():
        registry = ToolRegistry()
        registry.add(Tool("t/hang", "", {"type": "object"}, lambda p, c: threading.Event().wait(), timeout_s=0.2))
        runner = ToolRunner(registry, 30.0, max_threads=4)
        (call,) = runner.check([{"name": "t/hang"}])
        outcome = await runner.run(call, ToolContext("test/agent", None))
        runner.close()
        print(outcome.status_code)

    asyncio.run(main())
"""


def test_a_process_exits_though_a_tool_thread_hangs_past_its_timeout() -> None:
    """Ctrl-C on ``aios serve`` must end it: a tool's thread that will never end is not waited for at exit."""
    exited = subprocess.run([sys.executable, "-c", textwrap.dedent(HANGING_PROCESS)], capture_output=True,
                            text=True, timeout=BOUND_S)
    assert (exited.returncode, exited.stdout) == (0, "504\n"), exited.stderr
