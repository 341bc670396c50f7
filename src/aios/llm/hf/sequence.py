"""A sequence in the engine: one generation request's tokens and progress."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch

from aios.llm.core import Generation, GenerationRequest


@dataclass(eq=False)
class Sequence:
    request: GenerationRequest
    prompt_ids: list[int]
    # Called once, on the engine's thread, with the finished generation or the error that ended it.
    on_done: Callable[[Generation | BaseException], None]
    output_ids: list[int] = field(default_factory=list)
    row: int = -1  # row in the batch's KV cache while running
    generator: torch.Generator | None = None  # per-sequence RNG, so sampling does not depend on batch mates
    text: str = ""  # decoded output, kept only when stop strings need it

    @property
    def length(self) -> int:
        """Tokens in the KV cache: the prompt and all outputs but the newest (which is the next input)."""
        return len(self.prompt_ids) + len(self.output_ids) - 1

    @property
    def sampling(self):  # noqa: ANN201
        return self.request.sampling

    def finish(self, reply_text: str, reason: str) -> None:
        self.on_done(Generation(text=reply_text, prompt_tokens=len(self.prompt_ids),
                                completion_tokens=len(self.output_ids), finish_reason=reason))
