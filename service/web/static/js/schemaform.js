// A form built from the API's own OpenAPI schema (/openapi.json), so a field the API gains shows up
// here without a change: numbers with their bounds, enums as selects, booleans as checkboxes,
// nullable fields that may be left empty, lists as comma-separated numbers, nested objects as fieldsets.

import { field, h } from "./ui.js";

const resolve = (schema, components) =>
  schema.$ref ? components[schema.$ref.split("/").pop()] : schema;

/** {type, nullable, ...} of a property: anyOf [T, null] becomes T with nullable set. */
function kind(schema, components) {
  const base = resolve(schema, components);
  const options = base.anyOf || [];
  const other = options.find((s) => s.type !== "null");
  if (options.length === 2 && other && options.some((s) => s.type === "null")) {
    return { ...resolve(other, components), nullable: true, description: base.description, default: base.default };
  }
  return { ...base, description: schema.description || base.description, default: schema.default ?? base.default };
}

const pretty = (name) => name.replaceAll("_", " ");

function input(name, spec) {
  const value = spec.default ?? "";
  if (spec.enum) {
    return h("select", { name }, spec.nullable ? h("option", { value: "" }, "–") : null,
      spec.enum.map((v) => h("option", { value: v, selected: v === value }, v)));
  }
  if (spec.type === "boolean") return h("input", { type: "checkbox", name, checked: Boolean(spec.default) });
  if (spec.type === "integer" || spec.type === "number") {
    const min = spec.minimum ?? spec.exclusiveMinimum;
    const max = spec.maximum ?? spec.exclusiveMaximum;
    return h("input", { type: "number", name, value: String(value), min, max,
      step: spec.type === "integer" ? 1 : "any", placeholder: spec.nullable ? "empty: null" : "" });
  }
  const text = Array.isArray(value) ? value.join(", ") : typeof value === "object" ? JSON.stringify(value) : value;
  const hint = spec.type === "array" ? "e.g. 1, 2" : spec.type === "object" ? '{"name": value}' : "";
  return h("input", { type: "text", name, value: text, placeholder: spec.nullable ? `empty: null ${hint}`.trim() : hint });
}

function parse(el, spec) {
  if (el.type === "checkbox") return el.checked;
  const text = el.value.trim();
  if (text === "") return spec.nullable ? null : undefined; // undefined: left to the server's default
  if (spec.type === "integer" || spec.type === "number") return Number(text);
  if (spec.type === "array") return text.split(/[\s,]+/).filter(Boolean).map(Number);
  if (spec.type === "object") return JSON.parse(text);
  return text;
}

/**
 * Fields for `schema`'s properties, except `skip`; nested object references become a collapsed
 * fieldset. Returns {element, read()}; read() gives the request body (empty optional fields left out).
 */
export function schemaForm(schema, components, { skip = [], required = [], open = false, prefix = "" } = {}) {
  const readers = [];
  const fields = [];
  const nested = [];
  for (const [name, property] of Object.entries(schema.properties || {})) {
    if (skip.includes(name)) continue;
    const spec = kind(property, components);
    if (spec.type === "object" && spec.properties) {
      const inner = schemaForm(spec, components, { prefix: `${prefix}${name}.` });
      nested.push(h("details", { open }, h("summary", {}, `${pretty(name)}: ${spec.description || ""}`.slice(0, 90)), inner.element));
      readers.push([name, inner.read]);
      continue;
    }
    const el = input(`${prefix}${name}`, spec);
    if (required.includes(name) || (schema.required || []).includes(name)) el.required = true;
    fields.push(field(pretty(name), el, spec.description));
    readers.push([name, () => parse(el, spec)]);
  }
  return {
    element: h("div", { class: "stack" }, h("div", { class: "grid2" }, fields), nested),
    read: () => Object.fromEntries(readers.map(([name, read]) => [name, read()]).filter(([, v]) => v !== undefined)),
  };
}

/** The API's schema, fetched once per page load. */
let cached = null;
export async function apiSchema() {
  cached ||= fetch(new URL("openapi.json", document.baseURI)).then((r) => r.json());
  return cached;
}
