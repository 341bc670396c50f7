"""``HfLocalBackend``: a local Hugging Face model served to the kernel.

The model's own chat template renders every prompt. Tool descriptions go through the template when it accepts
``tools=``; otherwise ``merge_messages_with_tools`` folds them into the system prompt (the seed behaviour).
Generation runs on one thread owned by the backend, so the kernel's event loop never blocks on a forward pass.
"""

from __future__ import annotations

import asyncio
import json
import logging
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import torch
from transformers import StoppingCriteria, StoppingCriteriaList

from aios.errors import BadRequest
from aios.llm.core import Generation, GenerationRequest
from aios.llm.hf.loader import find_model, load_model
from aios.llm.prompting import merge_messages_with_tools

log = logging.getLogger(__name__)


class HfLocalBackend:
    """A local model: ``HfLocalBackend(model_name, max_gpu_memory, eval_device, data_dir=...)``.

    ``model_name`` is a Hugging Face id, a local model directory or a ``.gguf`` path. The device is CUDA when
    present (``max_gpu_memory`` like ``{0: "24GB"}`` is honoured), else the CPU in fp32.
    """

    backend = "huggingface"

    def __init__(
        self,
        model_name: str,
        max_gpu_memory: dict[int | str, str] | None = None,
        eval_device: str | None = None,
        *,
        data_dir: Path,
    ) -> None:
        self.name = model_name
        self.device = pick_device(eval_device)
        self.dtype = torch.float32 if self.device == "cpu" else _cuda_dtype()
        self.model, self.tokenizer = load_model(
            find_model(model_name), data_dir, **_placement(self.device, self.dtype, max_gpu_memory)
        )
        if not self.tokenizer.chat_template:
            raise BadRequest(f"model {model_name!r} has no chat template; use an instruction-tuned (chat) model")
        self.template_accepts_tools = _template_uses(self.tokenizer.chat_template, "tools")
        # One thread: forward passes of one model never run concurrently (they would only contend for cores).
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="hf-generate")

    async def complete(self, request: GenerationRequest) -> Generation:
        future = asyncio.get_running_loop().run_in_executor(self._executor, self.generate, request)
        try:
            return await future
        except asyncio.CancelledError:
            request.cancelled.set()  # stops the forward-pass loop at the next token
            raise

    def generate(self, request: GenerationRequest) -> Generation:
        """Generate a reply to ``request.messages`` (blocking)."""
        inputs = self.render(request.messages, request.tools, request.reply_prefix)
        prompt_len = inputs["input_ids"].shape[1]
        sampling = request.sampling
        kwargs: dict[str, Any] = {
            "max_new_tokens": sampling.max_new_tokens,
            "do_sample": sampling.temperature > 0,
            "stopping_criteria": StoppingCriteriaList([_StopWhenSet(request.cancelled)]),
            "pad_token_id": self.tokenizer.pad_token_id or self.tokenizer.eos_token_id,
        }
        if sampling.temperature > 0:
            kwargs.update(temperature=sampling.temperature, top_p=sampling.top_p, top_k=0)
        if sampling.stop:
            kwargs.update(stop_strings=sampling.stop, tokenizer=self.tokenizer)
        with torch.inference_mode():
            output = self.model.generate(**inputs, **kwargs)
        new_tokens = output[0, prompt_len:]
        text = request.reply_prefix + self.tokenizer.decode(new_tokens, skip_special_tokens=True)
        text, hit_stop = _cut_at_stop(text, sampling.stop)
        return Generation(
            text=text,
            prompt_tokens=prompt_len,
            completion_tokens=len(new_tokens),
            finish_reason=self._finish_reason(request, new_tokens, hit_stop),
        )

    def render(
        self, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None, reply_prefix: str = ""
    ) -> dict[str, torch.Tensor]:
        """Token ids of the prompt, through the model's own chat template, followed by ``reply_prefix``."""
        messages = [_plain_message(m) for m in messages]
        template_kwargs: dict[str, Any] = {}
        if tools and self.template_accepts_tools:
            template_kwargs["tools"] = tools
        elif tools:
            messages = merge_messages_with_tools(messages, tools)
        try:
            prompt = self.tokenizer.apply_chat_template(
                messages, add_generation_prompt=True, tokenize=False, **template_kwargs
            )
        except Exception as exc:  # jinja2 TemplateError and friends: the messages do not fit this template
            raise BadRequest(f"the messages do not fit the chat template of {self.name}: {exc}") from None
        # The template already wrote any special tokens the model needs.
        inputs = self.tokenizer(prompt + reply_prefix, add_special_tokens=False, return_tensors="pt")
        return {key: value.to(self.model.device) for key, value in inputs.items()}

    def _finish_reason(self, request: GenerationRequest, new_tokens: torch.Tensor, hit_stop: bool) -> str:
        if request.cancelled.is_set():
            return "cancelled"
        ended_turn = len(new_tokens) > 0 and int(new_tokens[-1]) in _eos_ids(self.model)
        if hit_stop or ended_turn or len(new_tokens) < request.sampling.max_new_tokens:
            return "stop"
        return "length"

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "backend": self.backend,
            "device": str(self.model.device),
            "dtype": str(self.dtype).removeprefix("torch."),
            "template_tools": self.template_accepts_tools,
        }

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)


class _StopWhenSet(StoppingCriteria):
    def __init__(self, event: Any) -> None:
        self._event = event

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        return torch.full((input_ids.shape[0],), self._event.is_set(), dtype=torch.bool, device=input_ids.device)


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
    return {"dtype": dtype, "device_map": device}


def _template_uses(template: str, variable: str) -> bool:
    from jinja2 import Environment, meta

    return variable in meta.find_undeclared_variables(Environment().parse(template))


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


def _cut_at_stop(text: str, stop: list[str]) -> tuple[str, bool]:
    """Cut at the first stop string (OpenAI semantics: the stop string itself is not returned)."""
    cuts = [i for i in (text.find(s) for s in stop) if i >= 0]
    return (text[: min(cuts)], True) if cuts else (text, False)


def _eos_ids(model: Any) -> set[int]:
    eos = model.generation_config.eos_token_id
    return set(eos) if isinstance(eos, list) else {eos}
