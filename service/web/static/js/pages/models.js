// Models: the registry's models, their versions, cards and stage labels; promote a version.
// Promoting needs an admin key (the API answers 403 otherwise, and the message is shown).

import { getJson, postJson } from "../api.js";
import { badge, errorText, h, setStatus, when } from "../ui.js";

const CARD_FIELDS = ["architecture", "method", "intended_use", "created_by"];

function cardSummary(card) {
  const data = card.data || {};
  const validation = card.validation || card.metrics || {};
  const rows = [
    ...CARD_FIELDS.filter((k) => card[k] !== undefined && typeof card[k] !== "object").map((k) => [k, card[k]]),
    ["data", data.dataset || data.spec || data.dataset_id || ""],
    ...Object.entries(validation).filter(([, v]) => typeof v === "number").map(([k, v]) => [k, +v.toFixed(4)]),
  ].filter(([, v]) => v !== "");
  return h("dl", { class: "kv" }, rows.flatMap(([k, v]) => [h("dt", {}, k), h("dd", {}, String(v))]));
}

function promoteForm(model, version, status, refresh) {
  const stage = h("input", { type: "text", name: "stage", value: "production", list: "stages", size: 10,
    "aria-label": `stage for ${version.ref}` });
  return h("form", { class: "row", onsubmit: async (event) => {
    event.preventDefault();
    try {
      const done = await postJson(`/v1/models/${encodeURIComponent(model.name)}/versions/${version.version}/promote`,
        { stage: stage.value.trim() || "production" });
      setStatus(status, `${model.name} ${done.stage} → version ${done.version}`, "ok");
      refresh();
    } catch (error) {
      setStatus(status, errorText(error), "error");
    }
  } }, stage, h("button", { type: "submit", class: "secondary" }, `Promote ${version.ref}`));
}

function modelCard(model, status, refresh) {
  const rows = model.versions.slice().reverse().map((version) => h("tr", { dataset: { ref: version.ref } },
    h("td", {}, version.ref),
    h("td", { class: "stages" }, version.stages.map(badge)),
    h("td", {}, when(version.created_at)),
    h("td", {}, cardSummary(version.card || {}),
      h("details", {}, h("summary", {}, "card"), h("pre", { class: "json" }, JSON.stringify(version.card, null, 2)))),
    h("td", {}, promoteForm(model, version, status, refresh))));
  return h("section", { class: "panel", dataset: { model: model.name } },
    h("h2", {}, model.name, " ", Object.entries(model.stages).map(([s, v]) => badge(`${s}`)).concat(
      Object.keys(model.stages).length ? [] : [h("span", { class: "note" }, "no stage")])),
    h("table", {}, h("thead", {}, h("tr", {}, ["version", "stages", "created", "card", "promote"].map((t) => h("th", {}, t)))),
      h("tbody", {}, rows)));
}

export function render(root) {
  const status = h("p", { class: "status", role: "status" });
  const list = h("div", { class: "cards" });
  const refresh = async () => {
    try {
      const models = await getJson("/v1/models?limit=100");
      const details = await Promise.all(models.data.map((m) => getJson(`/v1/models/${encodeURIComponent(m.name)}`)));
      list.replaceChildren(...details.map((m) => modelCard(m, status, refresh)));
      if (!details.length) list.append(h("p", { class: "note" }, "No models yet."));
    } catch (error) {
      setStatus(status, errorText(error), "error");
    }
  };
  root.append(h("h1", {}, "Models"),
    h("p", { class: "note" }, "A name alone means its production version; promoting moves a stage label to a version (admin keys)."),
    h("datalist", { id: "stages" }, h("option", { value: "production" }), h("option", { value: "staging" })),
    status, list);
  refresh();
}
