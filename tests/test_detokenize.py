"""A streamed reply's text, kept as its tokens come: at every token, the whole reply decoded (up to a character
still incomplete), for the embedded model's byte-level tokenizer and a SentencePiece-style one with byte fallback
(as Llama 2 and Mistral have); characters that several tokens spell (emoji, CJK), spaces, newlines and skipped
special tokens included. And a new token decodes a few tokens, not the reply again."""

from __future__ import annotations

import json
import random
from typing import Any

import pytest
from tokenizers import Tokenizer, decoders, models, normalizers, trainers
from transformers import PreTrainedTokenizerFast

from aios.llm.hf.detokenize import CONTEXT, IncrementalText

TRICKY = ("Héllo wörld!  Two  spaces, a tab\tand\nnew lines.\n\n🙂👍🏽 emoji, 東京 and 日本語, naïve café; "
          "code: `def f(x):\n    return x ** 2` — dashes… and «quotes».")
CORPUS = ("The harbour received ships carrying grain, timber and wool to the market every week of the year. "
          "Traders spoke English, Deutsch and français; the ledger kept prices in three columns. ") * 20


@pytest.fixture(scope="module")
def byte_fallback() -> Any:
    """A SentencePiece-style tokenizer trained here on a little English: the characters it never saw it spells
    as byte tokens, and its decoder turns a run of them back into text (a run with an incomplete character
    becomes U+FFFD) and drops the leading space of a decode."""
    trained = Tokenizer(models.BPE(unk_token="<unk>"))
    trained.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    trained.train_from_iterator([CORPUS], trainers.BpeTrainer(vocab_size=600, special_tokens=["<unk>", "<s>", "</s>"]))
    spec = json.loads(trained.to_str())
    vocab = spec["model"]["vocab"]
    for byte in range(256):
        vocab.setdefault(f"<0x{byte:02X}>", len(vocab))
    spec["model"].update(byte_fallback=True, fuse_unk=True)
    spec["decoder"] = json.loads(decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(),
                                                    decoders.Fuse(), decoders.Strip(" ", 1, 0)]).__getstate__())
    tokenizer = Tokenizer.from_str(json.dumps(spec))
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, unk_token="<unk>", bos_token="<s>",
                                   eos_token="</s>")


def replies(tokenizer: Any, special: int) -> list[list[int]]:
    """The tricky text (with a special token inside), and random token sequences."""
    ids = tokenizer(TRICKY, add_special_tokens=False)["input_ids"]
    draw = random.Random(7)
    return [ids[:10] + [special] + ids[10:],
            *([draw.randrange(len(tokenizer)) for _ in range(60)] for _ in range(40))]


def assert_kept_as_decoded_whole(tokenizer: Any, ids: list[int]) -> None:
    text, last_whole = IncrementalText(tokenizer), ""
    for n in range(1, len(ids) + 1):
        whole = tokenizer.decode(ids[:n], skip_special_tokens=True)
        if not whole.endswith("\ufffd"):
            last_whole = whole
        assert text.of(ids[:n]) == last_whole, f"after token {n} of {ids}"


def test_the_text_kept_token_by_token_is_the_whole_reply_decoded(backend: Any) -> None:
    tokenizer = backend.tokenizer
    tricky, *random_ids = replies(tokenizer, tokenizer.convert_tokens_to_ids("<|im_start|>"))
    assert tokenizer.decode(tricky, skip_special_tokens=True) == TRICKY
    assert any(tokenizer.decode(tricky[:n]).endswith("\ufffd") for n in range(len(tricky)))  # split characters
    for ids in [tricky, *random_ids]:
        assert_kept_as_decoded_whole(tokenizer, ids)


def test_the_text_kept_with_a_byte_fallback_tokenizer_is_the_whole_reply_decoded(byte_fallback: Any) -> None:
    tricky, *random_ids = replies(byte_fallback, byte_fallback.convert_tokens_to_ids("<s>"))
    assert byte_fallback.decode(tricky, skip_special_tokens=True) == TRICKY
    assert sum(token.startswith("<0x") for token in byte_fallback.convert_ids_to_tokens(tricky)) > 20
    for ids in [tricky, *random_ids]:
        assert_kept_as_decoded_whole(byte_fallback, ids)


def test_a_new_token_decodes_a_few_tokens_not_the_reply_again(backend: Any) -> None:
    decoded: list[int] = []

    class Counting:
        def decode(self, ids: list[int], skip_special_tokens: bool) -> str:
            decoded.append(len(ids))
            return backend.tokenizer.decode(ids, skip_special_tokens=skip_special_tokens)

    ids = backend.tokenizer(TRICKY, add_special_tokens=False)["input_ids"] * 20  # about 1,000 tokens
    text = IncrementalText(Counting())
    for n in range(1, len(ids) + 1):
        text.of(ids[:n])
    assert text.text == TRICKY * 20
    # The window: CONTEXT points back where the text was whole, and a character still incomplete; a point may
    # come after the several tokens of one character, and a character takes at most 4 byte tokens.
    assert max(decoded) <= 2 * (CONTEXT + 4)
    assert sum(decoded) < 2 * (CONTEXT + 4) * 2 * len(ids)  # against len(ids)² / 2 for a whole decode every token
