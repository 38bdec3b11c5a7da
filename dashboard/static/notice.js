/* The notice line: every result and error lands here, so nothing fails silently. */
import { $, isAbort } from "./util.js";

export function notify(text, kind = "info") {
  $("notice").textContent = text;
  $("notice").dataset.kind = kind;
}

export function notifyError(err, what) {
  if (isAbort(err)) return; // we cancelled it ourselves (job switched): not an error
  notify(what ? `${what}: ${err.message}` : err.message, "error");
}
