// Tools: every tool the kernel offers (/tools), and a form made from a tool's JSON Schema to call it as the agent
// (a tool syscall through /query).
import { call, syscall } from "../api.js";
import { agentName, attempt, el, field, statusLine } from "../ui.js";

// One control per schema property: a choice for an enum, a checkbox, a number, a line, or JSON for the rest.
function control(name, schema, required) {
  const hint = [schema.description, schema.type && `(${schema.type}${required ? ", required" : ""})`].filter(Boolean).join(" ");
  let input;
  if (Array.isArray(schema.enum)) {
    input = el("select", { name }, required ? [] : el("option", { value: "" }, "—"), schema.enum.map((v) => el("option", { value: JSON.stringify(v) }, String(v))));
    input.read = () => (input.value === "" ? undefined : JSON.parse(input.value));
  } else if (schema.type === "boolean") {
    input = el("input", { name, type: "checkbox", checked: schema.default === true });
    input.read = () => input.checked;
  } else if (schema.type === "number" || schema.type === "integer") {
    input = el("input", { name, type: "number", step: schema.type === "integer" ? "1" : "any", required, value: schema.default });
    input.read = () => (input.value === "" ? undefined : Number(input.value));
  } else if (schema.type === "string") {
    input = el("input", { name, required, value: schema.default, spellcheck: "false" });
    input.read = () => (input.value === "" && !required ? undefined : input.value);
  } else {
    input = el("textarea", { name, required, placeholder: "JSON" });
    input.read = () => (input.value.trim() === "" ? undefined : JSON.parse(input.value));
  }
  return { name, input, node: field(name, input, hint) };
}

function callForm(tool, status) {
  const schema = tool.parameters || {};
  const required = new Set(schema.required || []);
  const controls = Object.entries(schema.properties || {}).map(([name, s]) => control(name, s, required.has(name)));
  const run = el("button", { type: "submit" }, `Call ${tool.name}`);
  const output = el("pre", { "aria-label": "Result" });
  const form = el("form", { "aria-label": `Call ${tool.name}` }, el("h3", {}, tool.name), el("p", {}, tool.description || ""),
    controls.map((c) => c.node), run, el("h4", {}, "Result"), output);
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    attempt(status, run, async () => {
      const parameters = {};
      for (const c of controls) {
        const value = c.input.read();
        if (value !== undefined) parameters[c.name] = value;
      }
      const reply = await syscall(agentName(), "tool", { query_class: "tool", tool_calls: [{ name: tool.name, parameters }] });
      const message = reply.response.response_message;
      try {
        output.textContent = JSON.stringify(JSON.parse(message), null, 2);
      } catch {
        output.textContent = message;
      }
      status.show(`${tool.name} answered`);
    });
  });
  return form;
}

export function render(main) {
  const status = statusLine();
  const rows = el("tbody");
  const slot = el("section", { "aria-label": "Call a tool" });
  main.append(el("h2", {}, "Tools"), status, slot, el("div", { class: "scroll" }, el("table", {},
    el("thead", {}, el("tr", {}, ["Tool", "Description", ""].map((n) => el("th", { scope: "col" }, n)))), rows)));
  attempt(status, null, async () => {
    const { tools } = await call("/tools");
    rows.replaceChildren(...tools.map((tool) => el("tr", {}, el("td", {}, tool.name), el("td", {}, tool.description || ""),
      el("td", {}, el("button", { type: "button", class: "secondary", "aria-label": `Use ${tool.name}`, onclick: () => {
        slot.replaceChildren(callForm(tool, status));
        slot.querySelector("input, select, textarea, button").focus();
      } }, "Use")))));
  });
}
