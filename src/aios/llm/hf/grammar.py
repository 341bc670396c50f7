"""Grammar-constrained decoding with llguidance: each constrained sequence carries a matcher that says, before
every token, which tokens keep the reply valid; the engine masks the rest out of the logits.

llguidance was picked by measurement over xgrammar (BENCHMARKS.md, "Grammar engines"): at batch 16 both cost
well under 1-2% of a decode step, llguidance compiles a tool schema in ~2 ms (xgrammar ~11 ms), and it adds 8 MB
to an install where xgrammar adds ~1 GB (it requires triton, even on a machine without a GPU).

JSON is compact (no free whitespace), so a reply takes no more tokens than it needs. Compiled grammars are kept
per spec (one tokenizer per model); a sequence gets a cheap copy of the compiled matcher, whose state then lives
with the sequence — in the batch, and in the wait queue while its KV is in the context store — so a preempted
constrained generation resumes where it was.
"""

from __future__ import annotations

import json
import logging
import threading
from collections import OrderedDict
from typing import Any, Callable

import llguidance
import llguidance.hf
import torch

from aios.errors import BadRequest
from aios.llm.hf.transfer import to_device
from aios.llm.structured import OutputSpec

log = logging.getLogger(__name__)

# Compact JSON; keywords the grammar cannot express (uniqueItems, not, if/then, contains, dependentRequired) are
# left out of the grammar rather than refused: the handler checks every reply against the full schema.
COMPACT_JSON = {"whitespace_flexible": False, "lenient": True}
# Prose, for tool_choice "auto": anything that does not start like JSON, a tag such as <tool_call>, or blank
# space before them.
PROSE = r"/[^\[{< \t\r\n][\s\S]*/"
LARGEST_EXACT = 2**53 - 1


class TokenConstraint:
    """One sequence's grammar state. ``json_start(token)`` says whether a first token begins JSON, which tells
    apart, under ``tool_choice: auto``, a reply of calls from one of prose."""

    def __init__(self, matcher: llguidance.LLMatcher, allows_prose: bool, json_start: Callable[[int], bool]) -> None:
        self.matcher, self._allows_prose, self._json_start = matcher, allows_prose, json_start
        self.prose: bool | None = None  # known from the first token

    def accept(self, token: int) -> bool:
        """Advance past a sampled token; False (and a log line) if the grammar refuses it."""
        if self.prose is None:
            self.prose = self._allows_prose and not self._json_start(token)
        if self.matcher.consume_token(token):
            return True
        log.warning("the grammar refused token %d: %s", token, self.matcher.get_error())
        return False

    @property
    def complete(self) -> bool:
        """The reply is whole: the grammar allows nothing more."""
        return self.matcher.is_stopped()


class Grammars:
    """Compiled grammars for one model's tokenizer, cached by spec. Thread-safe: prompts are prepared on worker
    threads while the engine's thread masks and advances matchers."""

    def __init__(self, tokenizer: Any, vocab_size: int, eos_ids: set[int], cache_size: int = 256) -> None:
        self._hf_tokenizer, self.vocab_size, self._eos_ids = tokenizer, vocab_size, sorted(eos_ids)
        self._tokenizer: llguidance.LLTokenizer | None = None  # built on first use (~1 s)
        self._compiled: OrderedDict[str, llguidance.LLMatcher] = OrderedDict()
        self._cache_size = cache_size
        self._lock = threading.Lock()
        self._closing_groups: list[torch.Tensor] | None = None

    @property
    def cached(self) -> int:
        """Compiled grammars kept."""
        return len(self._compiled)

    def constraint(self, spec: OutputSpec) -> TokenConstraint:
        """A fresh matcher for ``spec``; BadRequest naming the problem if the grammar engine cannot use it."""
        with self._lock:
            compiled = self._compiled.get(spec.key)
            if compiled is None:
                compiled = self._compile(spec)
                self._compiled[spec.key] = compiled
                if len(self._compiled) > self._cache_size:
                    self._compiled.popitem(last=False)
            else:
                self._compiled.move_to_end(spec.key)
            return TokenConstraint(compiled.deep_copy(), spec.allow_text, self._json_start)

    def _json_start(self, token: int) -> bool:
        return self._hf_tokenizer.decode([token]).startswith(("[", "{"))

    def _compile(self, spec: OutputSpec) -> llguidance.LLMatcher:
        if self._tokenizer is None:
            self._tokenizer = llguidance.hf.from_tokenizer(self._hf_tokenizer, n_vocab=self.vocab_size,
                                                           eos_token=self._eos_ids)
        matcher = llguidance.LLMatcher(self._tokenizer, grammar_of(spec), log_level=0)
        if matcher.is_error():
            raise BadRequest(f"the grammar engine cannot use this schema: {matcher.get_error()}")
        for warning in matcher.get_grammar_warnings():
            log.info("grammar for a structured reply: %s (the reply is checked against it instead)", warning)
        return matcher

    def mask(self, logits: torch.Tensor, rows: list[int], constraints: list[TokenConstraint],
             closing: list[bool]) -> None:
        """Set to -inf the logits of every token that ``constraints[i]`` forbids in row ``rows[i]``. Where
        ``closing[i]`` (the reply is running out of tokens), allow only tokens that close strings, arrays and
        objects (or move on to a required key) whenever the grammar allows one, so that the reply ends whole
        instead of cut off."""
        bitmask = torch.empty((len(rows), (self.vocab_size + 31) // 32), dtype=torch.int32)
        row_bytes = bitmask.shape[1] * 4
        # One by one: on a few cores llguidance's thread pool (LLExecutor) only adds latency (BENCHMARKS.md).
        for i, constraint in enumerate(constraints):
            constraint.matcher.unsafe_compute_mask_ptr(bitmask.data_ptr() + i * row_bytes, row_bytes)
        bits = to_device(bitmask, logits.device)  # 32x smaller than the mask it unpacks into
        shifts = torch.arange(32, dtype=torch.int32, device=logits.device)
        allowed = ((bits.unsqueeze(-1) >> shifts) & 1).view(len(rows), -1)[:, : logits.shape[1]].bool()
        for i in (i for i, close in enumerate(closing) if close):
            # The first group (in order of preference) with a token the grammar allows; chosen on the device, so
            # the host does not wait for the GPU to ask which.
            chosen = allowed[i]
            for group in reversed(self._closers(logits.shape[1], logits.device)):
                closers = allowed[i] & group
                chosen = torch.where(closers.any(), closers, chosen)
            allowed[i] = chosen
        index = to_device(torch.tensor(rows), logits.device)
        logits[index] = logits[index].masked_fill(~allowed, float("-inf"))

    def _closers(self, vocab: int, device: torch.device) -> list[torch.Tensor]:
        """The tokens that bring JSON to an end, in the order to prefer them: those that end a string (and maybe
        more), those that end arrays and objects, then the comma that moves on to a required key. Built once, on
        the device the logits live on."""
        if self._closing_groups is None:
            texts = self._hf_tokenizer.batch_decode([[i] for i in range(len(self._hf_tokenizer))])[:vocab]
            tests = (lambda t: t.startswith('"') and set(t) <= set('"]}'), lambda t: set(t) <= set("]}"),
                     lambda t: t == ",")
            self._closing_groups = []
            for test in tests:
                group = torch.zeros(vocab, dtype=torch.bool)
                group[[i for i, text in enumerate(texts) if text and test(text)]] = True
                self._closing_groups.append(group.to(device))
        return self._closing_groups


def grammar_of(spec: OutputSpec) -> str:
    """The llguidance grammar for a spec: compact JSON for its schema, or (``allow_text``) that or prose."""
    schema = closed(spec.whole_schema)
    if not spec.allow_text:
        return llguidance.LLMatcher.grammar_from_json_schema(schema, defaults=COMPACT_JSON)
    schema["x-guidance"] = COMPACT_JSON
    return llguidance.LLMatcher.grammar_from_lark(f"start: json | prose\njson: %json {json.dumps(schema)}\n"
                                                   f"prose: {PROSE}\n")


def closed(schema: Any, closable: bool = True) -> Any:
    """A copy of the schema in which objects with listed ``properties`` take no others unless they say so, and
    numbers stay within what JSON carries exactly (±2**53).

    JSON Schema allows extra keys and endless digits, and a small model given that freedom invents keys or
    repeats a digit until it runs out of tokens; like OpenAI's strict mode, the grammar allows only the keys the
    schema names. An object is left open where closing could contradict the schema: combined with ``allOf``,
    ``anyOf``, ``oneOf`` or ``$ref`` (whose parts name other keys), as a part of ``allOf``, or when ``required``
    names a key that ``properties`` does not. (Replies are still checked against the schema as given.)"""
    if isinstance(schema, list):
        return [closed(s, closable) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = dict(schema)
    for key in ("items", "additionalProperties", "not", "if", "then", "else", "contains"):
        if isinstance(out.get(key), (dict, list)):
            out[key] = closed(out[key])
    for key in ("anyOf", "oneOf", "prefixItems"):
        if isinstance(out.get(key), list):
            out[key] = closed(out[key])
    if isinstance(out.get("allOf"), list):
        out["allOf"] = closed(out["allOf"], closable=False)
    for key in ("properties", "$defs", "definitions", "patternProperties"):
        if isinstance(out.get(key), dict):
            out[key] = {name: closed(sub) for name, sub in out[key].items()}
    properties = out.get("properties")
    if closable and isinstance(properties, dict) and not _OPEN_KEYS.intersection(out) \
            and set(out.get("required") or []) <= set(properties):
        out["additionalProperties"] = False
    types = out.get("type") if isinstance(out.get("type"), list) else [out.get("type")]
    if {"integer", "number"}.intersection(types):
        _bound(out)
    return out


# Keywords next to which an object is left open (see ``closed``).
_OPEN_KEYS = frozenset({"additionalProperties", "patternProperties", "unevaluatedProperties", "allOf", "anyOf",
                        "oneOf", "$ref"})


def _bound(number: dict[str, Any]) -> None:
    """Add ±2**53 bounds where the schema sets none and they do not contradict a bound it sets."""
    low = number.get("minimum", number.get("exclusiveMinimum"))
    high = number.get("maximum", number.get("exclusiveMaximum"))
    if low is None and not (isinstance(high, (int, float)) and high < -LARGEST_EXACT):
        number["minimum"] = -LARGEST_EXACT
    if high is None and not (isinstance(low, (int, float)) and low > LARGEST_EXACT):
        number["maximum"] = LARGEST_EXACT
