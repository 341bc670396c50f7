// The page's router: each #name in the address shows that page; pages are modules with a render(main) that
// returns an optional cleanup (the scheduler view closes its event stream).
import { call, hasToken } from "./api.js";
import * as chat from "./pages/chat.js";
import * as scheduler from "./pages/scheduler.js";
import * as agents from "./pages/agents.js";
import * as storage from "./pages/storage.js";
import * as memory from "./pages/memory.js";
import * as tools from "./pages/tools.js";

const ADMIN = "kernel/admin";
const PAGES = { chat, scheduler, agents, storage, memory, tools };
const agentInput = document.getElementById("agent");
let cleanup = null;

function show() {
  const name = location.hash.slice(1) in PAGES ? location.hash.slice(1) : "chat";
  const main = document.getElementById("main");
  if (cleanup) cleanup();
  main.replaceChildren();
  cleanup = PAGES[name].render(main) || null;
  for (const link of document.querySelectorAll("nav a")) {
    if (link.hash === `#${name}`) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  document.title = `${main.querySelector("h2")?.textContent || name} — AIOS kernel`;
}

agentInput.value = localStorage.getItem("aios-agent") || agentInput.value;
agentInput.addEventListener("change", () => localStorage.setItem("aios-agent", agentInput.value.trim()));
// With an agent's token the page acts as that agent, whose name the kernel knows; the administrator's acts as any.
// A kernel that requires a token and has none (or refuses this one) answers 401, which sends the page to the
// login page (api.js).
const loggedIn = hasToken ? call("/access/permissions").then(({ agent_name: name }) => {
  if (name === ADMIN) return;
  agentInput.value = name;
  agentInput.readOnly = true;
}) : call("/status");
loggedIn.catch(() => {});
window.addEventListener("hashchange", () => {
  show();
  document.getElementById("main").focus();
});
show();
