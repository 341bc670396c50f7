"""Each sequence's next token from its row of logits: greedy rows by their largest logit, the others sampled with
their own temperature, top_p and random generator. All rows of a step go through the same few batched tensor
operations and are read back once: on a GPU that is the step's one wait, however many rows sample (sampling a row
at a time waited once a row, and launched a dozen kernels for each).

A row samples by inverse CDF: its probabilities (softmax of logits / temperature), within top_p its nucleus (the
most likely tokens whose mass before each is under top_p), then one uniform draw from the sequence's generator
against their running sum (torch.multinomial took ~1.6 ms a draw over the embedded model's 49k tokens, and a
random number per token ~1.3 ms). On a CPU a row's pick depends on its logits and its generator alone, never on
the rows beside it (on a GPU, the last bits of its running sum may). The generators are CPU ones wherever the
model runs: a draw is a few microseconds there, and on a GPU a draw from a GPU generator is a kernel launch per
row (so a seed gives another reply on a GPU than it did when they were the GPU's).
"""

from __future__ import annotations

import torch

from aios.llm.core import SamplingParams
from aios.llm.hf.transfer import to_device

# On a CPU a row's nucleus is looked for among its most likely tokens first: sorting all of the embedded model's
# 49k tokens takes ~3 ms a row, its top 256 ~0.15 ms. A row whose nucleus goes past them (a flat distribution)
# is sorted whole. On a GPU every row is sorted whole at once (one kernel, and no read back to decide).
NUCLEUS_FIRST = 256


class SamplingFailed(ValueError):
    """A row's logits were not finite (NaN, or an infinite largest logit): the model failed for this sequence."""


def next_tokens(logits: torch.Tensor, sampling: list[SamplingParams],
                generators: list[torch.Generator | None]) -> list[int | Exception]:
    """The next token of each row of ``logits`` (``[rows, vocab]``, fp32) under ``sampling[i]``, drawing from
    ``generators[i]`` (a CPU generator; ``None``: torch's default one); or, for a sampled row whose logits are
    not finite, the error."""
    top, tokens = logits.max(dim=-1)  # (argmax alone took 2.6x as long on a CPU)
    rows = [i for i, params in enumerate(sampling) if not params.greedy]
    if rows:
        # Each sampled row's temperature, top_p and draw, moved to the logits' device in one copy (that waits for
        # nothing: see transfer.py).
        draws = torch.stack([torch.rand((), generator=generators[i]) for i in rows])
        settings = torch.tensor([[sampling[i].temperature, sampling[i].top_p] for i in rows])
        settings = to_device(torch.cat((settings, draws[:, None]), dim=1), logits.device)
        index = to_device(torch.tensor(rows), logits.device)
        narrow = [j for j, i in enumerate(rows) if sampling[i].top_p < 1]
        tokens[index] = _sampled(logits[index], top[index], settings, narrow)
    return [token if token >= 0 else SamplingFailed("the model's logits for this sequence were not finite (NaN "
                                                    "or infinite)") for token in tokens.tolist()]


def _sampled(logits: torch.Tensor, top: torch.Tensor, settings: torch.Tensor, narrow: list[int]) -> torch.Tensor:
    """A token for each row of ``logits`` (a copy, used up), whose largest logit is ``top``, drawn with its
    temperature, top_p (which applies to the rows ``narrow``) and uniform draw (``settings``' columns); -1 for a
    row whose logits are not finite."""
    temperature, top_p, draws = settings.unbind(1)
    # Shifted so the largest logit is 0: dividing by a small temperature then underflows to 0 probability
    # instead of overflowing to inf.
    probs = torch.softmax(logits.sub_(top[:, None]).div_(temperature[:, None]), dim=-1)
    if narrow:
        index = to_device(torch.tensor(narrow), logits.device)
        vocab = probs.shape[1]
        probs[index] = _nucleus(probs[index], top_p[index], vocab if probs.is_cuda else min(NUCLEUS_FIRST, vocab))
    if probs.is_cuda:
        # A GPU's running sum is a parallel scan: its rounding varies with the position and from run to run (a
        # seed would not give its reply again), and it can rise at a token of zero probability (one a grammar
        # masks). In float64 the variation is far below a draw's resolution; a pick that lands on an impossible
        # token still goes to the last possible one before it.
        cdf = probs.cumsum(dim=-1, dtype=torch.float64)
        picked = torch.searchsorted(cdf, draws[:, None].double() * cdf[:, -1:], right=True)[:, 0]
        picked = last_possible(probs, picked)
    else:  # a CPU sums each row in order: adding a zero never moves the sum
        cdf = probs.cumsum_(dim=-1)
        picked = torch.searchsorted(cdf, draws[:, None] * cdf[:, -1:], right=True)[:, 0]
    # A draw is at most 1 - 2^-24, so its product with the total rounds below the total: the pick is a token,
    # not one past the last (unless the probabilities are not numbers: a temperature the API does not take).
    return torch.where(top.isfinite() & (picked >= 0) & (picked < probs.shape[1]), picked, -1)


def last_possible(probs: torch.Tensor, picked: torch.Tensor) -> torch.Tensor:
    """For each row, the last token at or before ``picked`` whose probability is above 0 (-1 if none)."""
    positions = torch.arange(probs.shape[1], device=probs.device)
    possible = torch.where(probs > 0, positions, -1).cummax(dim=-1).values
    return possible.gather(1, picked.clamp(max=probs.shape[1] - 1)[:, None])[:, 0]


def _nucleus(probs: torch.Tensor, top_p: torch.Tensor, candidates: int) -> torch.Tensor:
    """Each row of ``probs`` with only its nucleus under ``top_p`` kept, looked for among its ``candidates`` most
    likely tokens (rows whose nucleus goes past them are sorted whole)."""
    values, order = probs.topk(candidates, dim=-1)  # largest first
    keep = values.cumsum(dim=-1) - values < top_p[:, None]
    keep[:, 0] = True  # the top token stays, however small top_p is (1e-300 is 0 in float32)
    nucleus = torch.zeros_like(probs).scatter_(-1, order, values * keep)
    if candidates < probs.shape[1]:
        unfinished = keep[:, -1].nonzero()[:, 0]
        if len(unfinished):
            nucleus[unfinished] = _nucleus(probs[unfinished], top_p[unfinished], probs.shape[1])
    return nucleus
