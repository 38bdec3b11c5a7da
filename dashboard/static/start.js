/* The start form: its inputs built from the published JobSpec schema (specform.js), the
   JobSpec they say started on one path or both; on both, the new jobs open in the compare
   view. */
import { request } from "./api.js";
import { openCompare } from "./compare.js";
import { shortId } from "./format.js";
import { refreshLists } from "./lists.js";
import { notify, notifyError } from "./notice.js";
import { loadJobSpec } from "./schema.js";
import { MAX_BODY_BYTES } from "./itemsinput.js";
import { buildForm, readSpec } from "./specform.js";
import { app, BASES, cloudReason } from "./state.js";
import { $ } from "./util.js";
import { selectJob } from "./view.js";

const START_BUTTONS = ["start-local", "start-cloud", "start-both"];

// The form is built from the JobSpec schema the API publishes: until it is, nothing starts.
export async function loadStartForm() {
  setStartButtons(false);
  try {
    buildForm(await loadJobSpec());
    setStartButtons(true);
  } catch (err) {
    notifyError(err, "start form: cannot read the JobSpec schema");
  }
}

export async function onStart(paths) {
  let spec;
  try {
    spec = readSpec();
  } catch (err) {
    return notify(err.message, "error");
  }
  const bytes = new Blob([JSON.stringify(spec)]).size;
  if (bytes > MAX_BODY_BYTES) {
    return notify(`the JobSpec is ${bytes.toLocaleString("en-US")} bytes; a request takes at ` +
      `most ${MAX_BODY_BYTES.toLocaleString("en-US")} (1 MiB): stage the items in a file and ` +
      "give input_uri instead", "error");
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
