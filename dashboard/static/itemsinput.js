/* The start form's input for a list of prompt items (the llm workload's `items`): a text box
   of one prompt a line, each becoming {id: "<its number>", prompt}, or a local JSONL file
   read in the browser (FileReader), whose lines fill the box. A line that starts with "{" is
   an item as JSON ({id, prompt} or {id, text}), so a pasted JSONL reads as the file would. */
import { el } from "./util.js";

// POST /jobs takes at most 1 MiB (guards.py and API Gateway's limit alike).
export const MAX_BODY_BYTES = 1024 * 1024;

// The field's label with its text box, file picker and a line that says what was read.
export function itemsInput(f) {
  const input = el("textarea");
  Object.assign(input, {
    id: "items", name: f.name, rows: 4, spellcheck: false,
    placeholder: "one prompt a line, or pick a JSONL file",
  });
  input.dataset.kind = "prompts";
  const file = el("input");
  Object.assign(file, { id: "items-file", type: "file", accept: ".jsonl,.json,.txt" });
  const said = el("span", "items-said", "");
  said.id = "items-said";
  file.addEventListener("change", () => readFile(file, input, said, f.name));
  input.addEventListener("input", () => {
    delete input.dataset.source; // typed over: its lines are no longer the file's
    describe(input, said, f.name);
  });
  const label = el("label", "items", f.name);
  if (f.schema.description) label.title = input.title = f.schema.description;
  label.append(input, file, said);
  return { label, input };
}

function readFile(file, input, said, name) {
  const picked = file.files && file.files[0];
  if (!picked) return;
  if (picked.size > MAX_BODY_BYTES) {
    file.value = ""; // not kept: the box keeps what it had
    return say(said, `${name}: ${picked.name} is ${picked.size.toLocaleString("en-US")} bytes; ` +
      `a request takes at most ${MAX_BODY_BYTES.toLocaleString("en-US")} (1 MiB): ` +
      "stage it and give input_uri instead", true);
  }
  const reader = new FileReader();
  reader.onload = () => {
    file.value = ""; // the same file picked again (edited meanwhile) is read again
    input.value = String(reader.result).replace(/\r\n/g, "\n").trimEnd();
    input.dataset.source = picked.name;
    describe(input, said, name);
  };
  reader.onerror = () => say(said, `${name}: cannot read ${picked.name}: ${reader.error}`, true);
  reader.readAsText(picked);
}

// Says at once how many items the box holds, or its first bad line.
function describe(input, said, name) {
  if (!input.value.trim()) return say(said, "", false);
  try {
    const n = parseItems(name, input.value, input.dataset.source).length;
    say(said, `${n} item${n === 1 ? "" : "s"}` +
      (input.dataset.source ? ` from ${input.dataset.source}` : ""), false);
  } catch (err) {
    say(said, err.message, true);
  }
}

function say(said, text, bad) {
  said.textContent = text;
  said.classList.toggle("error", bad);
}

// The items the text says; throws naming the line (and the file it came from) on a bad one.
export function parseItems(name, text, source) {
  const where = (n) => `${name}: line ${n}${source ? ` of ${source}` : ""}`;
  const items = [];
  text.split("\n").forEach((line, i) => {
    const trimmed = line.trim();
    if (!trimmed) return; // blank lines separate, they are no items
    if (!trimmed.startsWith("{")) {
      items.push({ id: String(items.length + 1), prompt: trimmed });
      return;
    }
    let item;
    try {
      item = JSON.parse(trimmed);
    } catch (err) {
      throw new Error(`${where(i + 1)} is not JSON (${err.message})`);
    }
    if (!item || typeof item !== "object" || Array.isArray(item)) {
      throw new Error(`${where(i + 1)} is not a JSON object`);
    }
    if (typeof item.id !== "string" || !item.id) {
      throw new Error(`${where(i + 1)} has no "id" (a non-empty string)`);
    }
    if (typeof item.prompt !== "string" && typeof item.text !== "string") {
      throw new Error(`${where(i + 1)} has no "prompt" or "text"`);
    }
    items.push(item);
  });
  if (!items.length) throw new Error(`${name}: no items (one prompt a line)`);
  return items;
}
