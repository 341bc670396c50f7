"""The web UI in a real browser: Playwright driving Chromium against the shared test kernel (real model, real
HTTP, real agent processes). Chromium is Debian's package (installed here with apt-get when missing and the tests
run as root) or Playwright's own download; without one that starts, the tests skip and say why. Each test takes
a screenshot of its page; `make screenshots` keeps them in docs/ui/ (the README shows one), a plain test run
writes nothing into the repository."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest

from conftest import KernelProcess
from ui_support import Secured, secured_kernel

# Where screenshots are kept: $AIOS_UI_SCREENSHOTS (`make screenshots` sets docs/ui); nowhere otherwise.
SCREENSHOTS = Path(os.environ["AIOS_UI_SCREENSHOTS"]) if os.environ.get("AIOS_UI_SCREENSHOTS") else None
DESKTOP = {"width": 1100, "height": 760}
PHONE = {"width": 390, "height": 844}
AGENT = "ui-test/browser"
WAIT_MS = 120_000  # the longest a page may take to show what the test waits for (a model on 2 cores)


def _chromium() -> str | None:
    """Debian's chromium, installed when missing and this is root with apt-get (a package registry is reachable
    here); None leaves it to Playwright's own download."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None and os.geteuid() == 0 and shutil.which("apt-get"):
        subprocess.run(["apt-get", "install", "-y", "-q", "chromium"], capture_output=True, timeout=900)
        found = shutil.which("chromium")
    return found


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as exc:
        pytest.skip(f"playwright is not installed ({exc}): `make install` installs it")
    with sync_playwright() as playwright:
        try:
            launched = playwright.chromium.launch(executable_path=_chromium(), args=["--no-sandbox"])
        except Exception as exc:  # noqa: BLE001 - whatever stops the browser, the tests say so and skip
            reason = f"no Chromium could run here: {type(exc).__name__}: {str(exc).splitlines()[0]}"
            print(reason)
            pytest.skip(reason)
        yield launched
        launched.close()


@pytest.fixture
def page(browser: Any, kernel: KernelProcess) -> Iterator[Any]:
    context = browser.new_context(viewport=DESKTOP, base_url=kernel.url)
    context.set_default_timeout(WAIT_MS)
    context.add_init_script(f"localStorage.setItem('aios-agent', '{AGENT}')")
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
    yield page
    context.close()
    assert errors == [], errors  # no script error, nothing the page's security policy refused


def screenshot(page: Any, name: str) -> None:
    if SCREENSHOTS is None:
        assert page.screenshot()  # the page renders to an image
        return
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"))


def test_a_chat_reply_streams_into_the_page(page: Any) -> None:
    page.goto("/ui/#chat")
    page.wait_for_selector("#main select option:nth-child(2)", state="attached")  # the models are listed
    # Count the pieces the reply is written in, as they arrive (a reply shown only once whole would be one).
    page.evaluate("""() => { window.pieces = 0; new MutationObserver((records) => {
        for (const r of records) if (r.target.classList?.contains('assistant') && r.addedNodes.length) window.pieces++;
      }).observe(document.querySelector('.messages'), {childList: true, subtree: true}); }""")
    page.get_by_label("Max new tokens", exact=True).fill("24")
    page.get_by_label("Temperature", exact=True).fill("0")
    page.get_by_label("Message", exact=True).fill("What is the capital of France?")
    page.get_by_label("Message", exact=True).press("Enter")  # the keyboard sends
    page.wait_for_selector(".message.assistant .meta")
    reply = page.locator(".message.assistant").inner_text()
    assert "Paris" in reply and page.evaluate("window.pieces") > 2
    screenshot(page, "chat")


def test_an_agent_submitted_from_the_page_runs_to_the_end(page: Any) -> None:
    page.goto("/ui/#agents")
    page.get_by_label("Agent", exact=True).fill("example/chat")
    page.get_by_label("Task", exact=True).fill("What is the capital of France?")
    page.get_by_role("button", name="Submit").click()
    page.wait_for_selector("[role=status]:has-text('completed')")
    row = page.locator("tbody tr").first
    assert row.get_attribute("data-status") == "completed"
    row.get_by_role("button", name="Logs").click()
    page.wait_for_selector("h3:has-text('Logs of execution')")
    screenshot(page, "agents")


def write_versions(page: Any, file_path: str, *texts: str) -> None:
    """Write each text as the file's next version from the Files page, waiting until the page shows it."""
    page.goto("/ui/#storage")
    for text in texts:
        page.get_by_label("File", exact=True).fill(file_path)
        page.get_by_label("Content", exact=True).fill(text)
        page.get_by_role("button", name="Write").click()
        page.wait_for_selector(f"pre[aria-label='Current content']:has-text('{text}')")
    assert page.locator("tbody tr").count() == len(texts)


def test_a_file_written_then_rolled_back_from_the_page(page: Any) -> None:
    write_versions(page, "trips/plan.txt", "Visit Kyoto in April for the cherry blossoms.", "Visit Oslo in April.")
    page.get_by_role("button", name="Compare").click()
    page.wait_for_selector(".diff .removed:has-text('Kyoto')")
    assert "Oslo" in page.locator(".diff .added").inner_text()
    page.get_by_role("button", name="Roll back one version").click()
    page.wait_for_selector("pre[aria-label='Current content']:has-text('Kyoto')")
    assert "rollback (from v1)" in page.locator("tbody tr").first.inner_text()
    page.get_by_role("button", name="Share link").click()
    link = page.wait_for_selector("a[href*='/share/']").get_attribute("href")
    assert "Kyoto" in httpx.get(link).text
    screenshot(page, "storage")


def test_a_file_restored_to_version_n_from_its_history(page: Any) -> None:
    write_versions(page, "drafts/essay.txt", "First draft.", "Second draft.", "Third draft.")
    page.get_by_role("button", name="Restore version 1").click()
    page.wait_for_selector("pre[aria-label='Current content']:has-text('First draft.')")
    assert "rollback (from v1)" in page.locator("tbody tr").first.inner_text()
    assert page.locator("tbody tr").count() == 4  # the restore is itself a version: it can be undone


def test_the_memory_page_lists_the_agent_s_memories_newest_first_without_a_search(page: Any,
                                                                                  kernel: KernelProcess) -> None:
    notes = [f"Listed note number {n}." for n in range(22)]  # more than one page of 20
    for note in notes:
        reply = httpx.post(f"{kernel.url}/query", timeout=60, json={
            "agent_name": AGENT, "query_type": "memory",
            "query_data": {"query_class": "memory", "operation_type": "add_memory", "params": {"content": note}}})
        assert reply.json()["response"]["success"], reply.text
    page.goto("/ui/#memory")
    listed = page.locator("ol[aria-label='Recent memories'] li")
    page.wait_for_selector("ol[aria-label='Recent memories'] li")
    assert notes[-1] in listed.first.inner_text() and listed.count() == 20
    assert notes[0] not in page.locator("ol[aria-label='Recent memories']").inner_text()
    page.get_by_role("button", name="More").click()
    page.wait_for_selector(f"ol[aria-label='Recent memories'] li:has-text('{notes[0]}')")


def test_a_memory_found_by_meaning_from_the_page(page: Any) -> None:
    page.goto("/ui/#memory")
    for note in ("Priya's birthday is on March 14; she loves orchids.", "The office printer jams on Mondays."):
        page.get_by_label("Note", exact=True).fill(note)
        page.get_by_label("Tags", exact=True).fill("friends")
        page.get_by_role("button", name="Remember").click()
        page.wait_for_selector("[role=status]:has-text('Remembered as')")
        page.locator("[role=status]").evaluate("node => node.textContent = ''")
    page.get_by_label("Search", exact=True).fill("When does Priya celebrate?")
    page.get_by_label("Results", exact=True).fill("1")
    page.get_by_label("Search", exact=True).press("Enter")
    page.wait_for_selector("ol[aria-label='Search results'] li")
    assert "Priya" in page.locator("ol[aria-label='Search results'] li").inner_text()
    screenshot(page, "memory")


def test_a_tool_called_from_a_form_made_from_its_schema(page: Any) -> None:
    page.goto("/ui/#tools")
    page.get_by_role("button", name="Use aios/calculator").click()
    page.get_by_label("expression", exact=True).fill("12*7")
    page.get_by_role("button", name="Call aios/calculator").click()
    page.wait_for_selector("pre[aria-label=Result]:has-text('84')")
    screenshot(page, "tools")


def test_the_scheduler_view_follows_eight_agents_as_they_run(page: Any, kernel: KernelProcess) -> None:
    page.goto("/ui/#scheduler")
    page.wait_for_selector("[role=status]:has-text('Live')")
    for n in range(8):
        task = {"task": f"Name a city in country number {n}."}
        assert kernel.client.post("/agents/submit", json={"agent_id": "example/chat", "agent_config": task}).status_code == 200
    # Seen live: LLM syscalls of the agents running at once on the model, then all eight ended.
    page.wait_for_function("() => document.querySelectorAll('.lane[data-status=running]').length >= 2")
    screenshot(page, "scheduler")  # while they run
    page.wait_for_function("""() => [...document.querySelectorAll('.lane[data-status=done]')]
        .filter((lane) => lane.textContent.includes('· llm')).length >= 8""")


def test_the_pages_fit_a_phone_screen(browser: Any, kernel: KernelProcess) -> None:
    context = browser.new_context(viewport=PHONE, base_url=kernel.url, is_mobile=True)
    page = context.new_page()
    for name in ("chat", "scheduler", "agents", "storage", "memory", "tools"):
        page.goto(f"/ui/#{name}")
        page.wait_for_selector("#main h2")
        assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth"), name
    page.goto("/ui/#scheduler")
    page.wait_for_selector("[role=status]:has-text('Live')")
    screenshot(page, "scheduler-phone")
    context.close()


def test_the_keyboard_reaches_every_page(page: Any) -> None:
    page.goto("/ui/")
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.textContent") == "Skip to content"
    for expected in ("Chat", "Scheduler", "Agents", "Files", "Memory", "Tools"):
        page.keyboard.press("Tab")
        assert page.evaluate("document.activeElement.textContent") == expected
    page.keyboard.press("Enter")
    page.wait_for_selector("#main h2:has-text('Tools')")
    assert page.evaluate("document.activeElement.id") == "main"


def test_a_token_this_kernel_never_needed_does_not_keep_the_page_out(browser: Any, kernel: KernelProcess) -> None:
    """An old address with a token in it, on a kernel that requires none: the login page lets the page open."""
    context = browser.new_context(viewport=DESKTOP, base_url=kernel.url)
    context.set_default_timeout(WAIT_MS)
    page = context.new_page()
    page.goto("/as/aios_forged/ui/#tools")
    page.wait_for_url(f"{kernel.url}/ui/#tools")
    page.wait_for_selector("#main h2:has-text('Tools')")
    assert not page.evaluate("() => document.getElementById('agent').readOnly")
    context.close()


@pytest.fixture(scope="module")
def secured(backend: Any, data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Secured]:
    with secured_kernel(data_dir, tmp_path_factory.mktemp("ui-browser-secured")) as kernel:
        yield kernel


def test_a_kernel_that_requires_tokens_asks_for_one_and_the_page_acts_as_its_agent(browser: Any,
                                                                                    secured: Secured) -> None:
    """The page asks for a token, keeps it out of every address (history, bookmarks and a proxy's logs would keep
    it), and acts as its agent: the agent's name is fixed, its files are its own, its scheduler feed is live."""
    context = browser.new_context(viewport=DESKTOP, base_url=secured.kernel.url)
    context.set_default_timeout(WAIT_MS)
    page = context.new_page()
    page.goto("/ui/#scheduler")
    page.wait_for_url("**/ui/login.html?reason=missing#scheduler")
    page.get_by_label("Token", exact=True).fill("aios_“pasted”")  # no header can carry it: refused at once
    page.get_by_role("button", name="Open the web UI").click()
    assert "no spaces: copy it again" in page.text_content("#reason")
    page.get_by_label("Token", exact=True).fill(secured.alice)
    page.get_by_role("button", name="Open the web UI").click()
    page.wait_for_function("() => document.getElementById('agent')?.readOnly")
    assert page.input_value("#agent") == "alice" and page.url.endswith("/ui/#scheduler")  # the view asked for
    page.wait_for_selector("[role=status]:has-text('Live')")
    page.get_by_role("link", name="Files").click()
    page.get_by_label("File", exact=True).fill("alice.txt")
    page.get_by_label("Content", exact=True).fill("Only mine.")
    page.get_by_role("button", name="Write").click()
    page.wait_for_selector("pre[aria-label='Current content']:has-text('Only mine.')")
    history = secured.client(secured.alice).post("/query", json={"agent_name": "alice", "query_type": "storage",
                                                                 "query_data": {"operation_type": "history",
                                                                                "params": {"file_path": "alice.txt"}}})
    assert '"agent": "alice"' in history.json()["response"]["response_message"]
    assert secured.alice not in " ".join(entry for entry in page.evaluate("() => [location.href, document.referrer]"))
    context.close()


def test_a_token_revoked_while_the_page_is_open_sends_it_to_the_login_page(browser: Any, secured: Secured) -> None:
    admin = secured.client(secured.admin)
    carol = admin.post("/access/agents", json={"agent_name": "carol"}).json()["token"]
    context = browser.new_context(viewport=DESKTOP, base_url=secured.kernel.url)
    context.set_default_timeout(WAIT_MS)
    page = context.new_page()
    page.goto(f"/as/{carol}/ui/#tools")
    page.wait_for_function("() => document.getElementById('agent')?.readOnly")
    assert admin.delete("/access/agents/carol").status_code == 200
    page.get_by_role("link", name="Files").click()  # the page lists the agent's files: refused
    page.wait_for_url("**/ui/login.html?reason=refused#storage")
    assert "refused the token" in page.text_content("#reason")
    assert page.evaluate("() => sessionStorage.getItem('aios-token')") is None
    context.close()


def test_an_address_of_the_older_form_moves_its_token_out_of_the_address(browser: Any, secured: Secured) -> None:
    context = browser.new_context(viewport=DESKTOP, base_url=secured.kernel.url)
    context.set_default_timeout(WAIT_MS)
    page = context.new_page()
    page.goto(f"/as/{secured.alice}/ui/#tools")
    page.wait_for_function("() => document.getElementById('agent')?.readOnly")
    assert page.url == f"{secured.kernel.url}/ui/#tools" and page.input_value("#agent") == "alice"
    context.close()
