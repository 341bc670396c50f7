"""The continuous-batching engine: one step loop, on its own thread, serves every in-flight generation.

Each step admits waiting sequences while there is room in the batch (prefilling each into its own row of the
KV cache), then runs one decode step for all running sequences together and samples each one's next token with
its own parameters. A sequence leaves the batch as soon as it is finished or cancelled, at a token boundary,
without waiting for the others. Callers hand sequences over with ``submit``; the loop sleeps on a condition
variable while there is nothing to do (no polling).
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from typing import Any

import torch

from aios.llm.hf.kv import SlotKV
from aios.llm.hf.sequence import Sequence

log = logging.getLogger(__name__)


class Engine:
    def __init__(self, model: Any, tokenizer: Any, eos_ids: set[int], max_batch: int = 16) -> None:
        self.model, self.tokenizer, self.eos_ids, self.max_batch = model, tokenizer, eos_ids, max_batch
        config = model.config
        head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
        self.kv = SlotKV(config.num_hidden_layers, max_batch, config.num_key_value_heads, head_dim,
                         model.dtype, model.device)
        self.waiting: deque[Sequence] = deque()
        self.running: list[Sequence] = []
        self._inbox: list[Sequence] = []
        self._wake = threading.Condition()
        self._stopped = False
        self._thread = threading.Thread(target=self._loop, name="hf-engine", daemon=True)
        self._thread.start()

    # -- called from other threads ---------------------------------------------------------------------------

    def submit(self, sequence: Sequence) -> None:
        with self._wake:
            self._inbox.append(sequence)
            self._wake.notify()

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
        while True:
            with self._wake:
                while not (self._inbox or self.running or self.waiting or self._stopped):
                    self._wake.wait()
                if self._stopped:
                    break
                self.waiting.extend(self._inbox)
                self._inbox.clear()
            try:
                with torch.inference_mode():
                    self.step()
            except Exception as exc:  # a failed forward pass fails the sequences in it, not the engine
                log.exception("engine step failed")
                for sequence in [*self.running, *self.waiting]:
                    sequence.on_done(exc)
                self.running.clear()
                self.waiting.clear()
        for sequence in [*self.running, *self.waiting, *self._inbox]:
            sequence.on_done(RuntimeError("the model was shut down"))

    def step(self) -> None:
        self._drop_cancelled()
        while self.waiting and len(self.running) < self.max_batch:
            self._prefill(self.waiting.popleft())
        if self.running:
            self._decode()

    def _prefill(self, sequence: Sequence) -> None:
        if sequence.request.cancelled.is_set():
            sequence.finish("", "cancelled")
            return
        sequence.row = len(self.running)
        ids = torch.tensor([sequence.prompt_ids], device=self.model.device)
        n = ids.shape[1]
        self.kv.reserve(n + sequence.sampling.max_new_tokens)
        mask = torch.ones(n, n, dtype=torch.bool, device=ids.device).tril().view(1, 1, n, n)
        positions = torch.arange(n, device=ids.device).unsqueeze(0)
        logits = self._forward(ids, positions, mask, self.kv.prefill_view(sequence.row, 0))
        self.running.append(sequence)
        self._accept(sequence, self._sample([sequence], logits)[0])

    def _decode(self) -> None:
        sequences = self.running
        device = self.model.device
        ids = torch.tensor([[s.output_ids[-1]] for s in sequences], device=device)
        lengths = torch.tensor([s.length for s in sequences], device=device)
        view = self.kv.decode_view(lengths)
        mask = (torch.arange(view.span, device=device).unsqueeze(0) <= lengths.unsqueeze(1)).view(len(sequences), 1, 1, -1)
        logits = self._forward(ids, lengths.unsqueeze(1), mask, view)
        for sequence, token in zip(list(sequences), self._sample(sequences, logits)):
            self._accept(sequence, token)

    def _forward(self, ids: torch.Tensor, positions: torch.Tensor, mask: torch.Tensor, cache: Any) -> torch.Tensor:
        out = self.model(input_ids=ids, position_ids=positions, attention_mask=mask, past_key_values=cache,
                         use_cache=True, logits_to_keep=1)
        return out.logits[:, -1, :].float()

    def _sample(self, sequences: list[Sequence], logits: torch.Tensor) -> list[int]:
        tokens = logits.argmax(dim=-1).tolist()
        for i, sequence in enumerate(sequences):
            if sequence.sampling.temperature > 0:
                tokens[i] = _sample_one(logits[i], sequence)
        return tokens

    def _accept(self, sequence: Sequence, token: int) -> None:
        """Record a sequence's new token and let it go if that finished it."""
        sequence.output_ids.append(token)
        reason = self._finish_reason(sequence, token)
        if reason is None:
            return
        ids = sequence.output_ids[:-1] if token in self.eos_ids else sequence.output_ids
        text = sequence.request.reply_prefix + self.tokenizer.decode(ids, skip_special_tokens=True)
        stop_at = _first_stop(text, sequence.sampling.stop, len(sequence.request.reply_prefix))
        self._release(sequence)
        sequence.finish(text[:stop_at] if stop_at is not None else text, reason)

    def _finish_reason(self, sequence: Sequence, token: int) -> str | None:
        if sequence.request.cancelled.is_set():
            return "cancelled"
        if token in self.eos_ids:
            return "stop"
        if sequence.sampling.stop:
            text = self.tokenizer.decode(sequence.output_ids, skip_special_tokens=True)
            if _first_stop(text, sequence.sampling.stop, 0) is not None:
                return "stop"
        if len(sequence.output_ids) >= sequence.sampling.max_new_tokens:
            return "length"
        return None

    def _drop_cancelled(self) -> None:
        for sequence in [s for s in self.running if s.request.cancelled.is_set()]:
            self._release(sequence)
            sequence.finish("", "cancelled")
        for sequence in [s for s in self.waiting if s.request.cancelled.is_set()]:
            self.waiting.remove(sequence)
            sequence.finish("", "cancelled")

    def _release(self, sequence: Sequence) -> None:
        """Take a sequence out of the batch; the last row moves into its place so rows stay dense."""
        row, last = sequence.row, self.running[-1]
        if last is not sequence:
            self.kv.move_row(last.row, row, last.length + 1)
            last.row = row
            self.running[row] = last
        self.running.pop()
        sequence.row = -1


def _sample_one(logits: torch.Tensor, sequence: Sequence) -> int:
    probs = torch.softmax(logits / sequence.sampling.temperature, dim=-1)
    if sequence.sampling.top_p < 1:
        sorted_probs, order = probs.sort(descending=True)
        keep = sorted_probs.cumsum(-1) - sorted_probs < sequence.sampling.top_p  # always keeps the top token
        probs = torch.zeros_like(probs).scatter(0, order[keep], sorted_probs[keep])
    return int(torch.multinomial(probs, 1, generator=sequence.generator))


def _first_stop(text: str, stops: list[str], skip: int) -> int | None:
    hits = [i for i in (text.find(s, skip) for s in stops) if i >= 0]
    return min(hits) if hits else None
