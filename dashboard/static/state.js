/* The page's shared state (one selected job view, one compare view, the compare picks per
   path) and the constants more than one module needs. */

export const KEY_STORAGE = "long-jobs-api-key";
export const BASES = { local: "", cloud: "/cloud" };
export const TERMINAL = new Set(["succeeded", "partial", "failed", "cancelled"]);
export const TICK_MS = 2000;

export const app = {
  config: { api_key_required: false, cloud: { configured: false, reason: "config not loaded" } },
  key: sessionStorage.getItem(KEY_STORAGE) || "",
  keyWaiters: [],
  picks: { local: null, cloud: null },
  view: null,
  compare: null,
};

export const cloudReason = () => app.config.cloud.reason || "no reason given";
export const isSelected = (path, id) =>
  Boolean(app.view) && app.view.path === path && app.view.id === id;
