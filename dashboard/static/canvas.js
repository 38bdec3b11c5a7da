/* What the canvases share: sizing for the screen's pixel ratio, the width they may take,
   and the legend entries under them. */
import { el } from "./util.js";

export const MAP_MAX_W = 900; // the chunk map's width; the timelines are sized against it

export function fitCanvas(canvas, cssW, cssH) {
  // Backing store in device pixels, drawing in CSS pixels: crisp on high-DPI screens.
  const dpr = window.devicePixelRatio || 1;
  const w = Math.max(1, Math.round(cssW * dpr)), h = Math.max(1, Math.round(cssH * dpr));
  if (canvas.width !== w) canvas.width = w; // assigning clears and reallocates: only on change
  if (canvas.height !== h) canvas.height = h;
  Object.assign(canvas.style, { width: `${cssW}px`, height: `${cssH}px` });
  const ctx = canvas.getContext("2d");
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  ctx.clearRect(0, 0, cssW, cssH);
  return ctx;
}

export const boxWidth = (canvas, max) => Math.min(max, canvas.parentElement.clientWidth || max);

// One legend entry: a swatch of the colour the canvas uses, then its label.
export function legendItem(color, label) {
  const swatch = el("i");
  swatch.style.background = color;
  const li = el("li");
  li.append(swatch, label);
  return li;
}
