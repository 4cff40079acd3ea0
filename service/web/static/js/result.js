// A finished registration on screen: the fixed image with the warped mask's outlines, slice by
// slice; before/after, opacity, the deformation grid or the Jacobian; the report's Dice per label
// and per slice; a link to every output. Everything comes from the public API, except the fixed
// image and the masks the user picked (the API does not serve inputs back).

import { bytes, getJson, request } from "./api.js";
import { readNifti } from "./nifti.js";
import { gridLines, labelColour, labelColourMap, logJacobian, outline, voxelShift } from "./overlays.js";
import { diceTable, labelNames, sliceTable } from "./report.js";
import { downloads, errorText, fmt, h } from "./ui.js";
import { SliceView } from "./viewer.js";

const url = (job, role) => job.outputs[role]?.url;
const GRID_COLOUR = "rgba(255, 236, 60, 0.9)";

/** A painter of slice z's grid lines (voxel positions) on the vector layer over the image. */
const paintGrid = (lines) => (g, toCanvas, z) => {
  g.strokeStyle = GRID_COLOUR;
  g.lineWidth = Math.max(1, window.devicePixelRatio || 1);
  for (const line of lines[z] || []) {
    g.beginPath();
    line.forEach(([x, y], i) => (i ? g.lineTo(...toCanvas(x, y)) : g.moveTo(...toCanvas(x, y))));
    g.stroke();
  }
};

function maxLabel(labels) {
  let max = 1;
  for (const v of labels) if (v > max) max = v;
  return max;
}

/** Load every layer: {background, note, overlays}; `local` holds the user's File objects. */
async function layers(view, job, local) {
  const overlays = {};
  const names = labelNames(job.report);
  let background = null;
  let note = "";
  if (local.fixed) {
    try {
      background = await view.image(await local.fixed.arrayBuffer(), local.fixed.name, { colormap: "gray" });
    } catch {
      note = `${local.fixed.name} is not a format the viewer reads (NIfTI, NRRD, MetaImage): `;
    }
  }
  if (!background) {
    background = await view.image(await bytes(url(job, "warped")), "warped.nii.gz", { colormap: "gray" });
    note += "showing the warped moving image (the API keeps the fixed image private).";
  }
  const maskLayer = (image, colour) => view.derived(image, outline(image.img, image.hdr.dims[1], image.hdr.dims[2]),
    { labels: labelColourMap(maxLabel(image.img), names, colour) });
  if (url(job, "warped_mask")) {
    overlays.after = maskLayer(await view.image(await bytes(url(job, "warped_mask")), "warped_mask.nii.gz"));
  }
  for (const [role, layer, colour] of [["moving_mask", "before", null], ["fixed_mask", "reference", [255, 255, 255]]]) {
    if (!local[role]) continue;
    try {
      overlays[layer] = maskLayer(await view.image(await local[role].arrayBuffer(), local[role].name), colour);
    } catch {
      note += ` ${local[role].name} could not be read here, so it is not shown.`;
    }
  }
  const jacobian = await view.image(await bytes(url(job, "jacobian")), "jacobian.nii.gz");
  overlays.jacobian = view.derived(jacobian, logJacobian(jacobian.img),
    { colormap: "warm", negative: "winter", cal_min: 0.1, cal_max: 1 }); // |log2 J| < 0.1 (7 %) left clear
  const grid = gridLines(voxelShift(await readNifti(await bytes(url(job, "displacement")))));
  // Drawn in this order: the warped (or moving) mask's outlines stay on top of the reference's.
  const ordered = Object.fromEntries(["jacobian", "reference", "before", "after"]
    .filter((name) => overlays[name]).map((name) => [name, overlays[name]]));
  return { background, overlays: ordered, note, grid };
}

function radios(name, legend, options, onChange) {
  return h("fieldset", {}, h("legend", {}, legend), ...options.map(([value, text, enabled = true], i) =>
    h("label", { class: "row" }, h("input", {
      type: "radio", name, value, checked: i === 0, disabled: !enabled,
      onchange: (event) => onChange(event.target.value),
    }), text)));
}

function legend(job) {
  const entries = Object.entries(labelNames(job.report)).map(([k, name]) => {
    const [r, g, b] = labelColour(Number(k));
    const swatch = h("span", { class: "swatch" });
    swatch.style.background = `rgb(${r}, ${g}, ${b})`;
    return h("span", {}, swatch, name);
  });
  return h("div", { class: "legend", "aria-label": "Label colours" }, entries);
}

/** The controls; `state` is changed in place and `apply()` redraws. */
function controls(view, state, overlays, apply) {
  const slider = h("input", { type: "range", min: 0, max: view.slices - 1, value: view.slice, id: "slice",
    disabled: view.slices < 2, oninput: (event) => state.setSlice(Number(event.target.value)) });
  const opacity = h("input", { type: "range", min: 0, max: 100, value: 100, id: "opacity",
    oninput: (event) => { state.opacity = Number(event.target.value) / 100; apply(); } });
  const reference = overlays.reference ? h("label", { class: "row" }, h("input", { type: "checkbox", id: "reference",
    onchange: (event) => { state.reference = event.target.checked; apply(); } }), "fixed mask (white), the reference") : null;
  state.sliceText = h("output", { for: "slice", id: "slice-text" });
  return {
    slider,
    element: h("div", { class: "controls" },
      h("div", { class: "field" }, h("label", { for: "slice" }, "Slice"), slider, state.sliceText),
      radios("mask", "Mask", [["after", "after: warped mask", Boolean(overlays.after)],
        ["before", "before: moving mask", Boolean(overlays.before)]], (v) => { state.mask = v; apply(); }),
      reference,
      h("div", { class: "field" }, h("label", { for: "opacity" }, "Mask opacity"), opacity),
      radios("overlay", "Overlay", [["none", "none"], ["grid", "deformation grid"],
        ["jacobian", "Jacobian (log₂: warm expands, blue shrinks; ±7 % clear)"]], (v) => { state.overlay = v; apply(); })),
  };
}

async function interactive(box, job, local, side) {
  const view = await SliceView.create(box, "fixed image with the registration's overlays");
  if (!view) return null;
  const { background, overlays, note, grid } = await layers(view, job, local);
  view.setVolumes(background, overlays);
  const state = { mask: overlays.after ? "after" : "before", overlay: "none", opacity: 1, reference: false };
  const rows = sliceTable(job.report, side.sliceTable);
  const apply = () => {
    view.setLayer("after", state.mask === "after" ? state.opacity : 0);
    view.setLayer("before", state.mask === "before" ? state.opacity : 0);
    view.setLayer("reference", state.reference ? state.opacity : 0);
    view.vector = state.overlay === "grid" ? paintGrid(grid) : null;
    view.setLayer("jacobian", state.overlay === "jacobian" ? 0.6 : 0);
    view.nv.drawScene();
  };
  const parts = controls(view, state, overlays, apply);
  state.setSlice = (k) => {
    view.setSlice(k);
    showSlice(view.slice);
  };
  const showSlice = (k) => {
    parts.slider.value = k;
    state.sliceText.textContent = `${k + 1} of ${view.slices}${rows.describe(k)}`;
    box.dataset.slice = String(k);
    rows.highlight(k);
  };
  view.onSlice = showSlice;
  box.addEventListener("keydown", (event) => keys(event, view, state));
  side.controls.replaceChildren(parts.element, legend(job), h("p", { class: "note", hidden: !note }, note));
  apply();
  showSlice(view.slice);
  box.dataset.slices = String(view.slices);
  box.dataset.ready = "true";
  return view;
}

function keys(event, view, state) {
  const step = { ArrowUp: 1, ArrowRight: 1, PageUp: 1, ArrowDown: -1, ArrowLeft: -1, PageDown: -1 }[event.key];
  if (step) state.setSlice(view.slice + step);
  else if (event.key === "Home") state.setSlice(0);
  else if (event.key === "End") state.setSlice(view.slices - 1);
  else return;
  event.preventDefault();
}

/** The outputs with preview.png listed even before it exists: the service draws it when first downloaded. */
function withPreview(job) {
  const preview = { file: "preview.png", url: `/v1/registrations/${job.id}/preview.png`, size_bytes: null };
  return { ...job.outputs, preview: job.outputs.preview || preview };
}

async function preview(box, job) {
  const blob = await (await request(withPreview(job).preview.url)).blob();
  box.replaceChildren(h("img", { src: URL.createObjectURL(blob), alt: "the service's preview of the registration" }));
  box.dataset.ready = "preview";
}

/** Render `job` into `container`; returns {destroy}. */
export async function showRegistration(container, job, local) {
  if (job.status !== "succeeded") {
    container.replaceChildren(h("h2", {}, "Result"), h("p", { class: "status error" }, `${job.status}: ${job.error || ""}`));
    return { destroy() {} };
  }
  container.dataset.job = job.id;
  const box = h("div", { class: "viewer", id: "viewer", tabindex: 0, "aria-label": "Image; arrow keys change the slice" });
  const side = { controls: h("div", { class: "controls" }), sliceTable: h("div", { class: "scroll" }) };
  const r = job.report || {};
  const links = downloads(withPreview(job));
  container.replaceChildren(h("h2", {}, "Result"),
    h("p", {}, `model ${job.model_version} · folding ${fmt(r.folding_pct, 3)} % · ${fmt(job.timings_s?.total, 1)} s`),
    h("div", { class: "result" }, box, h("div", {}, side.controls, h("h3", {}, "Dice (%)"), diceTable(r),
      h("h3", {}, "Dice per slice (%)"), side.sliceTable)),
    h("h3", {}, "Downloads"), links,
    h("details", {}, h("summary", {}, "report.json"), h("pre", { class: "json" }, JSON.stringify(r, null, 2))));
  let view = null;
  try {
    view = await interactive(box, job, local, side);
    if (!view) {
      await preview(box, job);
      side.controls.replaceChildren(h("p", { class: "note" }, "This browser has no WebGL2 (or the viewer was not built): showing the service's preview."));
    }
  } catch (error) {
    box.replaceChildren(h("p", { class: "fallback" }, `The images could not be shown: ${errorText(error)}`));
  }
  return { destroy: () => view && view.destroy() };
}
