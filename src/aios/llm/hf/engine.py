"""The continuous-batching engine: one step loop, on its own thread, serves every in-flight generation.

Each step (1) lets go of cancelled sequences, (2) preempts running sequences the policy says should yield to
waiting ones, saving their KV to the context store, (3) admits waiting sequences while there is room in the
batch, restoring a snapshot or taking a cached prefix when one matches, and (4) runs one forward pass over every
running sequence: a decode token for those that are generating, and for those still reading their prompt the
next piece of it (at most ``prefill_chunk`` prompt tokens per step in all, so a long prompt is read over
several steps while the others keep decoding). Prompts that start like a running sequence take its KV instead
of computing it: a long shared start (an agents' system prompt) is then stored once, in a ``SharedKV`` that all
of them attend to, and only the rest is kept per row. Each sequence's token is sampled with its own parameters. A
sequence leaves the batch as soon as it is finished or cancelled, at a token boundary. Callers hand sequences
over with ``submit``; the loop sleeps on a condition variable while there is nothing to do (no polling).

The loop must outlive anything a step can throw, since every agent on the model depends on it: a failed step
fails the sequences in the batch and the loop goes on; if even that recovery fails, the batch is reset; and if
the loop ends all the same, every waiting sequence fails at once and ``on_exit`` tells the owner, who may start
a new engine.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from aios.context import KV, ContextStore
from aios.errors import BadRequest, CapacityExceeded, KernelError, Unavailable
from aios.llm.hf.detokenize import IncrementalText, whole
from aios.llm.hf.grammar import Grammars
from aios.llm.hf.kv import BatchKV, SharedKV, SlotKV, capacity_for
from aios.llm.hf.prefix import Match, PrefixCache, common_prefix
from aios.llm.hf.runner import Chunk, Runner
from aios.llm.hf.sampling import next_tokens
from aios.llm.hf.sequence import Sequence
from aios.scheduler.policy import Policy, make_policy

log = logging.getLogger(__name__)

MB = 1 << 20
# A prompt waits a step to copy what another reads this step only for this many tokens or more: for fewer
# (agents' own questions often share a word or two), reading them now costs less than a step of waiting.
WAIT_TO_SHARE = 32
# A shared start at least this long is stored once (a SharedKV) rather than copied into every row that has it.
# Below it, the attention pass a SharedKV adds to each step costs more than reading a few rows' copies: with the
# embedded model on 2 CPU cores, 2-4 ms a step at 2-8 rows sharing 256 tokens; at 32 rows the shared pass is
# already faster (151 against 165 ms a step at 256 tokens, 139 against 234 ms at 1,000).
SHARE_ONCE = 256
# Prompt tokens read per step where the model's settings leave it to the engine. On a CPU a step costs about what
# its tokens cost, so a small budget keeps the running generations' steps short. On a GPU a step that reads prompts
# runs eagerly and its cost is kernel launches, not tokens: on an H200 a 512-token step of the 135M architecture
# took ~70 ms beside 4.9 ms for a decode step in CUDA graphs, and reading 128 agents' prompts 512 tokens at a time
# took half of their whole run; read 4,096 a step, they take one step of 70 ms (0.35x then 1.20x the speed of
# compiled `generate` at N = 128: BENCHMARKS.md).
PREFILL_CHUNK = {"cpu": 512, "cuda": 4096}
# Prompts with the least left to read get each step's prompt budget first; one passed over this many steps in a
# row reads first, so that short prompts arriving one after another cannot keep a long one waiting for ever.
READ_PATIENCE = 8
# Writes what a sequence joining the batch brings (its saved KV, a cached start) into its row, once it has one.
Fill = Callable[[], None]


class StepFailed(KernelError):
    """The engine could not produce this sequence's next token; the message says why."""

    status_code = 500


@dataclass(frozen=True)
class EngineSettings:
    max_batch: int = 16
    policy: str = "fifo"
    quantum_tokens: int = 32
    aging: float = 1.0  # priority points gained per second of waiting
    snapshot_ram_mb: int = 1024  # suspended generations' KV kept in RAM; the rest spills to disk
    prefix_cache_mb: int = 256  # 0 turns prefix reuse off
    kv_budget_mb: int = 4096  # the batch's KV cache never grows past this; sequences are preempted instead
    # Prompt tokens read per step, over all sequences; 0 = whole prompts at once; None = PREFILL_CHUNK by device.
    prefill_chunk: int | None = None
    # KV rows in size classes (each row about its own length) rather than one class as long as the longest row.
    # None: on a CPU, not on a GPU, where a step's CUDA graph covers every class, so any class's change is a new
    # capture: agents arriving one after another made 14 times the captures of one class (BENCHMARKS.md, "KV
    # size classes on a GPU").
    kv_classes: bool | None = None


class Engine:
    def __init__(self, runner: Runner, tokenizer: Any, eos_ids: set[int], settings: EngineSettings,
                 spill_root: Path, grammars: Grammars,
                 on_exit: Callable[[BaseException], None] | None = None) -> None:
        """``on_exit`` is called (on the engine's thread) with the error that ended the step loop, if one does."""
        self.runner, self.tokenizer, self.eos_ids, self.settings = runner, tokenizer, eos_ids, settings
        self.grammars = grammars
        self.prefill_chunk: int = (settings.prefill_chunk if settings.prefill_chunk is not None
                                   else PREFILL_CHUNK.get(runner.device.type, PREFILL_CHUNK["cpu"]))
        self.kv = self._new_kv()
        self.classes: dict[int, list[Sequence]] = {}  # the running sequences in each size class, by row
        self.policy: Policy[Sequence] = make_policy(settings.policy, settings.quantum_tokens, settings.aging)
        self.contexts = ContextStore(settings.snapshot_ram_mb * MB, spill_root)
        self.prefixes = PrefixCache(settings.prefix_cache_mb * MB) if settings.prefix_cache_mb else None
        self.running: list[Sequence] = []
        self.preemptions = 0
        self.shared_tokens = 0  # prompt tokens whose KV was taken from another running sequence (copy or SharedKV)
        self.failed_steps = 0
        self.failure: BaseException | None = None  # what ended the step loop, if anything did
        self._on_exit = on_exit
        self._inbox: list[Sequence] = []
        self._wake = threading.Condition()
        self._stopped = False
        self._thread = threading.Thread(target=self._loop, name="hf-engine", daemon=True)
        self._thread.start()

    def _new_kv(self) -> BatchKV:
        runner, classes = self.runner, self.settings.kv_classes
        if classes and not runner.attends_shared:
            raise BadRequest("kv_classes: true needs a Llama-family model (the engine's own runner); this one runs "
                             "through transformers, which sees one cache; leave kv_classes unset")
        if classes is None:  # the transformers runner sees one cache
            classes = runner.attends_shared and runner.device.type == "cpu"
        return BatchKV(runner.config.num_hidden_layers, self.settings.max_batch, runner.kv_heads, runner.head_dim,
                       runner.dtype, runner.device, classes)

    @property
    def max_batch(self) -> int:
        return self.settings.max_batch

    # -- called from other threads ---------------------------------------------------------------------------

    def submit(self, sequence: Sequence) -> None:
        self.submit_all([sequence])

    def submit_all(self, sequences: list[Sequence]) -> None:
        """Submit sequences that arrive together: the loop takes them all in one step."""
        with self._wake:
            if not self._stopped:
                self._inbox.extend(sequences)
                self._wake.notify()
                return
        for sequence in sequences:
            sequence.report(self._ended())

    def poke(self) -> None:
        """Wake the loop (a sequence was cancelled), so it lets go of it now rather than at the next step."""
        with self._wake:
            self._wake.notify()

    def stop(self) -> None:
        with self._wake:
            self._stopped = True
            self._wake.notify()
        self._thread.join(timeout=30)

    # -- the step loop ---------------------------------------------------------------------------------------

    def _loop(self) -> None:
        try:
            while self._take_inbox():
                # Recovery writes KV buffers too, so it runs in inference mode like the step itself.
                with torch.inference_mode():
                    try:
                        self.step()
                    except Exception as exc:  # a failed step fails the sequences in the batch, not the engine
                        log.exception("engine step failed")
                        self._recover(exc)
        except BaseException as exc:  # even the recovery failed: end, and say so to everyone waiting
            log.critical("the engine's step loop ended: %s: %s", type(exc).__name__, exc, exc_info=True)
            self.failure = exc
        with self._wake:
            self._stopped = True
            pending = [*self.running, *self.policy, *self._inbox]
            self._inbox.clear()
        self.running.clear()
        self.contexts.close()
        if self.failure is not None and self._on_exit is not None:
            # First, so that whoever hears of the failure finds the model replaced (or marked down) already.
            try:
                self._on_exit(self.failure)
            except Exception:
                log.exception("the engine's on_exit callback failed")
        for sequence in pending:
            sequence.report(self._ended())

    def _take_inbox(self) -> bool:
        """Wait for work; move new sequences into the policy's queue. False once the engine is stopped."""
        with self._wake:
            while not (self._inbox or self.running or len(self.policy) or self._stopped):
                self._wake.wait()
            if self._stopped:
                return False
            for sequence in self._inbox:
                self.policy.push(sequence)
            self._inbox.clear()
            return True

    def _ended(self) -> KernelError:
        if self.failure is None:
            return Unavailable("the model was shut down")
        return Unavailable(f"the model's engine failed ({type(self.failure).__name__}: {self.failure}) before "
                           "this request completed; send it again")

    def _recover(self, exc: Exception) -> None:
        """Fail the sequences of the failed step; if that fails too, drop the whole batch and start from empty
        KV buffers (the waiting sequences are untouched and go on)."""
        self.failed_steps += 1
        error = StepFailed(f"the model failed while generating this reply ({type(exc).__name__}: {exc}); the "
                           "kernel goes on serving, so sending it again may work")
        batch = list(self.running)
        try:
            self._fail(batch, error)
        except Exception:
            log.exception("failing the batch of a failed step failed; resetting the batch")
            self.running.clear()
            self.classes.clear()
            self.kv = self._new_kv()
            for sequence in batch:
                sequence.row = -1
                if sequence.snapshot is not None:
                    self.contexts.discard(sequence.snapshot)
                    sequence.snapshot = None
                sequence.report(error)

    def step(self) -> None:
        self._drop_cancelled()
        self._preempt()
        self._admit_waiting()
        self._fit_memory()
        if self.running:
            self._run()

    def _admit_waiting(self) -> None:
        """Admit waiting sequences, in policy order, while the batch has a free row and the memory for it. Their
        rows are placed together at the end, so a burst of arrivals grows each class's buffers once, and the
        rows' needs are counted once, not again for each arrival."""
        if not self._waiting_with_a_free_row():
            return  # most steps: no counting the rows
        rows, joining = Counter(capacity_for(need) for need in self._needs()), []
        while self._waiting_with_a_free_row():
            candidate = self.policy.peek()
            need = capacity_for(self._need_of(candidate))
            if self.kv.bytes_of(rows + Counter({need: 1})) > self._row_budget():
                if self.running:
                    break  # it waits until running sequences finish or yield, and free memory
                self.policy.pop()
                self._refuse(candidate, self._need_of(candidate))
                continue
            joining.append((candidate, self._admit(self.policy.pop())))
            rows[capacity_for(candidate.row_length + 2)] += 1  # as _needs() counts it, now that it runs
        # A row for all each will hold once its prompt is read; then what they bring goes into their rows. What
        # fails here fails only the sequences it was for: the running ones' rows and KV are left as they were.
        try:
            self._place([(sequence, sequence.row_length + 2) for sequence, _ in joining])
        except Exception as exc:
            # Each joining row is the last of its class, so leaving latest first moves no other row.
            self._admission_failed([sequence for sequence, _ in reversed(joining)], exc)
            return
        for sequence, fill in joining:
            if fill is not None:
                try:
                    fill()
                except Exception as exc:
                    self._admission_failed([sequence], exc)

    def _admission_failed(self, sequences: list[Sequence], exc: Exception) -> None:
        log.exception("taking %d sequence(s) into the batch failed", len(sequences))
        self._fail(sequences, StepFailed(
            f"taking this request into the batch failed ({type(exc).__name__}: {exc}); the kernel goes on "
            "serving, so sending it again may work"))

    def _waiting_with_a_free_row(self) -> bool:
        return bool(len(self.policy)) and len(self.running) < self.max_batch

    def _fits(self, candidate: Sequence) -> bool:
        """Whether ``candidate`` can join the batch now: a free row, and KV memory for it beside the others."""
        return len(self.running) < self.max_batch and self._room([*self._needs(), self._need_of(candidate)])

    def _needs(self) -> list[int]:
        """Positions each running sequence's row needs: what it holds once its prompt is read, the next input,
        one to grow."""
        return [s.row_length + 2 for s in self.running]

    def _need_of(self, candidate: Sequence) -> int:
        """Positions a waiting sequence's row will need (less the shared start a new prompt will take)."""
        own = candidate.row_length
        if candidate.fresh:
            own -= len(self._shared_start_of(candidate) or ())
        return own + 2

    def _place(self, wants: list[tuple[Sequence, int]]) -> None:
        """Room in each sequence's row for the positions it asks for (callers ask for what they are about to
        hold). With size classes, a sequence takes a row in the class that fits, and moves, with what its row
        holds, to another when it outgrows its own or needs a quarter of it (its start moved into a shared
        start). Then each class's buffers grow (once a step, however many rows join) and shrink with what its
        rows hold, never below it."""
        targets = [(sequence, self.kv.class_of(positions), positions) for sequence, positions in wants]
        # Rows moving from one class to the same other class move in one copy: agents that run in step outgrow
        # their class in the same step (on a GPU, a copy per row was about 80 kernel launches).
        moving: dict[tuple[int, int], list[Sequence]] = {}
        for sequence, cls, _ in targets:
            if sequence.row >= 0 and cls != sequence.cls and (cls > sequence.cls or 4 * cls <= sequence.cls):
                moving.setdefault((sequence.cls, cls), []).append(sequence)
        held = {pair: self.kv.cache(pair[0]).read_rows([s.row for s in group], max(s.row_tokens for s in group))
                for pair, group in moving.items()}
        self._leave([sequence for group in moving.values() for sequence in group])  # all leave before any joins
        asked: dict[int, int] = {}
        for sequence, cls, positions in targets:
            if sequence.row < 0:
                self._join(sequence, cls)
            asked[sequence.cls] = max(asked.get(sequence.cls, 0), positions)
        for cls, positions in asked.items():
            self._reserve(cls, positions)
        for pair, group in moving.items():
            self.kv.cache(pair[1]).write_rows([s.row for s in group], held[pair])

    def _reserve(self, cls: int, positions: int) -> None:
        members = self.classes[cls]
        held = max(s.row_tokens for s in members) + 1
        cache = self.kv.cache(cls)
        budget = self._row_budget() - (self.kv.nbytes - cache.nbytes)
        cache.reserve(len(members), max(positions, held, cls), budget=budget)

    def _join(self, sequence: Sequence, cls: int) -> None:
        members = self.classes.setdefault(cls, [])
        sequence.cls, sequence.row = cls, len(members)
        members.append(sequence)

    def _leave(self, sequences: list[Sequence]) -> None:
        """Free these sequences' rows. A class's rows stay dense: those of its other sequences past its new end
        move into the freed rows before it (none moves whose place is freed too)."""
        by_class: dict[int, set[int]] = {}
        for sequence in sequences:
            by_class.setdefault(sequence.cls, set()).add(id(sequence))
        for cls, leaving in by_class.items():
            members = self.classes[cls]
            end = len(members) - len(leaving)
            freed = [row for row in range(end) if id(members[row]) in leaving]
            moved = [sequence for sequence in members[end:] if id(sequence) not in leaving]
            if moved:
                self.kv.cache(cls).move_rows([s.row for s in moved], freed, max(s.row_tokens for s in moved) + 1)
            for sequence, row in zip(moved, freed):
                sequence.row, members[row] = row, sequence
            del members[end:]
            if not members:
                del self.classes[cls]
                self.kv.drop(cls)
        for sequence in sequences:
            sequence.row = -1

    def _cache(self, sequence: Sequence) -> SlotKV:
        return self.kv.cache(sequence.cls)

    def _row_budget(self) -> int:
        """What the rows may take: the KV budget less the shared starts held by running or waiting sequences."""
        return self.settings.kv_budget_mb * MB - sum(base.nbytes for base in self._shared())

    def _shared(self) -> list[SharedKV]:
        held = {id(s.base): s.base for s in (*self.running, *self.policy) if s.base is not None}
        return list(held.values())

    def _fit_memory(self) -> None:
        """Before the KV cache would grow past the budget, preempt the longest sequences (their KV moves to the
        context store) rather than fail."""
        while self.running and not self._room(self._needs()):
            longest = max(self.running, key=lambda s: s.row_length)
            if len(self.running) == 1:  # alone and out of room: it ends, keeping what it made
                self._finish(longest, "kv_budget")
                return
            self.suspend(longest)

    def _room(self, needs: list[int]) -> bool:
        return self.kv.bytes_for(needs) <= self._row_budget()

    def _refuse(self, sequence: Sequence, positions: int) -> None:
        """A sequence that cannot fit even alone: one that has generated ends with ``kv_budget`` (nothing it
        made is lost); a prompt that is too big is refused."""
        if sequence.snapshot is not None:
            self.contexts.discard(sequence.snapshot)
            sequence.snapshot = None
        if sequence.output_ids:
            text = self._final_text(sequence, cut=True)
            sequence.stream(text, final=True)
            sequence.finish(text, "kv_budget")
            return
        sequence.report(CapacityExceeded(
            f"this prompt needs {positions} tokens of KV cache "
            f"({self.kv.bytes_for([positions]) / MB:.0f} MB), more than the model's budget of "
            f"{self.settings.kv_budget_mb} MB; raise llms.models[].kv_budget_mb or send a shorter prompt"))

    def _preempt(self) -> None:
        """Swap out running sequences that the policy says should yield, while the next waiting sequence cannot
        join the batch — for want of a row or of KV memory, either way it is waiting on the running ones."""
        for sequence in sorted(self.running, key=lambda s: -s.slice_tokens):
            if not len(self.policy) or self._fits(self.policy.peek()):
                return
            if self.policy.preempts(sequence, sequence.slice_tokens, self.policy.peek()):
                self.suspend(sequence)

    def suspend(self, sequence: Sequence) -> None:
        """Save a running sequence's KV and send it back to the waiting queue. Its shared start stays shared
        while another sequence holds it; held by this one alone, it goes into the snapshot, so that suspending
        frees its memory too."""
        if sequence.base is not None and not any(s.base is sequence.base for s in (*self.running, *self.policy)
                                                 if s is not sequence):
            snapshot, sequence.base = self._read(sequence, 0, sequence.cached), None
        else:
            snapshot = self._read(sequence, sequence.base_len, sequence.cached)
        sequence.snapshot = self.contexts.save(_on_host(snapshot))
        self._release(sequence)
        sequence.running(False)
        sequence.ready_at = time.time()
        self.policy.push(sequence)
        self.preemptions += 1

    def _admit(self, sequence: Sequence) -> Fill | None:
        """Add a sequence to the batch; the caller places its row. What it brings that the row must hold (a
        suspended sequence's KV, a new prompt's cached start) is returned, to write once the row is there."""
        self.running.append(sequence)
        sequence.slice_tokens = 0
        if sequence.admitted_at is None:
            sequence.admitted_at = time.perf_counter()
        sequence.running(True)
        if sequence.snapshot is not None:  # resume: its KV comes back as it was, nothing is recomputed
            return lambda: self._resume(sequence)
        if sequence.fresh:
            self._adopt_shared(sequence)
            match = self.prefixes.lookup(sequence.prompt_ids) if self.prefixes else None
            if match is not None and match.length > sequence.prefilled:
                return self._take_cached(sequence, match)
        return None

    def _resume(self, sequence: Sequence) -> None:
        assert sequence.snapshot is not None
        self._cache(sequence).write_row(sequence.row, self.contexts.restore(sequence.snapshot), 0,
                                        sequence.row_tokens)
        sequence.snapshot = None

    def _take_cached(self, sequence: Sequence, match: Match) -> Fill | None:
        """A new prompt takes the KV of its longest cached start. A start that other cached conversations
        continue too (agents' system prompt) becomes its shared start, the one SharedKV the prefix cache hands
        every prompt that has it; and a long cached start of its own (an agent's next turn) becomes a shared start
        that the agents arriving after it take from this sequence (``_adopt_shared``). Either way it is stored
        once however many take it. What is left is copied into its row (returned, to run once it has one)."""
        assert self.prefixes is not None
        end = match.length
        if self.runner.attends_shared:
            fork = self.prefixes.shared_start(match, sequence.base_len + SHARE_ONCE)
            if fork is not None:
                sequence.base, sequence.prefilled = fork, len(fork)
            elif end - sequence.base_len >= SHARE_ONCE:
                sequence.base, sequence.prefilled = SharedKV(sequence.prompt_ids[:end], *match.kv(0, end)), end
                return None
        if end <= sequence.prefilled:
            return None

        def fill() -> None:
            begin = sequence.prefilled
            self._cache(sequence).write_row(sequence.row, match.kv(begin, end), 0, end - begin,
                                            at=begin - sequence.base_len)
            sequence.prefilled = end

        return fill

    def _adopt_shared(self, sequence: Sequence) -> None:
        """A new prompt that begins with the shared start of a running sequence takes it."""
        sequence.base = self._shared_start_of(sequence)
        self.shared_tokens += sequence.base_len
        sequence.prefilled = sequence.base_len

    def _shared_start_of(self, sequence: Sequence) -> SharedKV | None:
        """The longest shared start of a running sequence that a new prompt begins with (a token left to read)."""
        prompt, best, best_len = sequence.prompt_ids, None, 0
        for other in self.running:
            base = other.base
            if base is not None and best_len < len(base) < len(prompt) and prompt[:len(base)] == base.ids:
                best, best_len = base, len(base)
        return best

    def _run(self) -> None:
        """One forward pass: a decode token for each generating sequence, the next piece of each prompt still
        being read (within the step's prompt budget, the prompts with the least left to read first, so a short
        chat is not queued behind a long document, unless one has been passed over ``READ_PATIENCE`` steps);
        then a token for every sequence that got logits."""
        budget = self.prefill_chunk or None
        readers = sorted((s for s in self.running if not s.output_ids),
                         key=lambda s: (s.passed_over < READ_PATIENCE, len(s.prompt_ids) - s.prefilled))
        for sequence in readers:  # before any chunk is made: taking a shared start can move another's row
            self._share_prefix(sequence)
        reading: list[tuple[Sequence, int]] = []
        for sequence in readers:
            left = len(sequence.prompt_ids) - sequence.prefilled
            take = left if budget is None else min(left, budget)
            if take == 0:  # the budget went to others
                sequence.passed_over += 1
                continue
            if self._read_by_another(sequence, reading):
                continue  # it copies them from the other's row next step
            sequence.passed_over = 0
            reading.append((sequence, take))
            if budget is not None:
                budget -= take
        decoding = [s for s in self.running if s.output_ids]
        # Rows grow (doubling) only as far as the sequences get, and keep a position past what they hold (the
        # padding rows of a CUDA graph write there).
        self._place([(s, s.row_length + 2) for s in decoding]
                    + [(s, s.prefilled - s.base_len + take + 1) for s, take in reading])
        decoding.sort(key=lambda s: (s.cls, s.row))  # each class's decode tokens attend in one call over its rows
        chunks = [Chunk(s.row, [s.output_ids[-1]], s.length, base=s.base, cache=self._cache(s)) for s in decoding]
        sampled = list(decoding)
        for sequence, take in reading:
            ends = sequence.prefilled + take == len(sequence.prompt_ids)
            chunks.append(Chunk(sequence.row, sequence.prompt_ids[sequence.prefilled:sequence.prefilled + take],
                                sequence.prefilled, wants_logits=ends, base=sequence.base,
                                cache=self._cache(sequence)))
            if ends:
                sampled.append(sequence)
        logits = self._forward(chunks)
        for sequence, take in reading:
            sequence.prefilled += take
        for sequence, token in zip(sampled, self._sample(sampled, logits)):
            self._take(sequence, token)

    def _share_prefix(self, sequence: Sequence) -> None:
        """A prompt being read takes, from another running sequence, the KV of the longest start it shares with
        that sequence's cached prompt: agents that share a system prompt compute it once. A shared start of
        ``SHARE_ONCE`` tokens or more is also stored once: it moves out of the source's row into a ``SharedKV``
        that both hold (and that grows as the source reads on); a shorter one is copied into this prompt's row.
        (Only prompts are compared: this runs every step for every prompt being read, over every running
        sequence.)"""
        start = best = sequence.prefilled
        source = None
        limit = len(sequence.prompt_ids) - 1  # at least one token is left to compute
        for other in self.running:
            if other is not sequence and other.cached > best:
                shared = common_prefix(other.prompt_ids, sequence.prompt_ids, min(limit, other.cached))
                if shared > best:
                    best, source = shared, other
        if source is None:
            return
        if self.runner.attends_shared and best >= SHARE_ONCE:
            if best - source.base_len >= SHARE_ONCE:  # a long start not shared yet: out of the row, stored once
                source.base = self._grow_shared(source, best)
            base = source.base
            if base is not None and len(base) > best:
                # It goes on past this prompt: its first part is a shared start of its own, for this prompt and
                # those that come after it.
                base = SharedKV.start_of(base.ids, (base.keys, base.values), best)
            # That start covers all this prompt has (its own, and what its row holds): take it.
            if base is not None and len(base) > sequence.base_len and len(base) >= sequence.prefilled:
                sequence.base = base
                sequence.prefilled = len(base)
        self._place([(sequence, best - sequence.base_len + 1)])
        self._copy_kv(source, sequence, best)
        self.shared_tokens += best - start
        sequence.prefilled = best

    def _grow_shared(self, sequence: Sequence, end: int) -> SharedKV:
        """A shared start of ``sequence``'s first ``end`` tokens: its current one, if any, and the positions up to
        ``end`` taken out of its row. (The current one lives on while other sequences hold it.)"""
        keys, values = _joined(sequence.base, self._cache(sequence).split_row(sequence.row, end - sequence.base_len,
                                                                              sequence.row_tokens))
        return SharedKV(sequence.prompt_ids[:end], keys, values)

    def _copy_kv(self, source: Sequence, target: Sequence, end: int) -> None:
        """Copy positions ``target.prefilled .. end-1`` of ``source``'s KV (from its shared start, its row, or
        both) into ``target``'s row."""
        begin = target.prefilled
        split = min(max(begin, source.base_len), end)  # positions before it are in source's shared start
        if begin < split:
            base = source.base
            assert base is not None
            self._cache(target).write_row(target.row, (base.keys, base.values), begin, split,
                                          at=begin - target.base_len)
        if split < end:  # (the rows may be in two size classes)
            self._cache(source).copy_positions(source.row, split - source.base_len, target.row,
                                               split - target.base_len, end - split, into=self._cache(target))

    @staticmethod
    def _read_by_another(sequence: Sequence, reading: list[tuple[Sequence, int]]) -> bool:
        """Whether a prompt read earlier in this step covers at least ``WAIT_TO_SHARE`` of this one's next tokens:
        then it waits a step and copies them (the first of several prompts with the same start reads it for
        all)."""
        return any(common_prefix(other.prompt_ids[:other.prefilled + take], sequence.prompt_ids,
                                 len(sequence.prompt_ids) - 1) >= sequence.prefilled + WAIT_TO_SHARE
                   for other, take in reading)

    def _forward(self, chunks: list[Chunk]) -> torch.Tensor:
        return self.runner.forward(chunks)

    def _sample(self, sequences: list[Sequence], logits: torch.Tensor) -> list[int | Exception]:
        """The next token of each sequence, or the error that sampling it raised (which fails that one alone)."""
        constrained = [i for i, s in enumerate(sequences) if s.constraint is not None]
        if constrained:
            self.grammars.mask(logits, constrained, [sequences[i].constraint for i in constrained],
                               [_closing(sequences[i]) for i in constrained])
        return next_tokens(logits, [s.sampling for s in sequences], [s.generator for s in sequences])

    def _take(self, sequence: Sequence, token: int | Exception) -> None:
        sequence.slice_tokens += 1
        if isinstance(token, Exception):
            log.warning("sampling failed for one sequence: %s", token)
            self._fail([sequence], StepFailed(f"sampling the next token failed ({type(token).__name__}: {token})"))
            return
        self._accept(sequence, token)

    def _accept(self, sequence: Sequence, token: int) -> None:
        """Record a sequence's new token and let it go if that finished it."""
        sequence.output_ids.append(token)
        if sequence.constraint is not None and not sequence.constraint.accept(token):
            sequence.constraint = None  # cannot happen for a sampled token; the handler checks the reply anyway
        if sequence.first_token_at is None:
            sequence.first_token_at = time.perf_counter()
        reason = self._finish_reason(sequence, token)
        if reason is None:
            if sequence.request.on_text is not None:
                sequence.stream(self._streamed_text(sequence), final=False)
            return
        self._finish(sequence, reason)

    def _finish(self, sequence: Sequence, reason: str) -> None:
        """Hand a running sequence its reply, keep its KV for prefix reuse, and free its row."""
        text = self._final_text(sequence, cut=reason != "stop")
        stop_at = _first_stop(text, _stops(sequence), len(sequence.request.reply_prefix))
        text = text[:stop_at] if stop_at is not None else text
        sequence.stream(text, final=True)
        if self.prefixes is not None:
            self.prefixes.insert(sequence.cached_ids, lambda begin, end: self._read(sequence, begin, end))
        self._release(sequence)
        sequence.finish(text, reason)

    def _read(self, sequence: Sequence, begin: int, end: int) -> KV:
        """A copy of positions ``begin..end-1`` of a running sequence's KV: from its shared start, if it has one,
        and its row."""
        n = sequence.base_len
        own = self._cache(sequence).read_row(sequence.row, end - n, begin=max(begin - n, 0))
        return own if begin >= n else _joined(sequence.base, own, begin)

    def _streamed_text(self, sequence: Sequence) -> str:
        """The reply's text while it streams, kept as tokens come (up to its last whole character)."""
        if sequence.detokenizer is None:
            sequence.detokenizer = IncrementalText(self.tokenizer)
        return sequence.request.reply_prefix + sequence.detokenizer.of(self._reply_ids(sequence))

    def _final_text(self, sequence: Sequence, cut: bool) -> str:
        """The reply's text at its end: its tokens decoded whole. A reply ``cut`` short (it did not end by itself:
        the token limit, the KV budget, a cancel) may stop inside a character: it ends before it, as streaming
        does, rather than in U+FFFD."""
        text = self.tokenizer.decode(self._reply_ids(sequence), skip_special_tokens=True)
        return sequence.request.reply_prefix + (whole(text) if cut else text)

    def _reply_ids(self, sequence: Sequence) -> list[int]:
        ids = sequence.output_ids
        return ids[:-1] if ids and ids[-1] in self.eos_ids else ids

    def _finish_reason(self, sequence: Sequence, token: int) -> str | None:
        if sequence.request.cancelled.is_set():
            return "cancelled"
        if token in self.eos_ids:
            return "stop"
        if sequence.constraint is not None and sequence.constraint.complete:
            return "length" if _closing(sequence) else "stop"  # "length": it was brought to an end early
        if stops := _stops(sequence):
            # A stop string can only end in the newest token: look at the last few tokens, not the whole reply.
            # Tokens, not characters: every token holds at least a byte, and a character may take several (🌟: 3).
            window = max(len(stop.encode("utf-8")) for stop in stops) + 2
            text = self.tokenizer.decode(sequence.output_ids[-window:], skip_special_tokens=True)
            if _first_stop(text, stops, 0) is not None:
                return "stop"
        if len(sequence.output_ids) >= sequence.sampling.max_new_tokens:
            return "length"
        return None

    def _drop_cancelled(self) -> None:
        for sequence in [s for s in self.running if s.request.cancelled.is_set()]:
            self._release(sequence)
            sequence.finish("", "cancelled")
        for sequence in [s for s in self.policy if s.request.cancelled.is_set()]:
            self.policy.remove(sequence)
            if sequence.snapshot is not None:  # abandoned: free its saved KV
                self.contexts.discard(sequence.snapshot)
            sequence.finish("", "cancelled")

    def _release(self, sequence: Sequence) -> None:
        """Take a sequence out of the batch, and free its row."""
        self.running.remove(sequence)
        if sequence.row >= 0:
            self._leave([sequence])

    def _fail(self, sequences: list[Sequence], error: BaseException) -> None:
        for sequence in sequences:
            if sequence in self.running:
                self._release(sequence)
            elif sequence in self.policy:
                self.policy.remove(sequence)
            if sequence.snapshot is not None:
                self.contexts.discard(sequence.snapshot)
                sequence.snapshot = None
            sequence.report(error)

    def _rows_by_class(self) -> dict[int, int]:
        """Rows in each size class, by its positions (one class, as long as the longest row, where classes are
        off). Status pages ask from other threads: the dicts are copied first (a copy is atomic, a walk is not)."""
        caches, classes = dict(self.kv.caches), dict(self.classes)
        return {caches[cls].capacity: len(rows) for cls, rows in sorted(classes.items()) if cls in caches}

    def stats(self) -> dict[str, Any]:
        shared = self._shared()
        return {
            "policy": self.policy.name,
            "running": len(self.running),
            "waiting": len(self.policy),
            "preemptions": self.preemptions,
            "shared_prompt_tokens": self.shared_tokens,
            "failed_steps": self.failed_steps,
            "snapshots": len(self.contexts),
            "snapshots_spilled": self.contexts.spilled,
            "prefix_entries": len(self.prefixes) if self.prefixes else 0,
            "prefix_hits": self.prefixes.hits if self.prefixes else 0,
            "prefix_cache_mb": round(self.prefixes.nbytes / MB, 1) if self.prefixes else 0.0,
            "kv_cache_mb": round(self.kv.nbytes / MB, 1),
            "kv_rows": self._rows_by_class(),
            "kv_classes": self.kv.classes,
            "shared_kv": len(shared),
            "shared_kv_mb": round(sum(base.nbytes for base in shared) / MB, 1),
            "runner": self.runner.name,
            "weights": self.runner.weights,
            "decode": self.runner.decode_mode,
            "graphs": graphs.stats() if (graphs := getattr(self.runner, "graphs", None)) is not None else None,
            "attention": self.runner.attention,
            "products": self.runner.products,
            "elementwise": self.runner.elementwise,
            "prefill_chunk": self.prefill_chunk,
        }


def _joined(base: SharedKV | None, own: KV, begin: int = 0) -> KV:
    """A row's KV (per layer, as from ``read_row``) after its shared start's from position ``begin`` on, as one
    tensor per layer."""
    if base is None:
        return own
    keys, values = ([torch.cat((shared[:, begin:], mine), dim=1) for shared, mine in zip(start, row)]
                    for start, row in zip((base.keys, base.values), own))
    return keys, values


def _on_host(kv: KV) -> KV:
    """A snapshot's KV in the host's memory: on a GPU, suspended generations would hold memory outside the KV
    budget, and preempting one to make room would first take more. (One copy per part: its layers are views of
    one tensor, or of a shared start's and a row's.)"""
    keys, values = kv
    if keys[0].device.type == "cpu":
        return kv
    return list(torch.stack(keys).cpu().unbind(0)), list(torch.stack(values).cpu().unbind(0))


def _closing(sequence: Sequence) -> bool:
    """Whether a constrained JSON reply (not prose, which ``tool_choice: auto`` allows) is close enough to its
    token limit to be brought to an end: the last quarter of the budget, at most 32 tokens."""
    if sequence.constraint is None or sequence.constraint.prose:
        return False
    left = sequence.sampling.max_new_tokens - len(sequence.output_ids)
    return left <= min(32, sequence.sampling.max_new_tokens // 4)


def _stops(sequence: Sequence) -> list[str]:
    """The stop strings that apply: none while a grammar shapes the reply into JSON, which ends when the grammar
    does (a stop string inside the JSON would only cut it short); a reply known to be prose (one that could
    have been tool calls) stops at them as any other."""
    constraint = sequence.constraint
    return sequence.sampling.stop if constraint is None or constraint.prose else []


def _first_stop(text: str, stops: list[str], skip: int) -> int | None:
    hits = [i for i in (text.find(s, skip) for s in stops) if i >= 0]
    return min(hits) if hits else None
