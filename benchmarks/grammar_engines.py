"""Grammar engines for constrained decoding, xgrammar vs llguidance, on the embedded model's tokenizer.

Measures, for each engine: the one-time tokenizer setup, grammar compile times (a 3-tool tool-call schema cold
and again, a small object schema, any JSON object, and "free prose OR a tool-call array" for tool_choice=auto),
the per-step cost of masking a batch of 16 (fill one batch bitmask, apply it to (16, vocab) float32 logits, accept
the token) while walking 16 matchers through a valid compact tool call, correctness spot checks, and the installed
footprint. Prints a markdown table and writes it to BENCHMARKS.md between ``grammar-engines`` markers.

    .venv/bin/python benchmarks/grammar_engines.py [--rounds 5] [--threads 1]
"""

from __future__ import annotations

import argparse
import importlib.metadata as md
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
from packaging.requirements import Requirement
from transformers import AutoConfig, AutoTokenizer

from aios.config import EMBEDDED_MODEL, load_config
from aios.llm.hf.loader import converted_gguf, find_model
from report import write_section

ROOT = Path(__file__).resolve().parents[1]
BATCH = 16
DECODE_STEP_MS = 200.0  # one CPU decode step of the embedded model at batch 8-16 (benchmarks/profile.md)
REPLY = '[{"name":"get_weather","parameters":{"city":"Paris","unit":"celsius"}}]'
# (prefix already generated, next text that must be masked out): a space in compact JSON, an unknown tool name,
# an object where the array must start.
FORBIDDEN = [('[{', ' '), ('[{"name":"', 'x'), ('', '{')]


def obj(props: dict, required: list[str] | None = None) -> dict:
    return {"type": "object", "properties": props, "required": list(props) if required is None else required,
            "additionalProperties": False}


STR = {"type": "string"}
TOOLS = {
    "get_weather": obj({"city": STR, "unit": {"enum": ["celsius", "fahrenheit"]}}),
    "send_email": obj({"to": {"type": "array", "items": STR, "minItems": 1}, "subject": STR, "body": STR}),
    "create_event": obj({"title": STR, "start": STR,
                         "attendees": {"type": "array", "items": obj({"name": STR, "email": STR})},
                         "reminder_minutes": {"type": "integer", "minimum": 0, "maximum": 1440}},
                        required=["title", "start", "attendees"]),
}
TOOL_CALLS = {"type": "array", "minItems": 1, "items": {"anyOf": [
    obj({"name": {"const": name}, "parameters": params}) for name, params in TOOLS.items()]}}
PERSON = obj({"name": STR, "age": {"type": "integer"}, "tags": {"type": "array", "items": STR}})
ANY_OBJECT = {"type": "object"}
XGR_PROSE = r"root ::= [^\[] [^]*"  # prose: anything that does not start with "["
LLG_AUTO = "start: PROSE | calls\nPROSE: /[^\\[](.|\\n)*/\ncalls: %json {schema}"


class XGrammar:
    IMPORTS = [["xgrammar"]]

    def __init__(self, tokenizer, vocab: int) -> None:
        import xgrammar as xgr

        self.xgr, self.version = xgr, md.version("xgrammar")
        self.info = xgr.TokenizerInfo.from_huggingface(tokenizer, vocab_size=vocab)
        self.compiler = xgr.GrammarCompiler(self.info, max_threads=os.cpu_count() or 1)
        self.batch = xgr.BatchGrammarMatcher()
        self.apply = xgr.apply_token_bitmask_inplace

    def compile(self, schema: dict):  # compact JSON needs the separators too: any_whitespace=False alone gives ", "
        return self.compiler.compile_json_schema(schema, any_whitespace=False, separators=(",", ":"))

    def compile_auto(self, schema: dict):
        xgr = self.xgr
        calls = xgr.Grammar.from_json_schema(json.dumps(schema), any_whitespace=False, separators=(",", ":"))
        return self.compiler.compile_grammar(xgr.Grammar.union(calls, xgr.Grammar.from_ebnf(XGR_PROSE)))

    def matcher(self, compiled):
        return self.xgr.GrammarMatcher(compiled)

    def fill(self, matchers, bitmask) -> None:
        for i, m in enumerate(matchers):
            m.fill_next_token_bitmask(bitmask, i)

    def fill_batch(self, matchers, bitmask) -> None:
        self.batch.batch_fill_next_token_bitmask(matchers, bitmask)

    def accept(self, m, token: int) -> bool:
        return m.accept_token(token)

    def complete(self, m) -> bool:
        return m.is_completed()

    def finished(self, m) -> bool:
        return m.is_terminated()


class LLGuidance:
    IMPORTS = [["llguidance", "llguidance.hf"], ["llguidance.torch"]]  # the torch helpers import torch._dynamo

    def __init__(self, tokenizer, vocab: int) -> None:
        import llguidance as llg
        import llguidance.hf
        import llguidance.torch

        self.llg, self.lt, self.version = llg, llguidance.torch, md.version("llguidance")
        self.tokenizer = llguidance.hf.from_tokenizer(tokenizer, n_vocab=vocab)
        self.executor = llg.LLExecutor()
        self.apply = llguidance.torch.apply_token_bitmask_inplace

    def _build(self, grammar: str):  # compiling happens in the LLMatcher constructor; keep it as a template
        m = self.llg.LLMatcher(self.tokenizer, grammar)
        if m.is_error():
            raise ValueError(m.get_error())
        return m

    def compile(self, schema: dict):
        return self._build(self.llg.LLMatcher.grammar_from_json_schema(schema, defaults={"whitespace_flexible": False}))

    def compile_auto(self, schema: dict):
        compact = dict(schema, **{"x-guidance": {"whitespace_flexible": False}})
        return self._build(self.llg.LLMatcher.grammar_from_lark(LLG_AUTO.format(schema=json.dumps(compact))))

    def matcher(self, compiled):
        return compiled.deep_copy()

    def fill(self, matchers, bitmask) -> None:
        for i, m in enumerate(matchers):
            self.lt.fill_next_token_bitmask(m, bitmask, i)

    def fill_batch(self, matchers, bitmask) -> None:
        self.lt.fill_next_token_bitmask_par(self.executor, [(m, i) for i, m in enumerate(matchers)], bitmask)

    def accept(self, m, token: int) -> bool:
        return m.consume_token(token) and not m.is_error()

    def complete(self, m) -> bool:
        return m.is_accepting()

    def finished(self, m) -> bool:
        return m.is_stopped() and not m.is_error()


def timed(fn, *args):
    began = time.perf_counter()
    result = fn(*args)
    return result, (time.perf_counter() - began) * 1000


def import_ms(groups: list[list[str]]) -> list[float]:
    """Import time of each group of modules in a fresh interpreter that has torch and transformers loaded."""
    code = ("import time, torch\nfrom transformers import AutoTokenizer, PreTrainedTokenizerBase\n"
            f"for group in {groups!r}:\n    t = time.perf_counter()\n    for m in group: __import__(m)\n"
            "    print((time.perf_counter() - t) * 1000)")
    run = subprocess.run([sys.executable, "-W", "ignore", "-c", code], capture_output=True, text=True, check=True)
    return [float(line) for line in run.stdout.split()]


def allowed(bitmask: torch.Tensor, row: int, token: int) -> bool:
    return bool((int(bitmask[row, token // 32]) >> (token % 32)) & 1)


BITS = torch.arange(32, dtype=torch.int32)


def apply_plain(logits: torch.Tensor, bitmask: torch.Tensor) -> None:
    """Engine-independent apply (both engines use the same bitmask layout), plain torch, nothing to compile."""
    bits = ((bitmask.unsqueeze(-1) >> BITS) & 1).view(bitmask.shape[0], -1)[:, :logits.shape[1]]
    logits.masked_fill_(bits == 0, float("-inf"))


class Bench:
    """One engine's figures: setup and compiles on creation, then :meth:`walk` rounds, then :meth:`summary`."""

    def __init__(self, engine_cls, tokenizer, vocab: int) -> None:
        self.tokenizer, self.failures, self.checks = tokenizer, [], 0
        r = self.r = {"import": import_ms(engine_cls.IMPORTS), "make": []}
        self.e, r["setup"] = timed(engine_cls, tokenizer, vocab)
        e = self.e
        self.calls, r["cold"] = timed(e.compile, TOOL_CALLS)
        _, r["again"] = timed(e.compile, TOOL_CALLS)
        _, r["person"] = timed(e.compile, PERSON)
        _, r["any"] = timed(e.compile, ANY_OBJECT)
        self.auto, r["auto"] = timed(e.compile_auto, TOOL_CALLS)
        self.tokens = tokenizer.encode(REPLY, add_special_tokens=False) + [tokenizer.eos_token_id]
        self.bitmask = torch.full((BATCH, (vocab + 31) // 32), -1, dtype=torch.int32)
        self.base = torch.randn(BATCH, vocab)
        _, r["first_apply"] = timed(e.apply, self.base.clone(), self.bitmask)  # llguidance's is torch.compile'd
        self.steps: dict[str, list[float]] = {k: [] for k in ("fill", "batch", "apply", "plain", "accept")}

    def check(self, ok: bool, what: str) -> None:
        self.checks += 1
        if not ok:
            self.failures.append(what)

    def walk(self) -> None:
        """New matchers for the batch, walked through the reply + EOS, timing every step's masking work."""
        e, bitmask, steps, check = self.e, self.bitmask, self.steps, self.check
        second = bitmask.clone()
        matchers, ms = timed(lambda: [e.matcher(self.calls) for _ in range(BATCH)])
        self.r["make"].append(ms)
        for step, token in enumerate(self.tokens):
            logits, plain = self.base.clone(), self.base.clone()
            for key, fn, args in [("fill", e.fill, (matchers, bitmask)), ("batch", e.fill_batch, (matchers, second)),
                                  ("apply", e.apply, (logits, bitmask)), ("plain", apply_plain, (plain, bitmask))]:
                steps[key].append(timed(fn, *args)[1])
            check(torch.equal(plain, logits), f"step {step}: plain torch apply differs")
            check(torch.equal(bitmask, second), f"step {step}: batch fill differs from per-row fill")
            check(all(allowed(bitmask, i, token) for i in range(BATCH)) and bool(logits[:, token].isfinite().all()),
                  f"step {step}: true token {token} masked")
            if token == self.tokenizer.eos_token_id:
                check(all(e.complete(m) for m in matchers), "not complete before EOS")
            began = time.perf_counter()
            oks = [e.accept(m, token) for m in matchers]
            steps["accept"].append((time.perf_counter() - began) * 1000)
            check(all(oks), f"step {step}: token {token} rejected")
        check(all(e.finished(m) for m in matchers), "not terminated after EOS")

    def spot_checks(self) -> None:
        e, encode = self.e, lambda text: self.tokenizer.encode(text, add_special_tokens=False)
        for prefix, bad in FORBIDDEN:
            (bad_id,) = encode(bad)
            m = e.matcher(self.calls)
            ok = all(e.accept(m, t) for t in encode(prefix))
            e.fill([m], self.bitmask)
            self.check(ok and not allowed(self.bitmask, 0, bad_id), f"{bad!r} allowed after {prefix!r}")
        for text, valid in [("Sure, it is sunny.\nAnything else?", True), (REPLY, True), ("[hello", False)]:
            m = e.matcher(self.auto)
            ok = all(e.accept(m, t) for t in encode(text))
            self.check(ok and e.complete(m) if valid else not ok,
                       f"auto grammar: {text!r} {'rejected' if valid else 'accepted'}")

    def summary(self) -> dict:
        s = self.steps
        steps = dict(s, total=[sum(parts) for parts in zip(s["fill"], s["apply"], s["accept"])])
        return dict(self.r, make=statistics.mean(self.r["make"]), checks=self.checks, version=self.e.version,
                    steps={k: (statistics.mean(v), statistics.quantiles(v, n=20)[-1]) for k, v in steps.items()})


def closure(name: str) -> set[str]:
    """``name`` and every distribution it needs, transitively, on this platform (no extras)."""
    seen, todo = set(), [name]
    while todo:
        dist = md.distribution(todo.pop())
        key = dist.metadata["Name"].lower().replace("_", "-")
        if key in seen:
            continue
        seen.add(key)
        for req in map(Requirement, dist.requires or []):
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                todo.append(req.name)
    return seen


def footprint(engine: str) -> str:
    """Installed size of ``engine`` and what it adds to this project's own dependencies."""
    extra = sorted(closure(engine) - closure("aios"))
    sizes = {n: sum(f.stat().st_size for f in map(md.distribution(n).locate_file, md.distribution(n).files or [])
                    if f.is_file()) / 2**20 for n in extra}
    parts = ", ".join(f"{n} {mb:.1f}" for n, mb in sizes.items())
    return f"**{sum(sizes.values()):.0f} MB** ({parts})"


def table(res: dict[str, dict], foot: dict[str, str], failures: dict[str, list[str]]) -> str:
    names = list(res)

    def f1(value: float) -> str:
        return f"{value:.1f}"

    def step(key: str):
        return lambda r: "{:.2f} / {:.2f}".format(*r["steps"][key])

    def imports(r: dict) -> str:  # llguidance: core + its torch helpers
        return " + ".join(f"{ms:.0f}" for ms in r["import"]) + (" (`.torch`)" if len(r["import"]) > 1 else "")

    rows = [
        ("version", lambda r: r["version"]),
        ("import, fresh process with torch + transformers loaded (ms)", imports),
        ("setup: tokenizer info / wrapper (ms)", lambda r: f1(r["setup"])),
        ("compile tool-call schema (3 tools), cold (ms)", lambda r: f1(r["cold"])),
        ("same schema again (ms)", lambda r: f1(r["again"])),
        ("compile person schema (ms)", lambda r: f1(r["person"])),
        ("compile any JSON object (ms)", lambda r: f1(r["any"])),
        ("compile prose OR tool-call array (ms)", lambda r: f1(r["auto"])),
        (f"make {BATCH} matchers from a compiled grammar (ms)", lambda r: f"{r['make']:.2f}"),
        (f"per step, fill {BATCH} masks one by one (ms, mean / p95)", step("fill")),
        (f"per step, fill {BATCH} masks, engine's batch API (ms)", step("batch")),
        (f"per step, apply mask to ({BATCH}, vocab) fp32 logits (ms)", step("apply")),
        ("same masks applied by plain torch `apply_plain`, no compile (ms)", step("plain")),
        (f"per step, accept token in {BATCH} matchers (ms)", step("accept")),
        ("**per step total**, fill one by one + apply + accept (ms)", lambda r: f"**{step('total')(r)}**"),
        (f"overhead vs a {DECODE_STEP_MS:.0f} ms decode step (mean / p95)",
         lambda r: " / ".join(f"{100 * t / DECODE_STEP_MS:.1f}%" for t in r["steps"]["total"])),
        ("first apply call, engine's helper (ms)", lambda r: f1(r["first_apply"])),
        ("correctness checks", lambda r: f"{r['checks'] - len(failures[r['name']])}/{r['checks']} passed"),
        ("install size added to the project", lambda r: foot[r["name"]]),
    ]
    lines = ["| | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    lines += [f"| {label} | " + " | ".join(cell(dict(res[n], name=n)) for n in names) + " |" for label, cell in rows]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5, help="walks of the 16 matchers through the reply")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads: masking tensors are small; one thread keeps figures stable on a busy box")
    parser.add_argument("--out", type=Path, default=ROOT / "BENCHMARKS.md")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    load = os.getloadavg()[0]
    model_dir = str(converted_gguf(find_model(EMBEDDED_MODEL).gguf, load_config().data_dir))
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    vocab = AutoConfig.from_pretrained(model_dir).vocab_size
    benches = {"xgrammar": Bench(XGrammar, tokenizer, vocab), "llguidance": Bench(LLGuidance, tokenizer, vocab)}
    for _ in range(args.rounds):  # alternate the engines, so that both see the same machine
        for bench in benches.values():
            bench.walk()
    for bench in benches.values():
        bench.spot_checks()
    results = {name: bench.summary() for name, bench in benches.items()}
    failures = {name: bench.failures for name, bench in benches.items()}
    foot = {n: footprint(n) for n in results}
    n_tokens = len(tokenizer.encode(REPLY, add_special_tokens=False)) + 1
    markdown = f"""## Grammar engines for constrained decoding: xgrammar vs llguidance

Machine: {platform.machine()}, {os.cpu_count()} CPU cores, torch {torch.__version__} \
({torch.get_num_threads()} threads), Python {platform.python_version()}, 1-min load average {load:.2f} at start; \
embedded model's tokenizer, vocab {vocab}. \
`.venv/bin/python benchmarks/grammar_engines.py --rounds {args.rounds} --threads {args.threads}`.

Compact JSON (no whitespace) for every grammar. Per-step figures: {BATCH} matchers walk the {n_tokens} tokens of \
`{REPLY}` + EOS, {args.rounds} times (new matchers each time); all {BATCH} rows go into one bitmask tensor. \
"Same schema again": xgrammar's compiler cache answers; llguidance has no grammar cache (a compiled `LLMatcher` \
is kept as a template and `deep_copy()`'d per request, which is what "make {BATCH} matchers" times). \
llguidance's `apply_token_bitmask_inplace` is `torch.compile`d: its first call compiles (needs a C compiler at run \
time; the figure is with torch's on-disk inductor cache warm, a cold cache takes far longer). Both engines fill \
the same bitmask layout, so any apply works with either: `apply_plain` is two lines of plain torch.

{table(results, foot, failures)}

"Prose OR tool-call array" (tool_choice auto; prose must not start with `[`), xgrammar then llguidance (Lark):

```python
calls = xgr.Grammar.from_json_schema(schema, any_whitespace=False, separators=(",", ":"))
grammar = xgr.Grammar.union(calls, xgr.Grammar.from_ebnf(r"{XGR_PROSE}"))
```

```
{LLG_AUTO.replace("{schema}", '{<the tool-call schema>, "x-guidance": {"whitespace_flexible": false}}')}
```
"""
    problems = [f"- {n}: {f}" for n, fs in failures.items() for f in fs]
    if problems:
        markdown += "\nFailed checks:\n" + "\n".join(problems) + "\n"
    print(markdown)
    write_section(args.out, "grammar-engines", markdown)


if __name__ == "__main__":
    main()
