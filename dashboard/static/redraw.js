/* Redraws, coalesced to one per animation frame however many events arrive. The painters
   are registered by the entry module, so that the modules which ask for a redraw (chunk
   reads, the stream, the timeline) need not import the ones that draw. */
import { notify } from "./notice.js";
import { app } from "./state.js";

const dirty = { status: false, map: false, timeline: false, compare: false };
const painters = { status: null, map: null, timeline: null, compare: null };
let frameAsked = false;

// {status, map, timeline}: called with the selected job's view; compare: with the compare.
export function setPainters(fns) {
  Object.assign(painters, fns);
}

export function scheduleDraw(parts) {
  for (const key of Object.keys(parts)) if (parts[key]) dirty[key] = true;
  if (frameAsked) return;
  frameAsked = true;
  requestAnimationFrame(drawFrame);
}

function drawFrame() {
  frameAsked = false;
  const parts = { ...dirty };
  Object.keys(dirty).forEach((k) => { dirty[k] = false; });
  const view = app.view;
  try {
    for (const part of ["status", "map", "timeline"]) if (view && parts[part]) painters[part](view);
    if (app.compare && parts.compare) painters.compare(app.compare);
  } catch (err) {
    notify(`drawing failed: ${err.message}`, "error"); // a bug shows, never hides
  }
}
