"""The dashboard's chunk map at scale: the page at GET /ui must stay usable at 100,000 chunks.

    .venv/bin/python -m bench.dashboard_map [--sizes 1000,100000] [--runs 3] [--timeout-s 300]

For each size N (`--sizes`), a SQLite job store in a temporary folder is built through the
store API (not the measured figure; how long it took is reported): one job of N chunks of one
item, started, then every chunk begun and settled in one transaction (`store.batch()`), 1 in
100 failed. The app, `uvicorn main:app` (bench.accept_load.start_app; `JOB_STORE_URL` that
file, `INNGEST_DEV=1`; nothing else runs), serves the page, after one untimed
`GET /jobs/{id}/chunks?limit=1` (the app's own first-request warm-up). Headless Chromium
(/usr/bin/chromium driven by Playwright's sync API: Playwright's own browser download cannot
work here), one browser per size, `--runs` times on a fresh page (its own browser context):
opens /ui, waits for the job's row in `#jobs-local`, points at it, clicks. Measured:

- time to full map: from the click (the click event's timeStamp, in the page) until the canvas
  `#chunk-map` has `data-settled` = N (a MutationObserver's time, in the page), the median of
  the runs; per 1,000 chunks. The wall time seen from Python (click to `wait_for_function`),
  the map redraws during the load (writes of `data-settled`) and the chunk requests are shown;
- long tasks (PerformanceObserver "longtask", installed before the page's own scripts) that
  started in that window: the longest of all runs, and the median run's total; long animation
  frames ("long-animation-frame") name the scripts that ran in them: where in the JS;
- then, on the last run's page, the job fully loaded: the JS heap
  (`performance.memory.usedJSHeapSize`; Chromium started with `--enable-precise-memory-info`,
  without which it rounds to 10 MB steps); long tasks in the `--idle-s` seconds after the load
  (the page's own periodic work); the frame after load: how long the page's redraw takes,
  after a `resize` event (the page redraws map and timeline on resize), bracketed by rAF
  callbacks queued before and after its own, so in the same frame (median of `--redraws`);
  hover: mouse moves over the map until `#map-hover`'s text changes (wall time from Python);
  `page.evaluate("1")` round trips; clicks on the form's inputs until they have focus.

PASS when every size's map filled within `--timeout-s`, time per chunk at the largest size is
at most `--ratio-target` (2) times that at the smallest (the page's cost grows linearly with
the job, not worse), and the longest long task at the largest size is at most
`--long-task-target-ms` (200: the page never freezes for long).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from playwright.sync_api import Browser, Page, ViewportSize, sync_playwright
from playwright.sync_api import TimeoutError as PlaywrightTimeout

import workloads  # noqa: F401 - registers the workloads, as every entrypoint does
from bench.accept_load import start_app, wait_up
from bench.checks import verdict
from chunking.spec import JobSpec
from stores.factory import open_store

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    # performance.memory is otherwise rounded (to 10 MB steps here): useless at 1,000 chunks.
    "--enable-precise-memory-info",
]
VIEWPORT: ViewportSize = {"width": 1280, "height": 900}
FAIL_EVERY, FAIL_AT = 100, 7  # chunk i fails when i % 100 == 7
NAN = float("nan")  # not measured

# Installed before the page's scripts: what the page does from its first task on is seen.
OBSERVE = """
window.__longTasks = [];
window.__frames = [];
window.__settledAt = {};
window.__redraws = 0;
window.__clickAt = null;
new PerformanceObserver((list) => {
  for (const e of list.getEntries()) {
    window.__longTasks.push({ start: e.startTime, duration: e.duration });
  }
}).observe({ type: "longtask", buffered: true });
try {
  new PerformanceObserver((list) => {
    for (const e of list.getEntries()) {
      window.__frames.push({
        start: e.startTime, duration: e.duration, blocking: e.blockingDuration,
        scripts: e.scripts.map((s) => ({
          url: s.sourceURL, fn: s.sourceFunctionName, at: s.sourceCharPosition,
          invoker: s.invoker, duration: s.duration,
          layout: s.forcedStyleAndLayoutDuration,
        })),
      });
    }
  }).observe({ type: "long-animation-frame", buffered: true });
} catch (_) {
  // an older engine: long tasks alone
}
// The first click's time, in capture: before the page's own handler runs.
window.addEventListener("click", (e) => {
  if (window.__clickAt === null) window.__clickAt = e.timeStamp;
}, true);
// When each data-settled value was first written (right after the redraw that wrote it).
document.addEventListener("DOMContentLoaded", () => {
  const map = document.querySelector("#chunk-map");
  if (!map) return;
  new MutationObserver((records) => {
    window.__redraws += records.length;
    const v = map.dataset.settled;
    if (!(v in window.__settledAt)) window.__settledAt[v] = performance.now();
  }).observe(map, { attributes: true, attributeFilter: ["data-settled"] });
});
"""

# One redraw's time: rAF callbacks queued before and after the page's own (which a resize
# event queues), so they run just before and just after it in the same frame. `redrawn`: the
# map's data-settled was written in between (the page did redraw).
REDRAW = """
() => new Promise((resolve) => {
  const map = document.querySelector("#chunk-map");
  let before = null, written = false;
  const seen = new MutationObserver(() => { written = true; });
  seen.observe(map, { attributes: true, attributeFilter: ["data-settled"] });
  requestAnimationFrame(() => { before = performance.now(); });
  window.dispatchEvent(new Event("resize"));
  requestAnimationFrame(() => {
    const ms = performance.now() - before;
    written = written || seen.takeRecords().length > 0;
    seen.disconnect();
    resolve({ ms, redrawn: written });
  });
})
"""

HOVER_CHANGED = "t => document.querySelector('#map-hover').textContent !== t"
# Hover points as fractions of the map: each far from the one before (another cell), and above
# its last row, which may be partly empty.
HOVER_POINTS = [(0.1, 0.1), (0.9, 0.8), (0.1, 0.8), (0.9, 0.1), (0.5, 0.45)]
FOCUS_TARGETS = ["#total-items", "#chunk-size"]  # inputs at the page's top: a click focuses them


@dataclass
class Load:
    """One selection of the job on a fresh page; times in ms, page times from performance.now."""

    loaded: bool = False
    settled_seen: str = ""
    load_ms: float = NAN
    wall_ms: float = NAN
    first_drawn_ms: float = NAN
    long_tasks: list[float] = field(default_factory=list)
    chunk_requests: int = 0
    redraws: int = 0  # writes of the map's data-settled: one per redraw
    frames: list[dict[str, Any]] = field(default_factory=list)  # long animation frames
    started: float = 0.0
    ended: float = 0.0


@dataclass
class Result:
    """One size's figures: its loads, then probes of the last load's page; times in ms."""

    chunks: int
    build_s: float
    loads: list[Load] = field(default_factory=list)
    heap_bytes: int = 0
    idle_long_tasks: list[float] = field(default_factory=list)
    redraw_ms: list[float] = field(default_factory=list)
    redraw_missed: int = 0
    hover_ms: list[float] = field(default_factory=list)
    hover_missed: int = 0
    evaluate_ms: list[float] = field(default_factory=list)
    focus_ms: list[float] = field(default_factory=list)
    scripts: list[str] = field(default_factory=list)

    @property
    def loaded(self) -> bool:
        return bool(self.loads) and all(load.loaded for load in self.loads)

    @property
    def load_ms(self) -> float:
        """The median load: NaN unless every load filled the map."""
        return med([load.load_ms for load in self.loads]) if self.loaded else NAN

    @property
    def long_tasks(self) -> list[float]:
        """Every load's long tasks: the longest is the worst seen in any load."""
        return [t for load in self.loads for t in load.long_tasks]

    def median_of(self, value: Callable[[Load], float]) -> float:
        return med([value(load) for load in self.loads])


# --- the stores ---


def build_store(path: Path, job_id: str, chunks: int) -> float:
    """A job of `chunks` chunks, every one begun and settled through the store API; seconds."""
    started = time.perf_counter()
    store = open_store(f"sqlite:///{path}")
    store.create_job(job_id, JobSpec(total_items=chunks, chunk_size=1), "local")
    assert store.start_job(job_id)
    with store.batch():  # one transaction: 100,000 commits would take minutes
        for index in range(chunks):
            ok = index % FAIL_EVERY != FAIL_AT
            store.begin_attempt(job_id, index)
            store.settle_chunk(
                job_id, index, succeeded=ok, items=1, latency_ms=3.0, error=None if ok else "broke"
            )
    status = store.status(job_id)
    assert status is not None and status.chunks_succeeded + status.chunks_failed == chunks
    return time.perf_counter() - started


# --- the page ---


def timed(action: Callable[..., object], *args: Any) -> float:
    started = time.perf_counter()
    action(*args)
    return (time.perf_counter() - started) * 1000


def where(script: dict[str, Any], sources: dict[str, str]) -> str:
    """A long animation frame's script as `invoker -> function (file:line:col)`."""
    url, at = str(script.get("url") or ""), int(script.get("at") or -1)
    place = url.rsplit("/", 1)[-1] or "?"
    text = sources.get(url)
    if text is not None and at >= 0:
        before = text[:at]
        place += f":{before.count(chr(10)) + 1}:{at - before.rfind(chr(10))}"
    fn = script.get("fn") or "(anonymous)"
    return f"{script.get('invoker') or '?'} -> {fn} ({place})"


def blame(frames: list[dict[str, Any]], app_url: str) -> list[str]:
    """The scripts that ran in these long animation frames, by total time."""
    sources: dict[str, str] = {}
    totals: dict[str, list[float]] = {}
    for frame in frames:
        for script in frame["scripts"]:
            url = str(script.get("url") or "")
            if url.startswith(app_url) and url not in sources:
                sources[url] = httpx.get(url, timeout=30).text  # char positions -> lines
            totals.setdefault(where(script, sources), []).append(float(script["duration"]))
    ranked = sorted(totals.items(), key=lambda kv: -sum(kv[1]))
    return [
        f"{sum(d):8.0f} ms in {len(d):>4} frame(s), longest {max(d):6.0f} ms: {name}"
        for name, d in ranked[:6]
    ]


def open_page(browser: Browser, app_url: str, job_id: str) -> Page:
    """A fresh page (its own browser context: no cache, its own heap) on /ui, the pointer on
    the job's row, not yet clicked."""
    context = browser.new_context(viewport=VIEWPORT)
    context.add_init_script(OBSERVE)
    page = context.new_page()
    page.goto(f"{app_url}/ui")
    row = page.locator(f'#jobs-local [data-job-id="{job_id}"]')
    row.wait_for(timeout=30_000)  # the list loads at once, then every 3 s
    row.hover()  # scrolled to and stable before the timing starts: the click alone is timed
    return page


def timed_load(page: Page, n: int, timeout_s: float) -> Load:
    """Click where the pointer is (the job's row) and wait until the map shows `n` settled."""
    load = Load()
    chunk_urls: list[str] = []
    page.on("request", lambda r: chunk_urls.append(r.url) if "/chunks?" in r.url else None)
    load.started = float(page.evaluate("performance.now()"))
    started = time.perf_counter()
    page.mouse.down()
    page.mouse.up()
    try:
        page.wait_for_function(
            f"document.querySelector('#chunk-map')?.dataset.settled === '{n}'",
            polling=100,
            timeout=timeout_s * 1000,
        )
        load.loaded = True
    except PlaywrightTimeout:
        pass
    load.wall_ms = (time.perf_counter() - started) * 1000
    load.settled_seen = str(page.evaluate("document.querySelector('#chunk-map').dataset.settled"))
    load.ended = float(page.evaluate("performance.now()"))
    load.chunk_requests = len(chunk_urls)
    load.redraws = int(page.evaluate("window.__redraws"))
    click_at = page.evaluate("window.__clickAt")
    settled_at: dict[str, float] = page.evaluate("window.__settledAt")
    if click_at is not None and load.loaded and str(n) in settled_at:
        load.load_ms = settled_at[str(n)] - float(click_at)
        drawn = [t for v, t in settled_at.items() if int(v) > 0]
        load.first_drawn_ms = min(drawn) - float(click_at)
    page.wait_for_timeout(500)  # the observers report a little after the fact
    tasks: list[dict[str, float]] = page.evaluate("window.__longTasks")
    load.long_tasks = [t["duration"] for t in tasks if load.started <= t["start"] < load.ended]
    frames: list[dict[str, Any]] = page.evaluate("window.__frames")
    load.frames = [f for f in frames if load.started <= f["start"] < load.ended]
    return load


def measure(browser: Browser, app_url: str, job_id: str, result: Result, args: Any) -> None:
    """`--runs` loads of the job, each on a fresh page; then probes of the last one's page."""
    n = result.chunks
    # The app's first chunk page pays for its own warm-up (imports, the store's first read):
    # asked for once here, so the figure is the page's and the steady app's.
    httpx.get(f"{app_url}/jobs/{job_id}/chunks?limit=1", timeout=30).raise_for_status()
    for run in range(args.runs):
        page = open_page(browser, app_url, job_id)
        result.loads.append(timed_load(page, n, args.timeout_s))
        if run < args.runs - 1:
            page.context.close()
    frames = [f for load in result.loads for f in load.frames]
    result.scripts = blame(frames, app_url)
    result.heap_bytes = int(page.evaluate("performance.memory.usedJSHeapSize"))

    # The page's own work after the load (list refreshes, timers): long tasks while idle.
    idle_start = float(page.evaluate("performance.now()"))
    page.wait_for_timeout(args.idle_s * 1000)
    idle_end = float(page.evaluate("performance.now()"))
    tasks: list[dict[str, float]] = page.evaluate("window.__longTasks")
    result.idle_long_tasks = [t["duration"] for t in tasks if idle_start <= t["start"] < idle_end]

    for _ in range(args.redraws):
        redraw = page.evaluate(REDRAW)
        if redraw["redrawn"]:
            result.redraw_ms.append(float(redraw["ms"]))
        else:
            result.redraw_missed += 1
        page.wait_for_timeout(300)  # past the page's 250 ms timeline throttle: a full redraw

    hover(page, result, args.hovers)
    for _ in range(args.evaluates):
        result.evaluate_ms.append(timed(page.evaluate, "1"))
    for k in range(args.clicks):
        target = FOCUS_TARGETS[k % len(FOCUS_TARGETS)]  # alternate: each click moves focus
        result.focus_ms.append(click_focus(page, target))
    page.context.close()


def click_focus(page: Page, target: str) -> float:
    """A click on `target` until it has focus, in ms; the pointer moved there untimed (as for
    the row: Playwright's own checks before a click take tens of ms)."""
    page.hover(target, timeout=30_000)
    focused = f"document.activeElement === document.querySelector('{target}')"
    started = time.perf_counter()
    page.mouse.down()
    page.mouse.up()
    page.wait_for_function(focused, polling="raf", timeout=30_000)
    return (time.perf_counter() - started) * 1000


def hover(page: Page, result: Result, moves: int) -> None:
    """Mouse moves over the map: each until #map-hover's text changes (5 s at most)."""
    canvas = page.locator("#chunk-map")
    canvas.scroll_into_view_if_needed()
    box = canvas.bounding_box()
    if box is None:
        result.hover_missed = moves
        return
    for k in range(moves):
        fx, fy = HOVER_POINTS[k % len(HOVER_POINTS)]
        before = page.text_content("#map-hover")
        started = time.perf_counter()
        page.mouse.move(box["x"] + fx * box["width"], box["y"] + fy * box["height"])
        try:
            page.wait_for_function(HOVER_CHANGED, arg=before, polling="raf", timeout=5_000)
        except PlaywrightTimeout:
            result.hover_missed += 1
            continue
        result.hover_ms.append((time.perf_counter() - started) * 1000)


# --- the report ---


def med(values: list[float]) -> float:
    return statistics.median(values) if values else NAN


def ms(value: float, digits: int = 0) -> str:
    return "-" if value != value else f"{value:,.{digits}f} ms"  # NaN: not measured


def table(results: list[Result]) -> None:
    """One column per size; loads: the median of the runs, but the longest long task of all."""

    def each(r: Result, value: Callable[[Load], float]) -> str:
        return " / ".join(f"{value(load) / 1000:.2f}" for load in r.loads) + " s"

    def spread(values: list[float], digits: int = 1) -> str:
        return f"{ms(med(values), digits)} med, {ms(max(values, default=NAN), digits)} max"

    rows: list[tuple[str, Callable[[Result], str]]] = [
        ("chunks", lambda r: f"{r.chunks:,}"),
        (
            "time to full map",
            lambda r: (
                f"{r.load_ms / 1000:.2f} s"
                if r.loaded
                else "NOT in time (" + ", ".join(f"{x.settled_seen} settled" for x in r.loads) + ")"
            ),
        ),
        ("per 1,000 chunks", lambda r: ms(r.load_ms / r.chunks * 1000, 1)),
        ("longest long task", lambda r: ms(max(r.long_tasks, default=0))),
        (
            "total long tasks",
            lambda r: (
                f"{ms(r.median_of(lambda x: sum(x.long_tasks)))} "
                f"({r.median_of(lambda x: len(x.long_tasks)):g})"
            ),
        ),
        ("JS heap MB", lambda r: f"{r.heap_bytes / 1e6:.1f}"),
        (
            "frame after load",
            lambda r: (
                ms(med(r.redraw_ms), 1)
                + (f" ({r.redraw_missed} no redraw)" if r.redraw_missed else "")
            ),
        ),
        ("- details -", lambda r: ""),
        ("time to full map, runs", lambda r: each(r, lambda x: x.load_ms)),
        ("wall, from Python", lambda r: each(r, lambda x: x.wall_ms)),
        ("first cells drawn", lambda r: ms(r.median_of(lambda x: x.first_drawn_ms))),
        ("map redraws in load", lambda r: f"{r.median_of(lambda x: x.redraws):g}"),
        ("GET .../chunks", lambda r: f"{r.median_of(lambda x: x.chunk_requests):,g} requests"),
        ("frame after load, all", lambda r: spread(r.redraw_ms)),
        (
            "hover -> #map-hover",
            lambda r: (
                spread(r.hover_ms) + (f", {r.hover_missed} unchanged" if r.hover_missed else "")
            ),
        ),
        ('page.evaluate("1")', lambda r: spread(r.evaluate_ms)),
        ("click -> focus", lambda r: spread(r.focus_ms)),
        (
            "long tasks when idle",
            lambda r: (
                f"{ms(sum(r.idle_long_tasks))} "
                f"({len(r.idle_long_tasks)}, longest {ms(max(r.idle_long_tasks, default=0))})"
            ),
        ),
        ("store built in", lambda r: f"{r.build_s:.1f} s"),
    ]
    print(f"{'':<23}" + "".join(f"{f'{r.chunks:,} chunks':>33}" for r in results))
    for label, value in rows:
        print(f"{label:<23}" + "".join(f"{value(r):>33}" for r in results))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--sizes",
        default="1000,100000",
        type=lambda s: sorted(int(x.replace("_", "")) for x in s.split(",") if x.strip()),
        help="chunks per job, comma-separated: one store and one app per size",
    )
    parser.add_argument("--timeout-s", type=float, default=300, help="for the map to fill")
    parser.add_argument("--runs", type=int, default=3, help="loads per size, each a fresh page")
    parser.add_argument("--idle-s", type=float, default=5, help="watched after the load")
    parser.add_argument("--redraws", type=int, default=10)
    parser.add_argument("--hovers", type=int, default=20)
    parser.add_argument("--evaluates", type=int, default=20)
    parser.add_argument("--clicks", type=int, default=6)
    parser.add_argument("--ratio-target", type=float, default=2)
    parser.add_argument("--long-task-target-ms", type=float, default=200)
    parser.add_argument("--chromium", default=CHROMIUM)
    args = parser.parse_args(argv)
    if args.runs < 1 or not args.sizes:
        parser.error("--runs must be at least 1 and --sizes name at least one size")
    shown = " ".join(sys.argv[1:] if argv is None else argv)
    print(f"$ .venv/bin/python -m bench.dashboard_map {shown}".rstrip())
    from tests.support import free_port

    folder = Path(tempfile.mkdtemp(prefix="dashboard-map-"))
    results: list[Result] = []
    for n in args.sizes:
        job_id = f"map-{n}"
        took = build_store(folder / f"jobs-{n}.sqlite3", job_id, n)
        print(
            f"store of {n:,} chunks built through the store API in {took:.1f} s "
            f"(not measured: the page is)"
        )
        results.append(Result(chunks=n, build_s=took))

    with sync_playwright() as playwright:
        for result in results:
            n = result.chunks
            port = free_port()
            app_url, log = f"http://127.0.0.1:{port}", folder / f"app-{n}.log"
            env = {"JOB_STORE_URL": f"sqlite:///{folder / f'jobs-{n}.sqlite3'}", "INNGEST_DEV": "1"}
            app = start_app("main:app", port, env, log, 1)
            # A fresh browser per size: the heap and caches are this job's alone.
            browser = playwright.chromium.launch(
                executable_path=args.chromium, headless=True, args=CHROMIUM_ARGS
            )
            try:
                wait_up(f"{app_url}/healthz", app, log)
                if n == results[0].chunks:
                    size = f"{VIEWPORT['width']}x{VIEWPORT['height']}"
                    print(
                        f"Chromium {browser.version}, viewport {size}, "
                        f"{os.cpu_count()} cores shared with the app"
                    )
                measure(browser, app_url, f"map-{n}", result, args)
            finally:
                browser.close()
                app.terminate()
                app.wait(10)

    print()
    table(results)
    for result in results:
        print(f"\nscripts in long animation frames while {result.chunks:,} chunks loaded:")
        for line in result.scripts or ["  (none)"]:
            print(f"  {line}")
    print()

    small, large = results[0], results[-1]
    ratio = (large.load_ms / large.chunks) / (small.load_ms / small.chunks)
    longest = max(large.long_tasks, default=0)
    if large is not small:
        extra = (large.load_ms - small.load_ms) / (large.chunks - small.chunks) * 1000
        print(
            f"time per chunk {large.chunks:,} / {small.chunks:,}: {ratio:.2f}; "
            f"beyond the first {small.chunks:,}: {extra:.1f} ms per 1,000 chunks"
        )
    checks = {
        f"every map filled within {args.timeout_s:g} s": all(r.loaded for r in results),
        f"time per chunk at {large.chunks:,} <= {args.ratio_target:g} x at {small.chunks:,}"
        f" ({ratio:.2f})": ratio <= args.ratio_target,
        f"longest long task at {large.chunks:,} <= {args.long_task_target_ms:g} ms"
        f" ({longest:.0f} ms)": longest <= args.long_task_target_ms,
    }
    verdict(checks, folder, kept="the stores and the app's logs")


if __name__ == "__main__":
    main()
