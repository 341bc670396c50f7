"""What hybrid retrieval (storage's file search, agent memory) shares: the words of a query worth matching, and
reciprocal rank fusion of ranked lists — nearest by meaning, and best by keywords — into one ranking."""

from __future__ import annotations

import re
from collections import defaultdict
from typing import Hashable, Iterable, TypeVar

RRF_K = 60  # the usual constant of reciprocal rank fusion
WORDS_WEIGHT = 0.5  # keyword ranks count half as much as meaning
MAX_QUERY_WORDS = 32
_WORD = re.compile(r"\w+")
# Function words match everywhere and only add noise to the keyword ranking.
STOPWORDS = frozenset("""a about above after again against all am an and any are as at be because been before being
below between both but by can could did do does doing down during each few for from further get gets got had has have
having he her here hers herself him himself his how i if in into is it its itself just let me more most much my myself no
nor not now of off on once only or other our ours ourselves out over own same she should so some such than that the their
theirs them themselves then there these they this those through to too under until up very was we were what when where
which while who whom why will with would you your yours yourself yourselves""".split())

Key = TypeVar("Key", bound=Hashable)


def query_words(text: str) -> list[str]:
    """The distinct words of ``text``, lower-cased, function words left out, at most ``MAX_QUERY_WORDS``."""
    seen: dict[str, None] = {}
    for word in _WORD.findall(text.lower()):
        if word not in STOPWORDS:
            seen.setdefault(word)
    return list(seen)[:MAX_QUERY_WORDS]


def fuse_ranks(by_meaning: Iterable[Key], by_words: Iterable[Key], k: int = RRF_K) -> dict[Key, float]:
    """Each key's reciprocal-rank score over the two lists (best first in each); higher is better. A smaller
    ``k`` gives the top ranks more weight against the ones below."""
    scores: dict[Key, float] = defaultdict(float)
    for weight, ranked in ((1.0, by_meaning), (WORDS_WEIGHT, by_words)):
        for rank, key in enumerate(ranked):
            scores[key] += weight / (k + rank + 1)
    return dict(scores)
