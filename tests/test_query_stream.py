"""Streaming on the AIOS ``/query`` route (``stream: true``: NDJSON) and the SDK's ``llm_chat_stream``, against a
real kernel (``aios serve`` on loopback, the embedded model)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from aios.sdk import AIOSError, ChatStream, llm_chat_stream
from conftest import KernelProcess, wait_until

CAPITAL = [{"role": "user", "content": "What is the capital of France?"}]
TOOL = {"type": "function", "function": {"name": "get_weather", "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}


def streamed(kernel: KernelProcess, query_data: dict[str, Any], kind: str = "application/x-ndjson") -> list[Any]:
    reply = kernel.query({"agent_name": "stream/agent", "query_type": "llm",
                          "query_data": {"messages": CAPITAL, "temperature": 0, "stream": True, **query_data}})
    assert reply.status_code == 200 and reply.headers["content-type"] == kind
    return [json.loads(line) for line in reply.text.splitlines()]


def test_a_streamed_query_sends_deltas_then_the_envelope(kernel: KernelProcess) -> None:
    *deltas, envelope = streamed(kernel, {"max_new_tokens": 24})
    assert len(deltas) > 1 and all(set(d) == {"delta"} for d in deltas)
    response = envelope["response"]
    assert response["response_message"] == "".join(d["delta"] for d in deltas)
    assert "Paris" in response["response_message"]
    assert len(envelope["start_times"]) >= 1 and response["usage"]["completion_tokens"] <= 24


def test_a_streamed_tool_call_comes_whole_in_the_envelope(kernel: KernelProcess) -> None:
    (envelope,) = streamed(kernel, {"tools": [TOOL], "action_type": "chat_with_tool_call_output",
                                    "max_new_tokens": 40})
    assert envelope["response"]["tool_calls"][0]["name"] == "get_weather"


def test_a_prose_answer_under_tool_choice_auto_streams_and_holds_no_calls(kernel: KernelProcess) -> None:
    *deltas, envelope = streamed(kernel, {"tools": [TOOL], "tool_choice": "auto", "max_new_tokens": 24})
    response = envelope["response"]
    assert len(deltas) > 1 and response["response_message"] == "".join(d["delta"] for d in deltas)
    assert "Paris" in response["response_message"] and not response["tool_calls"]


def test_a_refused_streamed_query_is_one_envelope_on_one_line(kernel: KernelProcess) -> None:
    (envelope,) = streamed(kernel, {"llms": [{"name": "no-such-model"}]}, "application/json")
    assert envelope["response"]["status_code"] == 404 and "no-such-model" in envelope["response"]["error"]


@pytest.mark.parametrize(("stream", "fragment"), [("yes", "stream"), (1, "stream"), (None, "stream")])
def test_stream_must_be_a_boolean(kernel: KernelProcess, stream: Any, fragment: str) -> None:
    reply = kernel.query({"agent_name": "a", "query_type": "llm",
                          "query_data": {"messages": CAPITAL, "stream": stream}})
    assert reply.status_code == 422 and fragment in json.dumps(reply.json()["detail"])


def test_llm_chat_stream_yields_text_then_holds_the_reply(kernel: KernelProcess) -> None:
    stream = llm_chat_stream("sdk/stream", CAPITAL, kernel.url, temperature=0, max_new_tokens=24)
    assert isinstance(stream, ChatStream) and stream.response is None  # nothing sent before iterating
    pieces = list(stream)
    assert len(pieces) > 1 and "Paris" in "".join(pieces)
    assert stream.response is not None and stream.response.response_message == "".join(pieces)
    assert stream.response.timings.start_times


def test_a_loop_left_early_cancels_the_generation(kernel: KernelProcess) -> None:
    """The stream object stays (its reply is read from it), but the loop left: the kernel stops generating at
    once, not when the object is collected (it held its batch slot to the last of 1,500 tokens)."""
    stream = llm_chat_stream("sdk/leaves", [{"role": "user", "content": "Write a very long story."}], kernel.url,
                             temperature=0, max_new_tokens=1500)
    for _ in zip(range(3), stream):
        pass
    wait_until(lambda: kernel.client.get("/status").json()["queues"]["llm"]["running"] == 0)
    assert stream.response is None  # it ended before the reply


def test_llm_chat_stream_offering_tools_streams_a_prose_answer(kernel: KernelProcess) -> None:
    stream = llm_chat_stream("sdk/stream", CAPITAL, kernel.url, tools=[TOOL], temperature=0, max_new_tokens=24)
    pieces = list(stream)
    assert len(pieces) > 1 and "Paris" in "".join(pieces)
    assert stream.response is not None and not stream.response.tool_calls


@pytest.mark.parametrize(("call", "status", "fragment"), [
    (lambda url: llm_chat_stream("a", CAPITAL, url, llms=[{"name": "nope"}]), 404, "nope"),
    (lambda url: llm_chat_stream("a", CAPITAL, url, temperature=5), 400, "temperature: Input should be less than"),
    (lambda url: llm_chat_stream("a", [], url), 400, "messages: List should have at least 1 item"),
    (lambda url: llm_chat_stream("", CAPITAL, url), 422, "agent_name"),
    (lambda url: llm_chat_stream("a", CAPITAL, url, tools="aios/calculator"), 422, "tools"),  # type: ignore[arg-type]
    (lambda url: llm_chat_stream("a", CAPITAL, "http://127.0.0.1:9"), 0, "cannot reach"),
])
def test_llm_chat_stream_raises_aios_errors(kernel: KernelProcess, call: Any, status: int, fragment: str) -> None:
    with pytest.raises(AIOSError) as caught:
        list(call(kernel.url))
    assert caught.value.status_code == status and fragment in caught.value.message
