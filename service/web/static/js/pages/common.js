// Form parts and the job follower shared by the Register and Cine pages.

import { getJson, request } from "../api.js";
import { FINISHED, errorText, field, h, poll, setStatus } from "../ui.js";

export function fileInput(name, required = false) {
  return h("input", { type: "file", name, required });
}

/** A select of the registry's models: "" (the server's default), each name (its production) and name:version. */
export function modelSelect() {
  const select = h("select", { name: "model" }, h("option", { value: "" }, "server default (starter)"));
  getJson("/v1/models?limit=100").then((models) => {
    for (const model of models.data) {
      if (model.stages.production) select.append(h("option", { value: model.name }, `${model.name} (production: v${model.stages.production})`));
      for (const version of model.versions) select.append(h("option", { value: version.ref }, version.ref));
    }
  }).catch(() => {}); // the select still offers the default; the key field says what is wrong
  return select;
}

/** Registration options every job route takes: model, refinement steps, label names. */
export function jobOptions() {
  return [
    field("Model", modelSelect()),
    field("Refinement steps", h("input", { type: "number", name: "refine_steps", min: 0, max: 2000, step: 1, placeholder: "model card's" }),
      "test-time refinement after the network (0: the network's answer)"),
    field("Label names", h("input", { type: "text", name: "labels", placeholder: '{"1": "RV", "2": "myocardium", "3": "LV"}' }),
      "JSON object, optional"),
  ];
}

/** FormData of a form, without the empty fields (the API reads an empty number as an error). */
export function filledForm(form) {
  const data = new FormData();
  for (const [name, value] of new FormData(form)) {
    if (value instanceof File ? value.size > 0 : value.trim() !== "") data.append(name, value);
  }
  return data;
}

function progressText(job) {
  const p = job.progress || {};
  const parts = [job.status];
  if (p.phase && p.phase !== job.status) parts.push(p.phase.replaceAll("_", " "));
  if (p.frames) parts.push(`frame ${p.frame ?? 0} of ${p.frames}`);
  else if (p.steps) parts.push(`step ${p.step} of ${p.steps}`);
  return parts.join(" · ");
}

/** Follow a job until it finishes, showing its progress; resolves with the finished job. */
export function follow(jobUrl, statusEl, bar) {
  let stop = () => {};
  const done = new Promise((resolve) => {
    stop = poll(() => getJson(jobUrl), (job) => FINISHED.has(job.status), (job, error) => {
      if (error) return setStatus(statusEl, `still waiting: ${errorText(error)}`);
      const p = job.progress || {};
      bar.max = p.frames || p.steps || 1;
      bar.value = p.frames ? p.frame || 0 : p.step || 0;
      if (job.status === "succeeded") bar.value = bar.max;
      setStatus(statusEl, progressText(job), job.status === "failed" ? "error" : "");
      if (FINISHED.has(job.status)) resolve(job);
    });
  });
  return { done, stop: () => stop() };
}

/**
 * On submit: post the form's filled fields to `path`, follow the job, and call `onSucceeded(job)`
 * (awaited) once it succeeded. Returns stop(), which stops following.
 */
export function submitJob(form, path, status, bar, onSucceeded) {
  let job = { stop: () => {} };
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const button = form.querySelector("button[type=submit]");
    button.disabled = true;
    bar.hidden = false;
    bar.value = 0;
    setStatus(status, "uploading…");
    try {
      const created = await (await request(path, { method: "POST", form: filledForm(form) })).json();
      job.stop();
      job = follow(created.url, status, bar);
      const finished = await job.done;
      if (finished.status === "succeeded") await onSucceeded(finished);
      else setStatus(status, `${finished.status}: ${finished.error || ""}`, "error");
    } catch (error) {
      setStatus(status, errorText(error), "error");
    } finally {
      button.disabled = false;
    }
  });
  return () => job.stop();
}
