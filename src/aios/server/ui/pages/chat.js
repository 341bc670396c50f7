// Chat with a model, its reply streamed as it is written (/query with stream: true), the model chosen from
// /core/llms/list.
import { call, chatStream } from "../api.js";
import { agentName, attempt, el, field, statusLine } from "../ui.js";

export function render(main) {
  const history = [];
  const messages = el("div", { class: "messages", role: "log", "aria-live": "polite", "aria-label": "Conversation" });
  const model = el("select", { name: "model" }, el("option", { value: "" }, "any model"));
  const maxTokens = el("input", { type: "number", name: "max_new_tokens", min: "1", max: "4096", value: "128" });
  const temperature = el("input", { type: "number", name: "temperature", min: "0", max: "2", step: "0.1", value: "0.7" });
  const prompt = el("textarea", { name: "prompt", required: true, placeholder: "Ask the model something" });
  const send = el("button", { type: "submit" }, "Send");
  const status = statusLine();
  const form = el("form", { "aria-label": "Send a message" },
    el("div", { class: "row" }, field("Model", model), field("Max new tokens", maxTokens), field("Temperature", temperature, "0: always the likeliest words")),
    field("Message", prompt, "Enter sends; Shift+Enter makes a new line"), send, status);

  prompt.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey) {
      event.preventDefault();
      form.requestSubmit();
    }
  });
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const text = prompt.value.trim();
    if (!text) return;
    prompt.value = "";
    history.push({ role: "user", content: text });
    messages.append(el("div", { class: "message user" }, text));
    const reply = el("div", { class: "message assistant", "aria-busy": "true" });
    messages.append(reply);
    status.show("Writing…");
    const queryData = { messages: history.slice(), max_new_tokens: Number(maxTokens.value) || 128, temperature: Number(temperature.value) };
    if (model.value) queryData.llms = [{ name: model.value }];
    attempt(status, send, async () => {
      const envelope = await chatStream(agentName(), queryData, (delta) => reply.append(delta));
      const response = envelope.response;
      reply.textContent = response.response_message || "";
      history.push({ role: "assistant", content: reply.textContent });
      const waited = envelope.waiting_times.reduce((a, b) => a + b, 0);
      reply.append(el("span", { class: "meta" },
        `${response.finish_reason} · ${response.usage?.completion_tokens ?? "?"} tokens · waited ${waited.toFixed(2)} s`));
      status.show("Done");
    }).finally(() => reply.removeAttribute("aria-busy"));
  });

  main.append(el("h2", {}, "Chat"), messages, form);
  attempt(status, null, async () => {
    const { llms } = await call("/core/llms/list");
    model.append(...llms.map((llm) => el("option", { value: llm.name }, `${llm.name} (${llm.backend})`)));
  });
}
