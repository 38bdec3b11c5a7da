/* Text for the page: numbers, durations, costs, ids and server times. */

export const shortId = (id) => (id.length > 8 ? `${id.slice(0, 8)}…` : id);
export const fmtInt = (n) => (n == null ? "—" : Number(n).toLocaleString("en-US"));
export const fmtMs = (ms) => (ms == null ? "—" : `${Math.round(ms).toLocaleString("en-US")} ms`);
export const fmtSecs = (s) => (s == null ? "—" : `${Number(s).toFixed(1)} s`);
// Cents to 4 places; below a cent, 2 significant digits, so a small job's spend (or a tiny
// cap) is not shown as $0.0000.
export function fmtUsd(v) {
  if (v == null) return "—";
  const n = Number(v), size = Math.abs(n);
  const places = size > 0 && size < 0.01
    ? Math.min(20, Math.max(4, 1 - Math.floor(Math.log10(size)))) : 4;
  return `$${n.toFixed(places)}`;
}

export function parseTime(iso) {
  // Server times are aware ISO strings; a naive one is taken as UTC rather than local time.
  if (!iso) return null;
  const t = Date.parse(/[zZ]$|[+-]\d\d:?\d\d$/.test(iso) ? iso : `${iso}Z`);
  return Number.isNaN(t) ? null : t;
}

export function fmtClock(iso) {
  const t = parseTime(iso);
  return t == null ? "—" : new Date(t).toLocaleTimeString([], { hour12: false });
}
