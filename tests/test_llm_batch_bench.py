"""bench/llm_batch.py's arithmetic on canned figures: a job's figures from its status JSON and
the server's /stats, the ratios and verdicts of a path's run, what the stack is given, and the
memory measurements on a few items. No server, app or emulator is started."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from bench import llm_batch as bench


def status(items: int, wall_s: float, est: float | None, realtime: float | None) -> dict[str, Any]:
    return {
        "status": "succeeded",
        "items_processed": items,
        "created_at": "2026-12-07T10:00:00Z",
        "finished_at": f"2026-12-07T10:0{int(wall_s // 60)}:{wall_s % 60:06.3f}Z",
        "usage": {"est_cost_usd": est, "realtime_cost_usd": realtime},
        "batch": {"batches": items // 10_000, "discount": 0.5},
    }


def stats(batches: int, polls_each: int, since: float, life_s: float = 144.0) -> dict[str, Any]:
    return {
        "calls": {
            "files_create": batches,
            "batches_create": batches,
            "batches_retrieve": batches * polls_each,
            "files_content": batches,
            "files_delete": batches,
        },
        "bytes_uploaded": batches * 2_000_000,
        "bytes_downloaded": batches * 5_000_000,
        "batches": {
            f"batch_{n}": {"created_at": since + n, "ended_at": since + n + life_s}
            for n in range(batches)
        }
        # A batch of an earlier job (created before this one's): not this job's turnaround.
        | {"batch_old": {"created_at": since - 500, "ended_at": since - 10}},
    }


def job(items: int, wall_s: float, polls_each: int, est: float, realtime: float) -> bench.Job:
    figures = bench.job_of(
        items,
        10_000,
        status(items, wall_s, est, realtime),
        stats(items // 10_000, polls_each, 0),
        0,
    )
    figures.write_peak_bytes, figures.read_peak_bytes = 50_000, 300_000
    return figures


def run(small: bench.Job, large: bench.Job, realtime_cost: float | None = 0.16) -> bench.PathRun:
    return bench.judge(bench.PathRun("local", 120.0, small, large, realtime_cost, "succeeded"))


def test_a_job_s_figures_from_its_status_and_the_server_s_stats() -> None:
    created = datetime.fromisoformat("2026-12-07T10:00:00Z").timestamp()
    figures = bench.job_of(
        100_000, 10_000, status(100_000, 150.5, 0.4, 0.8), stats(10, 20, created), created
    )
    assert (figures.status, figures.items_processed, figures.wall_s) == (
        "succeeded",
        100_000,
        150.5,
    )
    assert figures.batches == 10
    assert figures.calls == {
        "uploads": 10,
        "creates": 10,
        "polls": 200,
        "downloads": 10,
        "other": 10,
    }
    assert figures.total_calls == 240 and figures.per_batch() == 24
    assert figures.server_life_s == 144.0  # the earlier job's batch not counted
    # Created at 1,000 s (10:00:00 below), its last batch created 9 s and ended 153 s later,
    # the job finished 150.5 s after it was created: canned, so the tail is negative here.
    assert (figures.submit_s, figures.tail_s) == (9.0, -2.5)
    assert (figures.bytes_up, figures.bytes_down) == (20_000_000, 50_000_000)
    assert (figures.est_cost_usd, figures.realtime_cost_usd) == (0.4, 0.8)

    unfinished = bench.job_of(10, 10, {"status": "running"}, {}, 0)
    assert unfinished.wall_s is None and unfinished.batches == 0
    assert unfinished.per_batch() == float("inf")


def test_every_bound_met() -> None:
    small = job(10_000, 160.0, 20, 0.08, 0.16)
    large = job(100_000, 170.0, 21, 0.8, 1.6)
    large.write_peak_bytes, large.read_peak_bytes = 51_000, 330_000
    judged = run(small, large)
    assert judged.ratios["calls_growth"] == round(10 * 25 / 24, 4)
    assert judged.ratios["batches_growth"] == 10
    assert judged.ratios["write_memory"] == 1.02 and judged.ratios["read_memory"] == 1.1
    # The server turns a batch around in 1.2 T (T/10 validating, T in progress, T/10 finalizing).
    assert judged.ratios["wall_small"] == round(160 / 144, 4)
    assert judged.ratios["wall_large"] == round(170 / 144, 4)
    assert judged.ratios["wall_large_over_T"] == round(170 / 120, 4)
    assert judged.ratios["cost_small"] == 0.5 and judged.ratios["batch_over_realtime"] == 0.5
    assert all(judged.checks.values()), judged.checks
    shown = bench.table([judged])
    assert "PASS" in shown and "MISS" not in shown


def test_each_bound_missed() -> None:
    small = job(10_000, 160.0, 20, 0.08, 0.16)
    # Calls per item (a poll per item would be O(items)), memory growing with the job, late,
    # and priced at full price.
    large = job(100_000, 180.0, 2_000, 1.6, 1.6)
    large.write_peak_bytes, large.read_peak_bytes = 80_000, 460_000
    large.items_processed = 99_999
    judged = run(small, large, realtime_cost=0.08)
    assert judged.checks == {
        "both jobs succeeded, every item": False,
        "calls growth <= 1.25 x batches growth": False,
        "write memory 100k/10k <= 1.5": False,
        "read memory 100k/10k <= 1.5": False,
        "wall (10k) / server turnaround <= 1.2": True,
        "wall (100k) / server turnaround <= 1.2": False,
        "est cost / realtime cost == discount": False,
        "batch job cost / realtime job cost == 0.5": False,
    }
    assert "MISS" in bench.table([judged])


def test_costs_equal_but_for_the_status_s_rounding_to_six_decimals() -> None:
    # 20 items' cost at 6 decimals: 0.000107 is half of 0.000215 as the status rounds them.
    assert bench._equal((0.000107, 0.000215), 0.5)
    assert not bench._equal((0.000100, 0.000215), 0.5)
    assert bench._equal((0.8, 1.6), 0.5) and not bench._equal((0.81, 1.6), 0.5)
    assert not bench._equal((None, 1.6), 0.5) and not bench._equal((0.8, 0.0), 0.5)


def test_a_missing_figure_is_a_miss_not_an_error() -> None:
    small = job(10_000, 160.0, 20, 0.08, 0.16)
    large = job(100_000, 170.0, 21, 0.8, 1.6)
    large.wall_s = None
    judged = bench.judge(bench.PathRun("cloud", 120.0, small, large, None, "timeout:running"))
    assert judged.ratios["wall_large"] is None
    assert not judged.checks["wall (100k) / server turnaround <= 1.2"]
    assert not judged.checks["batch job cost / realtime job cost == 0.5"]


def test_the_setup_the_stack_and_the_app_are_given() -> None:
    setup = bench.Setup(100_000, 120.0)
    assert setup.sizes == (10_000, 100_000) and setup.chunk_size == 10_000
    assert bench.Setup(200, 10).sizes == (20, 200)
    assert bench.batch_spec(10_000, "/in.jsonl")["mode"] == "batch"
    given = dict(a.split("=", 1) for a in bench.cloud_parameters("http://m") if a != "--parameter")
    assert (given["LlmBatchPollMinS"], given["LlmBatchPollMaxS"]) == ("1", "5")
    assert given["OpenAiBaseUrl"] == "http://m/v1"
    from bench.llm_throughput import template_parameters

    assert set(given) <= template_parameters()


def test_writing_the_files_is_measured_chunk_after_chunk() -> None:
    scenario = bench.Setup(40, 1).scenario()
    items = bench.items_of(scenario, "x-", 40)
    assert [i.index for i in items[:3]] == [0, 1, 2] and items[5].id == "x-000005"
    peak, largest = bench.write_peak(items, 10)
    assert peak > 0 and 10 * 100 < largest < 10 * 1_000
    with bench.traced() as traced:
        held = bytearray(1_000_000)
    assert traced[0] >= 1_000_000 and len(held) == 1_000_000
