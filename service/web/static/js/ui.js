// Small DOM helpers shared by the pages: build elements, report status, format numbers.

import { saveAs } from "./api.js";

/** h("button", {type: "submit", onclick}, "Go") -> <button type="submit">Go</button>. */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith("on")) el.addEventListener(name.slice(2), value);
    else if (name === "dataset") Object.assign(el.dataset, value);
    else if (name in el && typeof value !== "string") el[name] = value;
    else el.setAttribute(name, value === true ? "" : value);
  }
  el.append(...children.flat().filter((c) => c !== null && c !== undefined && c !== false));
  return el;
}

/** Read out `text` to screen readers (the page's polite live region). */
export function announce(text) {
  document.getElementById("announce").textContent = text;
}

/** A status line: kind "" (progress), "ok" or "error"; errors are also announced. */
export function setStatus(el, text, kind = "") {
  el.textContent = text;
  el.className = `status ${kind}`.trim();
  if (kind) announce(text);
}

export const errorText = (error) => (error && error.message) || String(error);

export function fmt(value, digits = 1) {
  if (value === null || value === undefined || Number.isNaN(value)) return "–";
  return typeof value === "number" ? value.toFixed(digits) : String(value);
}

export const when = (iso) => (iso ? new Date(iso).toLocaleString() : "–");
export const badge = (text) => h("span", { class: `badge ${text}` }, text);

let fieldCount = 0;

/** A labelled form field around `input` (given an id if it has none), with optional help text. */
export function field(label, input, help) {
  input.id ||= `f${++fieldCount}`;
  const helpEl = help ? h("span", { class: "help", id: `${input.id}-help` }, help) : null;
  if (helpEl) input.setAttribute("aria-describedby", helpEl.id);
  return h("div", { class: "field" }, h("label", { for: input.id }, label), input, helpEl);
}

/** One link per output (`{role: {file, url, size_bytes}}`), fetched with the key when clicked. */
export function downloads(outputs) {
  const items = Object.values(outputs || {}).map((out) =>
    h("li", {}, h("a", {
      href: out.url.replace(/^\//, ""),
      download: out.file,
      onclick: (event) => {
        event.preventDefault();
        saveAs(out.url, out.file).catch((error) => announce(`download failed: ${errorText(error)}`));
      },
    }, out.file), h("span", { class: "note" },
      out.size_bytes == null ? " drawn when first downloaded" : ` ${(out.size_bytes / 1024).toFixed(0)} KiB`)));
  return h("ul", { class: "downloads", "aria-label": "Downloads" }, items);
}

/** Poll `load()` every `everyMs` until `done(value)`; `onValue` sees each value. Returns a stop(). */
export function poll(load, done, onValue, everyMs = 500) {
  let stopped = false;
  let timer = null;
  const tick = async () => {
    if (stopped) return;
    try {
      const value = await load();
      if (stopped) return;
      onValue(value, null);
      if (done(value)) return;
    } catch (error) {
      if (stopped) return;
      onValue(null, error);
    }
    timer = setTimeout(tick, everyMs);
  };
  tick();
  return () => {
    stopped = true;
    clearTimeout(timer);
  };
}

export const FINISHED = new Set(["succeeded", "failed", "cancelled"]);
