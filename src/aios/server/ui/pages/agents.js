// Agents: submit one (/agents/submit), follow its status until it ends (a long poll on /agents/{id}/status),
// read its logs, cancel it; the list is /agents/ps.
import { call } from "../api.js";
import { attempt, el, field, statusLine, time } from "../ui.js";

const EXAMPLES = ["example/chat", "example/calculator", "example/weather", "example/rememberer", "example/archivist", "example/extractor"];

export function render(main) {
  const agentId = el("input", { name: "agent_id", required: true, list: "agent-examples", value: "example/chat", spellcheck: "false" });
  const task = el("textarea", { name: "task", required: true }, "What is the capital of France?");
  const submit = el("button", { type: "submit" }, "Submit");
  const status = statusLine();
  const rows = el("tbody");
  const logs = el("section", { "aria-label": "Logs" });
  const form = el("form", { "aria-label": "Submit an agent" },
    el("datalist", { id: "agent-examples" }, EXAMPLES.map((name) => el("option", { value: name }))),
    field("Agent", agentId, "an example, a hub package (author/name) or a path the kernel can read"), field("Task", task), submit, status);

  async function refresh() {
    const { processes } = await call("/agents/ps");
    rows.replaceChildren(...processes.slice().reverse().map(row));
  }

  async function follow(id) {
    for (;;) {
      const reply = await call(`/agents/${id}/status?wait=30`);
      await refresh();
      if (reply.status !== "running" && reply.status !== "queued") {
        status.show(`Execution ${id} ${reply.status}${reply.error ? ": " + reply.error : ""}`, reply.status === "failed");
        return;
      }
    }
  }

  function row(run) {
    const showLogs = el("button", { type: "button", class: "secondary" }, "Logs");
    const cancel = el("button", { type: "button", class: "secondary", disabled: run.ended_at !== null }, "Cancel");
    showLogs.addEventListener("click", () => attempt(status, showLogs, async () => {
      const reply = await call(`/agents/${run.id}/logs`);
      logs.replaceChildren(el("h3", {}, `Logs of execution ${run.id}`), el("h4", {}, "stdout"), el("pre", {}, reply.stdout || "(empty)"),
        el("h4", {}, "stderr"), el("pre", {}, reply.stderr || "(empty)"));
    }));
    cancel.addEventListener("click", () => attempt(status, cancel, async () => {
      status.show((await call(`/agents/${run.id}/cancel`, { method: "POST" })).message);
      await refresh();
    }));
    return el("tr", { "data-execution": run.id, "data-status": run.status },
      el("td", {}, String(run.id)), el("td", {}, run.agent_id), el("td", {}, run.status),
      el("td", {}, time(run.submitted_at)), el("td", { class: "row" }, showLogs, cancel));
  }

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    attempt(status, submit, async () => {
      const reply = await call("/agents/submit", { method: "POST", body: { agent_id: agentId.value.trim(), agent_config: { task: task.value } } });
      status.show(reply.message);
      await refresh();
      await follow(reply.execution_id);
    });
  });

  main.append(el("h2", {}, "Agents"), form, el("h3", {}, "Executions"),
    el("div", { class: "scroll" }, el("table", {},
      el("thead", {}, el("tr", {}, ["Id", "Agent", "Status", "Submitted", "Actions"].map((name) => el("th", { scope: "col" }, name)))), rows)),
    logs);
  attempt(status, null, refresh);
}
