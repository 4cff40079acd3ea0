// A finished cine registration on screen: the frames as a movie with the carried mask's outlines,
// and the volume curves with the frame on screen marked. The cine itself is the user's file (the
// API does not serve inputs back); without it, the carried masks are shown on their own.

import { bytes } from "./api.js";
import { drawChart } from "./chart.js";
import { labelColourMap, outline } from "./overlays.js";
import { labelNames } from "./report.js";
import { downloads, errorText, fmt, h } from "./ui.js";
import { SliceView } from "./viewer.js";

function curves(report) {
  const unit = report.unit === "area_mm2" ? "mm²" : "mL";
  const key = report.unit || "volume_ml";
  const series = Object.values(report.labels || {}).map((e) => ({ name: e.name, points: (e[key] || []).map((v, t) => [t, v]) }));
  return { series, unit };
}

function summary(report) {
  const lv = report.lv;
  if (!lv) return h("p", { class: "note" }, report.lv_note || "No left ventricle named: no EF.");
  return h("dl", { class: "kv", id: "cine-summary" },
    h("dt", {}, "ED frame"), h("dd", {}, `${lv.ed_frame} (${fmt(lv.edv_ml, 1)} mL)`),
    h("dt", {}, "ES frame"), h("dd", {}, `${lv.es_frame} (${fmt(lv.esv_ml, 1)} mL)`),
    h("dt", {}, "ejection fraction"), h("dd", { dataset: { value: lv.ef_pct } }, `${fmt(lv.ef_pct, 1)} %`));
}

async function layers(view, job, cineFile) {
  const masks = await view.image(await bytes(job.outputs.warped_masks.url), "warped_masks.nii.gz");
  const names = labelNames(job.report);
  let max = 1;
  for (const v of masks.img) if (v > max) max = v;
  const carried = view.derived(masks, outline(masks.img, masks.hdr.dims[1], masks.hdr.dims[2]), { labels: labelColourMap(max, names) });
  if (cineFile) {
    try {
      return { background: await view.image(await cineFile.arrayBuffer(), cineFile.name, { colormap: "gray" }), carried, note: "" };
    } catch {
      // a DICOM zip: NiiVue reads volumes, not archives of slices
    }
  }
  masks.setColormapLabel(labelColourMap(max, names));
  return { background: masks, carried, note: "The cine itself is not shown (a DICOM zip, or opened from Jobs): the masks alone." };
}

function player(view, onFrame) {
  let timer = null;
  const button = h("button", { type: "button", class: "secondary", id: "play" }, "Play");
  const fps = h("select", { id: "fps", "aria-label": "frames per second" }, [4, 8, 15].map((f) => h("option", { value: f, selected: f === 8 }, `${f} fps`)));
  const toggle = () => {
    if (timer) {
      clearInterval(timer);
      timer = null;
    } else {
      timer = setInterval(() => onFrame((view.frame + 1) % view.frames), 1000 / Number(fps.value));
    }
    button.textContent = timer ? "Pause" : "Play";
  };
  button.onclick = toggle;
  fps.onchange = () => { if (timer) { toggle(); toggle(); } };
  return { element: h("div", { class: "row" }, button, fps), toggle, stop: () => timer && toggle() };
}

async function interactive(box, job, cineFile, side) {
  const view = await SliceView.create(box, "cine frame with the carried mask");
  if (!view) return null;
  const { background, carried, note } = await layers(view, job, cineFile);
  view.setVolumes(background, { carried });
  view.setLayer("carried", 1);
  view.frames = job.report.frames;
  view.frame = 0;
  const { series, unit } = curves(job.report);
  const chart = h("canvas", { class: "chart", id: "volume-chart", role: "img", "aria-label": `volume of each label by frame (${unit})` });
  const frameSlider = h("input", { type: "range", id: "frame", min: 0, max: view.frames - 1, value: 0 });
  const frameText = h("output", { for: "frame" });
  const showFrame = (t) => {
    view.frame = t;
    view.setFrame(t);
    frameSlider.value = t;
    frameText.textContent = `${t + 1} of ${view.frames}`;
    box.dataset.frame = String(t);
    drawChart(chart, series, { title: `${unit} by frame`, xLabel: "frame", marker: t });
  };
  const play = player(view, showFrame);
  frameSlider.oninput = () => showFrame(Number(frameSlider.value));
  const sliceSlider = h("input", { type: "range", id: "cine-slice", min: 0, max: view.slices - 1, value: view.slice,
    disabled: view.slices < 2, oninput: (event) => view.setSlice(Number(event.target.value)) });
  view.onSlice = (k) => { sliceSlider.value = k; };
  box.addEventListener("keydown", (event) => {
    const keys = { " ": () => play.toggle(), ArrowRight: () => showFrame((view.frame + 1) % view.frames),
      ArrowLeft: () => showFrame((view.frame + view.frames - 1) % view.frames),
      ArrowUp: () => view.setSlice(view.slice + 1), ArrowDown: () => view.setSlice(view.slice - 1) };
    if (!keys[event.key]) return;
    event.preventDefault();
    keys[event.key]();
    sliceSlider.value = view.slice;
  });
  side.replaceChildren(h("div", { class: "controls" },
    h("div", { class: "field" }, h("label", { for: "frame" }, "Frame"), frameSlider, frameText), play.element,
    h("div", { class: "field" }, h("label", { for: "cine-slice" }, "Slice"), sliceSlider),
    h("p", { class: "note", hidden: !note }, note)), summary(job.report), chart);
  showFrame(job.report.reference_frame || 0);
  box.dataset.ready = "true";
  return { destroy: () => { play.stop(); view.destroy(); } };
}

/** Render the cine `job` into `container`; returns {destroy}. */
export async function showCine(container, job, cineFile) {
  if (job.status !== "succeeded") {
    container.replaceChildren(h("h2", {}, "Result"), h("p", { class: "status error" }, `${job.status}: ${job.error || ""}`));
    return { destroy() {} };
  }
  container.dataset.job = job.id;
  const box = h("div", { class: "viewer", id: "cine-viewer", tabindex: 0, "aria-label": "Cine; space plays, arrow keys change frame and slice" });
  const side = h("div", {});
  container.replaceChildren(h("h2", {}, "Result"), h("div", { class: "result" }, box, side),
    h("h3", {}, "Downloads"), downloads(job.outputs));
  try {
    const view = await interactive(box, job, cineFile, side);
    if (view) return view;
    const { series, unit } = curves(job.report);
    const chart = h("canvas", { class: "chart", role: "img", "aria-label": "volume curves" });
    side.replaceChildren(h("p", { class: "note" }, "No WebGL2 (or the viewer was not built): the curves alone."), summary(job.report), chart);
    drawChart(chart, series, { title: `${unit} by frame`, xLabel: "frame" });
  } catch (error) {
    box.replaceChildren(h("p", { class: "fallback" }, `The frames could not be shown: ${errorText(error)}`));
  }
  return { destroy() {} };
}
