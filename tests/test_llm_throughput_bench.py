"""bench/llm_throughput.py's arithmetic on canned figures: the scenarios and their scaling, the
ideal, efficiency, 429 share and verdicts from a status JSON and the server's /stats, what the
app and the stack are given, and the timeline chart. No server, app or emulator is started."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

from bench import llm_throughput as bench


def status(created: str, finished: str | None, **fields: Any) -> dict[str, Any]:
    return {"status": "succeeded", "created_at": created, "finished_at": finished, **fields}


def stats(requests: int, admitted: int, **fields: Any) -> dict[str, Any]:
    return {
        "requests": requests,
        "admitted": admitted,
        "rate_limited": requests - admitted,
        "prompts_answered_twice": 0,
        "peak_in_flight": 25,
        "timeline": {"admitted_per_s": [50, 50], "rate_limited_per_s": [0, 1]},
        **fields,
    }


def test_the_scenarios_as_specified_and_scaled_down() -> None:
    [rpm] = bench.scenarios("rpm")
    assert (rpm.items, rpm.chunk_size, rpm.rpm, rpm.tpm, rpm.in_flight) == (3_000, 100, 3_000, 0, 5)
    assert rpm.rate_limits == {"*": {"rpm": 3_000}} and rpm.ideal_s() == 60
    [over] = bench.scenarios("overprovisioned")
    assert over.in_flight == 20
    [two] = bench.scenarios("two-apps")
    assert two.apps == 2 and two.paths == ("local",)
    plain, quiet = bench.scenarios("no-limit")
    assert plain.rate_limits is None and (plain.min_efficiency, plain.max_429_share) == (0.8, 0.05)
    assert quiet.server_headers is False and quiet.rate_limits is None

    [tpm] = bench.scenarios("tpm")
    assert tpm.bound == "tpm" and tpm.rate_limits == {"bench-model": {"rpm": 3_000, "tpm": 300_000}}
    # ~1,000-token prompts: the token limit binds (~290 a minute), a run of about a minute.
    per_item = tpm.total_tokens() / tpm.items
    assert 1_000 <= per_item <= 1_040 and 55 <= tpm.ideal_s() <= 65
    assert 300_000 / per_item < 3_000 / 10

    [small] = bench.scenarios("rpm", items=150)
    assert (small.items, small.chunk_size) == (150, 5)  # as many chunks as the full run
    [small_tpm] = bench.scenarios("tpm", items=150)
    assert (small_tpm.items, small_tpm.chunk_size) == (15, 1)
    with pytest.raises(ValueError):
        bench.scenarios("nope")


def test_each_item_is_unique_and_as_long_as_asked() -> None:
    [tpm] = bench.scenarios("tpm")
    prompts = [bench.TEMPLATE.replace("{text}", tpm.text_of(i)) for i in range(50)]
    assert len(set(prompts)) == 50
    assert all(3_990 <= len(p) <= 4_010 for p in prompts)
    assert tpm.tokens_of(7) == math.ceil(len(prompts[7]) / 4) + 20
    lines = bench.input_lines(tpm, "x-", 3, start=10).splitlines()
    assert [json.loads(line)["id"] for line in lines] == ["x-000010", "x-000011", "x-000012"]


def test_figures_from_a_status_and_stats() -> None:
    [rpm] = bench.scenarios("rpm")
    done = status(
        "2026-12-07T10:00:00Z",
        "2026-12-07T10:01:05Z",
        items_processed=3_000,
        usage={"prompt_tokens": 1, "rate_limited": 12, "rate_wait_s": 3.5},
    )
    fig = bench.figures(rpm, "local", [done], stats(3_012, 3_000))
    assert fig.duration_s == 65 and fig.ideal_s == 60
    assert fig.efficiency == round(60 / 65, 3)
    assert fig.share_429 == round(12 / 3_012, 4)
    assert (fig.usage_rate_limited, fig.usage_rate_wait_s) == (12, 3.5)
    assert fig.checks == {
        "succeeded": True,
        "efficiency >= 0.9": True,
        "calls == items": True,
        "429s <= 1%": True,
    }
    assert "PASS" in bench.table([fig]) and "MISS" not in bench.table([fig])


def test_a_job_that_did_not_answer_everything_has_no_efficiency() -> None:
    [rpm] = bench.scenarios("rpm")
    partial = status(
        "2026-12-07T10:00:00Z", "2026-12-07T10:00:08Z", items_processed=2_000, usage=None
    )
    partial["status"] = "partial"
    fig = bench.figures(rpm, "cloud", [partial], stats(3_000, 2_000))
    assert fig.efficiency is None and fig.usage_rate_limited is None
    assert not fig.checks["succeeded"] and not fig.checks["efficiency >= 0.9"]
    assert not fig.checks["calls == items"] and not fig.checks["429s <= 1%"]
    assert "MISS" in bench.table([fig])

    twice = bench.figures(rpm, "cloud", [status("2026-12-07T10:00:00Z", None)], stats(3_001, 3_001))
    assert twice.duration_s is None and not twice.checks["calls == items"]


def test_two_jobs_count_from_the_first_created_to_the_last_finished() -> None:
    [two] = bench.scenarios("two-apps")
    jobs = [
        status("2026-12-07T10:00:01Z", "2026-12-07T10:01:00Z", items_processed=1_500),
        status("2026-12-07T10:00:00Z", "2026-12-07T10:01:02.5Z", items_processed=1_500),
    ]
    fig = bench.figures(two, "local", jobs, stats(3_000, 3_000))
    assert fig.duration_s == 62.5 and fig.efficiency == round(60 / 62.5, 3)
    assert fig.in_flight_chunks == 10


def test_the_app_and_the_stack_are_given_the_limits_or_nothing(tmp_path: Path) -> None:
    [rpm] = bench.scenarios("rpm")
    env = bench.app_env(rpm, tmp_path, "sqlite:///x", "http://model", 8)
    assert json.loads(env["LLM_RATE_LIMITS"]) == {"*": {"rpm": 3_000}}
    assert (env["LLM_ITEM_CONCURRENCY"], env["TENANT_CHUNK_CONCURRENCY"]) == ("8", "5")
    assert env["OPENAI_BASE_URL"] == "http://model/v1"
    [plain, _] = bench.scenarios("no-limit")
    assert "LLM_RATE_LIMITS" not in bench.app_env(plain, tmp_path, "sqlite:///x", "http://m", 8)

    args = bench.cloud_parameters(rpm, "http://model", 8)
    given = dict(a.split("=", 1) for a in args if a != "--parameter")
    assert given["WorkerConcurrency"] == "5" and given["LlmItemConcurrency"] == "8"
    assert json.loads(given["LlmRateLimits"]) == {"*": {"rpm": 3_000}}
    assert "LlmRateLimits" not in " ".join(bench.cloud_parameters(plain, "http://m", 8))
    assert {"WorkerConcurrency", "WorkerBatchSize", "OpenAiBaseUrl"} <= bench.template_parameters()
    assert bench.warm_up_sizes(5) == [2, 4, 5] and bench.warm_up_sizes(20)[-1] == 20


def test_the_timeline_chart_is_written(tmp_path: Path) -> None:
    [rpm] = bench.scenarios("rpm")
    done = status("2026-12-07T10:00:00Z", "2026-12-07T10:01:00Z", items_processed=3_000)
    fig = bench.figures(rpm, "local", [done], stats(3_000, 3_000))
    out = tmp_path / "chart.png"
    bench.timeline_png("rpm", [fig, fig], bench.limit_per_s(rpm), out)
    assert out.read_bytes()[:4] == b"\x89PNG"
    [tpm] = bench.scenarios("tpm")
    assert 4.5 < bench.limit_per_s(tpm) < 5  # ~290 requests a minute
