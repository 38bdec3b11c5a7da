/* The job lists: both paths every 3 s; a failing or unconfigured cloud never blocks local.
   A row selects its job; its checkbox picks it for the compare view (one pick per path). */
import { getJson } from "./api.js";
import { closeCompare, openCompare } from "./compare.js";
import { statusBadge } from "./counts.js";
import { fmtClock, fmtInt, shortId } from "./format.js";
import { notifyError } from "./notice.js";
import { app, BASES, cloudReason, isSelected } from "./state.js";
import { $, el, sleep } from "./util.js";
import { selectJob } from "./view.js";

const LIST_EVERY_MS = 3000;

export async function listLoop() {
  for (;;) {
    await refreshLists();
    await sleep(LIST_EVERY_MS);
  }
}

export const refreshLists = () => Promise.all(["local", "cloud"].map(refreshList));

async function refreshList(path) {
  const ul = $(`jobs-${path}`);
  if (path === "cloud" && !app.config.cloud.configured) {
    return ul.replaceChildren(el("li", "reason", `cloud path not configured: ${cloudReason()}`));
  }
  try {
    const jobs = await getJson(`${BASES[path]}/jobs?limit=20`);
    ul.replaceChildren(...(jobs.length ? jobs.map((job) => jobRow(path, job))
      : [el("li", "empty", "no jobs yet")]));
  } catch (err) {
    ul.replaceChildren(el("li", "reason", `${path} jobs unavailable: ${err.message}`));
    if (path === "local") notifyError(err, "local job list");
  }
}

function jobRow(path, job) {
  const row = el("li", "job-row");
  Object.assign(row.dataset, { jobId: job.job_id, status: job.status, path });
  row.title = job.job_id;
  row.classList.toggle("selected", isSelected(path, job.job_id));
  const pick = el("input", "compare-pick");
  Object.assign(pick, { type: "checkbox", title: "compare", checked: app.picks[path] === job.job_id });
  pick.setAttribute("aria-label", `compare ${job.job_id}`);
  pick.addEventListener("click", (e) => e.stopPropagation()); // ticking is not selecting
  pick.addEventListener("change", () => pickForCompare(path, job.job_id, pick.checked));
  const done = job.chunks_succeeded + job.chunks_failed + job.chunks_cancelled;
  row.append(pick, el("span", "id", shortId(job.job_id)), statusBadge(job.status),
    el("span", "count", `${fmtInt(done)}/${fmtInt(job.total_chunks)} chunks`),
    el("span", "when", fmtClock(job.created_at)));
  row.addEventListener("click", () => selectJob(path, job.job_id));
  return row;
}

function pickForCompare(path, id, checked) {
  // One pick per path, like radio buttons that can also be cleared.
  if (checked) app.picks[path] = id;
  else if (app.picks[path] === id) app.picks[path] = null;
  for (const box of document.querySelectorAll(`#jobs-${path} .compare-pick`)) {
    box.checked = box.closest("li").dataset.jobId === app.picks[path];
  }
  if (app.picks.local && app.picks.cloud) openCompare(app.picks.local, app.picks.cloud);
  else closeCompare();
}
