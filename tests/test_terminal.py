"""``aios terminal`` as a person uses it: driven through a pseudo-terminal (pexpect) against a real kernel, with
keys typed, Tab and Up pressed, and the screen read back."""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path
from typing import Iterator

import httpx
import pexpect
import pytest

from conftest import KernelProcess, start_kernel, stop_kernel
from test_cli import aios
from test_openai_compat import Provider, completion

AGENT = "term/tester"
PROMPT_STARTS = "\x1b[?2004h"  # prompt_toolkit turns bracketed paste on as each prompt begins, and only then
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


class Terminal:
    """One ``aios terminal`` process on a pseudo-terminal."""

    def __init__(self, url: str, home: Path, *flags: str, agent: str = AGENT) -> None:
        env = {**os.environ, "HOME": str(home), "TERM": "xterm", "NO_COLOR": "1", "PROMPT_TOOLKIT_NO_CPR": "1"}
        self.agent = agent
        self.child = pexpect.spawn(sys.executable, ["-m", "aios", "terminal", "--url", url, "--agent", agent,
                                                    "--temperature", "0", "--max-new-tokens", "24", *flags],
                                   env=env, encoding="utf-8", timeout=60, dimensions=(50, 200))
        self.banner = self._until_prompt()

    def _until_prompt(self) -> str:
        """What was written up to the next prompt (escape sequences removed); the prompt itself is consumed."""
        self.child.expect_exact(PROMPT_STARTS)
        screen = ANSI.sub("", self.child.before)
        self.child.expect(r"\[y/N\]|\.\.\.|" + re.escape(f"{self.agent}>"))  # a question, more lines, a command
        return screen

    def run(self, line: str) -> str:
        """Type ``line`` and Enter; what the shell wrote before it prompted again."""
        self.child.sendline(line)
        self.child.expect_exact("\r\n")  # the line as accepted; the shell's output follows
        return self._until_prompt()

    def press(self, keys: str, shown: str) -> None:
        """Press ``keys`` (Tab, arrows, ...) and wait until the line shows ``shown``: completion runs apart from
        typing, and the screen is redrawn only where it changed, so ``shown`` is what only the keys could write."""
        self.child.send(keys)
        self.child.expect_exact(shown)

    def leave(self) -> int:
        self.child.sendeof()
        self.child.expect(pexpect.EOF)
        self.child.close()
        return self.child.exitstatus


@pytest.fixture
def terminal(kernel: KernelProcess, tmp_path: Path) -> Iterator[Terminal]:
    shell = Terminal(kernel.url, tmp_path)
    yield shell
    if shell.child.isalive():
        shell.child.terminate(force=True)


def test_help_chat_and_leaving_with_ctrl_d(terminal: Terminal) -> None:
    assert "connected to AIOS" in terminal.banner and "SmolLM2-135M-Instruct" in terminal.banner
    listed = terminal.run("help")
    for usage in ("cat FILE [--version N]", "rollback FILE [N]", "recall QUERY", "submit AGENT_ID TASK", "top [SECONDS]"):
        assert usage in listed
    assert "Paris" in terminal.run("What is the capital of France?")  # a plain line: the model answers (or acts)
    assert "Paris" in terminal.run("chat Say again which city you named.")  # the conversation is kept, streamed
    assert terminal.leave() == 0


def test_files_write_cat_history_rollback_share_search(terminal: Terminal) -> None:
    assert "(version 1)" in terminal.run("write trip.txt Visit Kyoto in April for the cherry blossoms.")
    assert "(version 2)" in terminal.run("write trip.txt Visit Oslo in May.")
    assert "Visit Oslo in May." in terminal.run("cat trip.txt")
    history = terminal.run("history trip.txt")
    assert re.search(r"2\s+\S+\s+write", history) and re.search(r"1\s+\S+\s+write", history)
    assert "back to the content of version 1 as version 3" in terminal.run("rollback trip.txt")
    assert "Kyoto" in terminal.run("cat trip.txt")
    assert "Oslo" in terminal.run("cat trip.txt --version 2")
    assert re.search(r"trip\.txt\s+file\s+\d+\s+3", terminal.run("ls"))
    link = re.search(r"(http://\S+/share/\S+)", terminal.run("share trip.txt")).group(1)
    assert "Kyoto" in httpx.get(link).text
    assert "trip.txt" in terminal.run("search cherry blossoms in Japan")
    multi_line = terminal.run("write poem.txt")  # no TEXT: lines follow, up to one holding only '.'
    assert "a line holding only '.'" in multi_line
    for line in ("roses are red", "violets are blue"):
        terminal.run(line)
    assert "(version 1)" in terminal.run(".")
    assert "roses are red\r\nviolets are blue" in terminal.run("cat poem.txt")


def test_tab_completes_commands_and_files_and_up_recalls_history(terminal: Terminal, tmp_path: Path) -> None:
    terminal.run("write completion-notes.txt Tab found me.")
    versions = re.compile(r"1\s+\S+\s+write\s+13\s+term/tester")
    terminal.press("hist\t", "ory")  # `history `
    terminal.press("completion-n\t", "otes.txt")  # a file the shell has seen (written, or in `ls`)
    assert versions.search(terminal.run(""))
    terminal.press("\x1b[A", "completion-notes.txt")  # Up: the line before
    assert versions.search(terminal.run(""))
    assert terminal.leave() == 0
    assert "history completion-notes.txt" in (tmp_path / ".aios_history").read_text()  # kept for the next session


def test_memories_remember_recall_forget(terminal: Terminal) -> None:
    memory_id = re.search(r"remembered as (\S+)", terminal.run("remember Priya's birthday is on March 14.")).group(1)
    assert memory_id in terminal.run("recall When does Priya celebrate?")
    assert f"forgot {memory_id}" in terminal.run(f"forget {memory_id}")
    assert f"error [404]: no memory '{memory_id}'" in terminal.run(f"forget {memory_id}")
    assert memory_id not in terminal.run("recall When does Priya celebrate?")


def test_tools_listed_and_called(terminal: Terminal) -> None:
    listed = terminal.run("tools")
    assert "aios/calculator" in listed and "aios/delete_file" in listed
    assert '"result": 84' in terminal.run('tool aios/calculator {"expression": "12*7"}')


def test_agents_submit_wait_logs_ps_and_top(terminal: Terminal) -> None:
    execution_id = re.search(r"execution (\d+) started", terminal.run("submit example/chat What is 2+2?")).group(1)
    assert f"execution {execution_id}: completed" in terminal.run(f"wait {execution_id}")
    assert re.search(rf"\b{execution_id}\s+example/chat\s+completed", terminal.run("agents"))
    terminal.run(f"logs {execution_id}")  # the example agent prints nothing: the command answers all the same
    assert "error [409]" in terminal.run(f"cancel {execution_id}")  # already ended
    terminal.child.sendline("top 0.2")
    terminal.child.expect("preemptions")
    terminal.child.expect("SmolLM2-135M-Instruct")
    terminal.child.send("q")  # any key ends the view
    terminal._until_prompt()
    assert "Paris" in terminal.run("What is the capital of France?")  # the keyboard is the shell's again


BAD_LINES = [  # what was typed, what the one-line error says
    ("cat", "error: takes 1 to 3 argument(s), not 0 (usage: cat FILE [--version N])"),
    ("cat kept.txt --version", "error: --version needs a number"),
    ("cat kept.txt --version two", "error: the version must be a whole number, not 'two'"),
    ("cat kept.txt --version 9", "error [404]"),
    ("cat missing.txt", "error [404]: no file missing.txt"),
    ('cat "kept.txt', "error: cannot read the arguments: No closing quotation"),
    ("write", "error: FILE is missing (usage: write FILE [TEXT])"),
    ("history missing.txt", "error [404]"),
    ("rollback kept.txt x", "error: N must be a whole number, not 'x' (usage: rollback FILE [N])"),
    ("rollback kept.txt 5", "error [404]"),
    ("share", "error: takes 1 argument(s), not 0"),
    ("search", "error: QUERY is missing"),
    ("../../etc/passwd", None),  # not a command: it goes to the model (answered, not refused)
    ("cat ../../etc/passwd", "error [403]"),
    ("remember", "error: TEXT is missing"),
    ("forget", "error: takes 1 argument(s), not 0 (usage: forget ID)"),
    ("tool", "error: NAME is missing"),
    ("tool aios/calculator {bad", "error: the parameters are not JSON"),
    ("tool aios/calculator [1]", "error: the parameters must be a JSON object"),
    ("tool nope/none {}", "error [404]: this kernel has no tool named 'nope/none'"),
    ('tool aios/calculator {"expression": 7}', "error [400]"),
    ("tools now", "error: takes 0 argument(s), not 1"),
    ("submit", "error: AGENT_ID is missing"),
    ("submit example/chat", "error: TASK is missing"),
    ("submit example/nope do it", "error [404]"),
    ("logs abc", "error: ID must be a whole number, not 'abc' (usage: logs ID)"),
    ("logs 99999", "error [404]: no agent execution 99999"),
    ("wait 99999", "error [404]"),
    ("cancel 99999", "error [404]"),
    ("top fast", "error: SECONDS must be a number, not 'fast'"),
    ("top 0", "error: SECONDS must be between 0.1 and 60"),
    ("help frobnicate", "error: no command 'frobnicate'; `help` lists them"),
    ("do", "error: TEXT is missing"),
]


def test_bad_commands_and_arguments_each_get_one_line_and_the_shell_goes_on(terminal: Terminal) -> None:
    terminal.run("write kept.txt Nothing here may change.")
    for line, expected in BAD_LINES:
        said = terminal.run(line)
        if expected is None:
            assert "error" not in said, (line, said)
            continue
        errors = [text for text in said.splitlines() if text.startswith("error")]
        assert len(errors) == 1 and errors[0].startswith(expected), (line, said)
    assert re.search(r"kept\.txt\s+file\s+\d+\s+1\b", terminal.run("ls"))  # nothing changed: still version 1
    assert "Nothing here may change." in terminal.run("cat kept.txt")
    assert terminal.leave() == 0


@pytest.mark.parametrize("agent", ["term/a[/]", "term/[bold]x"], ids=["closing-tag", "opening-tag"])
def test_names_that_look_like_markup_are_shown_as_written(kernel: KernelProcess, tmp_path: Path, agent: str) -> None:
    shell = Terminal(kernel.url, tmp_path, agent=agent)
    assert f"as {agent} (models:" in shell.banner
    assert "(version 1)" in shell.run("write [red]notes.txt Plain.")
    assert "[red]notes.txt" in shell.run("ls")  # a table shows it as written too
    assert shell.leave() == 0


ASKED = re.compile(r"(\S+ \{.*\}) cannot simply be undone\. Run it\?")


def test_do_shows_each_call_and_asks_before_an_irreversible_one(kernel: KernelProcess, tmp_path: Path) -> None:
    """The real model proposes what it proposes; whatever the kernel counts as irreversible is asked about, and
    the answer decides whether it runs."""
    shell = Terminal(kernel.url, tmp_path, "--max-new-tokens", "64", agent="term/doer")  # room for a tool call
    shell.run("write notes.txt Remove me later.")
    plan = shell.run("do delete the file notes.txt")
    assert "the model proposes" in plan
    # The question, asked after the plan (and the results of any calls before it):
    asked = ASKED.search(ANSI.sub("", shell.child.before))
    assert asked is not None, plan
    assert f"{asked.group(1)}  (asks first)" in plan  # the call asked about was shown, marked, in the plan
    assert f"not run: {asked.group(1)}" in shell.run("n")
    assert "Remove me later." in shell.run("cat notes.txt")  # declined: nothing ran
    shell.run("do delete the file notes.txt")
    done = shell.run("y")
    assert re.search(rf"{re.escape(asked.group(1))} -> .*\"deleted notes.txt", done), done  # its real result
    assert "error [404]" in shell.run("cat notes.txt")
    assert "Remove me later." in shell.run("cat notes.txt --version 1")  # the history keeps it
    assert shell.leave() == 0


@pytest.fixture
def scripted(tmp_path: Path) -> Iterator[tuple[Provider, KernelProcess]]:
    """A kernel whose model is an OpenAI-compatible MOCK (a scripted provider on loopback): the embedded model,
    offered tools with tool_choice auto, answers in prose, so only a scripted model proposes the exact calls the
    confirmation path needs. Everything else is real: the kernel (asking, per its config, about deletions
    only), its tools and storage, the terminal."""
    provider = Provider()
    config = tmp_path / "config.yaml"
    config.write_text(f"llms:\n  models:\n    - {{name: scripted, backend: vllm, hostname: '{provider.url}'}}\n"
                      "access:\n  confirm:\n    operations: [delete]\n")
    kernel = start_kernel(["--config", str(config)], {**os.environ, "AIOS_DATA_DIR": str(tmp_path / "data")},
                          tmp_path / "kernel.log")
    yield provider, kernel
    stop_kernel(kernel)
    provider.server.shutdown()
    provider.server.server_close()


def test_a_plain_line_may_act_asking_first_only_about_what_the_kernel_counts_irreversible(
        scripted: tuple[Provider, KernelProcess], tmp_path: Path) -> None:
    provider, kernel = scripted
    shell = Terminal(kernel.url, tmp_path, "--max-new-tokens", "64")
    shell.run("write notes.txt First words.")
    shell.run("write notes.txt Second words.")
    tidy = [("aios__rollback_file", '{"file_path": "notes.txt", "n": 1}'),
            ("aios__delete_file", '{"file_path": "notes.txt"}')]
    provider.script = [(200, completion(calls=tidy)), (200, completion(calls=tidy[1:])),
                       (200, completion(content="Nothing more to do."))]
    plan = shell.run("tidy up my notes")
    assert 'aios/rollback_file {"file_path": "notes.txt", "n": 1}\r\n' in plan  # not asked: not in the kernel's list
    assert "back to the content of version 1 as version 3" in plan  # ran at once, its real result shown
    assert 'aios/delete_file {"file_path": "notes.txt"}  (asks first)' in plan
    assert 'not run: aios/delete_file {"file_path": "notes.txt"}' in shell.run("n")
    assert "First words." in shell.run("cat notes.txt")  # declined: still there
    shell.run("now delete it")
    assert re.search(r'aios/delete_file \{"file_path": "notes.txt"\} -> .*"deleted notes.txt', shell.run("y"))
    assert "error [404]" in shell.run("cat notes.txt")
    assert "Nothing more to do." in shell.run("anything else?")  # prose is an answer
    offered = provider.received[0]
    assert offered["tool_choice"] == "auto"
    assert any(tool["function"]["name"] == "aios__delete_file" for tool in offered["tools"])
    said = [m["content"] for m in provider.received[-1]["messages"] if m["role"] == "assistant"]
    assert any("deleted notes.txt" in text for text in said)  # what was done stays in the conversation
    assert shell.leave() == 0


def test_a_token_is_sent_and_a_bad_one_refused_at_the_start(kernel: KernelProcess, data_dir: Path,
                                                            tmp_path: Path) -> None:
    admin = {"Authorization": f"Bearer {(data_dir / 'access' / 'admin.token').read_text().strip()}"}
    name = "term/with-token"  # its own name: once it has a token, requests without it cannot act as it
    token = httpx.post(f"{kernel.url}/access/agents", json={"agent_name": name}, headers=admin).json()["token"]
    shell = Terminal(kernel.url, tmp_path, "--token", token, agent=name)
    assert "(version 1)" in shell.run("write token-notes.txt Written with a token.")
    assert shell.leave() == 0
    tokenless = Terminal(kernel.url, tmp_path, agent=name)
    assert f"error [401]: agent '{name}' has a token" in tokenless.run("cat token-notes.txt")
    assert tokenless.leave() == 0
    other = Terminal(kernel.url, tmp_path, "--token", token, agent="term/someone-else")
    assert "error [403]" in other.run("cat token-notes.txt")  # a token acts as its own agent only
    assert other.leave() == 0
    refused = aios("terminal", "--url", kernel.url, "--token", "not-a-token", data_dir=data_dir)
    assert refused.returncode == 1 and "error [401]: the bearer token is not valid" in refused.stdout
    assert httpx.delete(f"{kernel.url}/access/agents/{name}", headers=admin).status_code == 200


@pytest.mark.parametrize("flags, code, says", [
    (["--agent", ""], 2, "--agent must be a name without spaces, not ''"),
    (["--agent", "two words"], 2, "--agent must be a name without spaces"),
    (["--max-new-tokens", "0"], 2, "--max-new-tokens"),
    (["--temperature", "3"], 2, "--temperature"),
    (["--url", "http://127.0.0.1:9"], 1, "cannot reach the kernel at http://127.0.0.1:9"),
    (["--url", "not a url"], 1, "error"),
])
def test_bad_flags_stop_with_one_clear_line(flags: list[str], code: int, says: str, data_dir: Path) -> None:
    result = aios("terminal", *flags, data_dir=data_dir, stdin="")
    assert result.returncode == code, result
    assert says in result.stdout + result.stderr
