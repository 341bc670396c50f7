// Small DOM helpers shared by the pages.

// el("button", {class: "x", onclick: f}, "text", child...)
export function el(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else if (name === "value") node.value = value;
    else node.setAttribute(name, value === true ? "" : value);
  }
  node.append(...children.flat().filter((c) => c !== null && c !== undefined));
  return node;
}

let fieldIds = 0;

// A labelled form field: the label names the control for screen readers and a click focuses it.
export function field(label, control, hint) {
  control.id = control.id || `field-${++fieldIds}`;
  const node = el("div", { class: "field" }, el("label", { for: control.id }, label), control);
  if (hint) node.append(el("small", {}, hint));
  return node;
}

// A status line (role=status: read out when it changes) for a page's outcome or error.
export function statusLine() {
  const node = el("p", { class: "status", role: "status", "aria-live": "polite" });
  node.show = (text, isError = false) => {
    node.textContent = text;
    node.classList.toggle("error", isError);
  };
  return node;
}

// Run an async action from a form or button, showing its error (and disabling the button meanwhile).
export async function attempt(status, button, action) {
  if (button) button.disabled = true;
  try {
    return await action();
  } catch (error) {
    status.show(`${error.status ? error.status + ": " : ""}${error.message}`, true);
    return undefined;
  } finally {
    if (button) button.disabled = false;
  }
}

export function time(seconds) {
  return seconds ? new Date(seconds * 1000).toLocaleTimeString() : "—";
}

export function agentName() {
  return document.getElementById("agent").value.trim() || "ui/user";
}
