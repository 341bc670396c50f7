"""A streamed reply's text as its tokens come, decoding a few tokens per new token rather than the whole reply.

A streamed reply needs its text after every token. Decoding all of it each time costs time in proportion to its
length, so a reply of n tokens costs n² / 2 tokens of decoding: with 32 agents streaming 1,000-token replies, about
8 ms of every step at the end (``benchmarks/stream_text.py``). Here each new token decodes a short window twice,
as text-generation servers do: from a point a few tokens back up to the new tokens, then with them; what the
second adds is the new text. The window starts where the text was last whole (never inside a character that
byte tokens spell over several tokens), and a few tokens back, so that a tokenizer that treats the first token
of a decode apart (SentencePiece drops its leading space) does so in both decodes alike. The text stops before a
character still incomplete: it comes whole with the token that finishes it.
"""

from __future__ import annotations

from typing import Any

CONTEXT = 4  # the window reaches back over this many of the points where the text was whole


def incomplete(text: str) -> bool:
    """Whether decoded text ends inside a character: the tokens so far hold only the first bytes of one that byte
    tokens spell over several, and decode them to U+FFFD."""
    return text.endswith("\ufffd")


def whole(text: str) -> str:
    """Decoded text up to its last whole character."""
    return text[:-1] if incomplete(text) else text


class IncrementalText:
    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer
        self.text = ""  # the text of the first ``done`` tokens
        self.done = 0
        self._whole_at = [0]  # the last CONTEXT token counts at which the text was whole, oldest first

    def of(self, ids: list[int]) -> str:
        """The text of ``ids`` (which continue the ids of the last call, or are the first), but for a last
        character still incomplete."""
        start = self._whole_at[0]
        before = self._decode(ids[start:self.done])
        after = self._decode(ids[start:])
        if incomplete(after):
            return self.text
        if after.startswith(before) and (before or start == self.done):
            self.text += after[len(before):]
        else:  # the window changed its start, or has no text before the new tokens (all of them skipped)
            text = self._decode(ids)
            if incomplete(text):
                return self.text
            self.text = text
        self.done = len(ids)
        self._whole_at = [*self._whole_at, self.done][-CONTEXT:]
        return self.text

    def _decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True) if ids else ""
