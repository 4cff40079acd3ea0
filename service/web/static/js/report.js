// The registration report (README, "Outputs and report.json") as tables: Dice per label before and
// after, and Dice per slice. Numbers are shown to one decimal; data-value keeps the report's own.

import { fmt, h } from "./ui.js";

/** {label: name} from the report's labels. */
export function labelNames(report) {
  return Object.fromEntries(Object.entries(report?.labels || {}).map(([k, entry]) => [k, entry.name || `label ${k}`]));
}

const cell = (value, attrs = {}) => h("td", { class: "num", dataset: { value: value ?? "" }, ...attrs }, fmt(value, 1));

export function diceTable(report) {
  const labels = Object.entries(report?.labels || {});
  if (!labels.some(([, e]) => e.after)) {
    return h("p", { class: "note" }, "Dice needs a fixed mask (and a moving mask) with the pair.");
  }
  return h("table", { id: "dice" },
    h("thead", {}, h("tr", {}, h("th", {}, "label"), h("th", { class: "num" }, "before"), h("th", { class: "num" }, "after"),
      h("th", { class: "num" }, "HD95 after (mm)"))),
    h("tbody", {}, labels.map(([k, e]) => h("tr", { dataset: { label: k } },
      h("th", { scope: "row" }, e.name || `label ${k}`),
      cell(e.before?.dice, { dataset: { label: k, kind: "before", value: e.before?.dice ?? "" } }),
      cell(e.after?.dice, { dataset: { label: k, kind: "after", value: e.after?.dice ?? "" } }),
      cell(e.after?.hd95_mm)))));
}

/**
 * Fill `container` with one row per slice (a column per label) and return {highlight(k), describe(k)}:
 * the row of the slice on screen is marked and scrolled into view; describe gives its Dice as text.
 */
export function sliceTable(report, container) {
  const labels = Object.entries(report?.labels || {}).filter(([, e]) => Array.isArray(e.per_slice_dice));
  if (!labels.length) {
    container.replaceChildren(h("p", { class: "note" }, "No per-slice Dice: it needs a fixed mask and a 3-D image."));
    return { highlight() {}, describe: () => "" };
  }
  const count = labels[0][1].per_slice_dice.length;
  const rows = Array.from({ length: count }, (_, z) => h("tr", { dataset: { slice: z } },
    h("th", { scope: "row", class: "num" }, String(z + 1)),
    labels.map(([k, e]) => cell(e.per_slice_dice[z], { dataset: { label: k, value: e.per_slice_dice[z] ?? "" } }))));
  container.replaceChildren(h("table", { id: "slice-dice" },
    h("thead", {}, h("tr", {}, h("th", { class: "num" }, "slice"), labels.map(([k, e]) => h("th", { class: "num" }, e.name || k)))),
    h("tbody", {}, rows)));
  return {
    highlight(k) {
      rows.forEach((row, z) => row.classList.toggle("current", z === k));
      if (rows[k]) container.scrollTop = rows[k].offsetTop - container.clientHeight / 2; // not the page
    },
    describe(k) {
      const scores = labels.map(([, e]) => (e.per_slice_dice[k] == null ? null : `${e.name} ${fmt(e.per_slice_dice[k], 1)}`));
      const text = scores.filter(Boolean).join(", ");
      return text ? ` · Dice ${text}` : "";
    },
  };
}
