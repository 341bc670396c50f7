// The scheduler, live: per model what runs and waits, the kernel's queues, and each syscall's slices on a
// timeline, from the server-sent events of /scheduler/events.
import { serverEvents } from "../api.js";
import { el, statusLine } from "../ui.js";

const WINDOW_S = 60; // the timeline shows at most the last minute
const RECONNECT_MS = 3000; // as EventSource waits before it connects again

function card(title, values) {
  const rows = Object.entries(values).flatMap(([name, value]) => [el("dt", {}, name), el("dd", {}, String(value ?? "—"))]);
  return el("div", { class: "card" }, el("strong", {}, title), el("dl", {}, rows));
}

function lane(syscall, from, span, now) {
  const track = el("div", { class: "track" });
  const place = (start, end, kind) => {
    const left = ((Math.max(start, from) - from) / span) * 100;
    const width = ((Math.min(end, now) - Math.max(start, from)) / span) * 100;
    const slice = el("span", { class: `slice ${kind}` });
    slice.style.left = `${left}%`; // set through the CSSOM: the page's policy allows no inline style attributes
    slice.style.width = `${Math.max(width, 0)}%`;
    track.append(slice);
  };
  if (!syscall.slices.length && !["done", "failed", "cancelled"].includes(syscall.status)) place(syscall.created, now, "waiting");
  for (const [start, end] of syscall.slices) place(start, end ?? now, end === null ? "open" : "");
  const label = `#${syscall.id} ${syscall.agent} · ${syscall.kind}${syscall.model ? " · " + syscall.model : ""}`;
  const summary = `${label}: ${syscall.status}, ${syscall.slices.length} slice(s), ${syscall.preemptions} preemption(s)`;
  return el("div", { class: "lane", role: "listitem", "aria-label": summary, "data-status": syscall.status },
    el("span", { class: "label", title: summary }, `${label} — ${syscall.status}`), track);
}

function draw(view, snapshot) {
  const now = snapshot.time;
  const shown = snapshot.syscalls.filter((s) => !s.slices.length || (s.slices.at(-1)[1] ?? now) >= now - WINDOW_S);
  const from = Math.max(Math.min(now - 1, ...shown.map((s) => s.created)), now - WINDOW_S);
  const span = Math.max(now - from, 1e-3);
  view.models.replaceChildren(...snapshot.models.map((m) => card(m.name, {
    state: m.state, running: m.running, waiting: m.waiting, preemptions: m.preemptions, "max batch": m.max_batch, policy: m.policy,
  })));
  view.queues.replaceChildren(...Object.entries(snapshot.queues).map(([kind, q]) => card(`${kind} queue`, {
    queued: q.queued, running: q.running, policy: q.policy,
  })));
  view.lanes.replaceChildren(...shown.slice().reverse().map((s) => lane(s, from, span, now)));
  view.caption.textContent = `${shown.length} syscall(s) over the last ${span.toFixed(1)} s · updated ${new Date(now * 1000).toLocaleTimeString()}`;
}

export function render(main) {
  const status = statusLine();
  const view = {
    models: el("div", { class: "cards", "aria-label": "Models" }),
    queues: el("div", { class: "cards", "aria-label": "Queues" }),
    caption: el("p", { class: "caption" }),
    lanes: el("div", { role: "list", "aria-label": "Syscalls, newest first" }),
  };
  const legend = el("div", { class: "legend" }, el("span", {}, "▮ green: a finished slice"), el("span", {}, "▮ blue: running now"),
    el("span", {}, "▯ dashed: queued, not yet running"), el("span", {}, "a gap: preempted, waiting to resume"));
  main.append(el("h2", {}, "Scheduler"), status, el("h3", {}, "Models"), view.models, el("h3", {}, "Queues"), view.queues,
    el("h3", {}, "Timeline"), legend, el("div", { class: "timeline" }, view.caption, view.lanes));
  status.show("Connecting…");
  const stop = new AbortController();
  follow(view, status, stop.signal);
  return () => stop.abort();
}

// The feed until the view closes (``signal``), connecting again a few seconds after it is interrupted.
async function follow(view, status, signal) {
  while (!signal.aborted) {
    try {
      for await (const { event, data } of serverEvents("/scheduler/events", signal)) {
        if (event !== "snapshot") continue;
        status.show("Live");
        draw(view, JSON.parse(data));
      }
    } catch (error) {
      if (signal.aborted) return;
      if ([401, 403, 422].includes(error.status)) { // refused: connecting again would be refused too
        status.show(`${error.status}: ${error.message}`, true);
        return;
      }
    }
    if (signal.aborted) return;
    status.show("The event stream was interrupted; reconnecting…", true);
    await new Promise((resume) => setTimeout(resume, RECONNECT_MS));
  }
}
