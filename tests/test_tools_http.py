"""Tools over real HTTP: ``query_type: tool`` with the exact AIOS body, ``GET /tools``, the SDK's tool API, tools
from every source (the built-ins, a tool folder in the AIOS layout, an installed package's entry point, a real
MCP server over stdio) in one kernel, bad input, and ``llm_call_tool`` on the embedded model."""

from __future__ import annotations

import json
import os
import sys
import textwrap
from pathlib import Path
from typing import Any, Iterator

import pytest

from aios import sdk
from conftest import KernelProcess, data_dir_of_its_own, start_kernel, stop_kernel

ROOT = Path(__file__).resolve().parents[1]
MCP_SERVER = ROOT / "tests" / "fixtures" / "mcp_server.py"

ENTRY_POINT_PACKAGE = """
    from aios.tools.tool import Tool

    def tools():
        return [Tool(name="pkg/reverse", description="The text backwards.",
                     parameters={"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]},
                     run=lambda params, context: params["text"][::-1])]
"""


def install_entry_point_package(site: Path) -> None:
    """A package with an ``aios.tools`` entry point, installed the way pip leaves one: module + dist-info."""
    site.mkdir(parents=True)
    (site / "aios_test_tools.py").write_text(textwrap.dedent(ENTRY_POINT_PACKAGE))
    dist = site / "aios_test_tools-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: aios-test-tools\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[aios.tools]\nreverse = aios_test_tools:tools\n")


@pytest.fixture(scope="module")
def tooled(backend: Any, data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[KernelProcess]:
    """A kernel with tools from every source."""
    home = tmp_path_factory.mktemp("tooled")
    install_entry_point_package(home / "site")
    config = home / "config.yaml"
    config.write_text(json.dumps({"tools": {
        "folders": [str(ROOT / "docs" / "examples" / "tools")],
        "mcp_servers": [{"name": "testmcp", "command": sys.executable, "args": [str(MCP_SERVER)], "timeout_s": 20}]}}))
    env = {**os.environ, "AIOS_DATA_DIR": str(data_dir_of_its_own(data_dir, home / "data")),
           "PYTHONPATH": str(home / "site")}
    kernel = start_kernel(["--config", str(config)], env, home / "kernel.log")
    yield kernel
    stop_kernel(kernel)


def tool_query(kernel: KernelProcess, calls: Any, agent: str = "tools/agent") -> dict[str, Any]:
    reply = kernel.query({"agent_name": agent, "query_type": "tool",
                          "query_data": {"query_class": "tool", "tool_calls": calls}})
    assert reply.status_code == 200, reply.text
    return reply.json()


def test_tools_from_every_source_are_listed_with_their_schemas(tooled: KernelProcess) -> None:
    listed = {tool.name: tool for tool in sdk.list_tools(tooled.url)}
    assert {"aios/calculator", "aios/convert_units", "aios/write_file", "example/bmi", "testmcp/add",
            "testmcp/shout", "pkg/reverse"} <= set(listed)
    assert listed["example/bmi"].source.startswith("folder ") and listed["example/bmi"].timeout_s == 5
    assert listed["testmcp/add"].source == "MCP server testmcp"
    assert listed["testmcp/add"].parameters["required"] == ["a", "b"]
    assert listed["pkg/reverse"].source == "entry point reverse of aios-test-tools"
    status = tooled.client.get("/status").json()
    assert status["tools"]["mcp_servers"] == [{"name": "testmcp", "command": sys.executable, "state": "up"}]
    assert tooled.client.get("/core/status").json()["tool"] == "active"


def test_the_aios_tool_body_runs_each_call_and_replies_in_the_aios_shape(tooled: KernelProcess) -> None:
    body = tool_query(tooled, [{"name": "example/bmi", "parameters": {"weight_kg": 70, "height_m": 1.75}},
                               {"name": "testmcp/add", "parameters": {"a": 2, "b": 3}},
                               {"name": "pkg/reverse", "parameters": {"text": "kernel"}}])
    response = body["response"]
    assert set(response) == {"response_class", "response_message", "finished", "error", "status_code", "tool_calls"}
    assert (response["response_class"], response["finished"], response["error"], response["status_code"]) == (
        "tool", True, None, 200)
    assert json.loads(response["response_message"]) == [{"bmi": 22.9, "band": "normal"}, "5", "lenrek"]
    assert [c["result"] for c in response["tool_calls"]] == [{"bmi": 22.9, "band": "normal"}, "5", "lenrek"]
    assert all(c["id"].startswith("call_") for c in response["tool_calls"])
    assert len(body["start_times"]) == 1 and body["waiting_times"][0] >= 0


def test_calls_sent_back_as_a_reply_gave_them_or_with_parameters_as_json_text_run(tooled: KernelProcess) -> None:
    """As AIOS takes them: a reply's calls (with their result, error and status_code) sent back, OpenAI's "type",
    and parameters as a string holding a JSON object."""
    first = tool_query(tooled, [{"name": "testmcp/add", "parameters": {"a": 2, "b": 3}}])["response"]["tool_calls"]
    again = tool_query(tooled, [*first, {"type": "function", "name": "aios/calculator",
                                         "parameters": '{"expression": "6 * 7"}'}])["response"]
    assert again["status_code"] == 200 and [c["result"] for c in again["tool_calls"]] == [
        "5", {"expression": "6 * 7", "result": 42}]


def test_one_call_replies_with_its_result_as_text(tooled: KernelProcess) -> None:
    reply = sdk.call_tool("tools/agent", [{"name": "aios/calculator", "parameters": {"expression": "6 * 7"}}],
                          tooled.url)
    assert json.loads(reply.response_message) == {"expression": "6 * 7", "result": 42}
    assert reply.results[0].result == {"expression": "6 * 7", "result": 42} and reply.finished


def test_a_failing_call_fails_alone_and_the_reply_says_which(tooled: KernelProcess) -> None:
    with pytest.raises(sdk.AIOSError) as caught:
        sdk.call_tool("tools/agent", [{"name": "testmcp/shout", "parameters": {"text": ""}},
                                      {"name": "testmcp/shout", "parameters": {"text": "still here"}}], tooled.url)
    reply = caught.value.response
    assert caught.value.status_code == 422 and "1 of 2 tool calls failed: testmcp/shout" in caught.value.message
    assert "nothing to shout" in reply.results[0].error and reply.results[1].result == "STILL HERE"
    assert not reply.finished


def test_the_sdk_finds_one_tool_or_names_close_ones(tooled: KernelProcess) -> None:
    assert sdk.get_tool("example/bmi", tooled.url).call_format()["function"]["name"] == "example/bmi"
    with pytest.raises(sdk.AIOSError) as caught:
        sdk.get_tool("example/bmx", tooled.url)
    assert caught.value.status_code == 404 and "did you mean example/bmi" in caught.value.message


BAD_TOOL_QUERIES = [
    # (id, query_data, HTTP status, envelope status (for 200), text the error must contain)
    ("no-calls", {"query_class": "tool"}, 422, None, "body.query_data.tool_calls: Field required"),
    ("empty-calls", {"tool_calls": []}, 200, 400, "tool request: tool_calls: List should have at least 1 item"),
    ("calls-not-list", {"tool_calls": {"name": "aios/calculator"}}, 422, None, "body.query_data.tool_calls"),
    ("call-without-name", {"tool_calls": [{"parameters": {}}]}, 422, None, "body.query_data.tool_calls.0.name"),
    ("parameters-not-object", {"tool_calls": [{"name": "aios/calculator", "parameters": [1]}]}, 422, None,
     "body.query_data.tool_calls.0.parameters"),
    ("unknown-key", {"tool_calls": [{"name": "aios/calculator", "params": {}}]}, 422, None,
     "body.query_data.tool_calls.0.params: Extra inputs are not permitted"),
    ("parameters-text-not-json", {"tool_calls": [{"name": "aios/calculator", "parameters": "{expression: 1}"}]}, 422,
     None, "body.query_data.tool_calls.0.parameters: Value error, is a string that is not a JSON object"),
    ("parameters-text-not-object", {"tool_calls": [{"name": "aios/calculator", "parameters": "[1]"}]}, 422, None,
     "body.query_data.tool_calls.0.parameters: Input should be a valid dictionary"),
    ("wrong-query-class", {"query_class": "llm", "tool_calls": [{"name": "aios/calculator"}]}, 422, None,
     "body.query_data.query_class"),
    ("too-many-calls", {"tool_calls": [{"name": "aios/calculator"}] * 65}, 200, 400,
     "tool request: tool_calls: List should have at most 64 items, not 65"),
    ("too-many-malformed-calls", {"tool_calls": [{"parameters": {}}] * 65}, 422, None,
     "body.query_data.tool_calls.64.name: Field required"),
    ("unknown-tool", {"tool_calls": [{"name": "nobody/nothing", "parameters": {}}]}, 200, 404,
     "this kernel has no tool named 'nobody/nothing'"),
    ("missing-parameter", {"tool_calls": [{"name": "example/bmi", "parameters": {"weight_kg": 70}}]}, 200, 400,
     "tool call 0 (example/bmi): parameter (the parameters object): 'height_m' is a required property"),
    ("wrong-type", {"tool_calls": [{"name": "testmcp/add", "parameters": {"a": "two", "b": 3}}]}, 200, 400,
     "tool call 0 (testmcp/add): parameter a: 'two' is not of type 'integer'"),
    ("out-of-range", {"tool_calls": [{"name": "example/bmi", "parameters": {"weight_kg": 70, "height_m": 0}}]}, 200,
     400, "parameter height_m: 0 is less than or equal to the minimum of 0"),
]


@pytest.mark.parametrize(("query_data", "status", "code", "text"), [b[1:] for b in BAD_TOOL_QUERIES],
                         ids=[b[0] for b in BAD_TOOL_QUERIES])
def test_bad_tool_queries_get_a_clear_error_and_nothing_runs(tooled: KernelProcess, query_data: dict[str, Any],
                                                            status: int, code: int | None, text: str) -> None:
    reply = tooled.query({"agent_name": "tools/bad", "query_type": "tool", "query_data": query_data})
    assert reply.status_code == status, reply.text
    if status == 422:
        problems = "; ".join(".".join(map(str, d["loc"])) + ": " + d["msg"] for d in reply.json()["detail"])
        assert text in problems
    else:
        response = reply.json()["response"]
        assert response["response_class"] == "tool" and response["status_code"] == code
        assert text in response["error"] and response["tool_calls"] is None
    assert tooled.client.get("/status").json()["queues"]["tool"]["running"] == 0


def test_the_model_calls_a_kernel_tool_and_the_kernel_runs_it(kernel: KernelProcess) -> None:
    """llm_call_tool on the embedded model: it picks the calculator under the grammar; the kernel runs the call
    (once, though the small model writes it twice) and replies with the result, as AIOS agents read it."""
    calculator = sdk.get_tool("aios/calculator", kernel.url)
    reply = sdk.llm_call_tool("tools/llm", [{"role": "user", "content": "What is 12 times 7?"}],
                              [calculator.call_format()], kernel.url, temperature=0, max_new_tokens=48)
    (call,) = reply.results
    assert (call.name, call.result) == ("aios/calculator", {"expression": call.parameters["expression"], "result": 84})
    assert json.loads(reply.response_message)["result"] == 84


def test_a_tool_the_kernel_does_not_have_is_reported_not_pretended(kernel: KernelProcess) -> None:
    offered = {"type": "function", "function": {"name": "demo/get_weather", "parameters": {
        "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}
    body = kernel.query({"agent_name": "tools/llm", "query_type": "llm", "query_data": {
        "messages": [{"role": "user", "content": "Weather in Paris?"}], "tools": [offered],
        "action_type": "call_tool", "temperature": 0, "max_new_tokens": 40}}).json()["response"]
    assert body["status_code"] == 404 and "no tool named 'demo/get_weather'" in body["error"]
    assert body["tool_calls"][0]["name"] == "demo/get_weather"  # what the model asked for, not run
