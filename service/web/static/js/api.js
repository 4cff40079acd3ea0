// The public API as the page calls it: what `curl` does, with the key the user typed.
// Paths the server returns ("/v1/...") are resolved against the page's own address, so the
// viewer also works behind a proxy that serves the API below a prefix.

const KEY = "adacs.apiKey";

export const apiKey = {
  get: () => sessionStorage.getItem(KEY) || "",
  set: (key) => (key ? sessionStorage.setItem(KEY, key) : sessionStorage.removeItem(KEY)),
};

export class ApiError extends Error {
  constructor(status, detail, code) {
    super(detail || `HTTP ${status}`);
    this.status = status;
    this.code = code || "";
  }
}

export function url(path) {
  return new URL(path.replace(/^\//, ""), document.baseURI).href;
}

function headers() {
  const h = new Headers();
  const key = apiKey.get();
  if (key) h.set("X-API-Key", key);
  return h;
}

async function toError(response) {
  let body = {};
  try {
    body = await response.json();
  } catch {
    // not JSON: keep the status line
  }
  const detail = typeof body.detail === "string" ? body.detail : response.statusText;
  return new ApiError(response.status, detail, body.code);
}

/** fetch(path) with the key; `json` sends a JSON body, `form` a FormData. Throws ApiError on 4xx/5xx. */
export async function request(path, { method = "GET", json, form, signal } = {}) {
  const init = { method, headers: headers(), signal };
  if (json !== undefined) {
    init.headers.set("Content-Type", "application/json");
    init.body = JSON.stringify(json);
  } else if (form) {
    init.body = form;
  }
  const response = await fetch(url(path), init);
  if (!response.ok) throw await toError(response);
  return response;
}

export const getJson = async (path, options) => (await request(path, options)).json();
export const postJson = async (path, json) => (await request(path, { method: "POST", json })).json();
export const bytes = async (path) => (await request(path)).arrayBuffer();

/** Server-sent events over fetch (EventSource cannot send a key): yields {event, data}. */
export async function* events(path, signal) {
  const response = await request(path, { signal });
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value;
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      const event = { event: "message", data: "" };
      for (const line of block.split("\n")) {
        if (line.startsWith("event:")) event.event = line.slice(6).trim();
        else if (line.startsWith("data:")) event.data += line.slice(5).trim();
      }
      if (event.data) yield { event: event.event, data: JSON.parse(event.data) };
    }
  }
}

/** Save a download under `filename`: fetched with the key, handed to the browser as a blob. */
export async function saveAs(path, filename) {
  const blob = await (await request(path)).blob();
  const link = document.createElement("a");
  link.href = URL.createObjectURL(blob);
  link.download = filename;
  link.click();
  setTimeout(() => URL.revokeObjectURL(link.href), 10_000);
}
