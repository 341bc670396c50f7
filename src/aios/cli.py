"""The ``aios`` command: serve a kernel, chat through one, prepare models, run the demo."""

from __future__ import annotations

import asyncio
import inspect
import logging
import os
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Optional

import typer

from aios.errors import ConfigError, KernelError, ModelNotFound
from aios.torch_threads import spin_briefly

# Help texts are plain text: a hub id's "[/version]" is not markup.
app = typer.Typer(help="AIOS: an LLM agent operating system.", no_args_is_help=True, add_completion=False,
                  rich_markup_mode=None)

ConfigOption = typer.Option(None, "--config", "-c", help="YAML config file (default: $AIOS_CONFIG, else built-in)")


def _fail(message: str, code: int = 2) -> typer.Exit:
    typer.echo(f"aios: {message}", err=True)
    return typer.Exit(code)


def _load(config_path: Optional[Path], host: Optional[str] = None, port: Optional[int] = None,  # noqa: ANN202
          models: bool = False):
    """The config, or the command ends with the file, field and problem; ``models``: it is about to load them, so
    its API providers are checked too."""
    from aios.config import load_config

    try:
        config = load_config(config_path, check_providers=models)
    except ConfigError as exc:
        raise _fail(str(exc)) from None
    server = config.server.model_copy(update={k: v for k, v in (("host", host), ("port", port)) if v is not None})
    return config.model_copy(update={"server": server})


def _kernel(config):  # noqa: ANN001, ANN202
    from aios.kernel import Kernel

    try:
        return Kernel.from_config(config)
    except (ModelNotFound, KernelError) as exc:
        raise _fail(str(exc), code=1) from None
    except OSError as exc:  # e.g. a data dir that cannot be written
        raise _fail(f"cannot start the kernel: {exc}", code=1) from None


@app.command()
def serve(
    config: Optional[Path] = ConfigOption,
    host: Optional[str] = typer.Option(None, "--host", help="address to listen on (default 127.0.0.1)"),
    port: Optional[int] = typer.Option(None, "--port", min=0, max=65535, help="port (default 8000; 0 = any free)"),
) -> None:
    """Start the kernel and its HTTP API; prints the URL when ready."""
    settings = _load(config, host, port, models=True)
    from aios.server.auth import exposure_problem

    problem = exposure_problem(settings.access.auth, settings.server.host)
    if problem is not None:
        raise _fail(problem)
    kernel = _kernel(settings)
    path = str(config) if config else os.environ.get("AIOS_CONFIG") or None
    kernel.config_file = (path, _load(config)) if path else None
    from aios.server import serve as run_server

    ready = lambda url: print(f"AIOS kernel ready at {url}", flush=True)  # noqa: E731
    try:
        asyncio.run(run_server(kernel, settings.server.host, settings.server.port, ready))
    except KeyboardInterrupt:
        pass


@app.command()
def prepare(config: Optional[Path] = ConfigOption) -> None:
    """Load every configured model once, converting GGUF files into the cache (shows progress)."""
    settings = _load(config, models=True)
    from aios.kernel import load_cores

    try:
        cores = load_cores(settings)
    except (ModelNotFound, KernelError) as exc:
        raise _fail(str(exc), code=1) from None
    for core in cores:
        facts = core.describe()
        if "device" in facts:
            typer.echo(f"ready: {facts['name']} on {facts['device']} ({facts['dtype']}); cache in {settings.data_dir}")
        else:  # an API backend: nothing to prepare here
            typer.echo(f"ready: {facts['name']} ({facts['backend']} at {facts['base_url']})")
        closing = core.close()
        if inspect.isawaitable(closing):
            asyncio.run(closing)


@app.command()
def chat(
    url: Optional[str] = typer.Option(None, "--url", help="kernel URL (default: $AIOS_KERNEL_URL or localhost:8000)"),
    agent_name: str = typer.Option("terminal/chat", "--agent-name", help="who the kernel sees as the caller"),
    temperature: Optional[float] = typer.Option(None, "--temperature", min=0, max=2),
    max_new_tokens: Optional[int] = typer.Option(None, "--max-new-tokens", min=1),
) -> None:
    """Chat with the kernel's model interactively (the conversation is kept; Ctrl-D or /exit ends it)."""
    from aios.sdk import AIOSError, llm_chat

    messages: list[dict[str, str]] = []
    while True:
        try:
            line = input("you> ").strip()
        except (EOFError, KeyboardInterrupt):
            typer.echo()
            return
        if line in ("/exit", "/quit"):
            return
        if not line:
            continue
        messages.append({"role": "user", "content": line})
        try:
            reply = llm_chat(agent_name, messages, url, temperature=temperature, max_new_tokens=max_new_tokens)
        except AIOSError as exc:
            messages.pop()
            typer.echo(f"error: {exc}", err=True)
            if exc.status_code == 0:
                raise typer.Exit(1) from None
            continue
        messages.append({"role": "assistant", "content": reply.response_message or ""})
        typer.echo(f"aios> {reply.response_message}")


@app.command()
def terminal(
    url: Optional[str] = typer.Option(None, "--url", help="kernel URL (default: $AIOS_KERNEL_URL or localhost:8000)"),
    token: Optional[str] = typer.Option(None, "--token", envvar="AIOS_TOKEN", show_envvar=False,
                                        help="the agent's token, for a kernel that requires one (default: $AIOS_TOKEN)"),
    agent: Optional[str] = typer.Option(None, "--agent", help="who the kernel sees as the caller: whose files and "
                                        "memories these are (default: terminal/<your user name>)"),
    temperature: Optional[float] = typer.Option(None, "--temperature", min=0, max=2),
    max_new_tokens: Optional[int] = typer.Option(None, "--max-new-tokens", min=1),
) -> None:
    """An interactive shell over a running kernel: chat, files, memories, tools, agents and the scheduler live."""
    import getpass

    from aios.terminal import Settings, run_terminal

    name = f"terminal/{getpass.getuser()}" if agent is None else agent
    if not name or any(ch.isspace() for ch in name):
        raise _fail(f"--agent must be a name without spaces, not {agent!r}")
    if token is not None:
        os.environ["AIOS_TOKEN"] = token  # the SDK sends $AIOS_TOKEN with every request
    settings = Settings(url, name, temperature, max_new_tokens)
    raise typer.Exit(run_terminal(settings))


@app.command()
def demo(config: Optional[Path] = ConfigOption) -> None:
    """Start a kernel and run the six example agents at once, each in its own process."""
    from aios.demo import run_demo

    settings = _load(config, host="127.0.0.1", port=0, models=True)
    sys.exit(asyncio.run(run_demo(_kernel(settings))))


def _one_word(token: Optional[str]) -> Optional[str]:
    """A token is sent in a header: it cannot be empty or hold spaces or control characters."""
    if token is not None and (not token or not token.isprintable() or any(ch.isspace() for ch in token)):
        raise typer.BadParameter(f"a token is one word of printable characters, not {token!r}")
    return token


TokenOption = typer.Option(None, "--token", envvar="AIOS_TOKEN", show_envvar=False, callback=_one_word,
                           help="the token to send, for a kernel that requires one (default: $AIOS_TOKEN, else the "
                                "administrator's, from <data_dir>/access/admin.token, to the kernel serving that "
                                "data dir)")


@contextmanager
def _agents_calls(token: Optional[str], config: Optional[Path], url: Optional[str]) -> Iterator[Optional[str]]:
    """The SDK's requests of an agents command, sent with ``token``, else, to the kernel serving the data dir,
    with its administrator's token (a kernel that requires none takes it too; no other server is sent it); a
    refusal ends the command with the kernel's words, and a 401 with how to give a token. Yields the URL to send
    the requests to (the kernel's own, where it is sent the administrator's token)."""
    from aios.sdk import AIOSError, kernel_url

    sent, served = token, None
    if token is None:
        sent, served = _local_admin_token(config, kernel_url(url)) or (None, None)
    before = os.environ.get("AIOS_TOKEN")
    if sent is not None:
        os.environ["AIOS_TOKEN"] = sent  # the SDK sends $AIOS_TOKEN with every request
    try:
        yield served or url
    except AIOSError as exc:
        hint = (f"; give --token TOKEN or set $AIOS_TOKEN (without either, the kernel serving this data dir is sent "
                f"the administrator's token in {_admin_token(config)[0]})") if exc.status_code == 401 else ""
        raise _fail(f"{exc}{hint}", code=1) from None
    finally:  # for whatever runs next in this process
        if before is None:
            os.environ.pop("AIOS_TOKEN", None)
        else:
            os.environ["AIOS_TOKEN"] = before


@app.command("run-agent")
def run_agent(
    agent: str = typer.Argument(..., help="a package folder or archive, example/NAME, or a hub id author/name[/version]"),
    task: str = typer.Option(..., "--task", help="what the agent is asked to do"),
    url: Optional[str] = typer.Option(None, "--url", help="kernel URL (default: $AIOS_KERNEL_URL or localhost:8000)"),
    time_limit: Optional[float] = typer.Option(None, "--time-limit", min=0.001, help="seconds (at most the "
                                               "kernel's agents.time_limit_s)"),
    token: Optional[str] = TokenOption, config: Optional[Path] = ConfigOption,
) -> None:
    """Run an agent on a kernel, in a process of its own, and print its result (JSON) when it ends."""
    import json

    from aios.sdk import submit_agent, wait_agent

    local = Path(agent).expanduser()
    agent_id = str(local.resolve()) if local.exists() else agent  # the kernel reads a path on its own machine
    with _agents_calls(token, config, url) as url:
        execution_id = submit_agent(agent_id, task, url, time_limit_s=time_limit)
        typer.echo(f"execution {execution_id} started", err=True)
        status = wait_agent(execution_id, url)
    if status.status != "completed":
        raise _fail(f"execution {execution_id} failed: {status.error}", code=1)
    typer.echo(json.dumps(status.result, ensure_ascii=False, indent=2))


agents_app = typer.Typer(help="Agents the kernel runs: list them, read their logs, cancel them.", no_args_is_help=True)
app.add_typer(agents_app, name="agents")
AgentUrlOption = typer.Option(None, "--url", help="kernel URL (default: $AIOS_KERNEL_URL or localhost:8000)")


@agents_app.command("ps")
def agents_ps(url: Optional[str] = AgentUrlOption, token: Optional[str] = TokenOption,
              config: Optional[Path] = ConfigOption) -> None:
    """Every agent run the kernel knows: id, agent, status, process id, and how it ended."""
    from aios.sdk import list_agents

    with _agents_calls(token, config, url) as url:
        runs = list_agents(url)
    for run in runs:
        ended = run.error or (f"exit {run.exit_code}" if run.exit_code is not None else "")
        typer.echo(f"{run.execution_id:>6}  {run.agent_name:<28} {run.status:<10} pid {run.pid or '-':<8} {ended}")


@agents_app.command("logs")
def agents_logs(execution_id: int = typer.Argument(..., min=1), url: Optional[str] = AgentUrlOption,
                tail_kb: int = typer.Option(64, "--tail-kb", min=1, max=10_240, help="the last KiB of each stream"),
                token: Optional[str] = TokenOption, config: Optional[Path] = ConfigOption) -> None:
    """What an agent wrote: its stdout, then its stderr (to stderr)."""
    from aios.sdk import agent_logs

    with _agents_calls(token, config, url) as url:
        logs = agent_logs(execution_id, url, tail_kb=tail_kb)
    typer.echo(logs.stdout, nl=False)
    typer.echo(logs.stderr, nl=False, err=True)


@agents_app.command("cancel")
def agents_cancel(execution_id: int = typer.Argument(..., min=1), url: Optional[str] = AgentUrlOption,
                  token: Optional[str] = TokenOption, config: Optional[Path] = ConfigOption) -> None:
    """Kill a running agent and its children."""
    from aios.sdk import cancel_agent

    with _agents_calls(token, config, url) as url:
        status = cancel_agent(execution_id, url)
    typer.echo(f"execution {execution_id}: {status.status} ({status.error})")


token_app = typer.Typer(help="Agents' tokens, for a kernel that requires them (the administrator's commands).",
                        no_args_is_help=True)
app.add_typer(token_app, name="token")
UrlOption = typer.Option(None, "--url", help="kernel URL (default: $AIOS_KERNEL_URL or localhost:8000)")
AdminTokenOption = typer.Option(None, "--admin-token", envvar="AIOS_ADMIN_TOKEN",
                                help="default: <data_dir>/access/admin.token, for the kernel serving that "
                                     "data dir only")


def _admin_token(config: Optional[Path]) -> tuple[Path, Optional[str]]:
    """Where the kernel of this data dir keeps the administrator's token, and the token (None: not there)."""
    path = _load(config).data_dir / "access" / "admin.token"
    try:
        return path, path.read_text().strip()
    except OSError:
        return path, None


def _local_admin_token(config: Optional[Path], url: str) -> Optional[tuple[str, str]]:
    """The administrator's token of the data dir and the URL the kernel that keeps it serves at, if ``url`` names
    that kernel (sent to any other server, the token would give that server's owner the kernel). The requests go
    to the kernel's own URL: ``localhost`` may reach another program on ``[::1]`` before the kernel's 127.0.0.1."""
    from aios.access import address

    path, token = _admin_token(config)
    served = address.serving(path.parent)
    return (token, served) if token is not None and served is not None and _same_address(served, url) else None


def _same_address(served: str, url: str) -> bool:
    """Whether ``url`` names the server at ``served``: the same port, and the same host or both loopback."""
    from urllib.parse import urlsplit

    from aios.server.auth import is_loopback

    a, b = urlsplit(served), urlsplit(url)
    try:
        same_port = (a.scheme, a.port) == (b.scheme, b.port)
    except ValueError:  # a port that is no number
        return False
    hosts = (a.hostname or "", b.hostname or "")
    return same_port and (hosts[0] == hosts[1] or all(is_loopback(host) for host in hosts))


def _no_admin_token(config: Optional[Path], url: str) -> typer.Exit:
    """Why the administrator's token of the data dir is not sent to ``url``, and what to do."""
    from aios.access import address

    path, token = _admin_token(config)
    if token is None:
        return _fail(f"no administrator's token at {path}: start the kernel once, or give --admin-token")
    served = address.serving(path.parent)
    if served is None:
        return _fail(f"the kernel of the data dir {path.parent.parent} is not running, and its administrator's token "
                     "goes only to it: start it, or give --admin-token for another kernel")
    return _fail(f"the kernel of the data dir {path.parent.parent} serves at {served}, not {url}, and its "
                 f"administrator's token goes only there: give --url {served}, or --admin-token for another kernel")


def _admin(url: Optional[str], admin_token: Optional[str], config: Optional[Path],  # noqa: ANN202
           read_timeout: Optional[float] = 90.0):
    """An HTTP client to the kernel, as its administrator (``read_timeout`` None: wait as long as it takes)."""
    import httpx

    from aios.sdk import kernel_url

    target = kernel_url(url)
    if admin_token is None:
        local = _local_admin_token(config, target)
        if local is None:
            raise _no_admin_token(config, target)
        admin_token, target = local
    return httpx.Client(base_url=target, headers={"Authorization": f"Bearer {admin_token}"},
                        timeout=httpx.Timeout(read_timeout, connect=10.0))


def _request(client, method: str, path: str, **kwargs):  # noqa: ANN001, ANN003, ANN202
    """One exchange with the kernel; a kernel that cannot be reached ends the command with one line."""
    from aios.sdk import AIOSError
    from aios.sdk.transport import reaching

    try:
        with reaching(str(client.base_url).rstrip("/"), f"{method} {path}"):
            return client.request(method, path, **kwargs)
    except AIOSError as exc:
        raise _fail(str(exc), code=1) from None


def _segment(name: str) -> str:
    """``name`` as one segment of a URL path: unescaped, its ``?``, ``#``, ``%`` or ``/`` would name another
    route or agent, and the HTTP client drops ``.`` and ``..`` segments (the kernel decodes them all back)."""
    from urllib.parse import quote

    return quote(name, safe="").replace(".", "%2E")


def _call(client, method: str, path: str, **kwargs) -> dict:  # noqa: ANN001, ANN003
    """The kernel's answer to one request; an error answer ends the command with the kernel's words."""
    from aios.sdk.transport import error_detail

    reply = _request(client, method, path, **kwargs)
    if reply.status_code != 200:
        raise _fail(f"the kernel answered {reply.status_code}: {error_detail(reply)}", code=1)
    return reply.json() if reply.headers.get("content-type", "").startswith("application/json") else {}


@token_app.command("create")
def token_create(agent_name: str, url: Optional[str] = UrlOption, admin_token: Optional[str] = AdminTokenOption,
                 config: Optional[Path] = ConfigOption) -> None:
    """Issue a token for an agent (it replaces any earlier one); printed once, only its hash is kept."""
    with _admin(url, admin_token, config) as client:
        typer.echo(_call(client, "POST", "/access/agents", json={"agent_name": agent_name})["token"])


@token_app.command("revoke")
def token_revoke(agent_name: str, url: Optional[str] = UrlOption, admin_token: Optional[str] = AdminTokenOption,
                 config: Optional[Path] = ConfigOption) -> None:
    """Revoke an agent's token."""
    with _admin(url, admin_token, config) as client:
        _call(client, "DELETE", f"/access/agents/{_segment(agent_name)}")
    typer.echo(f"revoked the token of {agent_name}")


@token_app.command("list")
def token_list(url: Optional[str] = UrlOption, admin_token: Optional[str] = AdminTokenOption,
               config: Optional[Path] = ConfigOption) -> None:
    """The agents that have a token."""
    with _admin(url, admin_token, config) as client:
        for agent in _call(client, "GET", "/access/agents")["agents"]:
            typer.echo(agent["agent_name"])


@app.command()
def approvals(url: Optional[str] = UrlOption, admin_token: Optional[str] = AdminTokenOption,
              config: Optional[Path] = ConfigOption) -> None:
    """Answer the kernel's requests for approval (access.confirm.mode: ask) as they arrive; Ctrl-D ends it."""
    import json

    from aios.sdk.transport import error_detail

    def shown(value: object) -> str:
        """What an agent wrote, as JSON with every unprintable character escaped: a control character (or a
        bidi override) in it could otherwise rewrite the line, and the person would approve what they did not
        see; the quotes show where a name ends."""
        text = json.dumps(value, ensure_ascii=False)
        return "".join(c if c.isprintable() else c.encode("unicode_escape").decode() for c in text)

    with _admin(url, admin_token, config) as client:
        typer.echo("waiting for operations that need your approval (Ctrl-D to stop)…")
        while True:
            for approval in _call(client, "GET", "/access/approvals", params={"wait": 30})["approvals"]:
                typer.echo(f"[{approval['id']}] {shown(approval['agent'])} wants to {shown(approval['action'])}: "
                           f"{shown(approval['detail'])}")
                try:
                    answer = input("approve? [y/N] ").strip().lower()
                except (EOFError, KeyboardInterrupt):
                    typer.echo()
                    return
                approve = answer in ("y", "yes")
                reply = _request(client, "POST", f"/access/approvals/{approval['id']}", json={"approve": approve})
                if reply.status_code == 200:
                    typer.echo("approved" if approve else "denied")
                else:
                    typer.echo(f"too late: {error_detail(reply)}")


models_app = typer.Typer(help="The running kernel's models: list, add and remove them without a restart (the "
                         "administrator's commands).", no_args_is_help=True)
app.add_typer(models_app, name="models")


@models_app.command("list")
def models_list(url: Optional[str] = UrlOption, admin_token: Optional[str] = AdminTokenOption,
                config: Optional[Path] = ConfigOption) -> None:
    """The models served now: name, backend, state and syscalls in flight."""
    with _admin(url, admin_token, config) as client:
        for llm in _call(client, "GET", "/core/llms/check")["llms"]:
            typer.echo(f"{llm['name']}\t{llm['backend']}\t{llm['state']}\t{llm['in_flight']} in flight")


@models_app.command("add")
def models_add(
    name: str = typer.Argument(..., help="HF model id, local directory or .gguf path; an API provider's model name"),
    backend: str = typer.Option("huggingface", "--backend", help="huggingface, openai, vllm, sglang, ollama, or "
                                "any LiteLLM provider (anthropic, gemini, groq, deepseek, ...)"),
    hostname: Optional[str] = typer.Option(None, "--hostname", help="an API backend's server URL"),
    api_key: Optional[str] = typer.Option(None, "--api-key", help="default: api_keys.<backend> or the environment"),
    cost: Optional[float] = typer.Option(None, "--cost", min=0, help="smart routing's relative cost"),
    url: Optional[str] = UrlOption, admin_token: Optional[str] = AdminTokenOption, config: Optional[Path] = ConfigOption,
) -> None:
    """Load a model into the running kernel (other models keep serving) and route to it."""
    entry = {"name": name, "backend": backend, "hostname": hostname, "api_key": api_key, "cost": cost}
    with _admin(url, admin_token, config, read_timeout=None) as client:
        reply = _call(client, "POST", "/core/llms/add", json={k: v for k, v in entry.items() if v is not None})
    typer.echo(reply["message"])


@models_app.command("remove")
def models_remove(name: str, url: Optional[str] = UrlOption, admin_token: Optional[str] = AdminTokenOption,
                  config: Optional[Path] = ConfigOption) -> None:
    """Stop routing to a model, wait for its syscalls in flight to finish, then unload it."""
    with _admin(url, admin_token, config, read_timeout=None) as client:
        reply = _call(client, "POST", "/core/llms/remove", json={"name": name})
    typer.echo(f"{reply['message']} ({reply['drained']} syscalls in flight finished first)")


def main() -> None:
    spin_briefly(os.environ)  # how torch's threads wait between operations: read when torch loads, after this
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    app()
