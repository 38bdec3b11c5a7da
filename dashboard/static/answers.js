/* The answers of the selected llm job (GET /jobs/{id}/chunks/{index}/items): every chunk's at
   once for a small job, else the chunk a user picks (click the map, or type its index). Read
   again when the job's counts move, so answers appear as they arrive. */
import { getJson, jobUrl } from "./api.js";
import { fmtInt, fmtMs } from "./format.js";
import { notify, notifyError } from "./notice.js";
import { chunkAtEvent } from "./map.js";
import { app } from "./state.js";
import { $, el } from "./util.js";

const AUTO_CHUNKS = 5; // a job of up to this many chunks shows all its answers unasked
const PAGE = 500; // items a read asks for
const MAX_SHOWN = 1000; // the most answers on the page at once, whatever the chunks hold

// Called with every redraw of the counts: (re)reads the answers when what they show changed.
export function followAnswers(view) {
  const st = view.status;
  const llm = Boolean(st && st.usage); // only a workload that calls a model has answers
  $("answers").hidden = !llm;
  if (!llm || view.answers?.loading) return;
  const chunks = chunksShown(view);
  const key = [view.id, chunks.join(","), st.items_processed, st.usage.items_failed, st.status]
    .join("/");
  if (view.answers?.key === key) return;
  view.answers = { key, loading: true };
  loadAnswers(view, chunks)
    .catch((err) => notifyError(err, "answers"))
    .finally(() => {
      view.answers.loading = false;
      if (app.view === view) followAnswers(view); // it moved on meanwhile: read again
    });
}

function chunksShown(view) {
  if (view.answersChunk != null) return [view.answersChunk];
  $("answers-chunk").value = ""; // a job just selected: no chunk of the last one
  const total = view.status.total_chunks;
  return total <= AUTO_CHUNKS ? Array.from({ length: total }, (_, i) => i) : [];
}

async function loadAnswers(view, chunks) {
  const signal = view.ctrl.signal;
  if (!chunks.length) {
    $("answers-list").replaceChildren();
    $("answers-said").textContent = `${fmtInt(view.status.total_chunks)} chunks: pick one ` +
      "(click it on the map, or type its index) to read its answers";
    return;
  }
  const rows = [];
  let more = false;
  for (const index of chunks) {
    for (let after = -1; after != null;) {
      if (rows.length >= MAX_SHOWN) { more = true; break; }
      const query = `after=${after}&limit=${Math.min(PAGE, MAX_SHOWN - rows.length)}`;
      const page = await getJson(`${jobUrl(view)}/chunks/${index}/items?${query}`, signal);
      rows.push(...page.items);
      after = page.next_after;
    }
  }
  if (app.view !== view) return;
  $("answers-list").replaceChildren(...rows.map(answerItem));
  const which = chunks.length === 1 ? `chunk ${chunks[0]}` : `chunks 0–${chunks.length - 1}`;
  // The items endpoint lists failed items too: those are not answers.
  const failed = rows.filter((r) => r.error).length;
  $("answers-said").textContent = `${which}: ${fmtInt(rows.length - failed)} answered` +
    (failed ? `, ${fmtInt(failed)} failed` : "") + (more ? `, the first ${MAX_SHOWN} shown` : "");
}

function answerItem(row) {
  const item = el("li", row.error ? "failed" : null);
  Object.assign(item.dataset, { itemId: row.id, index: String(row.index) });
  item.append(el("span", "item-id", row.id));
  if (row.error) {
    item.append(el("div", "answer error", row.error));
  } else if (row.output == null && row.output_uri) {
    item.append(el("div", "answer", `(too big for the page: ${row.output_uri})`));
  } else {
    item.append(el("div", "answer", row.output ?? ""));
  }
  const tokens = (row.prompt_tokens || 0) + (row.completion_tokens || 0);
  if (tokens || row.latency_ms != null) {
    item.append(el("span", "item-meta", `${fmtInt(tokens)} tokens · ${fmtMs(row.latency_ms)}`));
  }
  return item;
}

// A chunk picked on the map or typed: its answers replace the list.
function pickChunk(index, typed = String(index)) {
  const view = app.view;
  if (!view || !view.status || $("answers").hidden) return;
  const total = view.status.total_chunks;
  if (!Number.isInteger(index) || index < 0 || index >= total) {
    return notify(`answers: "${typed}" is no chunk of this job (0 to ${total - 1})`, "error");
  }
  view.answersChunk = index;
  $("answers-chunk").value = String(index);
  followAnswers(view);
}

export function onAnswersSubmit(event) {
  event.preventDefault();
  const text = $("answers-chunk").value.trim();
  pickChunk(text === "" ? NaN : Number(text), text);
}

export function onMapClick(event) {
  const index = chunkAtEvent(event);
  if (index >= 0) pickChunk(index);
}
