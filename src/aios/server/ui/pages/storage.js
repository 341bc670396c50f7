// The agent's files: list, read, write, version history, the diff of two versions, rollback (one version, or
// back to any version of the history) and share links — every one a storage syscall through /query.
import { operation } from "../api.js";
import { agentName, attempt, el, field, statusLine, time } from "../ui.js";
import { diffLines } from "./diff.js";

const storage = (op, params) => operation(agentName(), "storage", op, params);

export function render(main) {
  const status = statusLine();
  const listing = el("ul", { "aria-label": "Files" });
  const path = el("input", { name: "file_path", required: true, spellcheck: "false", placeholder: "notes/plan.txt" });
  const content = el("textarea", { name: "content" });
  const save = el("button", { type: "submit" }, "Write");
  const detail = el("section", { "aria-label": "Open file" });
  const editor = el("form", { "aria-label": "Write a file" }, field("File", path), field("Content", content), save);

  async function list() {
    const reply = await storage("list", { recursive: true });
    const files = reply.entries.filter((entry) => entry.type === "file");
    listing.replaceChildren(...(files.length ? files.map((entry) => el("li", {},
      el("button", { type: "button", class: "list-button", onclick: () => attempt(status, null, () => open(entry.file_path)) }, entry.file_path)))
      : [el("li", {}, "No files yet: write one below.")]));
  }

  async function open(filePath) {
    const [file, history] = await Promise.all([storage("read", { file_path: filePath }), storage("history", { file_path: filePath })]);
    path.value = filePath;
    content.value = file.content;
    const versions = history.versions.slice().sort((a, b) => b.version - a.version); // newest first
    const choose = (selected) => el("select", {}, versions.map((v) => el("option", { value: v.version, selected: v.version === selected }, `v${v.version}`)));
    const older = choose(versions[Math.min(1, versions.length - 1)].version);
    const newer = choose(versions[0].version);
    const diffView = el("pre", { class: "diff", "aria-label": "Differences" });
    const compare = el("button", { type: "button", class: "secondary" }, "Compare");
    const rollback = el("button", { type: "button", class: "secondary" }, "Roll back one version");
    const share = el("button", { type: "button", class: "secondary" }, "Share link");
    const link = el("p");
    compare.addEventListener("click", () => attempt(status, compare, async () => {
      const [a, b] = await Promise.all([older, newer].map((s) => storage("read", { file_path: filePath, version: Number(s.value) })));
      diffView.replaceChildren(...diffLines(a.content, b.content).map(([mark, line]) =>
        el("div", { class: mark === "+" ? "added" : mark === "-" ? "removed" : "" }, `${mark} ${line}`)));
    }));
    // The rollback syscall counts back from the newest version: version v of a file whose newest is N is n = N - v.
    const restore = (button, n) => attempt(status, button, async () => {
      status.show((await storage("rollback", { file_path: filePath, n })).message);
      await open(filePath);
    });
    rollback.addEventListener("click", () => restore(rollback, 1));
    const restoreButton = (v) => {
      if (v.version === versions[0].version) return "current";
      const button = el("button", { type: "button", class: "secondary", "aria-label": `Restore version ${v.version}` }, `Restore v${v.version}`);
      button.addEventListener("click", () => restore(button, versions[0].version - v.version));
      return button;
    };
    share.addEventListener("click", () => attempt(status, share, async () => {
      const reply = await storage("share", { file_path: filePath });
      link.replaceChildren("Link: ", el("a", { href: reply.url, target: "_blank", rel: "noopener" }, reply.url), ` (expires ${time(reply.expires_at)})`);
    }));
    detail.replaceChildren(el("h3", {}, filePath), el("pre", { "aria-label": "Current content" }, file.content),
      el("h3", {}, "History"), el("div", { class: "scroll" }, el("table", {},
        el("thead", {}, el("tr", {}, ["Version", "Kind", "When", "Size", "By", "Restore"].map((n) => el("th", { scope: "col" }, n)))),
        el("tbody", {}, versions.map((v) => el("tr", {}, el("td", {}, `v${v.version}`), el("td", {}, v.kind + (v.restored_from ? ` (from v${v.restored_from})` : "")),
          el("td", {}, time(v.time)), el("td", {}, String(v.size ?? "—")), el("td", {}, v.agent ?? "outside"), el("td", {}, restoreButton(v))))))),
      el("div", { class: "row" }, field("Older", older), field("Newer", newer), compare, rollback, share), link, diffView);
  }

  editor.addEventListener("submit", (event) => {
    event.preventDefault();
    attempt(status, save, async () => {
      status.show((await storage("write", { file_path: path.value.trim(), content: content.value })).message);
      await list();
      await open(path.value.trim());
    });
  });

  main.append(el("h2", {}, "Files"), status, el("h3", {}, "In this agent's mount"), listing, editor, detail);
  attempt(status, null, list);
}
