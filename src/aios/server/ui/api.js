// The kernel's HTTP API, as the page uses it. On a kernel that requires tokens, the token given on the login
// page is kept in this tab's sessionStorage and sent as "Authorization: Bearer" with every call: never in an
// address, where history, bookmarks and a proxy's logs would keep it. An address of the older form
// /as/<token>/ui/ still opens the page: the token moves into sessionStorage and the address becomes /ui/.

export const TOKEN = "aios-token";
const pathToken = location.pathname.match(/^\/as\/([^/]+)\/ui\//);
if (pathToken) {
  sessionStorage.setItem(TOKEN, decodeURIComponent(pathToken[1]));
  history.replaceState(null, "", "/ui/" + location.hash);
}
export const hasToken = sessionStorage.getItem(TOKEN) !== null;

// The login page, then back to this view: its token replaces this tab's. It says why in its own words, from a
// code (the API's 401 messages speak to programs). Once: the page's calls run at once and each gets its 401, and
// a second navigation would abort the first, saying "missing" for a token that was refused.
let leaving = false;
addEventListener("pageshow", (event) => {
  if (event.persisted) leaving = false; // back from the login page, out of the browser's page cache
});
export function logIn() {
  if (leaving) return;
  leaving = true;
  const reason = sessionStorage.getItem(TOKEN) === null ? "missing" : "refused";
  sessionStorage.removeItem(TOKEN);
  location.assign(`/ui/login.html?reason=${reason}${location.hash}`);
}

function headers(extra = {}) {
  const token = sessionStorage.getItem(TOKEN);
  return token === null ? extra : { ...extra, authorization: `Bearer ${token}` };
}

export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

function detailText(body, status) {
  const detail = body && body.detail;
  if (typeof detail === "string") return detail;
  if (Array.isArray(detail)) return detail.map((d) => `${(d.loc || []).join(".")}: ${d.msg}`).join("; ");
  return `HTTP ${status}`;
}

// The ApiError of a failed response, with the kernel's own message; a 401 (the token revoked, say) first sends
// the page to the login page.
async function failure(response) {
  if (response.status === 401) logIn();
  return new ApiError(response.status, detailText(await response.json().catch(() => null), response.status));
}

// A JSON request; raises ApiError with the kernel's own message for any HTTP error.
export async function call(path, { method = "GET", body } = {}) {
  const options = { method, headers: headers() };
  if (body !== undefined) {
    options.headers["content-type"] = "application/json";
    options.body = JSON.stringify(body);
  }
  const response = await fetch(path, options);
  if (!response.ok) throw await failure(response);
  return response.json().catch(() => null);
}

// A syscall through /query; raises ApiError with the envelope's error when the kernel refused it or it failed.
export async function syscall(agent, queryType, queryData) {
  const reply = await call("/query", { method: "POST", body: { agent_name: agent, query_type: queryType, query_data: queryData } });
  const response = reply.response || {};
  if (response.error) throw new ApiError(response.status_code, response.error);
  return reply;
}

// A storage or memory operation; storage replies carry their result as JSON text in response_message.
export async function operation(agent, queryClass, operationType, params) {
  const reply = await syscall(agent, queryClass, { query_class: queryClass, operation_type: operationType, params });
  const message = reply.response.response_message;
  return queryClass === "storage" ? JSON.parse(message) : reply.response;
}

// Lines of a streamed body as they come (NDJSON from /query with stream: true).
export async function* lines(response) {
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffered = "";
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffered += value;
      const parts = buffered.split("\n");
      buffered = parts.pop();
      yield* parts.filter((line) => line.trim());
    }
    if (buffered.trim()) yield buffered;
  } finally {
    reader.cancel().catch(() => {}); // a reader that stops early closes the connection
  }
}

// A chat reply as it is written: onDelta(text) for each piece, then the envelope.
export async function chatStream(agent, queryData, onDelta, signal) {
  const response = await fetch("/query", {
    method: "POST", signal, headers: headers({ "content-type": "application/json" }),
    body: JSON.stringify({ agent_name: agent, query_type: "llm", query_data: { ...queryData, stream: true } }),
  });
  if (!response.ok) throw await failure(response);
  let envelope = null;
  for await (const line of lines(response)) {
    const item = JSON.parse(line);
    if ("delta" in item) onDelta(item.delta);
    else envelope = item;
  }
  if (envelope && envelope.response.error) throw new ApiError(envelope.response.status_code, envelope.response.error);
  return envelope;
}

// Server-sent events from a GET as they come, as { event, data } (EventSource cannot send the token's header):
// one-line data fields, as the kernel's feeds send. Throws ApiError when the kernel refuses the stream; returns
// when it ends.
export async function* serverEvents(path, signal) {
  const response = await fetch(path, { headers: headers(), signal });
  if (!response.ok) throw await failure(response);
  let event = "message";
  for await (const line of lines(response)) {
    if (line.startsWith("event:")) event = line.slice(6).trim();
    else if (line.startsWith("data:")) {
      yield { event, data: line.slice(5).trim() };
      event = "message";
    }
  }
}
