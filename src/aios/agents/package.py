"""Agent packages in the AIOS/Cerebrum layout, from a folder, a packed archive, the hub or the built-in examples:

    my_agent/
      config.json  {"name": "my_agent", "description": "...", "meta": {"author": "me", "version": "0.1.0",
                    "license": "MIT"}, "build": {"entry": "agent.py", "module": "MyAgent"}, "tools": []}
      agent.py     class MyAgent: __init__(self, agent_name); run(self, task_input) -> a JSON value

An archive (.zip, .tar, .tar.gz, .tgz) is checked member by member before anything is written: no absolute
paths, nothing climbing out with ``..``, no links or devices, and no more than the size limit unpacked.
"""

from __future__ import annotations

import shutil
import tarfile
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from aios.agents.hub import Hub, config_problem
from aios.errors import BadRequest, NotFound, TooLarge
from aios.packages import PackageConfig, parse_config, part_problem, path_problem, read_config

BUILTIN = Path(__file__).parent  # the example agents: example/<folder name>
ARCHIVES = (".zip", ".tar", ".tar.gz", ".tgz")


class InvalidPackage(BadRequest):
    """A package that cannot be run as it is; the message says what is wrong."""


@dataclass(frozen=True)
class AgentPackage:
    folder: Path
    config: PackageConfig


def load_package(folder: Path) -> AgentPackage:
    config = parse_config(read_config(folder, InvalidPackage), f"{folder}/config.json", InvalidPackage)
    problem = config_problem(config.raw)
    if problem is not None:
        raise InvalidPackage(f"{folder}/config.json: {problem}")
    entry = folder / config.entry
    try:
        inside = entry.is_file() and entry.resolve().is_relative_to(folder.resolve())
    except OSError as exc:  # a name longer than the system allows, say
        raise InvalidPackage(f"{folder}: build.entry {config.entry!r} cannot be a file: {exc.strerror}") from None
    if not inside:
        raise InvalidPackage(f"{folder}: build.entry {config.entry!r} is not a file inside the package")
    return AgentPackage(folder, config)


def is_path(agent_id: str) -> bool:
    """A folder or archive is named by a path that starts with / . or ~ (``author/name`` is a package id)."""
    return agent_id.startswith(("/", ".", "~"))


def resolve_agent(agent_id: str, hub: Hub, unpack_to: Path, max_bytes: int) -> AgentPackage:
    """The package ``agent_id`` names: a path (folder or archive, unpacked into ``unpack_to``), ``example/NAME``
    (built in), or ``author/name[/version]`` in the hub (newest version unless one is given)."""
    if is_path(agent_id):
        return _local(agent_id, unpack_to, max_bytes)
    parts = agent_id.split("/")
    # A name no folder can have (too long for the file system, say) is no example's: the hub refuses it below.
    if (len(parts) == 2 and parts[0] == "example" and part_problem(parts[1], "name") is None
            and (BUILTIN / parts[1] / "config.json").is_file()):
        return load_package(BUILTIN / parts[1])
    if len(parts) not in (2, 3) or not all(parts):
        raise BadRequest(f"agent_id {agent_id!r} names no agent: give author/name[/version] (a built-in example "
                         "or a hub package) or a path to a folder or archive")
    package = load_package(hub.folder("agent", parts[0], parts[1], parts[2] if len(parts) == 3 else None))
    if package.config.full_name != f"{parts[0]}/{parts[1]}":  # it would run as the agent its config names
        raise InvalidPackage(f"hub package {parts[0]}/{parts[1]} has a config.json naming {package.config.full_name}; "
                             "upload it again under that name, or fix its config.json")
    return package


def _local(agent_id: str, unpack_to: Path, max_bytes: int) -> AgentPackage:
    """The package at a path on the kernel's machine: a folder, or an archive unpacked into ``unpack_to``."""
    try:
        path = Path(agent_id).expanduser()
    except RuntimeError:  # ~name of no user, or ~ without a home
        raise NotFound(f"{agent_id}: {agent_id.split('/')[0]} names no user's home folder on the kernel's machine"
                       ) from None
    try:
        is_dir, is_file = path.is_dir(), path.is_file()
    except OSError as exc:  # a name longer than the system allows, a folder the kernel may not read
        raise BadRequest(f"{agent_id}: cannot name an agent folder or archive: {exc.strerror}") from None
    if is_dir:
        return load_package(path)
    if is_file and path.name.endswith(ARCHIVES):
        return load_package(unpack_archive(path, unpack_to, max_bytes))
    raise NotFound(f"{agent_id}: no agent folder or archive ({', '.join(ARCHIVES)}) there")


def unpack_archive(archive: Path, dest: Path, max_bytes: int) -> Path:
    """Unpack ``archive`` into ``dest`` once every member passed the checks; the package's folder (``dest`` or
    the one folder in it holding config.json)."""
    dest.mkdir(parents=True, exist_ok=True)  # an archive of no members makes none of it
    if archive.name.endswith(".zip"):
        _unpack_zip(archive, dest, max_bytes)
    else:
        _unpack_tar(archive, dest, max_bytes)
    if not any(dest.iterdir()):
        raise InvalidPackage(f"{archive.name} is empty: it holds no agent")
    if (dest / "config.json").is_file():
        return dest
    inner = [child for child in dest.iterdir() if (child / "config.json").is_file()]
    if len(inner) != 1:
        raise InvalidPackage(f"{archive.name} holds no config.json (at its top, or in its one top folder)")
    return inner[0]


def _check_member(archive: Path, name: str, is_dir: bool, size: int, total: int, max_bytes: int) -> int:
    if is_dir and not PurePosixPath(name).parts:  # "./": the folder the archive was made in (tar -C pkg -cf x .)
        return total
    problem = path_problem(name.rstrip("/"))
    if problem is not None:
        raise InvalidPackage(f"{archive.name}: member {name!r} {problem}")
    total += size
    if total > max_bytes:
        raise TooLarge(f"{archive.name} unpacks to more than {max_bytes / 2**20:g} MB (agents.hub_max_package_mb)")
    return total


def _unpack_zip(archive: Path, dest: Path, max_bytes: int) -> None:
    try:
        with zipfile.ZipFile(archive) as packed:
            members, total = packed.infolist(), 0
            for member in members:
                if (member.external_attr >> 16) & 0o170000 == 0o120000:
                    raise InvalidPackage(f"{archive.name}: member {member.filename!r} is a symbolic link")
                total = _check_member(archive, member.filename, member.is_dir(), member.file_size, total, max_bytes)
            for member in members:
                target = dest / member.filename
                if member.is_dir():
                    target.mkdir(parents=True, exist_ok=True)
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                with packed.open(member) as source, target.open("wb") as sink:
                    shutil.copyfileobj(source, sink)
    except (zipfile.BadZipFile, OSError) as exc:
        raise InvalidPackage(f"{archive.name} cannot be read as a zip archive: {exc}") from None


def _unpack_tar(archive: Path, dest: Path, max_bytes: int) -> None:
    try:
        with tarfile.open(archive) as packed:
            total = 0
            for member in packed.getmembers():
                if not (member.isfile() or member.isdir()):
                    raise InvalidPackage(f"{archive.name}: member {member.name!r} is a link or a special file")
                total = _check_member(archive, member.name, member.isdir(), member.size, total, max_bytes)
            packed.extractall(dest, filter="data")  # checked above; the filter is a second guard
    except (tarfile.TarError, OSError) as exc:
        raise InvalidPackage(f"{archive.name} cannot be read as a tar archive: {exc}") from None
