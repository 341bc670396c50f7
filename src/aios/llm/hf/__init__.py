"""The local Hugging Face backend: model loading (HF id, directory, GGUF with a conversion cache) and generation."""

from aios.llm.hf.backend import HfLocalBackend

__all__ = ["HfLocalBackend"]
