"""A sequence in the engine: one generation request's tokens, progress and scheduling state."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Callable

import torch

from aios.llm.core import Generation, GenerationRequest, SamplingParams
from aios.llm.hf.detokenize import IncrementalText
from aios.llm.hf.grammar import TokenConstraint
from aios.llm.hf.kv import SharedKV

log = logging.getLogger(__name__)


@dataclass(eq=False)
class Sequence:
    request: GenerationRequest
    prompt_ids: list[int]
    # Called once, on the engine's thread, with the finished generation or the error that ended it.
    on_done: Callable[[Generation | BaseException], None]
    output_ids: list[int] = field(default_factory=list)
    generator: torch.Generator | None = None  # per-sequence RNG: sampling does not depend on batch mates
    constraint: TokenConstraint | None = None  # grammar state of a constrained reply
    row: int = -1  # row in the batch's KV cache while running
    cls: int = 0  # the size class of that row (see BatchKV)
    base: SharedKV | None = None  # KV of its first tokens, shared with other sequences; its row holds the rest
    ready_at: float = field(default_factory=time.time)  # when it last became runnable (for the policy)
    slice_tokens: int = 0  # tokens produced since it last started running
    snapshot: int | None = None  # handle of its saved KV while suspended
    prefilled: int = 0  # prompt tokens whose KV is in the cache, while the prompt is being read
    passed_over: int = 0  # steps in a row in which the prompt budget went to other prompts before this one
    streamed: int = 0  # characters of the reply already given to on_text
    detokenizer: IncrementalText | None = None  # its reply's text so far, kept as tokens come (while it streams)
    submitted_at: float = field(default_factory=time.perf_counter)
    admitted_at: float | None = None
    first_token_at: float | None = None
    reported: bool = False  # its end was reported: a sequence ends once, however many paths lead there

    @property
    def priority(self) -> int:
        return self.request.priority

    @property
    def sampling(self) -> SamplingParams:
        return self.request.sampling

    @property
    def length(self) -> int:
        """Tokens in the KV cache: the prompt and all outputs but the newest (which is the next input)."""
        return len(self.prompt_ids) + len(self.output_ids) - 1

    @property
    def fresh(self) -> bool:
        """Nothing of it computed yet: no saved KV, no output, no prompt token read."""
        return self.snapshot is None and not self.output_ids and not self.prefilled

    @property
    def cached(self) -> int:
        """Tokens whose KV is in the cache now (fewer than ``length`` while the prompt is still being read)."""
        return self.length if self.output_ids else self.prefilled

    @property
    def base_len(self) -> int:
        """Tokens of its shared start (0 without one): its row holds positions ``base_len`` on."""
        return len(self.base) if self.base is not None else 0

    @property
    def row_tokens(self) -> int:
        """Tokens whose KV is in its own row now."""
        return self.cached - self.base_len

    @property
    def row_length(self) -> int:
        """Tokens its row holds once the prompt is read (``length`` less its shared start)."""
        return self.length - self.base_len

    @property
    def cached_ids(self) -> list[int]:
        """The tokens whose KV is in the cache."""
        return (self.prompt_ids + self.output_ids)[: self.cached]

    def stream(self, text: str, final: bool) -> None:
        """Give ``on_text`` what is new in ``text`` (the reply so far). Until the end, hold back a possibly
        unfinished character and anything that could be the start of a stop string."""
        if self.request.on_text is None:
            return
        end = len(text)
        if not final:
            if text.endswith("\ufffd"):
                end -= 1
            end -= max((len(s) - 1 for s in self.sampling.stop), default=0)
        if end > self.streamed:
            _safely(self.request.on_text, text[self.streamed:end])
            self.streamed = end

    def running(self, now_running: bool) -> None:
        if self.request.on_running is not None:
            _safely(self.request.on_running, now_running)

    def finish(self, reply_text: str, reason: str) -> None:
        since = lambda t: (t - self.submitted_at) if t is not None else 0.0  # noqa: E731
        self.report(Generation(text=reply_text, prompt_tokens=len(self.prompt_ids),
                                completion_tokens=len(self.output_ids), finish_reason=reason,
                                waited_s=since(self.admitted_at), first_token_s=since(self.first_token_at)))

    def report(self, outcome: Generation | BaseException) -> None:
        """Report the end (a generation, or the error that ended it) to whoever submitted the sequence."""
        if self.reported:
            return
        self.reported = True
        self.base = None  # an ended sequence holds no KV: the caller may keep the object as long as it likes
        _safely(self.on_done, outcome)


def _safely(callback: Callable[..., object], *args: object) -> None:
    # A caller's callback must never break the engine's step loop, which serves everyone else too.
    try:
        callback(*args)
    except Exception:
        log.exception("a sequence callback failed")
