"""What every LLM core offers the kernel, and the plain data passed to and from it."""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Protocol

from aios.llm.structured import OutputSpec


# Below this temperature sampling is greedy in all but name (a logit gap of 0.01 already weighs e^-100), and
# dividing logits by it would overflow: such requests are decoded greedily.
MIN_TEMPERATURE = 1e-4

# Why a generation ended. Only "stop" is a natural end (end of turn, a stop string, a complete structured reply).
FINISH_REASONS = ("stop", "length", "kv_budget", "cancelled")


@dataclass
class SamplingParams:
    """How to pick tokens. ``temperature == 0`` (or below ``MIN_TEMPERATURE``) means greedy decoding."""

    temperature: float = 1.0
    top_p: float = 1.0
    max_new_tokens: int = 1000
    stop: list[str] = field(default_factory=list)
    seed: int | None = None  # sampling's random seed, for a reproducible reply; None: a fresh one each time

    @property
    def greedy(self) -> bool:
        return self.temperature < MIN_TEMPERATURE


@dataclass
class Generation:
    text: str
    prompt_tokens: int
    completion_tokens: int
    # "stop" (end of turn, a stop string), "length" (max_new_tokens or the model's context), "kv_budget" (the
    # model's KV-cache budget could not hold it even alone), "cancelled"
    finish_reason: str
    waited_s: float = 0.0  # from submission until it first entered the batch
    first_token_s: float = 0.0  # from submission until its first token


@dataclass
class GenerationRequest:
    messages: list[dict[str, Any]]
    sampling: SamplingParams
    # OpenAI function tools with model-safe names (author__name); None when the reply is free text.
    tools: list[dict[str, Any]] | None = None
    # Text the assistant's reply starts with, written for the model (e.g. '{"' for a JSON object); it is part
    # of the returned text.
    reply_prefix: str = ""
    # What the reply must be: enforced while decoding by backends whose ``constrains`` is true; passed on to an
    # API's native fields by the others (the handler then checks the reply).
    constraint: OutputSpec | None = None
    # Higher runs first under the priority policy.
    priority: int = 0
    # Set from another thread to stop generation at the next token.
    cancelled: threading.Event = field(default_factory=threading.Event)
    # Told (from the engine's thread) each time the generation starts or stops running: the syscall's slices.
    on_running: Callable[[bool], None] | None = None
    # Given (from the engine's thread) each new piece of reply text as soon as it is decoded.
    on_text: Callable[[str], None] | None = None


class LLMCore(Protocol):
    """A model the kernel can run. ``complete`` must not block the event loop."""

    name: str
    backend: str
    # Whether ``GenerationRequest.constraint`` is enforced while decoding; if not, the kernel checks replies.
    constrains: bool
    # Prompts longer than this many characters cannot fit the model: refused before anything tokenizes them.
    # None when the kernel cannot know (an API model: its server says).
    max_prompt_chars: int | None

    async def complete(self, request: GenerationRequest) -> Generation: ...

    def describe(self) -> dict[str, Any]:
        """Facts for status pages: name, backend, device, dtype."""
        ...

    def close(self) -> Awaitable[None] | None:
        """Release the model (an API backend's connections: then it returns an awaitable)."""
        ...


def on_loop(loop: asyncio.AbstractEventLoop, callback: Callable[..., Any]) -> Callable[..., None]:
    """``callback`` made callable from another thread: it runs on ``loop``, or not at all once the loop has
    closed (its caller is gone, so nobody is waiting for the news)."""

    def notify(*args: Any) -> None:
        try:
            loop.call_soon_threadsafe(callback, *args)
        except RuntimeError:  # "Event loop is closed"
            pass

    return notify
