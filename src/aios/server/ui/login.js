// The token goes into this tab's sessionStorage, never into an address: the web UI sends it with every call.
import { TOKEN } from "./api.js";

const REASONS = {
  missing: "",
  refused: "This kernel refused the token this tab had: it was revoked, mistyped, or another kernel's.",
};
const reason = document.getElementById("reason");
const input = document.getElementById("token");
reason.textContent = REASONS[new URLSearchParams(location.search).get("reason")] || "";
// A kernel that requires no token (a tab's token from another kernel, an old address with one) opens without.
fetch("/status").then((response) => {
  if (response.ok) location.replace("/ui/" + location.hash);
}).catch(() => {});
document.getElementById("token-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const token = input.value.trim();
  if (!/^[\x21-\x7e]+$/.test(token)) { // a header carries only these: a pasted quote or space is no token
    reason.textContent = "A token has only letters, digits and punctuation, with no spaces: copy it again.";
    input.focus();
    return;
  }
  sessionStorage.setItem(TOKEN, token);
  location.assign("/ui/" + location.hash);
});
