/* The start form: builds a JobSpec from its inputs and starts it on one path or both; on
   both, the two new jobs open in the compare view. */
import { request } from "./api.js";
import { openCompare } from "./compare.js";
import { shortId } from "./format.js";
import { refreshLists } from "./lists.js";
import { notify } from "./notice.js";
import { app, BASES, cloudReason } from "./state.js";
import { $ } from "./util.js";
import { selectJob } from "./view.js";

const START_BUTTONS = ["start-local", "start-cloud", "start-both"];

function readSpec() {
  const whole = (id, min) => {
    const value = Number($(id).value);
    if (Number.isInteger(value) && value >= min) return value;
    throw new Error(`${id.replace(/-/g, "_")} must be a whole number ≥ ${min}`);
  };
  const spec = {
    total_items: whole("total-items", 1), chunk_size: whole("chunk-size", 1),
    item_delay_ms: whole("item-delay-ms", 0), priority: "normal",
  };
  const fail = parseIndexList($("fail-chunks").value);
  if (fail.length) spec.fail_chunks = fail;
  const flaky = parseFlaky($("flaky-chunks").value);
  if (Object.keys(flaky).length) spec.flaky_chunks = flaky;
  return spec;
}

function parseIndexList(text) {
  return text.split(/[\s,]+/).filter(Boolean).map((part) => {
    if (!/^\d+$/.test(part)) throw new Error(`fail_chunks: "${part}" is not a chunk index`);
    return Number(part);
  });
}

function parseFlaky(text) {
  const flaky = {};
  for (const part of text.split(",").map((p) => p.trim()).filter(Boolean)) {
    const m = /^(\d+)\s*:\s*(\d+)$/.exec(part);
    if (!m) throw new Error(`flaky_chunks: "${part}" is not index:failures (e.g. 3:2)`);
    flaky[m[1]] = Number(m[2]);
  }
  return flaky;
}

export async function onStart(paths) {
  let spec;
  try {
    spec = readSpec();
  } catch (err) {
    return notify(err.message, "error");
  }
  setStartButtons(false);
  notify(`starting on ${paths.join(" and ")}…`);
  const results = await Promise.all(paths.map((path) => startOne(path, spec)));
  setStartButtons(true);
  notify(results.map((r) => r.text).join(" · "), results.some((r) => !r.id) ? "error" : "ok");
  const started = results.filter((r) => r.id);
  if (paths.length === 2 && started.length === 2) {
    [app.picks.local, app.picks.cloud] = [started[0].id, started[1].id];
    openCompare(app.picks.local, app.picks.cloud);
  }
  if (started.length) selectJob(started[0].path, started[0].id);
  refreshLists(); // show the new rows now, not in 3 s
}

async function startOne(path, spec) {
  if (path === "cloud" && !app.config.cloud.configured) {
    return { path, text: `cloud not started: ${cloudReason()}` };
  }
  try {
    const { status, data } = await request("POST", `${BASES[path]}/jobs`, { body: spec });
    return { path, id: data.job_id, text: `started ${path} job ${shortId(data.job_id)} (${status})` };
  } catch (err) {
    return { path, text: `${path} start failed: ${err.message}` };
  }
}

function setStartButtons(enabled) {
  for (const id of START_BUTTONS) $(id).disabled = !enabled;
}

// Says on the cloud buttons why the cloud path is off (they still answer with the reason).
export function markCloudOff() {
  if (app.config.cloud.configured) return;
  for (const id of ["start-cloud", "start-both"]) $(id).title = `cloud: ${cloudReason()}`;
}
