// The single page: a hash router over five pages, and the API key field when the server asks for keys.
// Each page module exports render(root, id) and may return a cleanup function (timers, streams, GL).

import { apiKey } from "./api.js";
import { announce, h } from "./ui.js";
import * as cine from "./pages/cine.js";
import * as jobs from "./pages/jobs.js";
import * as models from "./pages/models.js";
import * as register from "./pages/register.js";
import * as training from "./pages/training.js";

const PAGES = { register, cine, training, models, jobs };
const root = document.getElementById("page");
let cleanup = null;

function route() {
  const [, name = "register", id = ""] = location.hash.match(/^#\/([a-z]+)(?:\/([\w-]+))?/) || [];
  const page = PAGES[name] ? name : "register";
  for (const link of document.querySelectorAll(".top nav a")) {
    if (link.getAttribute("href") === `#/${page}`) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  if (cleanup) cleanup();
  root.replaceChildren();
  cleanup = null;
  if (keysOn() && !apiKey.get()) {
    // No call without the key: each would only be refused (and the browser would log the 401).
    root.append(h("h1", {}, "An API key is needed"), h("p", {}, "This server asks for an API key: type it above. ",
      "It stays in this browser tab only (session storage) and goes with every call the page makes."));
    root.dataset.page = "key";
    document.getElementById("api-key").focus();
    return;
  }
  cleanup = PAGES[page].render(root, id) || null;
  document.title = `${page[0].toUpperCase()}${page.slice(1)} · AdaCS registration`;
  root.dataset.page = page;
}

// The server writes into the page whether it wants keys (asking the API would cost a 401).
const keysOn = () => document.querySelector('meta[name="adacs-api-keys"]').content === "on";

/** The key field, shown when the server wants keys; the key is kept in this tab's sessionStorage. */
function setUpKey() {
  const form = document.getElementById("key-form");
  const input = document.getElementById("api-key");
  input.value = apiKey.get();
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    apiKey.set(input.value.trim());
    announce(input.value.trim() ? "API key set for this tab" : "API key cleared");
    route(); // reload the page's data with the key
    root.focus();
  });
  form.hidden = !keysOn(); // a 401 later shows it too
}

/** Tell the user when the key in use was refused, wherever the call came from. */
window.addEventListener("unhandledrejection", (event) => {
  if (event.reason && event.reason.status === 401) {
    document.getElementById("key-form").hidden = false;
    announce("the server needs a valid API key");
  }
});

window.addEventListener("hashchange", route);
setUpKey();
route();
root.dataset.ready = "true";
