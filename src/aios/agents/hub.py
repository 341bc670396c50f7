"""The local agent and tool hub: packages uploaded in the AIOS SDK's form (``files: [{path, content}]``, content
base64), checked, and kept versioned under ``<data_dir>/hub/<kind>s/<author>/<name>/<version>/``: the files
in ``files/`` and what was recorded about them (sha256 included) in ``package.json``.

An upload is refused, with nothing stored, when a file name would leave the package (absolute, ``..``), the
decoded files pass the size limit, ``config.json`` is missing or not a package's, or the version is already
there with other content. A version is written to a folder of its own and renamed into place whole.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import logging
import shutil
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from aios.errors import BadRequest, Conflict, NotFound, TooLarge
from aios.jsonvalues import json_problem
from aios.packages import config_of, parse_config, part_problem, path_problem

KINDS = ("agent", "tool")
MAX_NAME_BYTES = 255  # of one name in a path: the most a file system takes (Linux's NAME_MAX)
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class HubEntry:
    author: str
    name: str
    version: str
    license: str
    entry: str
    module: str
    description: str
    sha256: str
    size: int
    uploaded_at: float

    def listing(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Upload:
    """An upload as the AIOS SDK's ``package_agent`` / ``package_tool`` builds it."""

    author: Any
    name: Any
    version: Any
    license: str
    files: list[tuple[str, str]]  # (path, base64 content); entry and module are read from config.json


class Hub:
    def __init__(self, root: Path, max_bytes: int) -> None:
        self.root, self.max_bytes = root, max_bytes

    def put(self, kind: str, upload: Upload) -> HubEntry:
        """Check and store one version (blocking: call it off the event loop). The same content uploaded
        again is accepted as it is."""
        for value, what in ((upload.author, "author"), (upload.name, "name"), (upload.version, "version")):
            problem = part_problem(value, what)
            if problem is not None:
                raise BadRequest(f"{problem}{' (set meta.version in config.json)' if what == 'version' else ''}")
        files = self._decoded(upload.files)
        _check_folders(files)
        entry = self._entry(kind, upload, files)
        target = self._folder(kind, entry.author, entry.name, entry.version)
        if target.exists() or not self._write(target, files, entry):
            return self._same_as_stored(kind, target, entry)
        return entry

    def _same_as_stored(self, kind: str, target: Path, entry: HubEntry) -> HubEntry:
        """The version stored at ``target``, when it holds the same files as ``entry``; else Conflict."""
        stored = self._entry_at(target)
        if stored.sha256 != entry.sha256:
            raise Conflict(f"{kind} {entry.author}/{entry.name} version {entry.version} is already in the hub "
                           "with other content: raise meta.version to upload a new one")
        return stored

    def _decoded(self, files: list[tuple[str, str]]) -> dict[str, bytes]:
        decoded: dict[str, bytes] = {}
        total = 0
        for listed, content in files:
            problem = path_problem(listed) or _long_name(listed)
            if problem is not None:
                raise BadRequest(f"file {listed!r} {problem}")
            # Under the name it is stored as: './config.json' after 'config.json' would replace the checked one.
            path = PurePosixPath(listed).as_posix()
            if path in decoded:
                raise BadRequest(f"file {listed!r} is listed twice (as {path!r})")
            try:
                data = base64.b64decode(content, validate=True)
            except (binascii.Error, ValueError):
                raise BadRequest(f"file {listed!r}: content is not base64") from None
            total += len(data)
            if total > self.max_bytes:
                raise TooLarge(f"the package's files pass {self.max_bytes / 2**20:g} MB (agents.hub_max_package_mb)")
            decoded[path] = data
        return decoded

    def _entry(self, kind: str, upload: Upload, files: dict[str, bytes]) -> HubEntry:
        if "config.json" not in files:
            raise BadRequest(f"the {kind} has no config.json among its files")
        try:
            text = files["config.json"].decode("utf-8")
        except UnicodeDecodeError:
            raise BadRequest("config.json is not UTF-8 text") from None
        config = parse_config(config_of(text, "config.json", BadRequest), "config.json", BadRequest)
        problem = config_problem(config.raw)
        if problem is not None:
            raise BadRequest(f"config.json: {problem}")
        if (config.author, config.name) != (upload.author, upload.name):
            raise BadRequest(f"config.json names {config.full_name}, the upload {upload.author}/{upload.name}")
        if config.version is not None and config.version != upload.version:
            raise BadRequest(f"config.json has version {config.version}, the upload {upload.version}")
        if config.entry not in files:
            raise BadRequest(f"build.entry {config.entry!r} is not among the files")
        digest = hashlib.sha256()
        for path in sorted(files):
            digest.update(f"{path}\0{len(files[path])}\0".encode() + files[path])
        return HubEntry(upload.author, upload.name, upload.version, config.license or upload.license, config.entry,
                        config.module, config.description, digest.hexdigest(), sum(map(len, files.values())),
                        time.time())

    def _write(self, target: Path, files: dict[str, bytes], entry: HubEntry) -> bool:
        """Store the version whole, or not at all; False when another upload of it was stored first."""
        incoming = self.root / ".incoming" / uuid.uuid4().hex
        try:
            for path, data in files.items():
                (incoming / "files" / path).parent.mkdir(parents=True, exist_ok=True)
                (incoming / "files" / path).write_bytes(data)
            (incoming / "package.json").write_text(json.dumps(entry.listing()))
            target.parent.mkdir(parents=True, exist_ok=True)
            incoming.rename(target)  # fails if the version is there: a rename into place is whole
        except OSError as exc:
            if target.exists():
                return False
            log.error("could not store %s/%s %s in the hub: %s", entry.author, entry.name, entry.version, exc)
            # The uploader learns what went wrong, not where on the kernel's disk.
            raise Conflict(f"{entry.author}/{entry.name} {entry.version} could not be stored: "
                           f"{exc.strerror or type(exc).__name__}") from None
        finally:
            shutil.rmtree(incoming, ignore_errors=True)
        return True

    # -- reading ---------------------------------------------------------------------------------------------
    def get(self, kind: str, author: str, name: str, version: str | None = None) -> tuple[HubEntry, dict[str, bytes]]:
        """A version (the newest when None) with its files."""
        folder = self.folder(kind, author, name, version)
        files = {path.relative_to(folder).as_posix(): path.read_bytes()
                 for path in sorted(folder.rglob("*")) if path.is_file()}
        return self._entry_at(folder.parent), files

    def folder(self, kind: str, author: str, name: str, version: str | None = None) -> Path:
        """The files of a version (the newest when None): a package folder to load or run."""
        for value, what in ((author, "author"), (name, "name"), (version or "0", "version")):
            if part_problem(value, what) is not None:
                raise NotFound(f"no {kind} {author}/{name} in the hub ({what} {value!r} cannot name one)")
        versions = self.versions(kind, author, name)
        if not versions:
            raise NotFound(f"no {kind} {author}/{name} in the hub")
        chosen = version or versions[-1]
        if chosen not in versions:
            raise NotFound(f"{kind} {author}/{name} has no version {chosen} in the hub (it has {', '.join(versions)})")
        return self._folder(kind, author, name, chosen) / "files"

    def versions(self, kind: str, author: str, name: str) -> list[str]:
        """Oldest first."""
        base = self.root / f"{kind}s" / author / name
        found = [child.name for child in base.iterdir() if (child / "package.json").is_file()] if base.is_dir() else []
        return sorted(found, key=version_key)

    def entries(self, kind: str) -> list[HubEntry]:
        return [self._entry_at(path.parent) for path in sorted((self.root / f"{kind}s").glob("*/*/*/package.json"))]

    def update_available(self, kind: str, author: str, name: str, current_version: str) -> tuple[bool, str]:
        """Whether the hub has a newer version than ``current_version``, and its newest."""
        newest = self.folder(kind, author, name).parent.name
        return version_key(newest) > version_key(current_version), newest

    def _folder(self, kind: str, author: str, name: str, version: str) -> Path:
        return self.root / f"{kind}s" / author / name / version

    @staticmethod
    def _entry_at(folder: Path) -> HubEntry:
        return HubEntry(**json.loads((folder / "package.json").read_text()))


def _long_name(path: str) -> str | None:
    """Why ``path`` cannot be stored, a name in it being too long for a file system (None when it can be)."""
    for name in PurePosixPath(path).parts:
        if len(name.encode("utf-8", "surrogatepass")) > MAX_NAME_BYTES:
            return f"has a name longer than {MAX_NAME_BYTES} bytes (as UTF-8): {name[:40]!r}..."
    return None


def config_problem(config: dict[str, Any]) -> str | None:
    """Why a package's config.json cannot be kept (None when it can): what the kernel would send of it (its name,
    its description) must be JSON a reply can carry, no lone surrogate (``\\ud800``) or NaN; nor may it be nested
    deeper than any request may."""
    problem = json_problem(config)
    if problem is None:
        return None
    path, what = problem
    return f"{'.'.join(map(str, path)) or 'it'}: {what}"


def _check_folders(files: dict[str, bytes]) -> None:
    """BadRequest when a file is also the folder of another (``x`` and ``x/y``): both cannot be stored."""
    for path in files:
        for folder in PurePosixPath(path).parents[:-1]:  # the last is "."
            if folder.as_posix() in files:
                raise BadRequest(f"file {folder.as_posix()!r} is also the folder of file {path!r}: rename one")


def version_key(version: str) -> tuple[Any, ...]:
    """Orders versions as semantic versioning does: 0.10.0 after 0.9.1; a pre-release (``-beta``) before its
    release and after the releases before it (1.0.0-beta < 1.0.0 < 1.0.5); what follows ``+`` (build metadata)
    only breaks ties. Within a part, one that is no number sorts after the numbers."""
    core, _, build = version.partition("+")
    release, dash, pre = core.partition("-")
    return _parts(release), 0 if dash else 1, _parts(pre) if dash else [], build


def _parts(text: str) -> list[tuple[int, int, str]]:
    return [(0, int(part), "") if part.isdigit() else (1, 0, part) for part in text.split(".")]
