"""A streamed reply's text, kept as its tokens come: the same text as decoding the whole reply, at every token,
for the characters that byte-level tokens split (emoji, CJK), spaces, newlines and skipped special tokens; and a
new token decodes a few tokens, not the reply again."""

from __future__ import annotations

from typing import Any

from aios.llm.hf.detokenize import CONTEXT_TOKENS, IncrementalText

TRICKY = ("Héllo wörld!  Two  spaces, a tab\tand\nnew lines.\n\n🙂👍🏽 emoji, 東京 and 日本語, naïve café; "
          "code: `def f(x):\n    return x ** 2` — dashes… and «quotes».")


def reply_ids(tokenizer: Any) -> list[int]:
    ids = tokenizer(TRICKY, add_special_tokens=False)["input_ids"]
    special = tokenizer.convert_tokens_to_ids("<|im_start|>")  # skipped in the text, as in a reply
    return ids[:10] + [special] + ids[10:]


def test_the_text_kept_token_by_token_is_the_whole_reply_decoded(backend: Any) -> None:
    tokenizer, ids = backend.tokenizer, reply_ids(backend.tokenizer)
    text = IncrementalText(tokenizer)
    whole_at = [tokenizer.decode(ids[:n], skip_special_tokens=True) for n in range(1, len(ids) + 1)]
    kept_at = [text.of(ids[:n]) for n in range(1, len(ids) + 1)]
    assert kept_at[-1] == tokenizer.decode(ids, skip_special_tokens=True) == TRICKY
    assert kept_at == whole_at
    assert any(whole.endswith("\ufffd") for whole in whole_at)  # some tokens end mid-character


def test_a_new_token_decodes_a_few_tokens_not_the_reply_again(backend: Any) -> None:
    decoded: list[int] = []

    class Counting:
        def decode(self, ids: list[int], skip_special_tokens: bool) -> str:
            decoded.append(len(ids))
            return backend.tokenizer.decode(ids, skip_special_tokens=skip_special_tokens)

    ids = reply_ids(backend.tokenizer) * 20  # a reply of about 1,000 tokens
    text = IncrementalText(Counting())
    for n in range(1, len(ids) + 1):
        text.of(ids[:n])
    assert text.text == backend.tokenizer.decode(ids, skip_special_tokens=True)
    assert max(decoded) <= CONTEXT_TOKENS + 4  # a character spans at most 4 byte tokens
