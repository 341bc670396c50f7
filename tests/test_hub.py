"""The local hub over real HTTP, with the exact requests the AIOS SDK's managers send (agiresearch/Cerebrum,
``cerebrum/manager/agent.py`` and ``tool.py``): upload → list → download → run, tools loadable by the tool
manager, and packages that must be refused with nothing stored."""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path
from typing import Any

import pytest

from aios.agents.hub import Hub, Upload, version_key
from aios.agents.package import InvalidPackage, resolve_agent
from aios.errors import Conflict, TooLarge
from aios.tools.folder import load_tool_folder
from conftest import KernelProcess
from test_agents import detail_of, finished, submit

TOOL_SOURCE = '''class Shout:
    def run(self, params):
        return params["text"].upper() + "!"

    def get_tool_call_format(self):
        return {"type": "function", "function": {"name": "shout", "description": "Shouts a text.",
                "parameters": {"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]}}}
'''


def package(folder: Path) -> dict[str, Any]:
    """What the AIOS SDK's ``package_agent`` / ``package_tool`` send: every file, base64, and the metadata
    read from config.json (``license`` from its top level, so usually "Unknown")."""
    files = []
    for root, _, names in os.walk(folder):
        for name in names:
            path = os.path.join(root, name)
            files.append({"path": os.path.relpath(path, folder),
                          "content": base64.b64encode(Path(path).read_bytes()).decode("utf-8")})
    metadata = json.loads((folder / "config.json").read_text())
    return {"author": metadata.get("meta", {}).get("author"), "name": metadata.get("name"),
            "version": metadata.get("meta", {}).get("version"), "license": metadata.get("license", "Unknown"),
            "files": files, "entry": metadata.get("build", {}).get("entry", "agent.py"),
            "module": metadata.get("build", {}).get("module", "Agent")}


def agent_folder(tmp_path: Path, name: str, version: str, greeting: str) -> Path:
    folder = tmp_path / f"{name}-{version}"
    (folder / "lib").mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({
        "name": name, "description": ["Greets."], "meta": {"author": "hubtest", "version": version, "license": "MIT"},
        "build": {"entry": "agent.py", "module": "Greeter"}, "tools": []}))
    (folder / "lib" / "words.py").write_text(f"GREETING = {greeting!r}\n")
    (folder / "agent.py").write_text("from lib.words import GREETING\n\n\nclass Greeter:\n"
                                     "    def __init__(self, agent_name):\n        self.agent_name = agent_name\n\n"
                                     "    def run(self, task_input):\n        return f'{GREETING}, {task_input}'\n")
    return folder


def test_an_agent_goes_up_to_the_hub_comes_back_down_and_runs(kernel: KernelProcess, tmp_path: Path) -> None:
    hub = kernel.client
    for version, greeting in (("0.9.0", "Hi"), ("0.10.0", "Hello")):
        reply = hub.post("/cerebrum/upload", json=package(agent_folder(tmp_path, "greeter", version, greeting)))
        assert reply.status_code == 200 and reply.json()["version"] == version, reply.text
        assert len(reply.json()["sha256"]) == 64
    listed = hub.get("/cerebrum/get_all_agents").json()
    # the AIOS SDK's list_available_agents: every value but the last
    names = {"/".join([v["author"], v["name"], v["version"]]) for v in list(listed.values())[:-1]}
    assert {"hubtest/greeter/0.9.0", "hubtest/greeter/0.10.0"} <= names and listed["count"] == len(names)
    newest = hub.get("/cerebrum/download", params={"author": "hubtest", "name": "greeter"}).json()
    assert newest["version"] == "0.10.0" and (newest["entry"], newest["module"]) == ("agent.py", "Greeter")
    files = {f["path"]: base64.b64decode(f["content"]) for f in newest["files"]}
    assert files["lib/words.py"] == b"GREETING = 'Hello'\n" and set(files) == {"config.json", "agent.py", "lib/words.py"}
    older = hub.get("/cerebrum/download", params={"author": "hubtest", "name": "greeter", "version": "0.9.0"}).json()
    assert older["version"] == "0.9.0" and older["license"] == "MIT"
    updates = hub.get("/cerebrum/check_updates", params={"author": "hubtest", "name": "greeter",
                                                          "current_version": "0.9.0"}).json()
    assert updates == {"update_available": True, "latest_version": "0.10.0"}
    assert finished(kernel, submit(kernel, "hubtest/greeter", "Ada"))["result"] == "Hello, Ada"
    assert finished(kernel, submit(kernel, "hubtest/greeter/0.9.0", "Ada"))["result"] == "Hi, Ada"
    again = hub.post("/cerebrum/upload", json=package(agent_folder(tmp_path / "again", "greeter", "0.9.0", "Hi")))
    assert again.status_code == 200  # the same content again is accepted as it is


def test_a_tool_from_the_hub_loads_in_the_tool_manager(kernel: KernelProcess, tmp_path: Path) -> None:
    folder = tmp_path / "shout"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({
        "name": "shout", "description": "Shouts.", "meta": {"author": "hubtest", "version": "1.0.0"},
        "build": {"entry": "tool.py", "module": "Shout"}}))
    (folder / "tool.py").write_text(TOOL_SOURCE)
    assert kernel.client.post("/cerebrum/tools/upload", json=package(folder)).status_code == 200
    tools = kernel.client.get("/cerebrum/tools/list").json()
    # the AIOS SDK's list_available_tools reads author, name, version, tool_type and description
    listed = [t for t in tools if (t["author"], t["name"]) == ("hubtest", "shout")]
    assert listed and listed[0]["version"] == "1.0.0" and listed[0]["tool_type"] and listed[0]["description"]
    data = kernel.client.get("/cerebrum/tools/download", params={"author": "hubtest", "name": "shout"}).json()
    downloaded = tmp_path / "downloaded"
    for item in data["files"]:
        (downloaded / item["path"]).parent.mkdir(parents=True, exist_ok=True)
        (downloaded / item["path"]).write_bytes(base64.b64decode(item["content"]))
    tool = load_tool_folder(downloaded)
    assert tool.name == "hubtest/shout" and tool.run({"text": "hi"}, None) == "HI!"
    updates = kernel.client.get("/cerebrum/tools/check_updates", params={"author": "hubtest", "name": "shout",
                                                                          "current_version": "1.0.0"}).json()
    assert updates == {"update_available": False, "latest_version": "1.0.0"}


def _with(payload: dict[str, Any], **changes: Any) -> dict[str, Any]:
    return {**payload, **changes}


def _file(path: str, content: bytes) -> dict[str, str]:
    return {"path": path, "content": base64.b64encode(content).decode()}


def _config(**changes: Any) -> bytes:
    config = {"name": "evil", "meta": {"author": "hubtest", "version": "1.0.0"},
              "build": {"entry": "agent.py", "module": "Evil"}, **changes}
    return json.dumps(config).encode()


GOOD = {"author": "hubtest", "name": "evil", "version": "1.0.0", "license": "Unknown", "entry": "agent.py",
        "module": "Evil", "files": [_file("config.json", _config()), _file("agent.py", b"class Evil: pass\n")]}

MALICIOUS = [
    ("traversal", _with(GOOD, files=[*GOOD["files"], _file("../../outside.py", b"x")]), 400,
     "file '../../outside.py' is not a file inside the package (it climbs out with ..)"),
    ("traversal-inside", _with(GOOD, files=[*GOOD["files"], _file("lib/../../x.py", b"x")]), 400, "climbs out"),
    ("absolute", _with(GOOD, files=[*GOOD["files"], _file("/etc/cron.d/evil", b"x")]), 400,
     "file '/etc/cron.d/evil' is not a file inside the package (it is an absolute path)"),
    ("backslash", _with(GOOD, files=[*GOOD["files"], _file("..\\x.py", b"x")]), 400, "is not a plain relative file name"),
    # 128 characters, 256 bytes: past what a file system takes (it was a 409, as if the hub could not store it)
    ("name-too-long", _with(GOOD, files=[*GOOD["files"], _file("lib/" + "é" * 128, b"x")]), 400,
     f"file 'lib/{'é' * 128}' has a name longer than 255 bytes (as UTF-8): '{'é' * 40}'..."),
    ("twice", _with(GOOD, files=[*GOOD["files"], _file("agent.py", b"")]), 400, "file 'agent.py' is listed twice"),
    # the second spelling was stored over the checked config.json: the package ran as the agent it named
    ("twice-spelled-otherwise", _with(GOOD, files=[*GOOD["files"], _file("./config.json", _config(name="victim"))]),
     400, "file './config.json' is listed twice (as 'config.json')"),
    ("twice-with-a-dot-inside", _with(GOOD, files=[*GOOD["files"], _file("lib/x.py", b""), _file("lib/./x.py", b"")]),
     400, "file 'lib/./x.py' is listed twice (as 'lib/x.py')"),
    ("file-and-folder", _with(GOOD, files=[*GOOD["files"], _file("x", b"a"), _file("x/y", b"b")]), 400,
     "file 'x' is also the folder of file 'x/y': rename one"),
    ("config-nested-too-deeply", _with(GOOD, files=[_file("config.json", b"[" * 100_000 + b"]" * 100_000),
                                                     GOOD["files"][1]]), 400,
     "config.json cannot be read as JSON: it is nested too deeply"),
    ("description-not-text", _with(GOOD, files=[_file("config.json", _config(description=["ok", 1, None])),
                                                 GOOD["files"][1]]), 400,
     "config.json: 'description' must be a string or a list of strings, not [\"ok\", 1, null]"),
    ("not-base64", _with(GOOD, files=[*GOOD["files"], {"path": "a.py", "content": "%%%"}]), 400,
     "file 'a.py': content is not base64"),
    ("no-config", _with(GOOD, files=GOOD["files"][1:]), 400, "the agent has no config.json among its files"),
    # stored, it broke every listing of the hub: no reply could carry its description
    ("config-not-unicode", _with(GOOD, files=[_file("config.json", _config(description="ok \ud800")),
                                              GOOD["files"][1]]), 400,
     "config.json: description: not valid Unicode text (it holds a lone surrogate"),
    ("config-not-json", _with(GOOD, files=[_file("config.json", b"{nope"), GOOD["files"][1]]), 400,
     "config.json cannot be read as JSON"),
    ("config-without-build", _with(GOOD, files=[_file("config.json", _config(build=None)), GOOD["files"][1]]), 400,
     "config.json needs 'build'"),
    ("config-other-name", _with(GOOD, files=[_file("config.json", _config(name="other")), GOOD["files"][1]]), 400,
     "config.json names hubtest/other, the upload hubtest/evil"),
    ("entry-missing", _with(GOOD, files=GOOD["files"][:1]), 400, "build.entry 'agent.py' is not among the files"),
    ("entry-escapes", _with(GOOD, files=[_file("config.json", _config(build={"entry": "../x.py", "module": "E"})),
                                         GOOD["files"][1]]), 400, "build.entry '../x.py' is not a file inside"),
    ("no-version", _with(GOOD, version=None), 400, "version must be 1-128 letters"),
    ("author-path", _with(GOOD, author="../root"), 400, "author must be 1-128 letters"),
    ("no-files", {"author": "hubtest", "name": "evil"}, 422, "body.files: Field required"),
    ("path-not-text", _with(GOOD, files=[{"path": 3, "content": ""}]), 422, "body.files.0.path: Input should be a valid string"),
]


@pytest.mark.parametrize(("payload", "code", "detail"), [m[1:] for m in MALICIOUS], ids=[m[0] for m in MALICIOUS])
def test_a_bad_or_malicious_package_is_refused_with_nothing_stored(kernel: KernelProcess, data_dir: Path,
                                                                    payload: dict[str, Any], code: int,
                                                                    detail: str) -> None:
    hub_dir = data_dir / "hub"
    before = sorted(hub_dir.rglob("*")) if hub_dir.exists() else []
    reply = kernel.client.post("/cerebrum/upload", json=payload)
    assert reply.status_code == code, reply.text
    assert detail in detail_of(reply), reply.text
    assert (sorted(hub_dir.rglob("*")) if hub_dir.exists() else []) == before
    assert not (data_dir / "outside.py").exists() and not Path("/etc/cron.d/evil").exists()


def test_another_content_under_a_stored_version_is_refused(kernel: KernelProcess, tmp_path: Path) -> None:
    assert kernel.client.post("/cerebrum/upload", json=package(agent_folder(tmp_path, "fixed", "1.0.0", "A"))
                              ).status_code == 200
    reply = kernel.client.post("/cerebrum/upload", json=package(agent_folder(tmp_path / "b", "fixed", "1.0.0", "B")))
    assert reply.status_code == 409 and "raise meta.version" in reply.json()["detail"]
    download = kernel.client.get("/cerebrum/download", params={"author": "hubtest", "name": "fixed"}).json()
    words = [f for f in download["files"] if f["path"] == "lib/words.py"][0]
    assert base64.b64decode(words["content"]) == b"GREETING = 'A'\n"  # the first upload is kept


def test_a_hub_package_whose_config_names_another_agent_does_not_run(tmp_path: Path) -> None:
    """A package stored with a config.json naming someone else (as uploads could store it before the names of
    files were compared as stored) would run as that agent, with its token: it is refused when run."""
    hub = Hub(tmp_path / "hub", max_bytes=2**20)
    hub.put("agent", Upload("hubtest", "evil", "1.0.0", "MIT", [(f["path"], f["content"]) for f in GOOD["files"]]))
    (hub.folder("agent", "hubtest", "evil") / "config.json").write_bytes(_config(name="victim"))
    with pytest.raises(InvalidPackage, match="hub package hubtest/evil has a config.json naming hubtest/victim"):
        resolve_agent("hubtest/evil", hub, tmp_path / "unpacked", hub.max_bytes)


@pytest.mark.parametrize(("greeting", "stored"), [("A", True), ("B", False)], ids=["same-content", "other-content"])
def test_an_upload_racing_another_of_the_same_version_is_accepted_only_with_the_same_content(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, greeting: str, stored: bool) -> None:
    """Two uploads of one new version at once: the second to move its folder into place finds the first's there.
    The same content is accepted as stored; other content is the usual conflict (never an error naming the
    kernel's folders)."""
    def upload(who: str, greeting: str) -> Upload:
        files = package(agent_folder(tmp_path / who, "raced", "1.0.0", greeting))["files"]
        return Upload("hubtest", "raced", "1.0.0", "MIT", [(f["path"], f["content"]) for f in files])

    hub, first, second = Hub(tmp_path / "hub", max_bytes=2**20), upload("first", "A"), upload("second", greeting)
    write = hub._write

    def stored_first_by_another(*args: Any) -> bool:
        Hub(hub.root, hub.max_bytes).put("agent", first)  # the other upload gets there first
        return write(*args)

    monkeypatch.setattr(hub, "_write", stored_first_by_another)
    if stored:
        assert hub.put("agent", second).sha256 == hub.get("agent", "hubtest", "raced")[0].sha256
    else:
        with pytest.raises(Conflict, match=r"^agent hubtest/raced version 1.0.0 is already in the hub with other "
                                           r"content: raise meta.version to upload a new one$"):
            hub.put("agent", second)
    assert hub.versions("agent", "hubtest", "raced") == ["1.0.0"]
    assert list((hub.root / ".incoming").iterdir()) == []  # nothing half written is left


def test_an_oversize_package_is_refused_with_nothing_stored(tmp_path: Path) -> None:
    hub = Hub(tmp_path / "hub", max_bytes=1024)
    big = Upload("hubtest", "big", "1.0.0", "MIT", [*[(f["path"], f["content"]) for f in GOOD["files"]],
                                                    ("blob.bin", base64.b64encode(b"x" * 2000).decode())])
    with pytest.raises(TooLarge, match=r"pass 0.000976562 MB \(agents.hub_max_package_mb\)"):
        hub.put("agent", big)
    assert not (tmp_path / "hub").exists() or not any((tmp_path / "hub").rglob("*.json"))


@pytest.mark.parametrize(("path", "params", "code", "detail"), [
    ("/cerebrum/download", {"author": "nobody", "name": "none"}, 404, "no agent nobody/none in the hub"),
    ("/cerebrum/download", {"author": "hubtest"}, 422, "name"),
    ("/cerebrum/download", {"author": "hubtest", "name": "greeter", "version": "7.0"}, 404,
     "agent hubtest/greeter has no version 7.0 in the hub"),
    ("/cerebrum/download", {"author": "..", "name": "x"}, 404, "cannot name one"),
    ("/cerebrum/check_updates", {"author": "nobody", "name": "none", "current_version": "1"}, 404, "no agent nobody/none"),
    ("/cerebrum/check_updates", {"author": "hubtest", "name": "greeter"}, 422, "current_version"),
    ("/cerebrum/tools/download", {"author": "nobody", "name": "none"}, 404, "no tool nobody/none in the hub"),
    ("/cerebrum/tools/check_updates", {"author": "nobody", "name": "none", "current_version": "1"}, 404, "no tool"),
])
def test_bad_hub_requests_are_refused_naming_the_problem(kernel: KernelProcess, tmp_path: Path, path: str,
                                                         params: dict[str, str], code: int, detail: str) -> None:
    kernel.client.post("/cerebrum/upload", json=package(agent_folder(tmp_path, "greeter", "0.9.0", "Hi")))
    reply = kernel.client.get(path, params=params)
    assert reply.status_code == code and detail in detail_of(reply), reply.text


@pytest.mark.parametrize(("older", "newer"), [
    ("0.9.1", "0.10.0"),
    ("1.0.0-beta", "1.0.0"),  # a pre-release comes before its release
    ("1.0.0-beta", "1.0.5"),  # and after the releases before it, not after every later one
    ("0.9.0", "1.0.0-rc.1"),
    ("1.0.0-alpha", "1.0.0-beta"),
    ("1.0.0-rc.2", "1.0.0-rc.10"),
    ("1.0.0", "1.0.0+build.2"),  # build metadata only breaks ties
    ("1.0", "1.0.1"),
    ("1.0.9", "1.0.x"),  # a part that is no number after the numbers
])
def test_the_newest_version_is_the_one_semantic_versioning_orders_last(older: str, newer: str) -> None:
    assert version_key(older) < version_key(newer)
    assert sorted([newer, older], key=version_key) == [older, newer]
