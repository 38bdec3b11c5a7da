/* The start form's inputs, built from the JobSpec schema the API publishes (schema.js): a
   workload selector, the common fields, and the chosen workload's own fields, each input by
   its JSON-schema type; and the JobSpec read back from them. Empty inputs are left out, so
   the server's defaults apply. A list of prompt items (the llm workload's `items`) is typed
   one prompt a line, or read from a local JSONL file (itemsinput.js). */
import { itemsInput, parseItems } from "./itemsinput.js";
import { commonFields, workloadField, workloadFields } from "./schema.js";
import { $, el } from "./util.js";

// Where the schema gives no default (it is the server's settings), values that make a demo
// worth watching: 20 chunks of 10 items, each item taking 20 ms.
const DEMO_DEFAULTS = { total_items: 200, chunk_size: 10, item_delay_ms: 20 };
const HINTS = {
  indexes: { placeholder: "e.g. 2,5", size: 10 },
  pairs: { placeholder: "e.g. 3:2,7:1", size: 12 },
  json: { placeholder: "JSON" },
  count: { placeholder: "e.g. 10 or 10%", size: 10 },
};

// The inputs on the page, each with the field it stands for.
const inputs = new Map();

export function buildForm(spec) {
  const selector = labelled(workloadField(spec));
  $("spec-common").replaceChildren(selector, ...commonFields(spec).map(labelled));
  const workload = selector.querySelector("select");
  const showOwn = () => {
    $("spec-workload").replaceChildren(); // first: the ids its old fields held are free again
    for (const input of inputs.keys()) if (!input.isConnected) inputs.delete(input);
    const own = workloadFields(spec, workload.value);
    $("spec-workload").replaceChildren(...own.map(labelled));
    countedFromItems(own.some((f) => kindOf(f.schema) === "prompts"));
  };
  workload.addEventListener("change", showOwn);
  showOwn();
}

// A workload whose items are given counts them itself: a total_items that disagreed would be
// refused, so the demo's 200 is left out (and put back for a workload that needs it).
function countedFromItems(counted) {
  const total = [...inputs].find(([, f]) => f.name === "total_items")?.[0];
  if (!total) return;
  if (counted && total.value === String(DEMO_DEFAULTS.total_items)) total.value = "";
  if (!counted && total.value === "") total.value = String(DEMO_DEFAULTS.total_items);
  total.placeholder = counted ? "from the items" : "";
}

// A labelled input for one field, its kind from the schema's type.
function labelled(f) {
  const s = f.schema, kind = kindOf(s);
  if (kind === "prompts") {
    const { label, input } = itemsInput(f);
    inputs.set(input, f);
    return label;
  }
  const input = kind === "choice" ? choiceInput(s, f.required) : el("input");
  if (kind !== "choice") {
    const numeric = kind === "integer" || kind === "number";
    Object.assign(input, { type: numeric ? "number" : "text" }, HINTS[kind]);
    const { min, max } = kind === "number" ? {} : bounds(s);
    input.step = kind === "integer" ? "1" : "any";
    if (kind === "integer" && min != null) input.min = String(min);
    if (kind === "integer" && max != null) input.max = String(max);
    if (kind === "number" && s.minimum != null) input.min = String(s.minimum);
    if (s.maxLength != null) input.maxLength = s.maxLength;
    input.value = asText(kind, s.default ?? DEMO_DEFAULTS[f.name]);
  }
  // The id the page's tests know a field by (total_items -> total-items), unless the page
  // already has an element of that id.
  const id = f.name.replace(/_/g, "-");
  Object.assign(input, { id: $(id) ? `spec-${id}` : id, name: f.name, required: f.required });
  input.dataset.kind = kind;
  const label = el("label", null, f.required && kind !== "choice" ? `${f.name} *` : f.name);
  if (s.description) label.title = input.title = s.description;
  label.append(input);
  inputs.set(input, f);
  return label;
}

function kindOf(s) {
  if (s.enum) return "choice";
  if (s.type === "string") return "text";
  if (s.type === "integer") return "integer";
  if (s.type === "number") return "number";
  if (isPromptList(s)) return "prompts";
  if (isCountOrText(s)) return "count"; // e.g. max_failed_items: 10 or "10%"
  if (s.type === "array" && s.items?.type === "integer") return "indexes";
  if (s.type === "object" && s.additionalProperties?.type === "integer") return "pairs";
  return "json"; // any other type (boolean, list of strings, an object…): typed as JSON
}

// A list of objects each with an id and a prompt: what a user types a line at a time.
function isPromptList(s) {
  const props = s.type === "array" && s.items?.type === "object" ? s.items.properties : null;
  return Boolean(props && props.id && props.prompt);
}

// An integer or a string (pydantic's anyOf [integer, string]): typed as one text.
function isCountOrText(s) {
  const types = (s.anyOf || s.oneOf || []).map((o) => o.type).filter((t) => t !== "null");
  return types.length === 2 && types.includes("integer") && types.includes("string");
}

// A select of the schema's values; a blank first where the field may be left out.
function choiceInput(s, required) {
  const select = el("select");
  if (!required && s.default === undefined) select.append(el("option", null, ""));
  for (const value of s.enum) {
    const option = el("option", null, String(value));
    Object.assign(option, { value: String(value), selected: value === s.default });
    select.append(option);
  }
  return select;
}

// An integer's bounds: pydantic writes gt and lt as exclusiveMinimum and exclusiveMaximum.
function bounds(s) {
  const min = s.minimum ?? (s.exclusiveMinimum != null ? s.exclusiveMinimum + 1 : null);
  const max = s.maximum ?? (s.exclusiveMaximum != null ? s.exclusiveMaximum - 1 : null);
  return { min, max };
}

// A default shown as it would be typed: [2, 5] as "2,5", {"3": 2} as "3:2".
function asText(kind, value) {
  if (value == null) return "";
  if (kind === "indexes" && Array.isArray(value)) return value.join(",");
  if (kind === "pairs" && typeof value === "object") {
    return Object.entries(value).map(([k, v]) => `${k}:${v}`).join(",");
  }
  return kind === "json" ? JSON.stringify(value) : String(value);
}

// The JobSpec the inputs say; throws, naming the field, on what cannot be sent.
export function readSpec() {
  const spec = {};
  for (const [input, f] of inputs) {
    const text = input.value.trim();
    if (text === "") continue;
    spec[f.name] = input.dataset.kind === "prompts"
      ? parseItems(f.name, text, input.dataset.source) : parse(input.dataset.kind, f, text);
  }
  return spec;
}

function parse(kind, { name, schema: s }, text) {
  if (kind === "integer") return integer(text, s, name);
  if (kind === "number") return number(text, s, name);
  if (kind === "count") {
    // Digits are a count; anything else (a share, "10%") goes as typed, for the API to check.
    const integerOption = (s.anyOf || s.oneOf || []).find((o) => o.type === "integer") || {};
    return /^\d+$/.test(text) ? integer(text, integerOption, name) : text;
  }
  if (kind === "text") return text;
  if (kind === "choice") return s.enum.find((v) => String(v) === text);
  if (kind === "indexes") {
    return text.split(/[\s,]+/).filter(Boolean).map((part) => integer(part, s.items, name));
  }
  if (kind === "pairs") {
    const pairs = {};
    for (const part of text.split(",").map((p) => p.trim()).filter(Boolean)) {
      const m = /^(\d+)\s*:\s*(\S+)$/.exec(part);
      if (!m) throw new Error(`${name}: "${part}" is not index:count (e.g. 3:2)`);
      pairs[m[1]] = integer(m[2], s.additionalProperties, name);
    }
    return pairs;
  }
  try {
    return JSON.parse(text);
  } catch (_) {
    throw new Error(`${name}: "${text}" is not JSON`);
  }
}

// A finite number within the schema's bounds (exclusive ones too: a cap must be > 0).
function number(text, s, name) {
  const value = Number(text);
  const fits = Number.isFinite(value) &&
    (s.minimum == null || value >= s.minimum) && (s.maximum == null || value <= s.maximum) &&
    (s.exclusiveMinimum == null || value > s.exclusiveMinimum) &&
    (s.exclusiveMaximum == null || value < s.exclusiveMaximum);
  if (fits) return value;
  const limits = [
    s.minimum != null && ` ≥ ${s.minimum}`, s.exclusiveMinimum != null && ` > ${s.exclusiveMinimum}`,
    s.maximum != null && ` ≤ ${s.maximum}`, s.exclusiveMaximum != null && ` < ${s.exclusiveMaximum}`,
  ].filter(Boolean);
  throw new Error(`${name}: "${text}" is not a number${limits.join(" and")}`);
}

// A whole number within the schema's bounds; else an error naming the field and the bounds.
function integer(text, s, name) {
  const value = Number(text), { min, max } = bounds(s);
  if (Number.isInteger(value) && (min == null || value >= min) && (max == null || value <= max)) {
    return value;
  }
  const limits = [min != null && ` ≥ ${min}`, max != null && ` ≤ ${max}`].filter(Boolean);
  throw new Error(`${name}: "${text}" is not a whole number${limits.join(" and")}`);
}
