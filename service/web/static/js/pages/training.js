// Training: upload a dataset zip, start a job with the form the API schema describes, watch its
// losses, m_t and validation Dice live (server-sent events), cancel it. #/training/<id> follows a job.

import { events, getJson, postJson, request } from "../api.js";
import { drawChart } from "../chart.js";
import { apiSchema, schemaForm } from "../schemaform.js";
import { FINISHED, errorText, field, h, setStatus } from "../ui.js";

function datasetPanel(select, status) {
  const refresh = async (chosen) => {
    const list = await getJson("/v1/datasets?limit=100");
    const ready = list.data.filter((d) => d.status === "ready");
    select.replaceChildren(...ready.map((d) => h("option", { value: d.id, selected: d.id === chosen },
      `${d.name} · ${d.layout} · ${d.n_pairs} pairs`)));
    if (!ready.length) select.append(h("option", { value: "" }, "no dataset yet: upload one"));
  };
  const form = h("form", { class: "stack", id: "dataset-form" },
    field("Dataset zip", h("input", { type: "file", name: "file", accept: ".zip", required: true }),
      "an ACDC or CAMUS release folder, or a manifest CSV with its images"),
    field("Name", h("input", { type: "text", name: "name", placeholder: "the file name" })),
    h("button", { type: "submit", class: "secondary" }, "Upload and check"));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const data = new FormData(form);
    if (!data.get("name")) data.delete("name");
    setStatus(status, "uploading and reading every pair…");
    try {
      const dataset = await (await request("/v1/datasets", { method: "POST", form: data })).json();
      setStatus(status, `dataset ${dataset.name}: ${dataset.n_pairs} pairs of ${dataset.n_subjects} subjects, ready`, "ok");
      await refresh(dataset.id);
    } catch (error) {
      setStatus(status, errorText(error), "error");
    }
  });
  refresh().catch((error) => setStatus(status, errorText(error), "error"));
  return form;
}

/** The live view of one job: status, progress bar, three charts, cancel. Returns {follow(job), stop()}. */
function liveView(container) {
  const status = h("p", { class: "status", role: "status", id: "training-status" });
  const bar = h("progress", { max: 1, value: 0, "aria-label": "training progress" });
  const charts = ["losses", "m_t", "val_dice"].map((name) => h("canvas", { class: "chart", id: `chart-${name}`,
    role: "img", "aria-label": `${name.replace("_", " ")} by update` }));
  const cancel = h("button", { type: "button", class: "secondary", id: "cancel", disabled: true }, "Cancel training");
  container.replaceChildren(h("h2", {}, "Progress"), h("div", { class: "row" }, cancel), bar, status, h("div", { class: "charts" }, charts));
  const history = [];
  let abort = new AbortController();
  const draw = () => {
    const losses = [...new Set(history.flatMap((p) => Object.keys(p.losses || {})))];
    const series = (key, get) => ({ name: key, points: history.map((p) => [p.global_step ?? 0, get(p)]) });
    drawChart(charts[0], losses.map((k) => series(k, (p) => p.losses?.[k])), { title: "losses", xLabel: "update" });
    drawChart(charts[1], [series("m_t", (p) => p.m_t)], { title: "m_t (AdaCS momentum)", xLabel: "update" });
    drawChart(charts[2], [series("validation Dice", (p) => p.val_dice)], { title: "validation Dice", xLabel: "update" });
  };
  const show = (job) => {
    const p = job.progress || {};
    if (p.global_step !== undefined) {
      if (history.length && history.at(-1).global_step === p.global_step) history.pop();
      history.push(p);
    }
    bar.max = p.total_steps || 1;
    bar.value = p.global_step || 0;
    const eta = p.eta_s ? ` · about ${Math.round(p.eta_s)} s left` : "";
    const text = `${job.status} · ${p.phase || ""} · epoch ${p.epoch ?? "–"} of ${p.epochs ?? "–"} · update ${p.global_step ?? 0} of ${p.total_steps ?? "?"}${eta}`;
    setStatus(status, job.error ? `${text}: ${job.error}` : text, job.status === "failed" ? "error" : FINISHED.has(job.status) ? "ok" : "");
    cancel.disabled = FINISHED.has(job.status) || job.cancel_requested;
    draw();
  };
  async function follow(job) {
    abort.abort();
    abort = new AbortController();
    history.length = 0;
    cancel.onclick = async () => {
      cancel.disabled = true;
      try {
        show(await postJson(`/v1/training-jobs/${job.id}/cancel`, {}));
      } catch (error) {
        setStatus(status, errorText(error), "error");
      }
    };
    show(job);
    try {
      for await (const { data } of events(job.events_url, abort.signal)) show(data);
    } catch (error) {
      if (error.name !== "AbortError") setStatus(status, `the live stream stopped: ${errorText(error)}`, "error");
    }
  }
  return { follow, stop: () => abort.abort() };
}

async function jobForm(form, datasetSelect, live, status) {
  const schema = await apiSchema();
  const components = schema.components.schemas;
  const generated = schemaForm(components.TrainingJobCreate, components, { skip: ["dataset_id"] });
  form.replaceChildren(field("Dataset", datasetSelect), generated.element,
    h("button", { type: "submit" }, "Start training"));
  form.onsubmit = async (event) => {
    event.preventDefault();
    try {
      const body = { ...generated.read(), dataset_id: datasetSelect.value };
      const job = await postJson("/v1/training-jobs", body);
      history.replaceState(null, "", `#/training/${job.id}`);
      setStatus(status, `training job ${job.id.slice(0, 8)} queued`, "ok");
      live.follow(job);
    } catch (error) {
      setStatus(status, errorText(error), "error");
    }
  };
}

export function render(root, id) {
  const status = h("p", { class: "status", role: "status" });
  const datasetSelect = h("select", { name: "dataset_id", required: true });
  const form = h("form", { class: "stack", id: "training-form" }, h("p", { class: "note" }, "loading the API schema…"));
  const liveBox = h("section", { class: "panel sticky", "aria-label": "Progress" }, h("p", { class: "note" }, "Start a job to see its curves."));
  const live = liveView(liveBox);
  root.append(h("h1", {}, "Train a model"), h("div", { class: "layout wide" },
    h("div", { class: "stack" },
      h("section", { class: "panel", "aria-label": "Dataset" }, h("h2", {}, "1. Dataset"), datasetPanel(datasetSelect, status)),
      h("section", { class: "panel", "aria-label": "Training job" }, h("h2", {}, "2. Job"), form, status)),
    liveBox));
  jobForm(form, datasetSelect, live, status).catch((error) => setStatus(status, errorText(error), "error"));
  if (id) getJson(`/v1/training-jobs/${id}`).then((job) => live.follow(job)).catch((error) => setStatus(status, errorText(error), "error"));
  return () => live.stop();
}
