"""API models of any LiteLLM provider (anthropic, gemini, groq, deepseek, mistral, ...): ``backend`` is the
provider, ``name`` its model. LiteLLM (the ``litellm`` extra) is imported only when such a model is loaded.

Requests are the kernel's OpenAI-format body (``openai_compat.chat_body``: tools and ``response_format``
natively), which LiteLLM translates for each provider; replies come back in the OpenAI shape and are read as for
any OpenAI-compatible backend. A provider's failure fails that syscall only, with a message naming the provider
and the model. Rate limits, server errors and timeouts are retried with exponential backoff, a few times; a bad
key, a bad request or a host that refuses connections are not (another try would fail the same way).
"""

from __future__ import annotations

import asyncio
import os
from typing import Any, AsyncIterator

from aios.errors import BadRequest, KernelError
from aios.llm.core import Generation, GenerationRequest
from aios.llm.openai_compat import ProviderError, chat_body, generation_of
from aios.urls import parse_service_url, redact_url, scrub

RETRIES = 3  # tries after the first, for what retrying can help
BACKOFF_S = 0.5  # the first wait; it doubles with each retry
RETRIED_STATUS = frozenset({408, 429, 500, 502, 503, 504})
TIMEOUT_S = 600.0


def import_litellm() -> Any:
    """LiteLLM, set to work offline: its model price map from the package, not the network; no telemetry."""
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    try:
        import litellm
    except ImportError:
        raise KernelError("API providers other than openai, vllm, sglang and ollama need LiteLLM: "
                          "pip install 'aios[litellm]'") from None
    litellm.telemetry = False
    litellm.suppress_debug_info = True
    return litellm


def provider_problem(provider: str) -> str | None:
    """Why ``provider`` cannot be served through LiteLLM (``None`` when it can)."""
    try:
        litellm = import_litellm()
    except KernelError as exc:
        return str(exc)
    if provider not in {p.value for p in litellm.provider_list}:
        return (f"backend {provider!r} is not a LiteLLM provider (e.g. anthropic, gemini, groq, deepseek, mistral); "
                "see https://docs.litellm.ai/docs/providers")
    return None


class LiteLLMBackend:
    constrains = False  # the provider decodes: structured replies are checked by the kernel
    max_prompt_chars = None  # the provider knows its model's context

    def __init__(self, model_name: str, provider: str, api_key: str | None = None, api_base: str | None = None,
                 retries: int = RETRIES, backoff_s: float = BACKOFF_S) -> None:
        problem = provider_problem(provider)
        if problem is not None:
            raise BadRequest(problem)
        self._litellm = import_litellm()
        self.name, self.backend = model_name, provider
        self._api_key, self._api_base = api_key, api_base
        self._refuse_without_key()
        self._secrets = [*([api_key] if api_key else []), *(parse_service_url(api_base).secrets if api_base else [])]
        self.retries, self.backoff_s = retries, backoff_s

    def _refuse_without_key(self) -> None:
        """A provider that needs an API key and has none is refused now: served without one, it would fail every
        syscall routed to it (half of them, beside one other model). Only keys named ``*_API_KEY`` count: other
        credentials (AWS's, Vertex's) may come from files LiteLLM does not look at here."""
        said = self._litellm.validate_environment(model=self._target, api_key=self._api_key, api_base=self._api_base)
        missing = [name for name in said.get("missing_keys") or [] if name.endswith("_API_KEY")]
        if missing:
            raise BadRequest(f"model {self.name!r} ({self.backend}) has no API key: set {' or '.join(missing)} in the "
                             f"kernel's environment, api_keys.{self.backend} in the config, or the model's api_key")

    @property
    def _target(self) -> str:
        return f"{self.backend}/{self.name}"

    def _call(self, request: GenerationRequest, **extra: Any) -> Any:
        body = chat_body(self._target, request)
        return self._litellm.acompletion(**body, api_key=self._api_key, api_base=self._api_base, timeout=TIMEOUT_S,
                                         num_retries=0, drop_params=True, **extra)

    async def complete(self, request: GenerationRequest) -> Generation:
        for attempt in range(self.retries + 1):
            try:
                response = await self._call(request)
                return generation_of(response.model_dump())
            except Exception as exc:  # noqa: BLE001 - every provider failure becomes this syscall's error
                error = self._error(exc)
                if not self._retried(exc) or attempt == self.retries:
                    raise error from None
            await asyncio.sleep(self.backoff_s * 2**attempt)
        raise AssertionError("unreachable: the last attempt returns or raises")

    async def stream(self, request: GenerationRequest) -> AsyncIterator[str]:
        """The reply's text in pieces as the provider sends them (no retry once text has been given)."""
        try:
            chunks = await self._call(request, stream=True)
            async for chunk in chunks:
                piece = chunk.choices[0].delta.content if chunk.choices else None
                if piece:
                    yield piece
        except Exception as exc:  # noqa: BLE001
            raise self._error(exc) from None

    def _error(self, exc: BaseException) -> ProviderError:
        status = getattr(exc, "status_code", None)
        why = scrub(f"{type(exc).__name__}: {exc}", self._secrets)[:600]
        where = f" at {redact_url(self._api_base)}" if self._api_base else ""
        if self._unreachable(exc):
            return ProviderError(f"provider {self.backend}, model {self.name}: cannot connect{where}: {why}")
        return ProviderError(f"provider {self.backend}, model {self.name}: {why}",
                             status if isinstance(status, int) else None)

    def _retried(self, exc: BaseException) -> bool:
        """Whether another try may succeed: timeouts, rate limits, the provider's server errors — not a refused
        connection (the host is not there), a bad key or a bad request."""
        if isinstance(exc, self._litellm.Timeout):
            return True
        if self._unreachable(exc):
            return False
        return getattr(exc, "status_code", None) in RETRIED_STATUS

    def _unreachable(self, exc: BaseException) -> bool:
        """No connection could be made (LiteLLM reports some providers' refused connections as a 500)."""
        seen: BaseException | None = exc
        while seen is not None:
            if isinstance(seen, (OSError, self._litellm.APIConnectionError)) and not isinstance(
                    seen, (TimeoutError, self._litellm.Timeout)):
                return True
            seen = seen.__cause__ or seen.__context__
        return False

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "backend": self.backend, "via": "litellm",
                **({"api_base": redact_url(self._api_base)} if self._api_base else {}),
                "structured_output": "provider"}

    def close(self) -> None:
        """Nothing held: LiteLLM's clients are shared by the process."""
