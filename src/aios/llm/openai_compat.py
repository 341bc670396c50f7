"""API backends that speak the OpenAI chat-completions protocol: OpenAI itself, and the servers that copy it
(vLLM, SGLang, Ollama). Structured output uses the provider's own ``tools`` / ``tool_choice`` /
``response_format``; since the kernel cannot see inside the provider's decoding, it still checks every
structured reply (and retries once), as for any backend that does not constrain.

Tool calls come back from the provider as ``message.tool_calls``; they are written into the generation's text in
the kernel's own form (a JSON array of ``{"name", "parameters"}``) so that one reader serves every backend.

A free-text request with ``on_text`` (a streamed syscall) is asked with ``stream: true``: the provider's deltas
reach ``on_text`` as they arrive. Structured requests are never streamed: their reply is checked whole.
"""

from __future__ import annotations

import json
from typing import Any, Callable

import httpx

from aios.errors import KernelError
from aios.jsonvalues import json_problem
from aios.llm.core import Generation, GenerationRequest
from aios.llm.prompting import slash_to_double_underscore
from aios.llm.structured import ANY_OBJECT, OutputSpec
from aios.urls import ServiceURL, scrub

# Local inference can take minutes for a long reply; connecting should not.
TIMEOUT = httpx.Timeout(600.0, connect=10.0)


class ProviderError(KernelError):
    """The provider refused the request or could not be reached. A request the provider finds bad (too long,
    a schema it does not take) is a 400, its rate limit a 429; anything else is the provider's fault: 502."""

    def __init__(self, message: str, provider_status: int | None = None) -> None:
        super().__init__(message)
        self.status_code = {400: 400, 413: 400, 422: 400, 429: 429}.get(provider_status or 0, 502)


class OpenAICompatBackend:
    """A model behind an OpenAI-compatible ``/chat/completions`` endpoint at ``base_url``."""

    constrains = False  # the provider's decoding is out of the kernel's sight: replies are checked
    max_prompt_chars = None  # the provider knows its model's context; it refuses what does not fit

    def __init__(self, model_name: str, backend: str, url: ServiceURL, api_key: str | None = None,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        """``url`` is the API root (``.../v1``); its user info becomes basic auth and its query parameters go
        with every request, but only ``base_url`` (credentials masked) is ever shown."""
        self.name, self.backend, self.base_url = model_name, backend, url.shown
        self._secrets = [*url.secrets, *([api_key] if api_key else [])]
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        auth = httpx.BasicAuth(url.username or "", url.password or "") if url.username or url.password else None
        self._client = httpx.AsyncClient(base_url=url.base, headers=headers, auth=auth, params=url.params,
                                         timeout=TIMEOUT, transport=transport)

    async def complete(self, request: GenerationRequest) -> Generation:
        body = chat_body(self.name, request, tokens_field="max_completion_tokens" if self.backend == "openai"
                         else "max_tokens")
        on_text = request.on_text if request.constraint is None else None
        if on_text is not None:
            body.update(stream=True, stream_options={"include_usage": True})
        try:
            async with self._client.stream("POST", "/chat/completions", json=body) as reply:
                if reply.status_code != 200:
                    await reply.aread()
                    raise self._error(f"the {self.backend} backend answered {reply.status_code}: {_detail(reply)}",
                                      reply.status_code)
                if on_text is not None:
                    return await self._streamed(reply, on_text)
                await reply.aread()
                return self._read(lambda: generation_of(reply.json()))
        except httpx.HTTPError as exc:
            raise self._error(f"cannot reach the {self.backend} backend at {self.base_url}: {exc}") from None

    async def _streamed(self, reply: httpx.Response, on_text: Callable[[str], None]) -> Generation:
        """Read a server-sent stream of chunks, handing each text delta on as it comes."""
        stream = ChunkReader(on_text)
        async for line in reply.aiter_lines():
            if self._read(stream.take, line):
                break
        return stream.generation()

    def _read(self, read: Callable[..., Any], *args: Any) -> Any:
        try:
            return read(*args)
        except (ValueError, KeyError, IndexError, TypeError, AttributeError) as exc:
            raise self._error(f"the {self.backend} backend sent a reply that is not a chat completion: "
                              f"{type(exc).__name__}: {exc}") from None

    def _error(self, message: str, provider_status: int | None = None) -> ProviderError:
        # What the HTTP layer or the provider says may quote the request's URL or headers: mask the secrets.
        return ProviderError(scrub(message, self._secrets), provider_status)

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "backend": self.backend, "base_url": self.base_url,
                "structured_output": "provider"}

    async def close(self) -> None:
        await self._client.aclose()


def chat_body(model: str, request: GenerationRequest, tokens_field: str = "max_tokens") -> dict[str, Any]:
    """The ``/chat/completions`` request: messages, sampling, and the structured-output fields natively.
    (OpenAI's newer models take only ``max_completion_tokens``; servers that copy the API know ``max_tokens``.)"""
    sampling = request.sampling
    body: dict[str, Any] = {"model": model, "messages": [_openai_message(m) for m in request.messages],
                            "temperature": sampling.temperature, "top_p": sampling.top_p,
                            tokens_field: sampling.max_new_tokens}
    if sampling.stop:
        body["stop"] = sampling.stop
    spec = request.constraint
    if spec is not None and spec.tools is not None:
        body["tools"] = request.tools
        body["tool_choice"] = _tool_choice(spec)
        if spec.schema.get("maxItems") == 1:  # sent only when false: not every server copying the API knows it
            body["parallel_tool_calls"] = False
        if spec.answer is not None:  # no call: then this JSON
            body["response_format"] = _response_format(OutputSpec(spec.answer))
    elif spec is not None:
        body["response_format"] = _response_format(spec)
    return body


def _openai_message(message: dict[str, Any]) -> dict[str, Any]:
    """A message as OpenAI takes it: tool calls the kernel returned earlier (``{"name": "author/name",
    "parameters": {...}, "id"}``), fed back by an agent, become OpenAI's function calls."""
    calls = message.get("tool_calls")
    if not isinstance(calls, list) or not all(isinstance(c, dict) and "parameters" in c for c in calls):
        return message
    return {**message, "tool_calls": [
        {"id": c.get("id") or f"call_{i}", "type": "function",
         "function": {"name": slash_to_double_underscore(str(c.get("name"))), "arguments": json.dumps(c["parameters"])}}
        for i, c in enumerate(calls)]}


def _tool_choice(spec: OutputSpec) -> Any:
    if spec.without_a_call != "call":
        return "auto"
    if len(spec.tools or {}) == 1:
        return {"type": "function", "function": {"name": next(iter(spec.tools or {}))}}
    return "required"


def _response_format(spec: OutputSpec) -> dict[str, Any]:
    if spec.schema == ANY_OBJECT:
        return {"type": "json_object"}
    return {"type": "json_schema", "json_schema": {"name": "reply", "schema": spec.schema}}


def generation_of(completion: dict[str, Any]) -> Generation:
    """A chat completion as a generation; tool calls are written as the kernel's JSON array of calls."""
    choice = completion["choices"][0]
    message = choice["message"]
    if not isinstance(message, dict):
        raise TypeError(f"choices[0].message is {type(message).__name__}, not an object")
    calls = message.get("tool_calls") or []
    if calls:
        text = json.dumps([{"name": c["function"]["name"], "parameters": _arguments(c["function"])} for c in calls])
    else:
        text = message.get("content") or ""
    usage = completion.get("usage") or {}
    return Generation(text=text, prompt_tokens=int(usage.get("prompt_tokens") or 0),
                      completion_tokens=int(usage.get("completion_tokens") or 0),
                      finish_reason="length" if choice.get("finish_reason") == "length" else "stop")


class ChunkReader:
    """Reads a streamed chat completion line by line (``data: {chunk}``, then ``data: [DONE]``)."""

    def __init__(self, on_text: Callable[[str], None]) -> None:
        self.on_text = on_text
        self.pieces: list[str] = []
        self.finish_reason = "stop"
        self.usage: dict[str, Any] = {}

    def take(self, line: str) -> bool:
        """Read one line; True at the end of the stream. A malformed chunk raises ValueError or KeyError."""
        if not line.startswith("data:"):
            return False  # blank separators, comments (": ping"), event names
        data = line[len("data:"):].strip()
        if data == "[DONE]":
            return True
        chunk = json.loads(data)
        if chunk.get("error"):
            raise ValueError(f"the stream ended with an error: {_error_text(chunk['error'])}")
        self.usage = chunk.get("usage") or self.usage
        for choice in chunk.get("choices") or []:
            text = (choice.get("delta") or {}).get("content")
            if text:
                self.pieces.append(text)
                self.on_text(text)
            self.finish_reason = choice.get("finish_reason") or self.finish_reason
        return False

    def generation(self) -> Generation:
        return Generation(text="".join(self.pieces), prompt_tokens=int(self.usage.get("prompt_tokens") or 0),
                          completion_tokens=int(self.usage.get("completion_tokens") or 0),
                          finish_reason="length" if self.finish_reason == "length" else "stop")


def _error_text(error: Any) -> str:
    return str(error.get("message") if isinstance(error, dict) else error)[:300]


def _arguments(function: dict[str, Any]) -> Any:
    """OpenAI sends arguments as a JSON string; a string that is not JSON (NaN is not) is kept, for the check to
    report."""
    arguments = parsed = function.get("arguments")
    if isinstance(arguments, str):
        try:
            parsed = json.loads(arguments) if arguments.strip() else {}
        except json.JSONDecodeError:
            return arguments
    return parsed if json_problem(parsed) is None else str(arguments)


def _detail(reply: httpx.Response) -> str:
    """The provider's own error message where it sends one (OpenAI: ``error.message``; vLLM, SGLang: ``message``;
    FastAPI servers: ``detail``), else the start of the body."""
    try:
        body = reply.json()
    except ValueError:
        return reply.text[:300] or reply.reason_phrase
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict) and error.get("message"):
            return _error_text(error)
        for key in ("message", "detail", "error"):
            if body.get(key):
                return str(body[key])[:300]
    return json.dumps(body)[:300]
