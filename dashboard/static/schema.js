/* The JobSpec as the API publishes it in GET /openapi.json: the workloads it names and the
   fields of each. Each workload owns its fields, published as a oneOf of the JobSpec with a
   discriminator on `workload`; following that structure (not a list of names) is what lets a
   workload added by a plug-in show up in the start form with no change here. */
import { getJson } from "./api.js";

// Of the fields every workload shares, those the start form asks for: the job controls too
// (a spend cap, a failure threshold), which the JobSpec holds beside the workload's fields.
const COMMON_SHOWN = ["total_items", "chunk_size", "priority", "max_cost_usd", "max_failed_items"];

// The JobSpec schema and the document its $refs point into.
export async function loadJobSpec() {
  const doc = await getJson("/openapi.json");
  const model = doc?.components?.schemas?.JobSpec;
  if (!model) throw new Error("/openapi.json has no components.schemas.JobSpec");
  return { doc, model };
}

// "#/components/schemas/LlmFields" -> that schema (a JSON pointer into the document).
function pointer(doc, ref) {
  if (!ref.startsWith("#/")) throw new Error(`unsupported $ref ${ref}`);
  let node = doc;
  for (const key of ref.slice(2).split("/")) {
    node = node?.[key.replace(/~1/g, "/").replace(/~0/g, "~")];
  }
  if (!node) throw new Error(`/openapi.json: ${ref} is not there`);
  return node;
}

// A schema with its $ref followed and an optional field's {"type": "null"} dropped (pydantic
// writes `int | None` as anyOf [integer, null]); title, description and default stay.
function plain(doc, schema) {
  if (!schema) return {};
  if (schema.$ref) {
    const { $ref, ...own } = schema;
    return { ...plain(doc, pointer(doc, $ref)), ...own };
  }
  const options = schema.anyOf || schema.oneOf || schema.allOf;
  const real = (options || []).filter((s) => s.type !== "null");
  if (real.length !== 1) return schema;
  const { anyOf, oneOf, allOf, ...own } = schema;
  return { ...plain(doc, real[0]), ...own };
}

// A field's schema made plain, and so are its items (array) or values (object).
function fieldSchema(doc, schema) {
  const s = plain(doc, schema);
  const inner = (key) => (s[key] && typeof s[key] === "object" ? { [key]: plain(doc, s[key]) } : {});
  return { ...s, ...inner("items"), ...inner("additionalProperties") };
}

// The workload field, as a choice of the workloads named, the default chosen.
export function workloadField({ doc, model }) {
  const s = fieldSchema(doc, model.properties?.workload);
  const names = s.enum || Object.keys(model.discriminator?.mapping || {});
  const chosen = names.includes(s.default) ? s.default : names[0];
  return { name: "workload", schema: { ...s, enum: names, default: chosen }, required: true };
}

// The form's fields, in the schema's order: {name, schema (plain), required}.
function fieldsOf(doc, schema, keep) {
  const required = new Set(schema.required || []);
  return Object.entries(schema.properties || {}).filter(([name]) => keep(name))
    .map(([name, field]) => ({ name, schema: fieldSchema(doc, field), required: required.has(name) }));
}

export const commonFields = ({ doc, model }) =>
  fieldsOf(doc, model, (name) => COMMON_SHOWN.includes(name));

// The workload's own fields: its branch of the oneOf, found by the discriminator's mapping
// (a workload with no branch has no fields of its own).
export function workloadFields({ doc, model }, name) {
  const by = model.discriminator?.propertyName || "workload";
  const ref = model.discriminator?.mapping?.[name];
  return ref ? fieldsOf(doc, plain(doc, { $ref: ref }), (field) => field !== by) : [];
}
