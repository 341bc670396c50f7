// The token goes into this tab's sessionStorage, never into an address: the web UI sends it with every call.
import { TOKEN } from "./api.js";

document.getElementById("reason").textContent = new URLSearchParams(location.search).get("reason") || "";
document.getElementById("token-form").addEventListener("submit", (event) => {
  event.preventDefault();
  sessionStorage.setItem(TOKEN, document.getElementById("token").value.trim());
  location.assign("/ui/");
});
