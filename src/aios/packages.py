"""What tool folders and agent packages share: the AIOS/Cerebrum ``config.json`` and the rules for the file
names a package may hold.

    config.json  {"name": "weather", "description": "...", "meta": {"author": "me", "version": "0.1.0",
                  "license": "MIT"}, "build": {"entry": "tool.py", "module": "Weather"}}

A package is named ``<meta.author>/<name>``; ``build.entry`` is the file to import and ``build.module`` the class
in it. Errors are raised as the caller's own exception type, so each loader reports in its own terms.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

# Authors, names and versions become folder names in the hub, so they keep to a safe alphabet.
SAFE_PART = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.+-]{0,127}")


@dataclass(frozen=True)
class PackageConfig:
    author: str
    name: str
    version: str | None
    license: str | None
    description: str
    entry: str  # a file inside the package
    module: str  # the class in it
    raw: dict[str, Any]

    @property
    def full_name(self) -> str:
        return f"{self.author}/{self.name}"


def read_config(folder: Path, error: type[Exception]) -> dict[str, Any]:
    """``folder/config.json`` as a JSON object; ``error`` saying why when it is missing or not one."""
    path = folder / "config.json"
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise error(f"{folder} has no config.json; a package holds config.json and its entry file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise error(f"{path} cannot be read: {exc}") from None
    return config_of(text, str(path), error)


def config_of(text: str, where: str, error: type[Exception]) -> dict[str, Any]:
    try:
        config = json.loads(text)
    except json.JSONDecodeError as exc:
        raise error(f"{where} cannot be read as JSON: {exc}") from None
    except RecursionError:  # the parser recurses once per level of [ or {
        raise error(f"{where} cannot be read as JSON: it is nested too deeply") from None
    if not isinstance(config, dict):
        raise error(f"{where} must hold a JSON object")
    return config


def parse_config(config: dict[str, Any], where: str, error: type[Exception]) -> PackageConfig:
    """The fields every package needs, checked; ``error`` naming the first one missing or wrong."""
    name, build, meta = config.get("name"), config.get("build"), config.get("meta")
    author = meta.get("author") if isinstance(meta, dict) else None
    if not isinstance(name, str) or not isinstance(author, str) or not name or not author:
        raise error(f"{where} needs a string 'name' and 'meta': {{'author': ...}}")
    if not isinstance(build, dict) or not isinstance(build.get("entry"), str) or not isinstance(build.get("module"), str):
        raise error(f"{where} needs 'build': {{'entry': 'agent.py', 'module': 'ClassName'}}")
    problem = path_problem(build["entry"])
    if problem is not None:
        raise error(f"{where}: build.entry {build['entry']!r} {problem}")
    version = meta.get("version")
    description = config.get("description", "")
    if isinstance(description, list) and all(isinstance(line, str) for line in description):
        description = " ".join(description)  # AIOS packages give it as a list of lines
    if not isinstance(description, str):
        raise error(f"{where}: 'description' must be a string or a list of strings, not {_excerpt(description)}")
    return PackageConfig(
        author=author, name=name, version=version if isinstance(version, str) else None,
        license=meta.get("license") if isinstance(meta.get("license"), str) else None,
        description=description,
        entry=build["entry"], module=build["module"], raw=config,
    )


def path_problem(path: str) -> str | None:
    """Why ``path`` may not name a file of a package (None when it may): it must stay inside the package."""
    if not path or "\x00" in path or "\\" in path:
        return "is not a plain relative file name"
    pure = PurePosixPath(path)
    if pure.is_absolute():
        return "is not a file inside the package (it is an absolute path)"
    if ".." in pure.parts:
        return "is not a file inside the package (it climbs out with ..)"
    if pure.parts in ((), (".",)):
        return "names no file"
    return None


def part_problem(value: Any, what: str) -> str | None:
    """Why ``value`` cannot be an author, name or version (None when it can)."""
    if not isinstance(value, str) or not SAFE_PART.fullmatch(value):
        return f"{what} must be 1-128 letters, digits, _ . + - (not starting with . + -), not {value!r}"
    return None


def _excerpt(value: Any, limit: int = 80) -> str:
    """``value`` as JSON, cut to ``limit`` characters: an error quotes what it refuses, not all of it."""
    text = json.dumps(value)
    return text if len(text) <= limit else text[:limit] + "..."
