// Cine: upload a cine and its reference frame's mask, follow the job, then play the frames with
// the carried mask and see the volume curves. #/cine/<id> opens one that already ran.

import { getJson } from "../api.js";
import { errorText, field, h, setStatus } from "../ui.js";
import { showCine } from "../cineview.js";
import { fileInput, jobOptions, submitJob } from "./common.js";

export function render(root, id) {
  const status = h("p", { class: "status", role: "status" });
  const bar = h("progress", { max: 1, value: 0, hidden: true, "aria-label": "cine progress" });
  const result = h("section", { class: "panel", "aria-label": "Result", id: "cine-result" },
    h("p", { class: "note" }, "The frames play here with the mask carried through the cycle, above the volume curves."));
  const form = h("form", { class: "stack", id: "cine-form" },
    field("Cine", fileInput("cine", true), "4-D NIfTI, MetaImage or NRRD (x, y, z, t), or a DICOM cine zip"),
    field("Reference mask", fileInput("reference_mask", true), "the mask of the reference frame"),
    field("Reference frame", h("input", { type: "number", name: "reference_frame", min: 0, step: 1, value: "0" }),
      "the frame the mask was drawn on (0-based)"),
    ...jobOptions(),
    h("button", { type: "submit" }, "Track the mask"), bar, status);
  let view = { destroy: () => {} };
  const stop = submitJob(form, "/v1/cine-registrations", status, bar, async (job) => {
    setStatus(status, `succeeded: ${job.report?.frames ?? "?"} frames`, "ok");
    view.destroy();
    view = await showCine(result, job, form.elements.cine.files[0] || null);
  });
  root.append(h("h1", {}, "Track a mask through a cine"),
    h("div", { class: "layout" }, h("section", { class: "panel", "aria-label": "New cine registration" }, form), result));
  if (id) {
    getJson(`/v1/cine-registrations/${id}`)
      .then(async (found) => { view = await showCine(result, found, null); })
      .catch((error) => setStatus(status, errorText(error), "error"));
  }
  return () => {
    stop();
    view.destroy();
  };
}
