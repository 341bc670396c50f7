"""``HfLocalBackend``: a local Hugging Face model served to the kernel.

The model's own chat template renders every prompt. Tool descriptions go through the template when it accepts
``tools=``; otherwise ``merge_messages_with_tools`` folds them into the system prompt (the seed behaviour).
Generation runs in a continuous-batching engine on a thread of its own, so the kernel's event loop never blocks
on a forward pass and many requests share each step.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import secrets
import threading
import time
from collections import deque
from dataclasses import replace
from pathlib import Path
from typing import Any, AsyncIterator

import torch

from aios.errors import BadRequest, Unavailable
from aios.llm.core import Generation, GenerationRequest, on_loop
from aios.llm.hf.engine import Engine, EngineSettings
from aios.llm.hf.grammar import Grammars, TokenConstraint
from aios.llm.hf.loader import find_model, load_model
from aios.llm.hf.runner import make_runner
from aios.llm.hf.weights import WeightFormat
from aios.llm.hf.sequence import Sequence
from aios.llm.prompting import merge_messages_with_tools
from aios.llm.structured import OutputSpec
from aios.torch_threads import on_passing_thread

log = logging.getLogger(__name__)

# An engine whose step loop ended is replaced at once, up to this many times in RESTART_WINDOW_S seconds; a
# model that keeps failing faster stays down (and says why) rather than restarting in a loop.
MAX_RESTARTS = 3
RESTART_WINDOW_S = 300.0


class HfLocalBackend:
    """A local model: ``HfLocalBackend(model_name, max_gpu_memory, eval_device, data_dir=...)``.

    ``model_name`` is a Hugging Face id, a local model directory or a ``.gguf`` path. The device is CUDA when
    present (``max_gpu_memory`` like ``{0: "24GB"}`` is honoured), else the CPU in fp32. All requests are served
    by one continuous-batching :class:`Engine` (batch size, scheduling policy, caches: ``settings``).
    """

    backend = "huggingface"

    def __init__(
        self,
        model_name: str,
        max_gpu_memory: dict[int | str, str] | None = None,
        eval_device: str | None = None,
        *,
        data_dir: Path,
        settings: EngineSettings = EngineSettings(),
        structured_output: str = "grammar",
        weights: WeightFormat = "native",
    ) -> None:
        self.name = model_name
        self.device = pick_device(eval_device)
        self.dtype = torch.float32 if self.device == "cpu" else _cuda_dtype()
        source = find_model(model_name)
        placement = _placement(self.device, self.dtype, max_gpu_memory)

        def load() -> tuple[Any, Any, int, Any]:
            model, tokenizer = load_model(source, data_dir, **placement)
            # Counted before the runner takes the weights: the module's copies it drops are untied then.
            return model, tokenizer, model.num_parameters(), make_runner(model, weights)

        # On a thread that then ends, so that it leaves no OpenMP pool behind to slow the engine's (see
        # aios.torch_threads).
        self.model, self.tokenizer, self.parameters, self.runner = on_passing_thread(load, f"load {model_name}")
        if not self.tokenizer.chat_template:
            raise BadRequest(f"model {model_name!r} has no chat template; use an instruction-tuned (chat) model")
        self.template_accepts_tools = _template_uses(self.tokenizer.chat_template, "tools")
        self.control_text = _control_text(self.tokenizer)
        self.max_positions = getattr(self.model.config, "max_position_embeddings", None) or 2**31
        # No token is longer than the longest vocabulary entry, so no longer prompt can fit the context.
        self.max_prompt_chars = self.max_positions * max(map(len, self.tokenizer.get_vocab()))
        self.eos_ids = _eos_ids(self.model, self.tokenizer)
        self.settings, self.spill_dir = settings, data_dir / "snapshots"
        # "grammar": structured replies are constrained while decoding; "prompt": the kernel checks them.
        self.constrains = structured_output == "grammar"
        self.grammars = Grammars(self.tokenizer, self.model.config.vocab_size, self.eos_ids)
        self.restarts: deque[float] = deque()  # when the engine was restarted, within the window
        self.max_restarts = MAX_RESTARTS
        self.engine_restarts = 0
        self.down: str | None = None  # why the model is down, while it is
        self.engine = self._start_engine()

    def _start_engine(self) -> Engine:
        return Engine(self.runner, self.tokenizer, self.eos_ids, self.settings, self.spill_dir, self.grammars,
                      on_exit=self._engine_ended)

    def _engine_ended(self, failure: BaseException) -> None:
        """The engine's step loop ended on an error (its waiting requests have failed): start a new one, unless
        it keeps failing."""
        now = time.monotonic()
        while self.restarts and now - self.restarts[0] > RESTART_WINDOW_S:
            self.restarts.popleft()
        why = f"{type(failure).__name__}: {failure}"
        if len(self.restarts) >= self.max_restarts:
            self.down = (f"its engine failed {len(self.restarts) + 1} times within {RESTART_WINDOW_S:.0f} s, last "
                         f"with {why}; restart the kernel")
            log.critical("model %s is down: %s", self.name, self.down)
            return
        self.restarts.append(now)
        self.engine_restarts += 1
        log.error("model %s: the engine failed (%s); starting a new one", self.name, why)
        self.engine = self._start_engine()

    async def complete(self, request: GenerationRequest) -> Generation:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Generation] = loop.create_future()
        prepared = await asyncio.to_thread(self._prepare, request)  # templating must not stall the loop
        self._submit(request, prepared, on_loop(loop, lambda outcome: _settle(future, outcome)))
        try:
            return await future
        except asyncio.CancelledError:
            request.cancelled.set()  # the engine lets go of it at the next token
            self.engine.poke()
            raise

    async def stream(self, request: GenerationRequest) -> AsyncIterator[str]:
        """The reply's text in pieces, as the engine decodes them; ends when the generation does."""
        loop = asyncio.get_running_loop()
        pieces: asyncio.Queue[str | Generation | BaseException] = asyncio.Queue()
        request.on_text = on_loop(loop, pieces.put_nowait)
        prepared = await asyncio.to_thread(self._prepare, request)
        self._submit(request, prepared, on_loop(loop, pieces.put_nowait))
        try:
            while not isinstance(piece := await pieces.get(), (Generation, BaseException)):
                yield piece
        finally:
            request.cancelled.set()  # a consumer that stops early lets the engine drop the generation
            self.engine.poke()
        if isinstance(piece, BaseException):
            raise piece

    def generate(self, request: GenerationRequest) -> Generation:
        """Generate a reply to ``request.messages`` (blocking; safe to call from any thread)."""
        done = threading.Event()
        outcome: list[Generation | BaseException] = []
        self._submit(request, self._prepare(request), lambda result: (outcome.append(result), done.set()))
        done.wait()
        if isinstance(outcome[0], BaseException):
            raise outcome[0]
        return outcome[0]

    def prompt_ids(self, request: GenerationRequest) -> list[int]:
        return self.render(request.messages, request.tools, request.reply_prefix,
                           request.constraint)["input_ids"][0].tolist()

    def _prepare(self, request: GenerationRequest) -> tuple[list[int], TokenConstraint | None]:
        """The prompt's token ids and, for a constrained request, its grammar state (compiled on first use)."""
        constraint = None
        if request.constraint is not None and self.constrains:
            constraint = self.grammars.constraint(request.constraint)
        return self.prompt_ids(request), constraint

    def _submit(self, request: GenerationRequest, prepared: tuple[list[int], TokenConstraint | None],
                on_done: Any) -> None:
        if self.down is not None:
            raise Unavailable(f"model {self.name} is down: {self.down}")
        prompt_ids, constraint = prepared
        room = self.max_positions - len(prompt_ids)
        if room < 1:
            raise BadRequest(f"the prompt is {len(prompt_ids)} tokens; {self.name} takes at most {self.max_positions}")
        if request.sampling.max_new_tokens > room:
            request.sampling = replace(request.sampling, max_new_tokens=room)
        generator = None
        if not request.sampling.greedy:
            generator = torch.Generator()  # on the CPU wherever the model runs (see sampling.py)
            seed = request.sampling.seed
            generator.manual_seed(secrets.randbits(63) if seed is None else seed)
        self.engine.submit(Sequence(request, prompt_ids, on_done, generator=generator, constraint=constraint))

    def render(
        self, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None, reply_prefix: str = "",
        spec: OutputSpec | None = None,
    ) -> dict[str, torch.Tensor]:
        """Token ids of the prompt, through the model's own chat template, followed by ``reply_prefix``.

        Tools go through the template when it takes them, unless the reply is constrained to the kernel's call
        format: then the prompt must describe that same format (a template would ask for its own)."""
        # What messages and tools say is text: none of it may spell a control token (a message that ends its own
        # turn with <|im_end|> and writes a system turn after it). Only the template writes control tokens.
        messages = [_as_text(_plain_message(m), self.control_text) for m in messages]
        tools = _as_text(tools, self.control_text)
        template_kwargs: dict[str, Any] = {}
        own_format = spec is not None and spec.tools is not None and self.constrains
        if tools and self.template_accepts_tools and not own_format:
            template_kwargs["tools"] = tools
        elif tools:
            messages = merge_messages_with_tools(messages, tools, spec.without_a_call if spec else "text")
        try:
            prompt = self.tokenizer.apply_chat_template(
                messages, add_generation_prompt=True, tokenize=False, **template_kwargs
            )
        except Exception as exc:  # jinja2 TemplateError and friends: the messages do not fit this template
            raise BadRequest(f"the messages do not fit the chat template of {self.name}: {exc}") from None
        # The template already wrote any special tokens the model needs.
        return self.tokenizer(prompt + reply_prefix, add_special_tokens=False, return_tensors="pt")

    def running_tokens(self) -> int:
        """Tokens in the running batch's KV cache (read off the engine's thread: a close estimate)."""
        return sum(sequence.length for sequence in list(self.engine.running))

    @property
    def parameters_b(self) -> float:
        """The model's size in billions of parameters."""
        return self.parameters / 1e9

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "backend": self.backend,
            "device": str(self.runner.device),
            "dtype": str(self.dtype).removeprefix("torch."),
            "template_tools": self.template_accepts_tools,
            "state": "down" if self.down else "up",
            **({"down_because": self.down} if self.down else {}),
            "engine_restarts": self.engine_restarts,
            "max_batch": self.engine.max_batch,
            "structured_output": "grammar" if self.constrains else "prompt",
            "grammars_cached": self.grammars.cached,
            "engine": self.engine.stats(),
        }

    def close(self) -> None:
        self.engine.stop()


def _settle(future: asyncio.Future[Generation], outcome: Generation | BaseException) -> None:
    if future.done():  # the waiter was cancelled first
        return
    if isinstance(outcome, BaseException):
        future.set_exception(outcome)
    else:
        future.set_result(outcome)


def pick_device(eval_device: str | None) -> str:
    """``eval_device`` as configured, or CUDA when present, else CPU; asking for absent CUDA is an error."""
    if eval_device in (None, "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    if eval_device.startswith("cuda") and not torch.cuda.is_available():
        raise BadRequest(f"eval_device {eval_device!r} was asked for, but CUDA is not available on this machine")
    return eval_device


def _cuda_dtype() -> torch.dtype:
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def _placement(device: str, dtype: torch.dtype, max_gpu_memory: dict[int | str, str] | None) -> dict[str, Any]:
    if device.startswith("cuda") and max_gpu_memory:
        return {"dtype": dtype, "device_map": "auto", "max_memory": {int(k): v for k, v in max_gpu_memory.items()}}
    if device == "cuda":  # the caller's current GPU: the model loads on another thread, whose current GPU is 0
        device = f"cuda:{torch.cuda.current_device()}"
    return {"dtype": dtype, "device_map": device}


def _template_uses(template: str, variable: str) -> bool:
    from jinja2 import Environment, meta

    return variable in meta.find_undeclared_variables(Environment().parse(template))


# An added token that is markup (<tool_call>, </tool_response>, <think>, [INST]) frames turns even where the
# tokenizer does not mark it special; other added tokens (runs of spaces in code models) are plain text.
MARKUP = re.compile(r"<[^<>\s]+>|\[[A-Z_/]+\]")


def _control_text(tokenizer: Any) -> re.Pattern[str] | None:
    """What spells one of the tokenizer's control tokens in text (``<|im_end|>``, ``<|endoftext|>``,
    ``<tool_call>``): tokenizing a prompt reads each such spelling as the token itself."""
    control = {token.content for token in tokenizer.added_tokens_decoder.values()
               if token.special or MARKUP.fullmatch(token.content)}
    control |= set(tokenizer.all_special_tokens)
    control.discard("")
    return re.compile("|".join(map(re.escape, sorted(control, key=len, reverse=True)))) if control else None


def _as_text(value: Any, control: re.Pattern[str] | None) -> Any:
    """``value`` (a message, tools, anything in them, keys too) with each spelling of a control token in its
    strings broken by a zero-width space after its first character: it reads the same, and is tokenized as
    text."""
    if control is None:
        return value
    if isinstance(value, str):
        return control.sub(lambda found: found[0][0] + "\u200b" + found[0][1:], value)
    if isinstance(value, dict):
        return {_as_text(key, control): _as_text(item, control) for key, item in value.items()}
    if isinstance(value, list):
        return [_as_text(item, control) for item in value]
    return value


def _plain_message(message: dict[str, Any]) -> dict[str, Any]:
    """Make an OpenAI chat message renderable by any template: text content, calls spelled out."""
    message = dict(message)
    content = message.get("content")
    if isinstance(content, list):  # OpenAI content parts; only text reaches a text model
        content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
    if not content and message.get("tool_calls"):
        content = json.dumps(message["tool_calls"])
    message["content"] = content or ""
    return message


def _eos_ids(model: Any, tokenizer: Any) -> set[int]:
    eos = model.generation_config.eos_token_id
    ids = set(eos) if isinstance(eos, list) else {eos}
    return {i for i in (*ids, tokenizer.eos_token_id) if i is not None}
