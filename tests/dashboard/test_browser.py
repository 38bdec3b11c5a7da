"""The dashboard in a real browser: headless Chromium (Debian's package, driven by Playwright)
against the app, whose local jobs a stand-in executor runs, and the cloud path's emulator.

Screenshots go to test-artifacts/ (TEST_ARTIFACTS to change it): the compare view, and the
dashboard with a job's chunk map and timeline (the README shows them, docs/img/), and an llm
job's answers.
"""

from __future__ import annotations

import copy
import math
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, Locator, Page, expect, sync_playwright

from aws.local.emulator import EmulatorProcess
from tests.executor import StandInExecutor
from tests.llm_server import FakeModelServer
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


def own_fields(doc: dict[str, Any], workload: str) -> dict[str, Any]:
    """The workload's own fields as the API publishes them (its branch of the JobSpec)."""
    schemas = doc["components"]["schemas"]
    ref = schemas["JobSpec"]["discriminator"]["mapping"][workload]
    fields: dict[str, Any] = schemas[ref.rsplit("/", 1)[1]]["properties"]
    return {name: field for name, field in fields.items() if name != "workload"}


def input_for(page: Page, field: str) -> Locator:
    return page.locator(f"#{field.replace('_', '-')}")


def bodies_posted(page: Page) -> list[Any]:
    """The JSON bodies the page POSTs from now on."""
    bodies: list[Any] = []
    page.on("request", lambda r: bodies.append(r.post_data_json) if r.method == "POST" else None)
    return bodies


def test_the_start_form_shows_the_chosen_workloads_fields_from_the_schema(
    api: httpx.Client, page: Page
) -> None:
    doc = api.get("/openapi.json").json()
    simulate, llm = own_fields(doc, "simulate"), own_fields(doc, "llm")
    assert {"item_delay_ms", "fail_chunks", "flaky_chunks"} <= set(simulate)
    assert "input_uri" in llm
    html = api.get("/ui").text
    named = [f'name="{n}"' for n in (*simulate, *llm)] + [
        f'id="{n.replace("_", "-")}"' for n in (*simulate, *llm)
    ]
    assert not any(tag in html for tag in named), "the page lists fields itself"
    posted = bodies_posted(page)
    page.goto(page_url(api))
    workload = page.locator("#workload")
    expect(workload).to_have_value("simulate")
    for name in simulate:
        expect(input_for(page, name)).to_be_visible()
    expect(page.locator("#item-delay-ms")).to_have_value("20")  # the demo's, not the server's
    expect(page.locator("#fail-chunks")).to_have_attribute("placeholder", "e.g. 2,5")
    expect(page.locator("#flaky-chunks")).to_have_attribute("placeholder", "e.g. 3:2,7:1")
    expect(page.locator("#input-uri")).to_have_count(0)

    workload.select_option("llm")
    for name in llm:
        expect(input_for(page, name)).to_be_visible()
    input_uri = page.locator("#input-uri")
    expect(input_uri).to_have_attribute("type", "text")
    expect(input_uri).to_have_attribute("title", llm["input_uri"]["description"])
    # input_uri or items: the schema requires neither alone (the API says which is missing)
    expect(input_uri).to_have_js_property("required", False)
    for name in simulate:
        expect(input_for(page, name)).to_have_count(0)

    workload.select_option("simulate")
    expect(page.locator("#item-delay-ms")).to_be_visible()
    expect(page.locator("#input-uri")).to_have_count(0)
    # What is sent: the inputs as JSON values, the empty ones (fail_chunks…) left out.
    page.locator("#fail-chunks").fill("x")
    page.get_by_role("button", name="Start on local").click()
    expect(page.locator("#notice")).to_contain_text('fail_chunks: "x" is not a whole number ≥ 0')
    page.locator("#fail-chunks").fill("")
    page.locator("#total-items").fill("20")
    page.get_by_role("button", name="Start on local").click()
    expect(page.locator("#job")).to_have_attribute("data-path", "local", timeout=10_000)
    assert posted == [{"workload": "simulate", "total_items": 20, "chunk_size": 10,
                       "priority": "normal", "item_delay_ms": 20}]  # fmt: skip


@pytest.mark.usefixtures("stride_workload")
def test_a_plugin_workloads_job_is_started_from_the_form(
    api: httpx.Client, executor: StandInExecutor, page: Page, monkeypatch: pytest.MonkeyPatch
) -> None:
    """tests/plugins/stride.py, registered in this process: the form offers it and its one
    field, by the schema's type and bounds, and its job runs to its end."""
    set_settings(monkeypatch, RETRY_BACKOFF_BASE_S="0.2")
    stride = own_fields(api.get("/openapi.json").json(), "stride")["stride"]
    posted = bodies_posted(page)
    page.goto(page_url(api))
    page.locator("#workload").select_option("stride")
    field = page.locator("#stride")
    expect(field).to_have_attribute("type", "number")
    expect(field).to_have_attribute("min", "1")
    expect(field).to_have_attribute("max", "100")
    expect(field).to_have_attribute("title", stride["description"])
    expect(page.locator("#item-delay-ms")).to_have_count(0)
    start = page.get_by_role("button", name="Start on local")
    fill_form(page, total_items=60, chunk_size=10, stride=0)
    start.click()
    expect(page.locator("#notice")).to_contain_text(
        'stride: "0" is not a whole number ≥ 1 and ≤ 100'
    )
    assert not posted
    fill_form(page, stride=3)
    start.click()
    job = page.locator("#job")
    expect(job).to_have_attribute("data-status", "succeeded", timeout=30_000)
    expect(page.locator("#chunk-map")).to_have_attribute("data-settled", "6")
    assert posted == [{"workload": "stride", "total_items": 60, "chunk_size": 10,
                       "priority": "normal", "stride": 3}]  # fmt: skip
    job_id = job.get_attribute("data-job-id")
    assert local_status(api, job_id or "")["retries"] == 2  # its own work: chunks 0 and 3, once


def test_a_field_of_another_type_is_typed_as_json(
    api: httpx.Client, page: Page, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A workload's field of a type the form has no input for (a flag, a list of words) is
    typed as JSON and sent as it was typed."""
    from main import app

    doc = copy.deepcopy(app.openapi())
    schemas = doc["components"]["schemas"]
    schemas["EchoFields"] = {
        "type": "object",
        "properties": {
            "workload": {"const": "echo"},
            "loud": {"type": "boolean", "default": False},
            "words": {"type": "array", "items": {"type": "string"}},
        },
    }
    job_spec = schemas["JobSpec"]
    job_spec["properties"]["workload"]["enum"].append("echo")
    job_spec["oneOf"].append({"$ref": "#/components/schemas/EchoFields"})
    job_spec["discriminator"]["mapping"]["echo"] = "#/components/schemas/EchoFields"
    monkeypatch.setattr(app, "openapi_schema", doc)
    posted = bodies_posted(page)
    page.goto(page_url(api))
    page.locator("#workload").select_option("echo")
    expect(page.locator("#loud")).to_have_value("false")
    expect(page.locator("#words")).to_have_attribute("placeholder", "JSON")
    fill_form(page, loud="true", words='["a", "b"]')
    page.get_by_role("button", name="Start on local").click()
    # This server has no echo workload: it says so, and the page shows what it said.
    expect(page.locator("#notice")).to_contain_text("local start failed")
    assert posted[0]["loud"] is True and posted[0]["words"] == ["a", "b"]


def test_a_batch_jobs_provider_batches_and_batch_price_are_shown(
    api: httpx.Client,
    executor: StandInExecutor,
    model: FakeModelServer,
    page: Page,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    set_settings(monkeypatch, LLM_BATCH_POLL_MIN_S="0.3", LLM_BATCH_POLL_MAX_S="1")
    model.batch.turnaround_s = 1.0
    uri = tmp_path / "batched.jsonl"
    uri.write_text("".join(f'{{"id": "p{i}", "prompt": "page {i}"}}\n' for i in range(6)))
    body = {"workload": "llm", "input_uri": str(uri), "chunk_size": 3, "mode": "batch"}
    started = api.post("/jobs", json=body)
    assert started.status_code == 202, started.text
    job_id = started.json()["job_id"]
    page.goto(page_url(api))
    row = page.locator(f'#jobs-local [data-job-id="{job_id}"]')
    expect(row).to_have_attribute("data-status", "succeeded", timeout=60_000)
    row.click()
    expect(page.locator("#job")).to_have_attribute("data-status", "succeeded")
    expect(page.locator("#job-batch")).to_have_text("2 batches · 6 of 6 requests done · 50 % off")
    status = local_status(api, job_id)
    realtime = status["usage"]["realtime_cost_usd"]
    expect(page.locator("#job-usage")).to_contain_text("at the batch price (realtime: $")
    assert realtime > 0
    assert status["usage"]["est_cost_usd"] == pytest.approx(realtime / 2, abs=1e-6)


def answers_on_the_page(page: Page) -> list[tuple[str, str]]:
    """Each answer listed: its item's id and what it says."""
    rows = page.locator("#answers-list li")
    return [
        (
            rows.nth(i).get_attribute("data-item-id") or "",
            rows.nth(i).locator(".answer").inner_text(),
        )
        for i in range(rows.count())
    ]


def test_an_llm_job_of_pasted_prompts_is_answered_on_the_page(
    api: httpx.Client, executor: StandInExecutor, model: FakeModelServer, page: Page
) -> None:
    """Three prompts typed a line each: one job, and its three answers read on the page."""
    page.context.grant_permissions(["clipboard-read", "clipboard-write"])
    posted = bodies_posted(page)
    page.goto(page_url(api))
    page.locator("#workload").select_option("llm")
    # Counted from the items: the demo's total_items would disagree with them.
    expect(page.locator("#total-items")).to_have_value("")
    prompts = ["What is a chunk?", "Name a colour", "Say hello"]
    page.locator("#items").fill("\n".join(prompts) + "\n\n")
    expect(page.locator("#items-said")).to_have_text("3 items")
    fill_form(page, chunk_size=2)
    page.get_by_role("button", name="Start on local").click()
    job = page.locator("#job")
    expect(job).to_have_attribute("data-status", "succeeded", timeout=60_000)
    expect(page.locator("#answers")).to_be_visible()
    expect(page.locator("#answers-list li")).to_have_count(3, timeout=10_000)
    assert answers_on_the_page(page) == [(str(n), f"echo: {p}") for n, p in enumerate(prompts, 1)]
    expect(page.locator("#answers-said")).to_have_text("chunks 0\u20131: 3 answered")
    assert posted == [{"workload": "llm", "chunk_size": 2, "priority": "normal",
                       "items": [{"id": str(n), "prompt": p} for n, p in enumerate(prompts, 1)],
                       "mode": "realtime"}]  # fmt: skip
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.locator("#job").screenshot(path=ARTIFACTS / "llm-answers.png")
    # Its output file: a local path, shown as text to copy.
    status = local_status(api, page.locator("#job").get_attribute("data-job-id") or "")
    output = page.locator("#job-files [data-file=output]")
    expect(output.locator("code")).to_have_text(status["output_uri"])
    output.get_by_role("button", name="Copy").click()
    expect(page.locator("#notice")).to_contain_text(
        f"copied the output file: {status['output_uri']}"
    )
    assert page.evaluate("navigator.clipboard.readText()") == status["output_uri"]
    # What this job's status does not carry stays hidden; a job that succeeded has no Retry.
    for row in ("#job-spend-row", "#job-threshold-row", "#job-stopped-row", "#job-redrives-row"):
        expect(page.locator(row)).to_be_hidden()
    expect(page.locator("#job-files [data-file=errors]")).to_have_count(0)
    expect(page.locator("#retry")).to_be_hidden()
    # A chunk picked by its index shows its answers alone.
    page.locator("#answers-chunk").fill("1")
    page.get_by_role("button", name="Show its answers").click()
    expect(page.locator("#answers-said")).to_have_text("chunk 1: 1 answered")
    assert answers_on_the_page(page) == [("3", "echo: Say hello")]
    page.locator("#answers-chunk").fill("2")
    page.get_by_role("button", name="Show its answers").click()
    expect(page.locator("#notice")).to_contain_text('answers: "2" is no chunk of this job (0 to 1)')
    # Back to simulate: its demo size comes back.
    page.locator("#workload").select_option("simulate")
    expect(page.locator("#total-items")).to_have_value("200")


def test_a_jsonl_file_is_read_in_the_browser_its_bad_lines_and_size_named(
    api: httpx.Client,
    executor: StandInExecutor,
    model: FakeModelServer,
    page: Page,
    tmp_path: Path,
) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "r1", "prompt": "fine"}\n{"id": "r2", "prompt": \n')
    big = tmp_path / "big.jsonl"
    big.write_text(f'{{"id": "x", "prompt": "{"y" * (1024 * 1024)}"}}\n')
    good = tmp_path / "good.jsonl"
    good.write_text(
        '{"id": "r1", "prompt": "first"}\r\n\n{"id": "r2", "text": "second"}\n'
        '{"id": "r3", "prompt": "third"}\n'
    )
    posted = bodies_posted(page)
    page.goto(page_url(api))
    page.locator("#workload").select_option("llm")
    picker, said = page.locator("#items-file"), page.locator("#items-said")
    start = page.get_by_role("button", name="Start on local")

    picker.set_input_files(bad)
    expect(said).to_contain_text("items: line 2 of bad.jsonl is not JSON")
    start.click()
    expect(page.locator("#notice")).to_contain_text("items: line 2 of bad.jsonl is not JSON")
    picker.set_input_files(big)
    expect(said).to_contain_text(
        f"items: big.jsonl is {big.stat().st_size:,} bytes; a request takes at most 1,048,576 "
        "(1 MiB): stage it and give input_uri instead"
    )
    assert not posted

    picker.set_input_files(good)
    expect(said).to_have_text("3 items from good.jsonl")
    # The API's 400 names the field and says what is wrong with it.
    fill_form(page, prompt_template="no place for the text")
    start.click()
    expect(page.locator("#notice")).to_contain_text(
        "local start failed: invalid JobSpec: prompt_template: "
    )
    expect(page.locator("#notice")).to_contain_text("{text}")
    fill_form(page, prompt_template="Answer: {text}")
    start.click()
    expect(page.locator("#job")).to_have_attribute("data-status", "succeeded", timeout=60_000)
    expect(page.locator("#answers-list li")).to_have_count(3, timeout=10_000)
    assert answers_on_the_page(page) == [
        ("r1", "echo: first"), ("r2", "echo: Answer: second"), ("r3", "echo: third"),
    ]  # fmt: skip
    assert posted[-1]["items"] == [
        {"id": "r1", "prompt": "first"}, {"id": "r2", "text": "second"},
        {"id": "r3", "prompt": "third"},
    ]  # fmt: skip


def test_an_ended_partial_job_offers_retry_and_the_page_shows_the_answer(
    api: httpx.Client, executor: StandInExecutor, page: Page, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Retry calls POST /jobs/{id}/retry and shows what it answered (accepted, or refused)."""
    set_settings(monkeypatch, RETRY_BACKOFF_BASE_S="0.1")
    started = api.post(
        "/jobs", json={"total_items": 20, "chunk_size": 5, "item_delay_ms": 0, "fail_chunks": [1]}
    )
    job_id = started.json()["job_id"]
    page.goto(page_url(api))
    row = page.locator(f'#jobs-local [data-job-id="{job_id}"]')
    expect(row).to_have_attribute("data-status", "partial", timeout=30_000)
    row.click()
    retry = page.locator("#retry")
    expect(retry).to_be_visible()
    expect(retry).to_be_enabled()
    asked: list[str] = []
    page.on(
        "request", lambda r: asked.append(f"{r.method} {r.url}") if r.method == "POST" else None
    )
    retry.click()
    expect(page.locator("#notice")).to_contain_text(f"retry local job {job_id[:8]}…: ")
    assert asked == [f"POST {str(api.base_url).rstrip('/')}/jobs/{job_id}/retry"]


def ended(api: httpx.Client, job_id: str, timeout_s: float = 60) -> dict[str, Any]:
    """The job's status once it has ended (polled through the API, not the page)."""
    deadline = time.monotonic() + timeout_s
    while (status := local_status(api, job_id))["status"] not in TERMINAL:
        assert time.monotonic() < deadline, status
        time.sleep(0.1)
    return status


def start_llm(api: httpx.Client, prompts: list[str], **body: Any) -> str:
    items = [{"id": f"i{n}", "prompt": prompt} for n, prompt in enumerate(prompts)]
    started = api.post("/jobs", json={"workload": "llm", "items": items, **body})
    assert started.status_code == 202, started.text
    job_id: str = started.json()["job_id"]
    return job_id


def usd(value: float) -> str:
    """A cost as format.js's fmtUsd writes it: 4 places, or 2 significant digits below $0.01."""
    places = max(4, 1 - math.floor(math.log10(value))) if 0 < value < 0.01 else 4
    return f"${value:.{places}f}"


def open_job(api: httpx.Client, page: Page, job_id: str, status: str) -> Locator:
    page.goto(page_url(api))
    page.locator(f'#jobs-local [data-job-id="{job_id}"]').click()
    job = page.locator("#job")
    expect(job).to_have_attribute("data-job-id", job_id)
    expect(job).to_have_attribute("data-status", status, timeout=10_000)
    return job


def test_a_job_stopped_at_its_spend_cap_shows_spend_of_cap_and_what_stopped_it(
    api: httpx.Client, executor: StandInExecutor, model: FakeModelServer, page: Page
) -> None:
    # At the default prices an answer here costs about $2e-6 and a call holds ~$3e-6 of the
    # cap while it runs (tests/functions/test_job_controls.py): $1e-5 stops 16 prompts early.
    cap = 1e-5
    job_id = start_llm(api, [f"cap {n}" for n in range(16)], chunk_size=4, max_tokens=5,
                       max_cost_usd=cap)  # fmt: skip
    status = ended(api, job_id)
    assert (status["status"], status["stopped_by"]) == ("partial", "max_cost_usd")
    spent = status["usage"]["spent_usd"]
    assert 0 < spent <= cap
    open_job(api, page, job_id, "partial")
    share = spent / cap
    expect(page.locator("#job-spend")).to_have_text(
        f"{usd(spent)} of {usd(cap)} ({round(share * 100)} %)"
    )
    assert page.locator("#job-spend-bar").evaluate("bar => bar.value") == pytest.approx(share)
    expect(page.locator("#job-stopped")).to_have_text("its spend cap (max_cost_usd)")
    expect(page.locator("#job-error")).to_contain_text("spend cap reached")
    expect(page.locator("#job-threshold-row")).to_be_hidden()  # no threshold was set
    expect(page.locator("#retry")).to_be_visible()
    # What the cap kept from running is in its errors file.
    errors = page.locator("#job-files [data-file=errors]")
    expect(errors.locator("code")).to_have_text(status["errors_uri"])


def test_a_job_stopped_by_its_failure_threshold_shows_failed_of_threshold(
    api: httpx.Client, executor: StandInExecutor, model: FakeModelServer, page: Page
) -> None:
    prompts = [f"[400-context] broken {n}" for n in range(12)]
    job_id = start_llm(api, prompts, chunk_size=2, max_failed_items=3)
    status = ended(api, job_id)
    assert (status["status"], status["stopped_by"]) == ("failed", "max_failed_items")
    open_job(api, page, job_id, "failed")
    expect(page.locator("#job-threshold")).to_have_text(f"{status['items_failed']} of at most 3")
    expect(page.locator("#job-stopped")).to_have_text("its failure threshold (max_failed_items)")
    expect(page.locator("#job-error")).to_contain_text("max_failed_items=3")
    expect(page.locator("#job-spend-row")).to_be_hidden()  # no cap was set
    expect(page.locator("#retry")).to_be_visible()


def test_retry_runs_a_partial_jobs_failed_items_again_and_the_page_follows_it(
    api: httpx.Client, executor: StandInExecutor, model: FakeModelServer, page: Page
) -> None:
    """Its errors file while something failed (a path: text and a Copy button), one POST for
    a double click, 202, then the job followed to its end: succeeded, retried once, no errors
    file, every answer there."""
    page.context.grant_permissions(["clipboard-read", "clipboard-write"])
    prompts = ["first", "[400-contextx1] second", "third", "fourth"]  # refused once
    job_id = start_llm(api, prompts, chunk_size=2)
    first = ended(api, job_id)
    assert first["status"] == "partial" and first["items_failed"] == 1 and first["errors_uri"]
    job = open_job(api, page, job_id, "partial")
    errors = page.locator("#job-files [data-file=errors]")
    expect(errors.locator("code")).to_have_text(first["errors_uri"])
    errors.get_by_role("button", name="Copy").click()
    expect(page.locator("#notice")).to_have_text(f"copied the errors file: {first['errors_uri']}")
    assert page.evaluate("navigator.clipboard.readText()") == first["errors_uri"]
    expect(page.locator("#answers-said")).to_have_text("chunks 0\u20131: 3 answered, 1 failed")
    expect(page.locator("#answers-list li.failed")).to_have_attribute("data-item-id", "i1")
    expect(page.locator("#job-redrives-row")).to_be_hidden()

    posted: list[str] = []
    page.on("request", lambda r: posted.append(r.url) if r.method == "POST" else None)
    page.locator("#retry").dblclick()  # twice quickly: one retry asked for
    expect(page.locator("#notice")).to_have_text(
        f"retry local job {job_id[:8]}…: now running (202)"
    )
    expect(job).to_have_attribute("data-status", "succeeded", timeout=30_000)
    assert posted == [f"{str(api.base_url).rstrip('/')}/jobs/{job_id}/retry"]
    expect(page.locator("#job-redrives")).to_have_text("1 time")
    expect(page.locator("#retry")).to_be_hidden()  # succeeded: nothing to retry
    expect(errors).to_have_count(0)  # the retry answered what failed: no errors file
    expect(page.locator("#answers-said")).to_have_text("chunks 0\u20131: 4 answered")
    assert answers_on_the_page(page) == [(f"i{n}", f"echo: {p}") for n, p in enumerate(prompts)]
    final = local_status(api, job_id)
    assert (final["status"], final["redrives"], final["errors_uri"]) == ("succeeded", 1, None)
    assert model.calls["[400-contextx1] second"] == 2 and model.calls["first"] == 1


def test_a_refused_retry_shows_the_apis_reason_and_the_job_as_it_is_now(
    api: httpx.Client,
    executor: StandInExecutor,
    model: FakeModelServer,
    page: Page,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The page shows a partial job; meanwhile it was retried elsewhere, as often as
    JOB_MAX_REDRIVES allows: its Retry answers 409, and the page reads the job again."""
    set_settings(monkeypatch, JOB_MAX_REDRIVES="1")
    job_id = start_llm(api, ["[400-context] never", "fine"], chunk_size=1)
    assert ended(api, job_id)["status"] == "partial"
    job = open_job(api, page, job_id, "partial")
    expect(page.locator("#job-redrives-row")).to_be_hidden()
    assert api.post(f"/jobs/{job_id}/retry").status_code == 202  # not from this page
    assert ended(api, job_id)["redrives"] == 1
    refused = api.post(f"/jobs/{job_id}/retry")
    assert refused.status_code == 409
    page.locator("#retry").click()
    expect(page.locator("#notice")).to_have_text(
        f"retry local job {job_id[:8]}…: {refused.json()['message']}"
    )
    expect(page.locator("#notice")).to_contain_text("JOB_MAX_REDRIVES")
    expect(page.locator("#job-redrives")).to_have_text("1 time", timeout=10_000)
    expect(job).to_have_attribute("data-status", "partial")
    assert model.calls["[400-context] never"] == 2


def test_the_start_form_sends_a_cap_and_a_threshold_and_the_job_carries_them(
    api: httpx.Client, executor: StandInExecutor, model: FakeModelServer, page: Page
) -> None:
    """A number (max_cost_usd > 0) and a count or a share (max_failed_items: 3 or "50%"), as
    the API publishes them; the jobs they start show them in their status and on the page."""
    posted = bodies_posted(page)
    page.goto(page_url(api))
    page.locator("#workload").select_option("llm")
    page.locator("#items").fill("one\ntwo\nthree\nfour")
    cap, threshold = page.locator("#max-cost-usd"), page.locator("#max-failed-items")
    expect(cap).to_have_attribute("type", "number")
    expect(threshold).to_have_attribute("placeholder", "e.g. 10 or 10%")
    start, job = page.get_by_role("button", name="Start on local"), page.locator("#job")
    fill_form(page, max_cost_usd="0")
    start.click()
    expect(page.locator("#notice")).to_have_text(
        'max_cost_usd: "0" is not a number > 0 and ≤ 1000000'
    )
    assert not posted

    fill_form(page, max_cost_usd="0.25", max_failed_items="50%")
    start.click()
    expect(job).to_have_attribute("data-status", "succeeded", timeout=60_000)
    status = local_status(api, job.get_attribute("data-job-id") or "")
    assert (status["usage"]["max_cost_usd"], status["max_failed_items"]) == (0.25, 2)
    spent = status["usage"]["spent_usd"]
    expect(page.locator("#job-spend")).to_have_text(f"{usd(spent)} of $0.2500 (0 %)")
    expect(page.locator("#job-threshold")).to_have_text("0 of at most 2")
    expect(page.locator("#job-stopped-row")).to_be_hidden()

    fill_form(page, max_failed_items="3")
    start.click()
    expect(job).not_to_have_attribute("data-job-id", status["job_id"], timeout=10_000)
    expect(job).to_have_attribute("data-status", "succeeded", timeout=60_000)
    again = local_status(api, job.get_attribute("data-job-id") or "")
    assert (again["usage"]["max_cost_usd"], again["max_failed_items"]) == (0.25, 3)
    expect(page.locator("#job-threshold")).to_have_text("0 of at most 3")
    assert [(b["max_cost_usd"], b["max_failed_items"]) for b in posted] == [
        (0.25, "50%"),
        (0.25, 3),
    ]
