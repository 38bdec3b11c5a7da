/* The browser dashboard served at /ui: lists recent jobs on both paths ("local": FastAPI +
   Inngest, "cloud": the AWS stack behind /cloud), starts, cancels and retries jobs, and draws
   the selected job's counts, answers (llm), chunk map and timeline live, plus a local-vs-cloud
   compare view on one time axis. Native ES modules, no dependencies and no build step (the page must work
   offline); canvases and bounded, incremental reads keep it usable at 100,000 chunks.
   This entry module wires the page's controls to the other modules, then boots. */
import { followAnswers, onAnswersSubmit, onMapClick } from "./answers.js";
import { loadConfig, saveKey, waitForKey } from "./api.js";
import { drawCompare, onCompareClose } from "./compare.js";
import { renderStatus } from "./counts.js";
import { listLoop } from "./lists.js";
import { drawMap, mapLegendItems, onMapHover, onMapLeave } from "./map.js";
import { scheduleDraw, setPainters } from "./redraw.js";
import { loadStartForm, markCloudOff, onStart } from "./start.js";
import { app } from "./state.js";
import { drawTimelineSoon, spanLegendItems } from "./timeline.js";
import { $ } from "./util.js";
import { onCancel, onRetry } from "./view.js";

function fillLegends() {
  for (const ul of document.querySelectorAll(".legend")) {
    ul.replaceChildren(...(ul.dataset.for === "map" ? mapLegendItems() : spanLegendItems()));
  }
}

function wire() {
  const status = (view) => { renderStatus(view); followAnswers(view); };
  setPainters({ status, map: drawMap, timeline: drawTimelineSoon, compare: drawCompare });
  $("key-form").addEventListener("submit", saveKey);
  $("start-form").addEventListener("submit", (e) => e.preventDefault());
  $("start-local").addEventListener("click", () => onStart(["local"]));
  $("start-cloud").addEventListener("click", () => onStart(["cloud"]));
  $("start-both").addEventListener("click", () => onStart(["local", "cloud"]));
  $("cancel").addEventListener("click", onCancel);
  $("retry").addEventListener("click", onRetry);
  $("answers-form").addEventListener("submit", onAnswersSubmit);
  $("chunk-map").addEventListener("click", onMapClick);
  $("compare-close").addEventListener("click", onCompareClose);
  $("chunk-map").addEventListener("mousemove", onMapHover);
  $("chunk-map").addEventListener("mouseleave", onMapLeave);
  window.addEventListener("resize", () => scheduleDraw({ map: true, timeline: true, compare: true }));
}

async function boot() {
  fillLegends();
  wire();
  loadStartForm(); // alongside the config: neither waits for the other
  await loadConfig();
  markCloudOff();
  if (app.config.api_key_required && !app.key) await waitForKey("this server requires one");
  listLoop();
}

boot();
