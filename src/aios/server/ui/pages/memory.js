// The agent's memories: the most recent ones (a page at a time), add a note, search them by meaning and words,
// remove one — memory syscalls through /query.
import { operation } from "../api.js";
import { agentName, attempt, el, field, statusLine } from "../ui.js";

const memory = (op, params) => operation(agentName(), "memory", op, params);
const PAGE = 20; // memories listed at a time; "More" lists the next ones

export function render(main) {
  const status = statusLine();
  const note = el("textarea", { name: "content", required: true });
  const tags = el("input", { name: "tags", placeholder: "friends, birthdays", spellcheck: "false" });
  const add = el("button", { type: "submit" }, "Remember");
  const query = el("input", { name: "query", type: "search", required: true });
  const k = el("input", { name: "k", type: "number", min: "1", max: "100", value: "5" });
  const search = el("button", { type: "submit" }, "Search");
  const results = el("ol", { "aria-label": "Search results" });
  const recent = el("ol", { "aria-label": "Recent memories" });
  const more = el("button", { type: "button", class: "secondary", hidden: true }, "More");
  const adding = el("form", { "aria-label": "Add a memory" }, field("Note", note), field("Tags", tags, "comma-separated, optional"), add);
  const searching = el("form", { role: "search", "aria-label": "Search memories" },
    el("div", { class: "row" }, field("Search", query), field("Results", k), search));

  function result(found) {
    const remove = el("button", { type: "button", class: "secondary" }, "Forget");
    remove.addEventListener("click", () => attempt(status, remove, async () => {
      await memory("remove_memory", { memory_id: found.memory_id });
      status.show(`Forgot ${found.memory_id}`);
      if (query.value) searching.requestSubmit();
      await listRecent();
    }));
    const labels = (found.tags || []).join(", ");
    const about = [found.score === undefined ? found.timestamp : `score ${found.score}`, labels && `tags: ${labels}`, found.memory_id];
    return el("li", { class: "panel" }, el("p", {}, found.content), el("small", {}, about.filter(Boolean).join(" · ") + " "), remove);
  }

  // The most recent memories, newest first: the first page anew, or (more) the page after those shown.
  async function listRecent(next = false) {
    const offset = next ? recent.children.length : 0;
    const listed = (await memory("list_memories", { k: PAGE, offset })).search_results || [];
    if (next) recent.append(...listed.map(result));
    else recent.replaceChildren(...(listed.length ? listed.map(result) : [el("li", {}, "No memories yet: add one below.")]));
    more.hidden = listed.length < PAGE;
  }
  more.addEventListener("click", () => attempt(status, more, () => listRecent(true)));

  adding.addEventListener("submit", (event) => {
    event.preventDefault();
    const labels = tags.value.split(",").map((t) => t.trim()).filter(Boolean);
    attempt(status, add, async () => {
      const reply = await memory("add_memory", { content: note.value, metadata: labels.length ? { tags: labels } : {} });
      status.show(`Remembered as ${reply.memory_id}`);
      note.value = "";
      await listRecent();
    });
  });
  searching.addEventListener("submit", (event) => {
    event.preventDefault();
    attempt(status, search, async () => {
      const reply = await memory("retrieve_memory", { content: query.value, k: Number(k.value) || 5 });
      const found = reply.search_results || [];
      results.replaceChildren(...found.map(result));
      status.show(`${found.length} found`);
    });
  });

  main.append(el("h2", {}, "Memory"), status, searching, results, el("h3", {}, "Add a memory"), adding,
    el("h3", {}, "Recent memories"), recent, more);
  attempt(status, null, listRecent);
}
