// Register: upload a pair (and masks), follow the job, then look at the result slice by slice.
// #/register/<id> opens a registration that already ran (from the Jobs page).

import { getJson } from "../api.js";
import { errorText, field, h, setStatus } from "../ui.js";
import { showRegistration } from "../result.js";
import { fileInput, jobOptions, submitJob } from "./common.js";

export function render(root, id) {
  const status = h("p", { class: "status", role: "status" });
  const bar = h("progress", { max: 1, value: 0, hidden: true, "aria-label": "registration progress" });
  const result = h("section", { class: "panel", "aria-label": "Result", id: "result" },
    h("p", { class: "note" }, "The result appears here: the fixed image with the warped mask, slice by slice."));
  const form = h("form", { class: "stack", id: "register-form" },
    field("Fixed image", fileInput("fixed", true), "NIfTI, DICOM (file or zip), MetaImage, NRRD"),
    field("Moving image", fileInput("moving", true), "warped onto the fixed image"),
    field("Moving mask", fileInput("moving_mask"), "labels on the moving image: warped with it"),
    field("Fixed mask", fileInput("fixed_mask"), "labels on the fixed image: Dice before and after"),
    ...jobOptions(),
    h("button", { type: "submit" }, "Register"), bar, status);
  let view = { destroy: () => {} };
  const stop = submitJob(form, "/v1/registrations", status, bar, async (job) => {
    // The API does not serve inputs back: the fixed image and the masks are shown from the user's files.
    const local = Object.fromEntries(["fixed", "moving_mask", "fixed_mask"]
      .map((role) => [role, form.elements[role].files[0] || null]));
    setStatus(status, `succeeded in ${job.timings_s?.total?.toFixed(1) ?? "?"} s`, "ok");
    view.destroy();
    view = await showRegistration(result, job, local);
  });

  root.append(h("h1", {}, "Register an image pair"),
    h("div", { class: "layout" }, h("section", { class: "panel", "aria-label": "New registration" }, form), result));
  if (id) {
    getJson(`/v1/registrations/${id}`)
      .then(async (found) => { view = await showRegistration(result, found, {}); })
      .catch((error) => setStatus(status, errorText(error), "error"));
  }
  return () => {
    stop();
    view.destroy();
  };
}
