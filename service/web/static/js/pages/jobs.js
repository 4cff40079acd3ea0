// Jobs: recent registrations, cine registrations and trainings with their status; each opens its page.
// Refreshed every few seconds while any of them is still queued or running.

import { getJson } from "../api.js";
import { FINISHED, badge, errorText, h, setStatus, when } from "../ui.js";

const KINDS = [
  { title: "Registrations", path: "/v1/registrations", page: "register", what: (j) => j.model_version || j.model },
  { title: "Cine registrations", path: "/v1/cine-registrations", page: "cine", what: (j) => j.model_version || j.model },
  { title: "Trainings", path: "/v1/training-jobs", page: "training", what: (j) => j.model_version || `${j.model_name} (${j.method})` },
];

function progress(job) {
  const p = job.progress || {};
  if (job.status === "failed") return job.error || "";
  if (p.total_steps) return `${p.phase || ""} · update ${p.global_step ?? 0} of ${p.total_steps}`;
  if (p.frames) return `${p.phase || ""} · frame ${p.frame ?? 0} of ${p.frames}`;
  return p.phase || "";
}

function table(kind, jobs) {
  if (!jobs.length) return h("p", { class: "note" }, "none yet");
  return h("table", { dataset: { kind: kind.page } },
    h("thead", {}, h("tr", {}, ["job", "status", "model", "created", "progress"].map((t) => h("th", {}, t)))),
    h("tbody", {}, jobs.map((job) => h("tr", { dataset: { id: job.id, status: job.status } },
      h("td", {}, h("a", { href: `#/${kind.page}/${job.id}` }, job.id.slice(0, 8))),
      h("td", {}, badge(job.status)), h("td", {}, kind.what(job)), h("td", {}, when(job.created_at)),
      h("td", {}, progress(job))))));
}

export function render(root) {
  const status = h("p", { class: "status", role: "status" });
  const sections = KINDS.map((kind) => h("section", { class: "panel", "aria-label": kind.title }, h("h2", {}, kind.title)));
  let timer = null;
  let stopped = false;
  const refresh = async () => {
    try {
      const lists = await Promise.all(KINDS.map((kind) => getJson(`${kind.path}?limit=20`)));
      if (stopped) return; // the user left the page while the lists were on their way
      lists.forEach((list, n) => sections[n].replaceChildren(h("h2", {}, `${KINDS[n].title} (${list.count})`), table(KINDS[n], list.data)));
      const active = lists.some((list) => list.data.some((job) => !FINISHED.has(job.status)));
      if (active) timer = setTimeout(refresh, 3000);
    } catch (error) {
      setStatus(status, errorText(error), "error");
    }
  };
  root.append(h("h1", {}, "Jobs"), h("div", { class: "row" },
    h("button", { type: "button", class: "secondary", onclick: () => { clearTimeout(timer); refresh(); } }, "Refresh")),
  status, h("div", { class: "cards" }, sections));
  refresh();
  return () => {
    stopped = true;
    clearTimeout(timer);
  };
}
