"""The dashboard in a real browser: headless Chromium (Debian's package, driven by Playwright)
against the app, whose local jobs a stand-in executor runs, and the cloud path's emulator.

Screenshots go to test-artifacts/ (TEST_ARTIFACTS to change it): the compare view, and the
dashboard with a job's chunk map and timeline; the README shows them (docs/img/).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from aws.local.emulator import EmulatorProcess
from tests.executor import StandInExecutor
from tests.support import set_settings

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = Path(os.environ.get("TEST_ARTIFACTS", REPO / "test-artifacts"))
# Without the background-networking flags Chromium keeps trying to reach Google's hosts, which
# a closed network refuses; as root it needs --no-sandbox.
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip
TERMINAL = ("succeeded", "partial", "failed", "cancelled")


def chromium_path() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if not found:  # scripts/test.sh installs it; failing says what is missing, skipping would not
        raise AssertionError("no chromium on PATH: apt-get install chromium (scripts/test.sh)")
    return found


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    # This module's only: while Playwright's sync API runs, its event loop is the running
    # loop of the main thread, where the other tests run the SDK's in-process executor.
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=chromium_path(), args=CHROMIUM_ARGS, headless=True
        )
        yield launched
        launched.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    opened = context.new_page()
    errors: list[str] = []
    opened.on("pageerror", lambda err: errors.append(str(err)))
    yield opened
    context.close()
    assert not errors, f"the page threw: {errors}"


def fill_form(page: Page, **fields: Any) -> None:
    for name, value in fields.items():
        page.locator(f"[name={name}]").fill(str(value))


def page_url(api: httpx.Client) -> str:
    return f"{str(api.base_url).rstrip('/')}/ui"


def spans_in(api: httpx.Client, base: str, job_id: str) -> int:
    """How many runs the job's chunks endpoint shows, all pages."""
    count, after = 0, -1
    while after is not None:
        page = api.get(f"{base}/jobs/{job_id}/chunks", params={"after": after, "limit": 1000})
        count += sum(len(chunk["timeline"]) for chunk in page.json()["chunks"])
        after = page.json()["next_after"]
    return count


def local_status(api: httpx.Client, job_id: str) -> dict[str, Any]:
    result: dict[str, Any] = api.get(f"/jobs/{job_id}").json()
    return result


def test_start_both_paths_watch_the_maps_fill_and_compare(
    api: httpx.Client,
    executor: StandInExecutor,
    cloud: EmulatorProcess,
    page: Page,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    set_settings(monkeypatch, RETRY_BACKOFF_BASE_S="0.5")
    page.goto(page_url(api))
    fill_form(page, total_items=60, chunk_size=5, item_delay_ms=20, flaky_chunks="2:1")
    page.get_by_role("button", name="Start on both (compare)").click()
    compare = page.locator("#compare")
    expect(compare).to_have_attribute("data-ready", "1", timeout=90_000)
    table = page.locator("#compare-table")
    expect(table).to_contain_text("local")
    expect(table).to_contain_text("cloud")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    compare.screenshot(path=ARTIFACTS / "compare.png")

    # Both jobs are listed; each one's map fills in when it is selected.
    for path in ("local", "cloud"):
        row = page.locator(f"#jobs-{path} [data-job-id]").first
        expect(row).to_have_attribute("data-status", "succeeded", timeout=30_000)
        row.click()
        job = page.locator("#job")
        expect(job).to_have_attribute("data-path", path)
        expect(job).to_have_attribute("data-status", "succeeded")
        chunk_map = page.locator("#chunk-map")
        expect(chunk_map).to_have_attribute("data-total", "12")
        expect(chunk_map).to_have_attribute("data-settled", "12", timeout=30_000)
        # Every run the chunks endpoint shows is drawn: chunk 2 failed once, then succeeded.
        job_id = job.get_attribute("data-job-id")
        assert job_id
        runs = spans_in(api, "" if path == "local" else "/cloud", job_id)
        assert runs >= 13
        expect(page.locator("#timeline")).to_have_attribute("data-spans", str(runs))
    page.screenshot(path=ARTIFACTS / "dashboard.png", full_page=True)


def test_a_running_job_is_cancelled_from_the_page(
    api: httpx.Client, executor: StandInExecutor, cloud: EmulatorProcess, page: Page
) -> None:
    page.goto(page_url(api))
    fill_form(page, total_items=400, chunk_size=5, item_delay_ms=40)
    page.get_by_role("button", name="Start on local").click()
    job = page.locator("#job")
    expect(job).to_have_attribute("data-path", "local", timeout=10_000)
    job_id = job.get_attribute("data-job-id")
    assert job_id
    chunk_map = page.locator("#chunk-map")
    expect(chunk_map).to_have_attribute("data-total", "80")
    # The map fills in live (from the event stream) before the job ends.
    expect(chunk_map).not_to_have_attribute("data-settled", "0", timeout=20_000)
    assert local_status(api, job_id)["status"] == "running"
    page.locator("#cancel").click()
    expect(job).to_have_attribute("data-status", "cancelled", timeout=20_000)
    expect(page.locator("#cancel")).to_be_disabled()
    status = local_status(api, job_id)
    assert status["status"] == "cancelled" and status["chunks_cancelled"] > 0
    accounted = status["chunks_succeeded"] + status["chunks_failed"] + status["chunks_cancelled"]
    assert accounted <= 80


def test_the_map_of_a_job_of_100000_chunks_draws_them_all(
    api: httpx.Client, page: Page, cloud: EmulatorProcess
) -> None:
    """At 100,000 chunks the map aggregates cells: the page stays responsive and counts every
    chunk it read (time to draw is in bench/dashboard_map.py, not here)."""
    from chunking.spec import JobSpec
    from functions.deps import get_store

    store = get_store()
    store.create_job("big-job", JobSpec(total_items=100_000, chunk_size=1), "local")
    assert store.start_job("big-job")
    with store.batch():
        for index in range(3_000):
            store.begin_attempt("big-job", index)
            ok = index % 100 != 7
            store.settle_chunk("big-job", index, succeeded=ok, items=1, latency_ms=3.0,
                               error=None if ok else "broke")  # fmt: skip
        for index in range(3_000, 3_050):
            store.begin_attempt("big-job", index)
    page.goto(page_url(api))
    page.locator("#jobs-local [data-job-id=big-job]").click()
    chunk_map = page.locator("#chunk-map")
    expect(chunk_map).to_have_attribute("data-total", "100000")
    expect(chunk_map).to_have_attribute("data-settled", "3000", timeout=30_000)
    expect(chunk_map).to_have_attribute("data-running", "50", timeout=30_000)
    # A cell of the map answers a hover with the range of chunks it stands for.
    box = chunk_map.bounding_box()
    assert box
    page.mouse.move(box["x"] + 2, box["y"] + 2)
    expect(page.locator("#map-hover")).to_contain_text("0")


def test_with_an_api_key_set_the_page_asks_for_it_and_sends_it(
    api: httpx.Client,
    executor: StandInExecutor,
    cloud: EmulatorProcess,
    page: Page,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    set_settings(monkeypatch, API_KEY="s3cret-dash-key")
    requests: list[tuple[str, str | None]] = []
    page.on("request", lambda r: requests.append((r.url, r.headers.get("x-api-key"))))
    page.goto(page_url(api))
    key_form = page.locator("#key-form")
    expect(key_form).to_be_visible()
    page.locator("#api-key").fill("wrong-key")
    page.locator("#key-save").click()
    # The lists' next call answers 401: the page asks again and says why.
    expect(key_form).to_be_visible(timeout=10_000)
    expect(page.locator("#notice")).to_contain_text("x-api-key")
    page.locator("#api-key").fill("s3cret-dash-key")
    page.locator("#key-save").click()
    expect(key_form).to_be_hidden()
    fill_form(page, total_items=20, chunk_size=5, item_delay_ms=0)
    page.get_by_role("button", name="Start on local").click()
    job = page.locator("#job")
    expect(job).to_have_attribute("data-status", "succeeded", timeout=30_000)
    expect(page.locator("#chunk-map")).to_have_attribute("data-settled", "4", timeout=30_000)
    sent = [key for url, key in requests if "/jobs" in url]
    assert sent and sent[-1] == "s3cret-dash-key"
    assert any(url.endswith("/events") and key == "s3cret-dash-key" for url, key in requests)
