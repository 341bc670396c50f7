"""``aios/text_stats``: counts a reader cares about — characters, words, sentences, paragraphs, reading time,
and the most frequent words."""

from __future__ import annotations

import re
from collections import Counter
from typing import Any

from aios.tools.tool import Tool

WORDS_PER_MINUTE = 238  # an adult's average silent reading speed
MAX_TEXT = 1_000_000  # characters (a long novel); counted in well under a second
_WORD = re.compile(r"[^\W_]+(?:['’-][^\W_]+)*")
# A run of . ! ? before a space or the end. Matched only from the run's first mark, and without giving marks back:
# tried from every mark of a run, the search would be quadratic in the run's length — and ``re`` holds the
# interpreter's lock, so a text of dots would stall the whole kernel.
_SENTENCE_END = re.compile(r"(?<![.!?])[.!?]++(?=\s|$)")


def text_stats(text: str) -> dict[str, Any]:
    words = _WORD.findall(text)
    paragraphs = [p for p in re.split(r"\n\s*\n", text) if p.strip()]
    sentences = len(_SENTENCE_END.findall(text)) or (1 if words else 0)
    common = Counter(w.lower() for w in words).most_common(5)
    return {
        "characters": len(text),
        "characters_without_spaces": sum(not c.isspace() for c in text),
        "words": len(words),
        "sentences": sentences,
        "paragraphs": len(paragraphs),
        "lines": len(text.splitlines()),
        "average_word_length": round(sum(map(len, words)) / len(words), 2) if words else 0,
        "reading_time_s": round(len(words) / WORDS_PER_MINUTE * 60, 1),
        "most_common_words": [{"word": w, "count": n} for w, n in common],
    }


TOOL = Tool(
    name="aios/text_stats",
    description="Statistics of a text: characters, words, sentences, paragraphs, lines, average word length, "
                "reading time and the most common words.",
    parameters={"type": "object", "properties": {"text": {"type": "string", "maxLength": MAX_TEXT}},
                "required": ["text"], "additionalProperties": False},
    run=lambda params, context: text_stats(params["text"]), timeout_s=10.0,
)
