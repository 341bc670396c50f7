"""How the engine reads prompts and runs the model: a long prompt is read in chunks while the others keep
decoding, with the reply it gets when read whole; models outside the Llama family go through transformers with
the same replies; the compact weight formats still answer, and every choice is reported in the model's status."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from aios.config import EMBEDDED_MODEL, load_config
from aios.errors import BadRequest
from aios.kernel import load_cores
from aios.llm.core import GenerationRequest
from aios.llm.hf import HfLocalBackend
from aios.llm.hf import backend as backend_module
from aios.llm.hf import engine as engine_module
from aios.llm.hf import graphs as graphs_module
from aios.llm.hf.blocks import NEEDS_SIMD
from aios.llm.hf.cbuild import build as build_kernel
from aios.llm.hf.engine import MB, EngineSettings
from aios.llm.hf.graphs import CaptureFailed, DecodeGraphs, Rerun, decode_inputs
from aios.llm.hf.kv import SharedKV, SlotKV
from aios.llm.hf.loader import find_model, load_model
from aios.llm.hf.prefix import common_prefix
from aios.llm.hf.runner import Chunk, LlamaRunner, TransformersRunner, _similar
from test_engine import QUESTIONS, ask, in_one_step, started, together

# About 330 tokens of prompt: read 16 at a time, that is 21 steps.
LONG_PROMPT = "Summarize this report in one sentence. " + " ".join(
    f"In week {week} the harbour received {week * 3} ships carrying grain, timber and wool to the market."
    for week in range(1, 16))


# Two caches of the size classes a CPU engine keeps (empty: for tables of which chunks go together).
SHORT, LONG = (SlotKV(1, 4, 1, 8, torch.float32, torch.device("cpu"), capacity=c) for c in (64, 1024))


def own_backend(data_dir: Path, **settings: Any) -> HfLocalBackend:
    return HfLocalBackend(EMBEDDED_MODEL, data_dir=data_dir,
                          settings=EngineSettings(**{"prefix_cache_mb": 0, **settings}))


def test_a_prompt_read_in_chunks_gets_the_reply_it_gets_when_read_whole(backend: HfLocalBackend,
                                                                         data_dir: Path) -> None:
    chunked = own_backend(data_dir, prefill_chunk=16)
    try:
        assert len(chunked.prompt_ids(ask(LONG_PROMPT))) > 16 * 10
        assert chunked.generate(ask(LONG_PROMPT)).text == backend.generate(ask(LONG_PROMPT)).text
    finally:
        chunked.close()


def tokens_of_a_running_story_while_a_long_prompt_is_read(backend: HfLocalBackend) -> int:
    """A story is decoding when a long prompt arrives: how many of the story's tokens came out between the
    prompt's admission and its own first token."""
    events: list[str] = []

    async def main() -> None:
        story = ask("Write a long story about a dragon.", 120)
        story.on_text = lambda piece: events.append("story")
        story_running = started(story)
        story_task = asyncio.create_task(backend.complete(story))
        await story_running.wait()
        long = ask(LONG_PROMPT, 4)
        long.on_running = lambda running: running and events.append("admitted")
        long.on_text = lambda piece: events.append("long")
        await backend.complete(long)
        await story_task

    asyncio.run(main())
    admitted = events.index("admitted")
    return events[admitted:events.index("long", admitted)].count("story")


@pytest.mark.parametrize("kv_classes", [None, False], ids=["size-classes", "one-class"])
def test_a_long_prompt_beside_a_short_chat_takes_a_row_of_its_own_length_and_both_answer_as_alone(
        backend: HfLocalBackend, data_dir: Path, kv_classes: bool | None) -> None:
    """On a CPU the engine keeps rows in size classes: a long prompt admitted while a short chat decodes takes
    one long row and the chat keeps its short one; with ``kv_classes`` off (a GPU's default) one class gives both
    the long row's length. Either way both replies are the ones they get alone."""
    classes = own_backend(data_dir, kv_classes=kv_classes)
    seen: list[dict[str, Any]] = []

    async def main() -> list[str]:
        story = ask("Write a long story about a dragon.", 120)
        story_running = started(story)
        story_task = asyncio.create_task(classes.complete(story))
        await story_running.wait()
        long = ask(LONG_PROMPT, 8)
        long.on_text = lambda piece: seen.append(classes.describe()["engine"]) if not seen else None
        return [(await classes.complete(long)).text, (await story_task).text]

    try:
        replies = asyncio.run(main())
        assert replies == [backend.generate(ask(LONG_PROMPT, 8)).text,
                           backend.generate(ask("Write a long story about a dragon.", 120)).text]
        rows, long_row = seen[0]["kv_rows"], len(classes.prompt_ids(ask(LONG_PROMPT)))
        per_position = classes.engine.kv.bytes_per_position
        assert seen[0]["running"] == 2 and seen[0]["kv_classes"] is (kv_classes is None)
        if kv_classes is None:
            assert sorted(rows.values()) == [1, 1] and min(rows) < 128 and max(rows) >= long_row, rows
            assert seen[0]["kv_cache_mb"] * MB < 2 * max(rows) * per_position  # less than two long rows
        else:
            assert list(rows.values()) == [2] and max(rows) >= long_row, rows
            assert seen[0]["kv_cache_mb"] * MB >= 2 * long_row * per_position
    finally:
        classes.close()


def test_a_models_engine_settings_in_the_config_reach_its_engine(data_dir: Path, tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(f"llms: {{models: [{{name: {EMBEDDED_MODEL}, kv_classes: false, prefill_chunk: 64, "
                    "max_batch: 3, kv_budget_mb: 512}]}\n")
    (core,) = load_cores(load_config(path, env={"AIOS_DATA_DIR": str(data_dir)}))
    try:
        status = core.describe()
        assert (status["engine"]["kv_classes"], status["engine"]["prefill_chunk"], status["max_batch"]) == (
            False, 64, 3)
        assert core.engine.settings.kv_budget_mb == 512
    finally:
        core.close()


def test_running_sequences_keep_decoding_while_a_long_prompt_is_read_in_chunks(data_dir: Path) -> None:
    chunked, whole = own_backend(data_dir, prefill_chunk=16), own_backend(data_dir, prefill_chunk=0)
    try:
        chunks = len(chunked.prompt_ids(ask(LONG_PROMPT))) // 16
        assert tokens_of_a_running_story_while_a_long_prompt_is_read(chunked) >= chunks // 2
        # Read whole, the prompt takes one step, which decodes the story's next token too.
        assert tokens_of_a_running_story_while_a_long_prompt_is_read(whole) <= 1
    finally:
        chunked.close()
        whole.close()


def test_a_model_outside_the_llama_family_runs_through_transformers_with_the_same_replies(
        backend: HfLocalBackend, data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The embedded model is made to take the transformers path, batched and with prompts read in chunks of
    8: every reply is the one the Llama runner gives alone."""
    monkeypatch.setattr(backend_module, "make_runner", lambda model, weights: TransformersRunner(model))
    other = own_backend(data_dir, prefill_chunk=8)
    try:
        assert other.describe()["engine"]["runner"] == "transformers"
        assert other.describe()["engine"]["decode"] == "eager (transformers)"
        assert backend.describe()["engine"]["runner"] == "llama"
        assert backend.describe()["engine"]["decode"] == "eager (cpu)"
        alone = [backend.generate(ask(q)).text for q in QUESTIONS]
        assert [g.text for g in asyncio.run(together(other, [ask(q) for q in QUESTIONS]))] == alone
        with pytest.raises(BadRequest, match="kv_classes: true needs a Llama-family model"):
            own_backend(data_dir, kv_classes=True)
    finally:
        other.close()


@pytest.mark.parametrize("weights", ["bf16", "int8", "int4"])
def test_compact_weights_still_answer_and_the_status_names_them(data_dir: Path, weights: str) -> None:
    compact = HfLocalBackend(EMBEDDED_MODEL, data_dir=data_dir, weights=weights)  # type: ignore[arg-type]
    try:
        requests: list[GenerationRequest] = [ask(q) for q in QUESTIONS]
        replies = asyncio.run(together(compact, requests))
        assert "Paris" in replies[0].text and all(r.text for r in replies)
        assert compact.describe()["engine"]["weights"] == weights
    finally:
        compact.close()


def greedy_replies(runner: LlamaRunner, prompts: list[list[int]], tokens: int,
                   piece: int | None = None) -> list[list[int]]:
    """``tokens`` greedy tokens for each prompt, the prompts read together (in steps of ``piece`` tokens of each,
    or whole) and decoded together."""
    return decoded(runner, prompts, tokens, piece)[0]


def decoded(runner: LlamaRunner, prompts: list[list[int]], tokens: int,
            piece: int | None = None) -> tuple[list[list[int]], list[list[torch.Tensor]]]:
    """:func:`greedy_replies`, and the logits each of their tokens was picked from."""
    kv = SlotKV(runner.config.num_hidden_layers, len(prompts), runner.kv_heads, runner.head_dim, runner.dtype,
                runner.device)
    kv.reserve(len(prompts), max(map(len, prompts)) + tokens)
    piece = piece or max(map(len, prompts))
    replies: list[list[int]] = [[] for _ in prompts]
    logits: list[list[torch.Tensor]] = [[] for _ in prompts]

    def pick(rows: list[int], step: torch.Tensor) -> None:
        for row, row_logits in zip(rows, step):
            replies[row].append(int(row_logits.argmax()))
            logits[row].append(row_logits)

    for start in range(0, max(map(len, prompts)), piece):
        chunks = [Chunk(row, prompt[start:start + piece], start, wants_logits=start + piece >= len(prompt))
                  for row, prompt in enumerate(prompts) if start < len(prompt)]
        pick([chunk.row for chunk in chunks if chunk.wants_logits], runner.forward(chunks, kv))
    for _ in range(tokens - 1):
        chunks = [Chunk(row, [reply[-1]], len(prompts[row]) + len(reply) - 1) for row, reply in enumerate(replies)]
        pick(list(range(len(prompts))), runner.forward(chunks, kv))
    return replies, logits


def test_native_weights_give_a_sequence_bitwise_the_same_logits_alone_and_batched(backend: HfLocalBackend) -> None:
    """The embedded model's weights are exactly GGUF blocks (Q4_1 layers, a Q8_0 embedding tied to the output
    layer), held so and multiplied by the block kernel, whose sums run in one order whatever the number of rows:
    prompts read together and decoded together get every logit they get alone (plain ``x @ W`` gave differences
    in the last bits)."""
    products = backend.describe()["engine"]["products"]
    if NEEDS_SIMD in products:  # (ARM, say) the weights stay fp32 for torch: not promised
        pytest.skip(products)
    runner = backend.runner
    assert all(linear.blocks is not None for linear in runner.linears)
    assert runner.lm_head.blocks is not None and runner.lm_head.blocks.kind == "q8_0"
    assert backend.describe()["engine"]["products"] == "c-kernel (exact blocks: 120 q4_1, 1 q8_0 of 121 matrices)"
    assert backend.describe()["engine"]["elementwise"] == "c-kernel"
    prompts = [backend.prompt_ids(ask(q)) for q in QUESTIONS]
    with torch.inference_mode():
        _, together = decoded(runner, prompts, 6)
        for prompt, batched in zip(prompts, together):
            _, (alone,) = decoded(runner, [prompt], 6)
            assert all(torch.equal(a, b) for a, b in zip(alone, batched))


def test_prompt_pieces_attending_together_give_the_replies_of_each_prompt_alone(
        backend: HfLocalBackend, monkeypatch: pytest.MonkeyPatch) -> None:
    """Prompt pieces of one step attend together, padded to the longest (what a GPU does; a CPU reads each piece
    alone): the prompts (of different lengths) read in one step, or 8 tokens of each a step, give every greedy
    reply of the prompt read alone."""
    monkeypatch.setattr(backend.runner, "group_pieces", True)
    prompts = [backend.prompt_ids(ask(q)) for q in QUESTIONS]
    assert len(set(map(len, prompts))) > 1
    with torch.inference_mode():
        alone = [greedy_replies(backend.runner, [prompt], 16)[0] for prompt in prompts]
        assert greedy_replies(backend.runner, prompts, 16) == alone
        assert greedy_replies(backend.runner, prompts, 16, piece=8) == alone


def test_agents_whose_prompt_pieces_are_grouped_as_on_a_gpu_answer_as_they_do_alone(
        backend: HfLocalBackend, data_dir: Path) -> None:
    """The engine with prompt pieces grouped (what a GPU does): agents arriving together have their prompts read
    64 tokens a step, several pieces of a step attending together (groups of 2 and 4 here), beside the decode
    tokens of those already answering; each reply is the one the agent gets alone."""
    grouped = own_backend(data_dir, prefill_chunk=64)
    grouped.runner.group_pieces = True
    try:
        alone = [backend.generate(ask(q)).text for q in QUESTIONS]
        assert [g.text for g in asyncio.run(together(grouped, [ask(q) for q in QUESTIONS]))] == alone
    finally:
        grouped.close()


@pytest.mark.parametrize(("pieces", "groups"), [
    ([(32, 0)] * 4, [[0, 1, 2, 3]]),  # equal pieces: one call
    ([(30, 0), (32, 0), (31, 0)], [[0, 2, 1]]),  # a little padding
    ([(4, 0), (400, 0)], [[0], [1]]),  # padding the short one would cost 100 times its work
    ([(16, 0), (16, 512)], [[0], [1]]),  # as long, but one reads after 512 cached positions
    ([(2, 0), (8, 0), (8, 0), (300, 0)], [[0], [1, 2], [3]]),
    ([(32, 0), (32, 0, LONG), (32, 0)], [[0, 2], [1]]),  # rows in another size class's cache: apart
])
def test_prompt_pieces_attend_together_only_while_padding_adds_at_most_half_their_work(
        pieces: list[tuple[int, ...]], groups: list[list[int]]) -> None:
    runs = [(index, Chunk(index, [1] * piece[0], piece[1]), piece[2] if len(piece) > 2 else SHORT)
            for index, piece in enumerate(pieces)]
    assert sorted([offset for offset, _, _ in group] for group in _similar(runs)) == groups


def test_int4_weights_give_every_reply_batched_as_it_is_alone(backend: HfLocalBackend, data_dir: Path) -> None:
    """int4's kernel computes each row the same way whatever the number of rows, so reading prompts together and
    decoding them together gives every greedy reply of them alone (with bf16's oneDNN kernel it does not)."""
    model, _ = load_model(find_model(EMBEDDED_MODEL), data_dir, dtype=torch.float32, device_map="cpu")
    runner = LlamaRunner(model, "int4")
    prompts = [backend.prompt_ids(ask(q)) for q in QUESTIONS]
    with torch.inference_mode():
        alone = [greedy_replies(runner, [prompt], 48)[0] for prompt in prompts]
        assert greedy_replies(runner, prompts, 48) == alone


def test_a_decode_step_from_device_inputs_gives_the_eager_replies_and_leaves_other_rows_alone(
        backend: HfLocalBackend) -> None:
    """The decode step a CUDA graph captures (inputs in one tensor, the batch padded to a power of two, attention
    over whole rows) runs eagerly here: three rows padded to four give the replies of the eager step, and the
    fourth row, a prompt being read, keeps its KV."""
    runner = backend.runner
    prompts = [backend.prompt_ids(ask(q)) for q in QUESTIONS[:4]]
    with torch.inference_mode():
        expected = greedy_replies(runner, prompts[:3], 24)
        kv = SlotKV(runner.config.num_hidden_layers, 4, runner.kv_heads, runner.head_dim, runner.dtype, runner.device)
        kv.reserve(4, max(map(len, prompts)) + 26)
        replies = [[t] for t in runner.forward([Chunk(row, p, 0) for row, p in enumerate(prompts)], kv)
                   .argmax(-1).tolist()[:3]]
        bystander = kv.read_row(3, len(prompts[3]))
        for _ in range(23):
            chunks = [Chunk(row, [r[-1]], len(prompts[row]) + len(r) - 1) for row, r in enumerate(replies)]
            logits = runner.decode(decode_inputs([(chunks, 4, kv.capacity)]), [kv.segment(4)])[:3]
            for reply, token in zip(replies, logits.argmax(-1).tolist()):
                reply.append(token)
        assert replies == expected
        after = kv.read_row(3, len(prompts[3]))
        assert all(torch.equal(a, b) for part, kept in zip(bystander, after) for a, b in zip(part, kept))


START = SharedKV(list(range(256)), [], [])


@pytest.mark.parametrize("kernel", [True, False], ids=["c-kernel", "torch"])
def test_a_decode_step_from_device_inputs_attends_to_a_shared_start_like_the_eager_step(
        backend: HfLocalBackend, kernel: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two rows start with a shared system prompt (a SharedKV), a third does not, a fourth pads the batch: decode
    steps from device inputs, with the shared start as a graph would hold it, give the eager steps' replies,
    whether the eager steps attend in the C kernel or in torch."""
    runner = backend.runner
    if not kernel:
        monkeypatch.setattr(runner, "kernel", None)
    prompts = [backend.prompt_ids(system_request(q)) for q in QUESTIONS[:2]] + [backend.prompt_ids(ask(QUESTIONS[2]))]
    shared = common_prefix(prompts[0], prompts[1], len(prompts[0]) - 1)
    assert shared >= 64

    def replies(decode: bool) -> list[list[int]]:
        kv = SlotKV(runner.config.num_hidden_layers, 4, runner.kv_heads, runner.head_dim, runner.dtype, runner.device)
        kv.reserve(4, max(map(len, prompts)) + 18)
        runner.forward([Chunk(0, prompts[0][:shared], 0)], kv)
        base = SharedKV.start_of(prompts[0], kv.read_row(0, shared), shared)
        starts = [shared, shared, 0]
        first = runner.forward([Chunk(row, p[start:], start, base=base if start else None)
                                for row, (p, start) in enumerate(zip(prompts, starts))], kv)
        out = [[token] for token in first.argmax(-1).tolist()]
        for _ in range(15):
            chunks = [Chunk(row, [r[-1]], len(prompts[row]) + len(r) - 1, base=base if starts[row] else None)
                      for row, r in enumerate(out)]
            logits = (runner.decode(decode_inputs([(chunks, 4, kv.capacity)]), [kv.segment(4)], base)[:3] if decode
                      else runner.forward(chunks, kv))
            for reply, token in zip(out, logits.argmax(-1).tolist()):
                reply.append(token)
        return out

    with torch.inference_mode():
        assert replies(decode=True) == replies(decode=False)


def test_decode_tokens_attending_in_torch_get_the_replies_of_the_c_kernel(
        backend: HfLocalBackend, monkeypatch: pytest.MonkeyPatch) -> None:
    """On a CPU decode tokens attend in the C kernel; where it cannot be built they attend in torch, with the same
    replies (prompts read together, then decoded together)."""
    runner = backend.runner
    assert runner.kernel is not None and backend.describe()["engine"]["attention"] == "c-kernel"
    prompts = [backend.prompt_ids(ask(q)) for q in QUESTIONS]
    with torch.inference_mode():
        with_kernel = greedy_replies(runner, prompts, 24, piece=16)
        monkeypatch.setattr(runner, "kernel", None)
        assert greedy_replies(runner, prompts, 24, piece=16) == with_kernel


def test_rows_with_a_shared_start_beside_a_prompt_being_read_attend_alike_in_the_kernel_and_in_torch(
        backend: HfLocalBackend, monkeypatch: pytest.MonkeyPatch) -> None:
    """Rows 1 and 3 start with a shared system prompt, row 2 does not, and row 0 reads a prompt in pieces that
    come first in each step (so the decode tokens are not rows 0..n-1 in order): the kernel, merging the shared
    start by its log-sum-exps, gives torch's logits up to rounding and the same tokens."""
    runner = backend.runner
    kernel = runner.kernel
    with_system = [backend.prompt_ids(system_request(q)) for q in QUESTIONS[:2]]
    plain = [backend.prompt_ids(ask(q)) for q in QUESTIONS[2:4]]
    shared = common_prefix(with_system[0], with_system[1], len(with_system[0]) - 1)
    prompts = {0: plain[0], 1: with_system[0], 2: plain[1], 3: with_system[1]}
    starts = {0: 0, 1: shared, 2: 0, 3: shared}
    piece = len(plain[0]) // 6  # row 0's prompt is read over six steps

    def run(attention: Any) -> list[torch.Tensor]:
        monkeypatch.setattr(runner, "kernel", attention)
        kv = SlotKV(runner.config.num_hidden_layers, 4, runner.kv_heads, runner.head_dim, runner.dtype, runner.device)
        kv.reserve(4, max(map(len, prompts.values())) + 8)
        runner.forward([Chunk(0, with_system[0][:shared], 0)], kv)
        base = SharedKV.start_of(with_system[0], kv.read_row(0, shared), shared)
        first = runner.forward([Chunk(0, plain[0][:piece], 0, wants_logits=False)] + [
            Chunk(row, prompts[row][starts[row]:], starts[row], base=base if starts[row] else None)
            for row in (1, 2, 3)], kv)
        steps, tokens = [first], first.argmax(-1).tolist()
        for step in range(1, 6):
            singles = [Chunk(row, [token], len(prompts[row]) + step - 1, base=base if starts[row] else None)
                       for row, token in zip((1, 2, 3), tokens)]
            reading = Chunk(0, plain[0][piece * step:piece * (step + 1)], piece * step, wants_logits=False)
            logits = runner.forward([reading] + singles, kv)
            steps.append(logits)
            tokens = logits.argmax(-1).tolist()
        return steps

    with torch.inference_mode():
        in_torch, in_kernel = run(None), run(kernel)
    for a, b in zip(in_torch, in_kernel):
        torch.testing.assert_close(b, a, atol=1e-4, rtol=1e-4)
        assert b.argmax(-1).tolist() == a.argmax(-1).tolist()


def test_without_a_c_compiler_attention_products_and_elementwise_work_run_in_torch_and_the_status_says_why(
        backend: HfLocalBackend, data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CC", "/nonexistent/cc")
    build_kernel.cache_clear()
    other = own_backend(data_dir)
    try:
        assert other.runner.kernel is None
        why = "cannot run the C compiler '/nonexistent/cc': No such file or directory (set CC to one)"
        assert other.describe()["engine"]["attention"] == f"torch ({why})"
        assert other.describe()["engine"]["products"] == f"torch ({why})"  # native weights packed for MKL
        assert other.describe()["engine"]["elementwise"] == f"torch ({why})"
        assert all(layer.qkv.mkl is not None and layer.qkv.blocks is None for layer in other.runner.layers)
        assert other.generate(ask(QUESTIONS[0])).text == backend.generate(ask(QUESTIONS[0])).text
    finally:
        other.close()
        build_kernel.cache_clear()


@pytest.mark.parametrize(("chunks", "takes"), [
    ([Chunk(0, [5], 10), Chunk(1, [6], 3)], True),
    ([Chunk(0, [5], 10), Chunk(2, [6], 3)], False),  # row 1 is not in the step: rows are not 0..n-1
    ([Chunk(1, [5], 10), Chunk(0, [6], 3)], False),
    ([Chunk(0, [5, 6], 10)], False),  # a prompt's piece
    ([Chunk(0, [5], 10, wants_logits=False)], False),
    ([Chunk(0, [5], 300, base=START), Chunk(1, [6], 290), Chunk(2, [7], 280, base=START)], True),  # one start
    ([Chunk(0, [5], 300, base=START), Chunk(1, [6], 300, base=SharedKV(list(range(256)), [], []))], False),
    ([Chunk(0, [5], 10, cache=SHORT), Chunk(1, [6], 3, cache=SHORT)], True),
    ([Chunk(0, [5], 10, cache=SHORT), Chunk(0, [6], 300, cache=LONG)], True),  # rows 0..n-1 of two size classes
    ([Chunk(0, [5], 10, cache=SHORT), Chunk(1, [6], 300, cache=LONG)], False),  # the long class has no row 0 here
    ([Chunk(0, [5], 10, cache=SHORT), Chunk(0, [6], 300, cache=LONG), Chunk(1, [7], 3, cache=SHORT)], False),
    ([Chunk(0, [5], 300, base=START, cache=SHORT), Chunk(0, [6], 900, base=START, cache=LONG)], True),
])
def test_only_plain_decode_steps_go_to_cuda_graphs(chunks: list[Chunk], takes: bool) -> None:
    assert DecodeGraphs.takes(chunks) is takes


def test_agents_in_several_size_classes_decode_in_graphs_with_the_replies_they_get_alone(
        backend: HfLocalBackend, data_dir: Path) -> None:
    """Decode steps replay graphs (captured by the stand-in) over rows in size classes: short chats, agents with a
    shared system prompt (a SharedKV) and a long prompt decode together, one graph a step over all their classes;
    rows move to a bigger class as they grow, and the graphs over replaced buffers are captured again. Every
    reply is the one the agent gets alone, from the eager engine."""
    graphed = own_backend(data_dir)
    runner = graphed.runner
    graphs = runner.graphs = DecodeGraphs(runner, Rerun())
    runner.decode_mode = "cuda-graphs"
    shapes: list[int] = []
    run = graphs.run

    def counted(chunks: list[Chunk], kv: SlotKV | None = None) -> torch.Tensor | None:
        logits = run(chunks, kv)
        if logits is not None:  # a decode step, replayed: over how many classes
            shapes.append(len({id(chunk.cache) for chunk in chunks}))
        return logits

    graphs.run = counted  # type: ignore[method-assign]
    requests = ([ask(q, 40) for q in QUESTIONS[:3]] + [system_request(q, max_new_tokens=40) for q in QUESTIONS[3:]]
                + [ask(LONG_PROMPT, 40)])
    try:
        alone = [backend.generate(request).text for request in requests]
        assert [g.text for g in asyncio.run(together(graphed, requests))] == alone
        assert graphs.replays == len(shapes) > 20 and max(shapes) >= 2, shapes  # steps over several classes
        status = graphed.describe()["engine"]
        assert status["kv_classes"] is True and graphs.captures >= 3
        assert status["graphs"] == {"captures": graphs.captures, "replays": graphs.replays,
                                    "capture_s": round(graphs.capture_s, 3), "kept": len(graphs.graphs)}
        assert backend.describe()["engine"]["graphs"] is None  # a CPU's decode steps run eagerly
    finally:
        graphed.close()


def test_agents_outgrowing_their_size_class_in_one_step_move_together_and_answer_as_alone(
        backend: HfLocalBackend, monkeypatch: pytest.MonkeyPatch) -> None:
    """Agents whose prompts are as long as each other's outgrow their size class in the same step, and their rows
    move to the next class together (one read of all of them: a copy per row was about 80 tensor operations, a
    kernel launch each on a GPU); one that ends first leaves a row in the middle of its class, which the last row
    fills. Every reply is the one the agent gets alone."""
    requests = [ask(f"Write a long story about a {animal} who learns to sail.", 48) for animal in ("cat", "dog", "fox")]
    requests.insert(1, ask("Write a long story about a cow who learns to sail.", 12))
    assert len({len(backend.prompt_ids(request)) for request in requests}) == 1
    alone = [backend.generate(request).text for request in requests]
    copies: list[tuple[str, int]] = []
    read_rows, move_rows = SlotKV.read_rows, SlotKV.move_rows

    def reading(kv: SlotKV, rows: list[int], length: int) -> tuple[torch.Tensor, torch.Tensor]:
        copies.append(("read", len(rows)))
        return read_rows(kv, rows, length)

    def moving(kv: SlotKV, sources: list[int], targets: list[int], length: int) -> None:
        copies.append(("move", len(sources)))
        move_rows(kv, sources, targets, length)

    monkeypatch.setattr(SlotKV, "read_rows", reading)
    monkeypatch.setattr(SlotKV, "move_rows", moving)
    assert in_one_step(backend, requests) == alone
    # The three long stories in one read; the last row into the one freed in the middle.
    assert ("read", 3) in copies and ("move", 1) in copies, copies


def test_graphs_of_the_least_used_shapes_go_beyond_the_limit_and_are_captured_again_when_met(
        backend: HfLocalBackend, monkeypatch: pytest.MonkeyPatch) -> None:
    """With room for two graphs, steps of 1, 2 and 4 rows keep the last two; a step of 1 row again is captured
    again, with the logits of the eager step each time."""
    monkeypatch.setattr(graphs_module, "MAX_GRAPHS", 2)
    runner = backend.runner
    graphs = DecodeGraphs(runner, Rerun())
    prompt = backend.prompt_ids(ask(QUESTIONS[0]))
    with torch.inference_mode():
        kv = SlotKV(runner.config.num_hidden_layers, 4, runner.kv_heads, runner.head_dim, runner.dtype, runner.device)
        kv.reserve(4, len(prompt) + 4)
        runner.forward([Chunk(row, prompt, 0) for row in range(4)], kv)
        for rows, captures in ((1, 1), (2, 2), (4, 3), (2, 3), (1, 4)):
            step = [Chunk(row, [prompt[-1]], len(prompt), cache=kv) for row in range(rows)]
            expected = runner.forward(step)  # eager: writes the same KV at the same offset
            torch.testing.assert_close(graphs.run(step), expected, atol=1e-4, rtol=1e-4)
            assert graphs.captures == captures and len(graphs.graphs) <= 2
        assert list(graphs.graphs) == [((kv.capacity, 2),), ((kv.capacity, 1),)]  # by shape, last used last


def test_a_graph_is_captured_again_once_its_cache_buffers_are_replaced(backend: HfLocalBackend) -> None:
    """Two rows decode three steps: a step in a graph, the cache's buffers grown (replaced), a step of the same
    shape, then a step eagerly. The second step must not replay the first graph (over the old buffers, its KV
    would be lost to the third step): the logits are those of three eager steps."""
    runner = backend.runner
    prompts = [backend.prompt_ids(ask(q)) for q in QUESTIONS[:2]]

    def steps(graphs: DecodeGraphs | None) -> list[torch.Tensor]:
        kv = SlotKV(runner.config.num_hidden_layers, 2, runner.kv_heads, runner.head_dim, runner.dtype,
                    runner.device, rows=2)
        kv.reserve(2, max(map(len, prompts)) + 4)
        logits = [runner.forward([Chunk(row, p, 0) for row, p in enumerate(prompts)], kv)]
        for step in range(3):
            tokens = logits[-1].argmax(-1).tolist()
            chunks = [Chunk(row, [tokens[row]], len(p) + step, cache=kv) for row, p in enumerate(prompts)]
            logits.append(graphs.run(chunks) if graphs is not None and step < 2 else runner.forward(chunks))
            if step == 0:
                layout = kv.layout
                kv.max_rows = 4
                kv.reserve(4, max(map(len, prompts)) + 4)
                assert kv.layout == layout + 1
        return logits

    graphs = DecodeGraphs(runner, Rerun())
    with torch.inference_mode():
        for graphed, eager in zip(steps(graphs), steps(None)):
            torch.testing.assert_close(graphed, eager, atol=1e-4, rtol=1e-4)
    assert graphs.captures == 2 and graphs.replays == 2


def test_a_new_cache_of_a_freed_ones_shape_gets_graphs_of_its_own(backend: HfLocalBackend) -> None:
    """A size class that empties is freed, and the one made again later has the old one's shape and layout
    count: its steps are captured again over its own buffers, not replayed over the freed ones (whose prompt
    was another)."""
    runner = backend.runner
    graphs = DecodeGraphs(runner, Rerun())

    def decode_step(question: str) -> tuple[torch.Tensor, torch.Tensor]:
        prompt = backend.prompt_ids(ask(question))
        kv = SlotKV(runner.config.num_hidden_layers, 1, runner.kv_heads, runner.head_dim, runner.dtype,
                    runner.device)
        kv.reserve(1, len(prompt) + 2)
        assert (kv.capacity, kv.layout) == (64, 0)
        step = [Chunk(0, runner.forward([Chunk(0, prompt, 0)], kv).argmax(-1).tolist(), len(prompt), cache=kv)]
        return graphs.run(step), runner.forward(step)  # the eager step writes the same KV again

    with torch.inference_mode():
        for question in QUESTIONS[:2]:
            graphed, eager = decode_step(question)
            torch.testing.assert_close(graphed, eager, atol=1e-4, rtol=1e-4)
    assert graphs.captures == 2


def test_steps_whose_rows_come_to_hold_a_shared_start_are_captured_again(backend: HfLocalBackend) -> None:
    """Two rows decode in a graph holding no shared start; then, in the same shape, two rows that start with a
    shared system prompt: a graph holds the start it was captured with (none), so the step is captured again,
    and its logits are the eager step's."""
    runner = backend.runner
    graphs = DecodeGraphs(runner, Rerun())
    plain = [backend.prompt_ids(ask(q)) for q in QUESTIONS[:2]]
    prompts = [backend.prompt_ids(system_request(q)) for q in QUESTIONS[:2]]
    shared = common_prefix(prompts[0], prompts[1], len(prompts[0]) - 1)
    with torch.inference_mode():
        kv = SlotKV(runner.config.num_hidden_layers, 2, runner.kv_heads, runner.head_dim, runner.dtype,
                    runner.device, rows=2)
        kv.reserve(2, max(map(len, plain + prompts)) + 2)
        first = runner.forward([Chunk(row, p, 0) for row, p in enumerate(plain)], kv).argmax(-1).tolist()
        graphs.run([Chunk(row, [first[row]], len(p), cache=kv) for row, p in enumerate(plain)])
        runner.forward([Chunk(0, prompts[0][:shared], 0)], kv)
        base = SharedKV.start_of(prompts[0], kv.read_row(0, shared), shared)
        first = runner.forward([Chunk(row, p[shared:], shared, base=base) for row, p in enumerate(prompts)],
                               kv).argmax(-1).tolist()
        step = [Chunk(row, [first[row]], len(p), base=base, cache=kv) for row, p in enumerate(prompts)]
        graphed = graphs.run(step)
        torch.testing.assert_close(graphed, runner.forward(step), atol=1e-4, rtol=1e-4)
    assert graphs.captures == 2


def test_a_decode_step_that_cannot_be_captured_runs_eagerly_and_the_status_says_why(
        backend: HfLocalBackend, monkeypatch: pytest.MonkeyPatch) -> None:
    """Stands in for a GPU whose capture fails (capture itself needs CUDA): the step runs eagerly with the same
    logits, and later steps no longer try."""
    class Failing:
        tries = 0

        def run(self, chunks: list[Chunk], kv: SlotKV) -> torch.Tensor | None:
            if not DecodeGraphs.takes(chunks, kv):
                return None  # a prompt runs eagerly, as with graphs that capture
            self.tries += 1
            raise CaptureFailed("capturing a decode step of 1 rows failed: no CUDA here")

    runner, failing = backend.runner, Failing()
    monkeypatch.setattr(runner, "graphs", failing)
    monkeypatch.setattr(runner, "decode_mode", "cuda-graphs")
    prompt = backend.prompt_ids(ask(QUESTIONS[0]))
    with torch.inference_mode():
        kv = SlotKV(runner.config.num_hidden_layers, 1, runner.kv_heads, runner.head_dim, runner.dtype, runner.device)
        kv.reserve(1, len(prompt) + 4)
        first = runner.forward([Chunk(0, prompt, 0)], kv).argmax(-1).tolist()
        step = [Chunk(0, first, len(prompt))]
        logits = runner.forward(step, kv)
        assert runner.graphs is None and failing.tries == 1
        assert runner.decode_mode == "eager (capturing a decode step of 1 rows failed: no CUDA here)"
        assert torch.equal(logits, runner.forward(step, kv))
    assert backend.describe()["engine"]["decode"] == runner.decode_mode


def test_a_tied_embedding_is_held_once_in_the_output_layer(backend: HfLocalBackend) -> None:
    """The embedded model ties its embedding to its output layer: the runner looks tokens up there, and the
    module's own copies are freed."""
    assert backend.runner.embedding is None
    model = backend.model
    assert {model.model.embed_tokens.weight.device.type, model.lm_head.weight.device.type} == {"meta"}
    assert backend.generate(ask("What is the capital of France?")).text == "The capital of France is Paris."


def llama_config(**overrides: Any) -> SimpleNamespace:
    config = dict(model_type="llama", rope_parameters={"rope_type": "default"}, sliding_window=None,
                  hidden_act="silu", mlp_bias=False)
    return SimpleNamespace(**{**config, **overrides})


@pytest.mark.parametrize(("config", "reason"), [
    (llama_config(model_type="gpt2"), "architecture 'gpt2' is not in the Llama family"),
    (llama_config(rope_parameters={"rope_type": "dynamic"}), "depends on the sequence length"),
    (llama_config(model_type="mistral", sliding_window=4096), "sliding-window attention"),
    (llama_config(hidden_act="gelu"), "its MLP is not SwiGLU without bias"),
    (llama_config(mlp_bias=True), "its MLP is not SwiGLU without bias"),
])
def test_the_llama_runner_says_why_it_cannot_run_a_model(config: SimpleNamespace, reason: str) -> None:
    model = SimpleNamespace(config=config, parameters=lambda: iter([torch.zeros(1)]))
    assert reason in (LlamaRunner.supports(model) or "")


def test_a_split_model_is_left_to_transformers() -> None:
    parts = [torch.zeros(1), torch.zeros(1, device="meta")]
    model = SimpleNamespace(config=llama_config(), parameters=lambda: iter(parts))
    assert LlamaRunner.supports(model) == "it is split over several devices"


def test_a_compact_weight_format_is_refused_where_it_cannot_apply(monkeypatch: pytest.MonkeyPatch) -> None:
    from aios.llm.hf.runner import make_runner

    on_gpu = SimpleNamespace(device=torch.device("meta"))
    for weights in ("int8", "int4"):
        with pytest.raises(BadRequest, match=f"weights: {weights} is a CPU format; use native or bf16 on a GPU"):
            make_runner(on_gpu, weights)
    # hidden size 48: the q/k/v projection has 48 inputs, not a multiple of int4's groups of 32
    odd = LlamaForCausalLM(LlamaConfig(vocab_size=64, hidden_size=48, intermediate_size=64, num_hidden_layers=1,
                                       num_attention_heads=3, num_key_value_heads=1, max_position_embeddings=32))
    with pytest.raises(BadRequest, match=r"weights: int4 cannot hold this model \(int4 weights need inputs in "
                                         r"multiples of 32 .* 48 inputs and 80 outputs\); use native, bf16 or int8"):
        make_runner(odd, "int4")
    other = SimpleNamespace(device=torch.device("cpu"), config=llama_config(model_type="gpt2"),
                            parameters=lambda: iter([torch.zeros(1)]))
    with pytest.raises(BadRequest, match="weights: bf16 needs a Llama-family model.*'gpt2'.*use weights: native"):
        make_runner(other, "bf16")


SYSTEM = "You are a careful assistant for a shipping company. " + " ".join(
    f"Rule {n}: answer in plain words, name the port, and never guess a number you were not given."
    for n in range(1, 13))


def system_request(question: str, **sampling: Any) -> GenerationRequest:
    return GenerationRequest([{"role": "system", "content": SYSTEM}, {"role": "user", "content": question}],
                             ask(question, **sampling).sampling)


def test_agents_sharing_a_system_prompt_compute_and_store_it_once_and_answer_as_they_do_alone(
        backend: HfLocalBackend, data_dir: Path) -> None:
    """Six agents arrive together with the same long system prompt: one reads it, the others take its KV (the
    status counts the tokens taken); the start of it moves into one shared KV that they all attend to (seen in
    the status while they decode), and each reply is the one the agent gets alone. A next turn reuses the
    finished conversation's KV, shared start included, as its own shared start (not copied into its row)."""
    shared = own_backend(data_dir, prefill_chunk=64, prefix_cache_mb=64)
    seen: list[dict[str, Any]] = []
    questions = QUESTIONS + ["Where is Rotterdam?"]
    try:
        system_tokens = len(shared.prompt_ids(system_request("")))
        assert system_tokens > engine_module.SHARE_ONCE
        alone = [backend.generate(system_request(q)).text for q in questions]
        requests = [system_request(q) for q in questions]
        # Called on the engine's thread, between steps: the status as the first reply streams.
        requests[0].on_text = lambda piece: seen.append(shared.describe()["engine"]) if not seen else None
        replies = asyncio.run(together(shared, requests))
        assert [g.text for g in replies] == alone
        engine = shared.describe()["engine"]
        assert engine["shared_prompt_tokens"] >= 5 * (system_tokens - 64 - 16)
        assert seen[0]["shared_kv"] == 1 and seen[0]["shared_kv_mb"] > 0
        assert engine["shared_kv"] == 0  # let go of once no sequence holds it
        next_turn, during = system_request(questions[1]), list[dict[str, Any]]()
        next_turn.on_text = lambda piece: during.append(shared.describe()["engine"]) if not during else None
        again = shared.generate(next_turn)
        assert again.text == alone[1]
        assert during[0]["prefix_hits"] >= 1 and during[0]["shared_kv"] == 1  # held where it lies in the cache
    finally:
        shared.close()


def test_next_turns_of_agents_with_one_system_prompt_take_it_once_from_the_prefix_cache(
        backend: HfLocalBackend, data_dir: Path) -> None:
    """Three agents with one long system prompt finish a turn each: the prefix cache keeps the system prompt once,
    under their three conversations. Their next turns, sent together, take it from there as one shared start
    (the status shows one, however many of them decode), and every reply is the one the agent gets alone."""
    cached = own_backend(data_dir, prefix_cache_mb=64)
    questions = QUESTIONS[:3]
    try:
        system_tokens = len(cached.prompt_ids(system_request("")))
        first = [cached.generate(system_request(q, max_new_tokens=8)).text for q in questions]
        assert first == [backend.generate(system_request(q, max_new_tokens=8)).text for q in questions]
        turns = [GenerationRequest([{"role": "system", "content": SYSTEM}, {"role": "user", "content": q},
                                    {"role": "assistant", "content": reply},
                                    {"role": "user", "content": "Say it again in other words."}],
                                   ask("", max_new_tokens=8).sampling) for q, reply in zip(questions, first)]
        alone = [backend.generate(turn).text for turn in turns]
        during: list[dict[str, Any]] = []  # the status at each streamed piece, on the engine's thread
        for turn in turns:
            turn.on_text = lambda piece: during.append(cached.describe()["engine"])
        assert [g.text for g in asyncio.run(together(cached, turns))] == alone
        assert {(status["shared_kv"], status["shared_kv_mb"] > 0) for status in during} == {(1, True)}
        engine = cached.describe()["engine"]
        assert engine["prefix_hits"] >= 2 + 3 and engine["prefix_entries"] == 3  # the next turns, grown from the first
        # Six conversations, and the system prompt in them once: a copy in each would be six times its size.
        assert 0 < engine["prefix_cache_mb"] * MB < 2 * system_tokens * cached.engine.kv.bytes_per_position
    finally:
        cached.close()


def test_agents_holding_a_shared_system_prompt_are_preempted_and_resumed_exactly(backend: HfLocalBackend,
                                                                                data_dir: Path) -> None:
    """Two rows, round-robin every 4 tokens, three agents with one system prompt: they take turns, keeping
    their shared start while suspended, and each reply is the one the agent gets alone."""
    questions = QUESTIONS[:3]
    turns = own_backend(data_dir, max_batch=2, policy="rr", quantum_tokens=4)
    try:
        alone = [backend.generate(system_request(q, max_new_tokens=16)).text for q in questions]
        replies = asyncio.run(together(turns, [system_request(q, max_new_tokens=16) for q in questions]))
        assert [g.text for g in replies] == alone
        engine = turns.describe()["engine"]
        assert engine["preemptions"] >= 1 and engine["shared_prompt_tokens"] > engine_module.SHARE_ONCE
    finally:
        turns.close()


def test_a_suspended_sequence_holding_a_shared_start_alone_frees_it_and_resumes_exactly(
        backend: HfLocalBackend, data_dir: Path) -> None:
    """An agent's next turn takes its cached conversation as its shared start; on one row, round-robin every
    4 tokens with another request, it is suspended: no one else holds that start, so it goes into the snapshot
    (the status shows no shared KV while the other runs) and comes back with it; both replies equal alone."""
    turns = own_backend(data_dir, max_batch=1, policy="rr", quantum_tokens=4, prefix_cache_mb=64)
    follow_up, other = system_request(QUESTIONS[0], max_new_tokens=16), ask("What is 2+2?", 16)
    alone = [backend.generate(system_request(QUESTIONS[0], max_new_tokens=16)).text,
             backend.generate(ask("What is 2+2?", 16)).text]
    running: list[bool] = []  # the follow-up's states, on the engine's thread
    follow_up.on_running = running.append
    shared_while_suspended: list[int] = []
    other.on_text = lambda piece: shared_while_suspended.append(turns.describe()["engine"]["shared_kv"]) if (
        running and not running[-1]) else None
    try:
        turns.generate(system_request(QUESTIONS[0], max_new_tokens=16))  # its first turn, now in the cache
        replies = asyncio.run(together(turns, [follow_up, other]))
        assert [g.text for g in replies] == alone
        assert turns.describe()["engine"]["preemptions"] >= 1
        assert shared_while_suspended and set(shared_while_suspended) == {0}, shared_while_suspended
    finally:
        turns.close()


def test_a_prompt_sharing_only_part_of_a_stored_start_takes_that_part(backend: HfLocalBackend,
                                                                    data_dir: Path) -> None:
    """Two agents share the system prompt and a long first message, read first and stored once as one start of
    512 tokens; a third shares only the system prompt with them. It gets a start of its own (that part, not
    theirs, which would feed it their message), and all three answer as they do alone."""
    cargo = "Here is the cargo list. " + " ".join(f"Crate {n} holds spare parts for engine model {n}."
                                                    for n in range(30))
    ports = "Answer briefly. " + " ".join(f"Port {n} opens at {n % 12 + 1} o'clock." for n in range(70))

    def request(message: str) -> GenerationRequest:
        return GenerationRequest([{"role": "system", "content": SYSTEM}, {"role": "user", "content": message}],
                                 ask(message).sampling)

    messages = [cargo + " Which crate holds parts for model 3?", cargo + " Which crate holds parts for model 7?",
                ports + " When does port 5 open?"]
    shared = own_backend(data_dir)
    seen: list[dict[str, Any]] = []
    try:
        lengths = [len(shared.prompt_ids(request(m))) for m in messages]
        assert 512 < lengths[0] < lengths[2]  # the third is read last, beside their stored start
        alone = [backend.generate(request(m)).text for m in messages]
        requests = [request(m) for m in messages]
        requests[2].on_text = lambda piece: seen.append(shared.describe()["engine"]) if not seen else None
        replies = asyncio.run(together(shared, requests))
        assert [g.text for g in replies] == alone
        assert seen[0]["shared_kv"] == 2
    finally:
        shared.close()


def test_a_short_prompt_is_read_before_the_rest_of_a_long_one(data_dir: Path) -> None:
    """A chat arrives while a long prompt is being read 8 tokens a step (about 80 steps, room enough for the
    chat to arrive on a busy machine): the chat's reply starts first."""
    chunked = own_backend(data_dir, prefill_chunk=8)
    events: list[str] = []

    async def main() -> None:
        long = ask(LONG_PROMPT + " " + LONG_PROMPT, 2)
        long.on_text = lambda piece: events.append("long")
        long_running = started(long)
        long_task = asyncio.create_task(chunked.complete(long))
        await long_running.wait()
        chat = ask("What is the capital of France?", 2)
        chat.on_text = lambda piece: events.append("chat")
        await chunked.complete(chat)
        await long_task

    try:
        asyncio.run(main())
        assert events and events[0] == "chat", events
    finally:
        chunked.close()


def test_a_long_prompt_is_not_kept_waiting_by_short_ones_that_keep_coming(data_dir: Path) -> None:
    """Two rows, 8 prompt tokens a step: a ~64-token prompt runs beside a queue of 30 shorter ones, each a whole
    number of steps long, taking the free row one after another, so there is always a shorter prompt to read
    first. The long one is still read now and then (once passed over READ_PATIENCE steps), and its reply comes
    before the shorts are all answered, where shortest-first alone would leave it for last."""
    chunked = own_backend(data_dir, max_batch=2, prefill_chunk=8)

    def whole_steps(question: str) -> GenerationRequest:  # no step's budget is left over for the long prompt
        while len(chunked.prompt_ids(ask(question))) % 8:
            question += " please"
        return ask(question, 1)

    long = whole_steps("Summarize: " + " ".join(f"ship {n} brought grain;" for n in range(5)))
    shorts = [whole_steps(f"Name a port in country {n}.") for n in range(30)]
    assert len(chunked.prompt_ids(long)) > max(len(chunked.prompt_ids(short)) for short in shorts)
    # The engine's first forward pass waits until every request is queued (the long one first), so that the
    # shorts are all waiting from the start rather than trickling in while the long prompt reads alone.
    everyone_queued, forward, submit = threading.Event(), chunked.engine._forward, chunked._submit
    answered: list[str] = []

    def gated(chunks: list[Any]) -> torch.Tensor:
        everyone_queued.wait()
        return forward(chunks)

    async def main() -> None:
        long_queued, queued = asyncio.Event(), []

        def counting(*args: Any) -> None:  # on the loop's thread
            submit(*args)
            queued.append(args[0])
            long_queued.set()
            if len(queued) == 1 + len(shorts):
                everyone_queued.set()

        chunked._submit = counting  # type: ignore[method-assign]
        tasks = [asyncio.create_task(chunked.complete(long))]
        await long_queued.wait()
        tasks += [asyncio.create_task(chunked.complete(short)) for short in shorts]
        for task, name in zip(tasks, ["long"] + ["short"] * len(shorts)):
            task.add_done_callback(lambda _, name=name: answered.append(name))
        await asyncio.gather(*tasks)

    chunked.engine._forward = gated  # type: ignore[method-assign]
    # Every prompt reads all of its own tokens (they share the chat template's start, which would be copied).
    chunked.engine._share_prefix = lambda sequence: None  # type: ignore[method-assign]
    try:
        asyncio.run(main())
        assert answered.index("long") < len(answered) - 1, answered
    finally:
        chunked.close()
