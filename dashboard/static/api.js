/* API calls and the API key prompt: the key goes on every request; a 401 shows the key form,
   and the call is retried once a key is saved. Also reads the page's config (/ui/config). */
import { $, abortError } from "./util.js";
import { notify } from "./notice.js";
import { app, BASES, KEY_STORAGE } from "./state.js";

export class ApiError extends Error {
  constructor(status, message) { super(message); this.status = status; }
}

export function authHeaders(extra = {}) {
  return app.key ? { ...extra, "x-api-key": app.key } : { ...extra };
}

export async function errorMessage(res) {
  // Errors are {"message": ...}; anything else (a proxy's HTML page) is shown raw.
  const text = await res.text().catch(() => "");
  try {
    const body = JSON.parse(text);
    if (body && body.message) return String(body.message);
  } catch (_) { /* not JSON */ }
  return `HTTP ${res.status}${text ? `: ${text.slice(0, 200)}` : ""}`;
}

export async function request(method, url, { body, signal } = {}) {
  for (;;) {
    const headers = authHeaders(body === undefined ? {} : { "content-type": "application/json" });
    const payload = body === undefined ? undefined : JSON.stringify(body);
    const res = await fetch(url, { method, headers, body: payload, signal, cache: "no-store" });
    if (res.status === 401) {
      await waitForKey(await errorMessage(res), signal);
      continue;
    }
    if (!res.ok) throw new ApiError(res.status, await errorMessage(res));
    return { status: res.status, data: await res.json() };
  }
}

export const getJson = async (url, signal) => (await request("GET", url, { signal })).data;
export const jobUrl = (job) => `${BASES[job.path]}/jobs/${encodeURIComponent(job.id)}`;

// The key form: shown when the server wants a key; saving it releases waiting calls.
export function waitForKey(message, signal) {
  const form = $("key-form");
  if (form.hidden) {
    form.hidden = false;
    $("api-key").value = "";
    $("api-key").focus();
  }
  notify(`API key needed: ${message}`, "error");
  return new Promise((resolve, reject) => {
    if (signal && signal.aborted) return reject(abortError());
    const waiter = { resolve };
    app.keyWaiters.push(waiter);
    signal?.addEventListener("abort", () => {
      app.keyWaiters = app.keyWaiters.filter((w) => w !== waiter);
      reject(abortError());
    }, { once: true });
  });
}

export function saveKey(event) {
  event.preventDefault();
  const key = $("api-key").value.trim();
  if (!key) return notify("enter an API key first", "error");
  app.key = key;
  sessionStorage.setItem(KEY_STORAGE, key);
  $("key-form").hidden = true;
  notify("API key saved", "ok");
  app.keyWaiters.splice(0).forEach((w) => w.resolve());
}

// Whether a key is needed and whether the cloud path is there (never secret, never keyed).
export async function loadConfig() {
  try {
    const res = await fetch("/ui/config", { cache: "no-store" });
    if (!res.ok) throw new Error(await errorMessage(res));
    app.config = await res.json();
  } catch (err) {
    // Local still works without it; the cloud side says why it is off.
    app.config.cloud = { configured: false, reason: `dashboard config unavailable: ${err.message}` };
    notify(`could not read /ui/config: ${err.message}`, "error");
  }
  if (!app.config.cloud) app.config.cloud = { configured: false, reason: "not in /ui/config" };
}
