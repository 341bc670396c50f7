"""Picking next tokens for a step's rows at once (aios.llm.hf.sampling): each row gets what sampling it alone
gives, drawn from its own generator; top_p keeps exactly the nucleus, also where it is wider than the tokens
looked at first; rows whose logits are broken fail alone."""

from __future__ import annotations

import itertools

import pytest
import torch

from aios.llm.core import SamplingParams
from aios.llm.hf.sampling import NUCLEUS_FIRST, SamplingFailed, last_possible, next_tokens

VOCAB = 4096


def reference(logits: torch.Tensor, params: SamplingParams, generator: torch.Generator) -> int:
    """One row sampled the textbook way: softmax at the temperature, the whole vocabulary sorted for the
    nucleus, one uniform draw against the running sum."""
    if params.greedy:
        return int(logits.argmax())
    probs = torch.softmax((logits - logits.max()) / params.temperature, dim=-1)
    if params.top_p < 1:
        ordered, order = probs.sort(descending=True, stable=True)
        keep = ordered.cumsum(-1) - ordered < params.top_p
        keep[0] = True
        probs = torch.zeros_like(probs).scatter(0, order[keep], ordered[keep])
    cdf = probs.cumsum(0)
    return int(torch.searchsorted(cdf, torch.rand((), generator=generator) * cdf[-1], right=True))


def logits_like_a_model(rows: int, seed: int, spread: float = 4.0) -> torch.Tensor:
    """Distinct logits (no ties), a few tokens well ahead of the rest, as a language model's often are."""
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(rows, VOCAB, generator=generator) * spread
    logits[:, :8] += 6
    return logits


PARAMS = [SamplingParams(temperature=t, top_p=p) for t, p in itertools.product([0, 1e-4, 0.3, 0.7, 1, 2],
                                                                                 [1e-45, 0.1, 0.5, 0.9, 0.99, 1])]


def generators(count: int, seed: int = 7) -> list[torch.Generator]:
    return [torch.Generator().manual_seed(seed + i) for i in range(count)]


def test_a_batch_of_rows_picks_what_each_row_picks_alone_and_what_the_reference_picks() -> None:
    logits = logits_like_a_model(len(PARAMS), seed=1)
    for step in range(3):  # the generators move on as the rows draw
        batched_generators, alone_generators, reference_generators = (generators(len(PARAMS), 10 * step)
                                                                      for _ in range(3))
        batched = next_tokens(logits.clone(), PARAMS, batched_generators)
        alone = [next_tokens(logits[i:i + 1].clone(), [params], [alone_generators[i]])[0]
                 for i, params in enumerate(PARAMS)]
        expected = [reference(logits[i], params, reference_generators[i]) for i, params in enumerate(PARAMS)]
        assert batched == alone == expected


def test_the_picks_follow_the_probabilities_and_top_p_keeps_only_the_nucleus() -> None:
    logits = torch.log(torch.tensor([0.5, 0.3, 0.15, 0.05]))[None].repeat(4000, 1)
    for top_p, allowed, expected in [(1, 4, [0.5, 0.3, 0.15, 0.05]), (0.8, 2, [0.625, 0.375, 0, 0]),
                                     (0.81, 3, [0.5 / 0.95, 0.3 / 0.95, 0.15 / 0.95, 0])]:
        params = [SamplingParams(temperature=1, top_p=top_p)] * len(logits)
        picks = torch.tensor(next_tokens(logits, params, generators(len(logits))))
        counts = torch.bincount(picks, minlength=4) / len(picks)
        assert int(picks.max()) == allowed - 1
        assert torch.allclose(counts, torch.tensor(expected), atol=0.03), (top_p, counts)


def test_a_nucleus_wider_than_the_tokens_looked_at_first_is_kept_whole() -> None:
    """Nearly flat logits: 0.99 of the mass takes thousands of tokens, far past the first NUCLEUS_FIRST."""
    flat = torch.randn(64, VOCAB, generator=torch.Generator().manual_seed(4))
    params = [SamplingParams(temperature=1, top_p=0.99)] * len(flat)
    picks = next_tokens(flat, params, generators(len(flat)))
    assert max(picks) > 4 * NUCLEUS_FIRST  # type: ignore[type-var]
    expected = [reference(flat[i], params[i], generator) for i, generator in enumerate(generators(len(flat)))]
    assert picks == expected


@pytest.mark.parametrize("top_p", [1, 0.7])
def test_the_largest_draw_picks_the_last_token_that_can_occur(top_p: float, monkeypatch: pytest.MonkeyPatch) -> None:
    """The largest draw below 1, times the running total (whole, or a nucleus'), stays below the total: the pick
    is the last token with a probability, never one past the end or one that cannot occur."""
    logits = torch.full((1, VOCAB), float("-inf"))
    logits[0, [3, 17, 900, 901]] = torch.tensor([2.0, 1.0, 1.5, 0.1])
    monkeypatch.setattr(torch, "rand", lambda *args, **kwargs: torch.tensor(1 - 2 ** -24))
    picks = next_tokens(logits, [SamplingParams(temperature=0.5, top_p=top_p)], [torch.Generator()])
    assert picks == [901 if top_p == 1 else 900]


@pytest.mark.parametrize("broken", [float("nan"), float("inf"), "all -inf"])
def test_a_row_with_broken_logits_fails_alone(broken: float | str) -> None:
    logits = logits_like_a_model(3, seed=2)
    if broken == "all -inf":
        logits[1] = float("-inf")
    else:
        logits[1, 5] = broken  # type: ignore[assignment]
    params = [SamplingParams(temperature=0.7, top_p=0.9)] * 3
    picks = next_tokens(logits, params, generators(3))
    assert isinstance(picks[1], SamplingFailed) and "not finite" in str(picks[1])
    assert picks[0] == reference(logits[0], params[0], generators(3)[0])
    assert picks[2] == reference(logits[2], params[2], generators(3)[2])


def test_a_temperature_the_api_refuses_fails_the_row_instead_of_picking_past_the_vocabulary() -> None:
    logits = logits_like_a_model(2, seed=6)
    logits[:, 9] = float("-inf")  # (inf / inf: the probabilities are not numbers)
    picks = next_tokens(logits, [SamplingParams(temperature=float("inf")), SamplingParams(temperature=0.5)],
                        generators(2))
    assert isinstance(picks[0], SamplingFailed) and isinstance(picks[1], int) and 0 <= picks[1] < VOCAB


def test_a_pick_on_a_token_that_cannot_occur_moves_to_the_last_possible_one_before_it() -> None:
    """What a GPU does after its running sum (a parallel scan) rose by an ulp at a masked token."""
    probs = torch.tensor([[0.0, 0.5, 0.0, 0.0, 0.5, 0.0], [0.0, 0.0, 1.0, 0.0, 0.0, 0.0]])
    assert last_possible(probs, torch.tensor([3, 5])).tolist() == [1, 2]
    assert last_possible(probs, torch.tensor([4, 2])).tolist() == [4, 2]  # possible already: kept
    assert last_possible(probs, torch.tensor([0, 6])).tolist() == [-1, 2]  # none before; past the end: the last


def test_greedy_rows_take_their_largest_logit_and_draw_nothing() -> None:
    logits = logits_like_a_model(4, seed=3)
    generator = torch.Generator().manual_seed(5)
    before = generator.get_state()
    assert next_tokens(logits, [SamplingParams(temperature=0)] * 4, [generator] * 4) == logits.argmax(-1).tolist()
    assert torch.equal(generator.get_state(), before)
