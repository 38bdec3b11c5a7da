"""LLM throughput against a rate-limited model, on both paths: how close a job gets to the
provider's limit, and what it costs in 429s.

    .venv/bin/python -m bench.llm_throughput rpm              # 3,000 items at 3,000 RPM, both paths
    .venv/bin/python -m bench.llm_throughput all --items 150  # every scenario, scaled down (smoke)
    .venv/bin/python -m bench.llm_throughput tpm --path local

Scenarios: `rpm` (3,000 RPM, 3,000 items in chunks of 100), `tpm` (~1,000-token prompts, 300,000
TPM binds before 3,000 RPM), `overprovisioned` (as rpm, 4x the chunks in flight), `two-apps`
(two app processes on one Postgres store, one job each, one limit between them; local path
only), `no-limit` (nothing configured; with and without the server's x-ratelimit-* headers).

The model is tests/rate_limited_llm.py in a subprocess (latency 0.5 +- 0.1 s). The local path is
the app in a subprocess (`uvicorn main:app`) whose events go to a stand-in for Inngest's event
API, each one run by the stand-in executor (tests/executor.py) over the serve endpoint, with as
many runs at once as the Dev Server's concurrency would allow (TENANT_CHUNK_CONCURRENCY). The
cloud path is the emulator (`python -m aws.local.emulator`), its input uploaded to the stack's
data bucket on moto, WorkerConcurrency chunks in flight (WorkerBatchSize 1), the worker's Timeout
100 s and the queue's visibility 120 s (see run_cloud). Both are warmed by small jobs first, and
the server's records cleared before the measured job.

Each figure is a ratio measured in one run: efficiency = ideal / duration, where the ideal is
items / (rpm / 60) (an RPM-bound case) or tokens / (tpm / 60) (TPM-bound) and the duration is the
job's own finished_at - created_at (polling adds nothing); 429s / requests and the requests
admitted, from the server's /stats. Results: bench/results/llm_throughput.json, and a
requests-per-second timeline per scenario, bench/results/llm_throughput_<scenario>.png.

The rate-limit settings are passed to the app as LLM_RATE_LIMITS (JSON: model name or "*" ->
{"rpm", "tpm"}) and LLM_ITEM_CONCURRENCY, and to the stack as the LlmRateLimits and
LlmItemConcurrency parameters; the status JSON's usage.rate_limited and usage.rate_wait_s are
reported when present. Code that does not read them yet runs as it did (the notes say so).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import httpx

from chunking.status import TERMINAL_STATUSES

REPO = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).parent / "results"
MODEL = "bench-model"
TEMPLATE = "Classify this review as positive, negative or mixed: {text}"
COMPLETION_TOKENS = 20  # the server's answer to every item
APP_ID = "long-jobs"
APP_KEY = "bench-api-key"
LATENCY_S, JITTER_S = 0.5, 0.1
DEFAULT_TENANT_CONCURRENCY = 5  # TENANT_CHUNK_CONCURRENCY's default
# The stand-in executor's wait for one request to the serve endpoint: past a chunk's whole
# budget (INNGEST_STEP_BUDGET_S, 240 s), as the Dev Server waits for the answer.
REQUEST_TIMEOUT_S = 300.0
RPM_ITEMS = 3_000  # items of the RPM-bound scenarios: a minute's worth at 3,000 RPM
Bound = Literal["rpm", "tpm"]
PathName = Literal["local", "cloud"]


@dataclass(frozen=True)
class Scenario:
    """One configuration to measure, with its bounds (None: reported, not judged)."""

    name: str
    variant: str  # names a run within the scenario (no-limit has two)
    items: int
    chunk_size: int
    in_flight: int  # chunks at once: the stand-in's workers, the stack's WorkerConcurrency
    rate_limits: dict[str, dict[str, int]] | None  # LLM_RATE_LIMITS; None leaves it unset
    rpm: int = 3_000  # the server's limits (0: none)
    tpm: int = 0
    prompt_chars: int = 80  # of each prompt, the template included
    bound: Bound = "rpm"
    min_efficiency: float = 0.9
    max_429_share: float | None = 0.01
    apps: int = 1
    server_headers: bool = True
    paths: tuple[PathName, ...] = ("local", "cloud")

    def text_of(self, index: int) -> str:
        """Item `index`'s text: unique (the server counts calls per prompt), `prompt_chars`
        long once in the template."""
        head = f"item {index}: "
        filler = "the battery lasts all weekend and the shipping was fast "
        size = max(len(head), self.prompt_chars - len(TEMPLATE.replace("{text}", "")))
        return (head + filler * (size // len(filler) + 1))[:size].rstrip() + "."

    def tokens_of(self, index: int) -> int:
        """What the server charges for item `index` (its formula: ceil(characters / 4))."""
        prompt = TEMPLATE.replace("{text}", self.text_of(index))
        return math.ceil(len(prompt) / 4) + COMPLETION_TOKENS

    def total_tokens(self) -> int:
        return sum(self.tokens_of(i) for i in range(self.items))

    def ideal_s(self) -> float:
        """The least time the server's limit allows for all the items."""
        if self.bound == "tpm":
            return self.total_tokens() / (self.tpm / 60)
        return self.items / (self.rpm / 60)


def scenarios(
    name: str, items: int | None = None, concurrency: int = DEFAULT_TENANT_CONCURRENCY
) -> list[Scenario]:
    """The runs of scenario `name`. `items` (of the RPM-bound ones, 3,000 by default) scales
    every scenario alike, tpm's 300 items too; chunks shrink with it, so a job keeps its number
    of chunks."""
    scale = (items or RPM_ITEMS) / RPM_ITEMS

    def scaled(default_items: int, default_chunk: int) -> tuple[int, int]:
        n = max(1, round(default_items * scale))
        return n, max(1, round(default_chunk * scale))

    n, chunk = scaled(RPM_ITEMS, 100)
    rpm = Scenario(name, name, n, chunk, concurrency, {"*": {"rpm": 3_000}})
    if name == "rpm":
        return [rpm]
    if name == "overprovisioned":
        return [replace(rpm, in_flight=4 * concurrency)]
    if name == "two-apps":  # the items split between two apps
        return [replace(rpm, apps=2, paths=("local",))]
    if name == "no-limit":
        base = replace(rpm, rate_limits=None, min_efficiency=0.8, max_429_share=0.05)
        return [base, replace(base, variant="no-limit --no-headers", server_headers=False)]
    if name == "tpm":
        # ~1,020 tokens an item: 300,000 TPM admits ~294 a minute, well under 3,000 RPM.
        n, chunk = scaled(300, 10)
        limits = {MODEL: {"rpm": 3_000, "tpm": 300_000}}  # by model name, where rpm says "*"
        return [
            replace(
                rpm,
                items=n,
                chunk_size=chunk,
                tpm=300_000,
                prompt_chars=4_000,
                rate_limits=limits,
                bound="tpm",
                max_429_share=None,
            )
        ]
    raise ValueError(f"unknown scenario {name!r}")


SCENARIOS = ("rpm", "tpm", "overprovisioned", "two-apps", "no-limit")


# -- figures -------------------------------------------------------------------------------


@dataclass
class Figures:
    """One run's measurements and its verdicts (check name -> True/False)."""

    scenario: str
    variant: str
    path: str
    items: int
    status: str
    items_processed: int
    duration_s: float | None
    ideal_s: float
    efficiency: float | None  # None: the job did not answer every item
    requests: int
    admitted: int
    rate_limited: int
    share_429: float
    prompts_answered_twice: int
    peak_in_flight: int
    in_flight_chunks: int
    usage_rate_limited: int | None
    usage_rate_wait_s: float | None
    timeline: dict[str, list[int]] = field(default_factory=dict)
    checks: dict[str, bool] = field(default_factory=dict)


def job_duration_s(statuses: list[dict[str, Any]]) -> float | None:
    """From the first job's created_at to the last one's finished_at (None: one never ended)."""
    if not statuses or any(not s.get("finished_at") for s in statuses):
        return None
    created = min(datetime.fromisoformat(s["created_at"]) for s in statuses)
    finished = max(datetime.fromisoformat(s["finished_at"]) for s in statuses)
    return (finished - created).total_seconds()


def _usage_sum(statuses: list[dict[str, Any]], key: str) -> Any:
    values = [(s.get("usage") or {}).get(key) for s in statuses]
    present = [v for v in values if v is not None]
    return sum(present) if present else None


def figures(
    scenario: Scenario, path: str, statuses: list[dict[str, Any]], stats: dict[str, Any]
) -> Figures:
    """The run's figures from its jobs' status JSON and the server's /stats, judged."""
    duration = job_duration_s(statuses)
    ideal = scenario.ideal_s()
    requests = int(stats.get("requests", 0))
    result = Figures(
        scenario=scenario.name,
        variant=scenario.variant,
        path=path,
        items=scenario.items,
        status="/".join(sorted({s.get("status", "?") for s in statuses})) or "none",
        items_processed=sum(int(s.get("items_processed") or 0) for s in statuses),
        duration_s=round(duration, 3) if duration is not None else None,
        ideal_s=round(ideal, 3),
        efficiency=None,
        requests=requests,
        admitted=int(stats.get("admitted", 0)),
        rate_limited=int(stats.get("rate_limited", 0)),
        share_429=round(stats.get("rate_limited", 0) / requests, 4) if requests else 0.0,
        prompts_answered_twice=int(stats.get("prompts_answered_twice", 0)),
        peak_in_flight=int(stats.get("peak_in_flight", 0)),
        in_flight_chunks=scenario.in_flight * scenario.apps,
        usage_rate_limited=_usage_sum(statuses, "rate_limited"),
        usage_rate_wait_s=_usage_sum(statuses, "rate_wait_s"),
        timeline=dict(stats.get("timeline") or {}),
    )
    answered_all = result.status == "succeeded" and result.items_processed == scenario.items
    if duration and answered_all:
        result.efficiency = round(ideal / duration, 3)
    result.checks = judge(scenario, result)
    return result


def judge(scenario: Scenario, fig: Figures) -> dict[str, bool]:
    checks = {
        "succeeded": fig.status == "succeeded" and fig.items_processed == scenario.items,
        f"efficiency >= {scenario.min_efficiency}": (fig.efficiency or 0)
        >= scenario.min_efficiency,
        # Each item asked once: no answer paid for twice, none missing.
        "calls == items": fig.admitted == scenario.items and fig.prompts_answered_twice == 0,
    }
    if scenario.max_429_share is not None:
        checks[f"429s <= {scenario.max_429_share:.0%}"] = fig.share_429 <= scenario.max_429_share
    return checks


def table(rows: list[Figures]) -> str:
    """The figures, one line a run, each bound PASS or MISS."""
    head = (
        f"{'scenario':<24} {'path':<5} {'items':>5} {'status':<9} {'dur s':>7} {'ideal s':>7} "
        f"{'eff.':>5} {'429s/req':>8} {'admit':>5} {'peak':>4} {'rl':>4} {'wait s':>6}  verdicts"
    )
    lines = [head, "-" * len(head)]
    for f in rows:
        verdicts = ", ".join(f"{name}: {'PASS' if ok else 'MISS'}" for name, ok in f.checks.items())
        lines.append(
            f"{f.variant:<24} {f.path:<5} {f.items:>5} {f.status:<9} "
            f"{f.duration_s if f.duration_s is not None else '-':>7} {f.ideal_s:>7.1f} "
            f"{_show(f.efficiency):>5} {f.share_429:>8.2%} {f.admitted:>5} {f.peak_in_flight:>4} "
            f"{_show(f.usage_rate_limited):>4} {_show(f.usage_rate_wait_s):>6}  {verdicts}"
        )
    return "\n".join(lines)


def _show(value: float | None) -> str:
    return "-" if value is None else f"{value:g}"


def timeline_png(name: str, rows: list[Figures], limit_per_s: float, out: Path) -> None:
    """Requests admitted (and refused) per second, one panel per run, the limit dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(rows), 1, figsize=(9, 2.6 * len(rows)), squeeze=False)
    for ax, row in zip(axes[:, 0], rows, strict=True):
        admitted = list(row.timeline.get("admitted_per_s", []))
        refused = list(row.timeline.get("rate_limited_per_s", []))
        seconds = range(max(len(admitted), len(refused)))
        admitted += [0] * (len(seconds) - len(admitted))
        refused += [0] * (len(seconds) - len(refused))
        bar = {"width": 1.0, "align": "edge"}
        ax.bar(seconds, admitted, color="#4c72b0", label="admitted", **bar)
        ax.bar(seconds, refused, bottom=admitted, color="#c44e52", label="429", **bar)
        ax.axhline(limit_per_s, color="black", linestyle="--", linewidth=1, label="limit")
        ax.set_title(
            f"{row.variant}, {row.path} path: efficiency {_show(row.efficiency)}, "
            f"429s {row.share_429:.1%}",
            fontsize=9,
        )
        ax.set_ylabel("requests / s")
        ax.legend(fontsize=7, loc="upper right")
    axes[-1, 0].set_xlabel("seconds since the first admitted request")
    fig.suptitle(f"LLM throughput: {name}")
    fig.tight_layout()
    out.parent.mkdir(exist_ok=True)
    fig.savefig(out, dpi=90)
    plt.close(fig)


def limit_per_s(scenario: Scenario) -> float:
    """The server's limit in requests a second (TPM-bound: at this scenario's tokens a request)."""
    if scenario.bound == "tpm":
        return (scenario.tpm / 60) / (scenario.total_tokens() / scenario.items)
    return scenario.rpm / 60


# -- the model server ----------------------------------------------------------------------


def free_port() -> int:
    from tests.support import free_port as port

    return port()


def wait_until(predicate: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not within {timeout_s:.0f} s")
        time.sleep(0.1)


def answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.TransportError:
        return False


class ServerProcess:
    """A test server (`python -m <module> --port P <args>`) in a subprocess, its /stats read
    and reset over HTTP."""

    def __init__(self, module: str, args: list[str], log_dir: Path, reset_path: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.reset_path = reset_path
        self.log = (log_dir / f"{module.rsplit('.', 1)[-1]}-{self.port}.log").open("w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", module, "--port", str(self.port), *args],
            cwd=REPO,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        wait_until(lambda: answers(f"{self.url}/stats"), 30, f"the server {module}")

    def reset(self) -> None:
        httpx.post(f"{self.url}{self.reset_path}", timeout=10).raise_for_status()

    def stats(self) -> dict[str, Any]:
        stats: dict[str, Any] = httpx.get(f"{self.url}/stats", timeout=30).json()
        return stats

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)
        self.log.close()


class ModelServer(ServerProcess):
    """tests/rate_limited_llm.py in a subprocess, with a scenario's limits."""

    def __init__(self, scenario: Scenario, log_dir: Path) -> None:
        args = [
            "--rpm",
            str(scenario.rpm),
            "--tpm",
            str(scenario.tpm),
            "--latency-s",
            str(LATENCY_S),
            "--jitter-s",
            str(JITTER_S),
            "--completion-tokens",
            str(COMPLETION_TOKENS),
            *([] if scenario.server_headers else ["--no-headers"]),
        ]
        super().__init__("tests.rate_limited_llm", args, log_dir, "/admin/reset")


def input_lines(scenario: Scenario, prefix: str, count: int, start: int = 0) -> str:
    return "".join(
        json.dumps({"id": f"{prefix}{i:06d}", "text": scenario.text_of(i)}) + "\n"
        for i in range(start, start + count)
    )


def job_spec(input_uri: str, chunk_size: int) -> dict[str, Any]:
    return {
        "workload": "llm",
        "input_uri": input_uri,
        "chunk_size": chunk_size,
        "prompt_template": TEMPLATE,
        "tenant": "bench",
    }


def poll(get: Callable[[], dict[str, Any]], timeout_s: float) -> dict[str, Any]:
    """The status once terminal; JobTimeout carrying the last one read."""
    deadline = time.monotonic() + timeout_s
    status: dict[str, Any] = {}
    while time.monotonic() < deadline:
        status = get()
        if status.get("status") in TERMINAL_STATUSES:
            return status
        time.sleep(0.5)
    raise JobTimeout(status)


class JobTimeout(Exception):
    def __init__(self, status: dict[str, Any]) -> None:
        super().__init__(f"job still {status.get('status')} at the deadline")
        self.status = status


# -- the local path ------------------------------------------------------------------------


def bench_executor(events: Any, serve_url: str, workers: int) -> Any:
    """tests/executor.py's stand-in executor, each request to the serve endpoint allowed as long
    as a chunk's budget (the Dev Server waits for the answer; the tests' 30 s would cut a
    chunk of 100 items asked one at a time)."""
    from functions import ALL_FUNCTIONS
    from tests.executor import StandInExecutor

    return StandInExecutor(
        events, serve_url, ALL_FUNCTIONS, workers=workers, request_timeout_s=REQUEST_TIMEOUT_S
    )


def app_env(
    scenario: Scenario, work: Path, store_url: str, model_url: str, item_concurrency: int
) -> dict[str, str]:
    """The app's whole configuration: nothing from this shell's or a .env's settings (the app
    runs in `work`, where there is no .env)."""
    ours = ("AWS_", "JOB_", "CHUNK_", "INNGEST_", "LLM_", "OPENAI_", "API_KEY", "TENANT_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(ours)}
    env.update(
        {
            "INNGEST_APP_ID": APP_ID,
            "JOB_STORE_URL": store_url,
            "API_KEY": APP_KEY,
            "OPENAI_BASE_URL": f"{model_url}/v1",
            "OPENAI_API_KEY": "bench",
            "OPENAI_MODEL": MODEL,
            "LLM_INPUT_ROOT": str(work),
            "LLM_OUTPUT_URI": str(work / "outputs"),
            "TENANT_CHUNK_CONCURRENCY": str(scenario.in_flight),
            "CHUNK_CONCURRENCY": str(max(10, scenario.in_flight)),
            "LLM_ITEM_CONCURRENCY": str(item_concurrency),
            "SWEEP_IDLE_S": "3600",
        }
    )
    if scenario.rate_limits is not None:
        env["LLM_RATE_LIMITS"] = json.dumps(scenario.rate_limits)
    return env


class LocalApp:
    """One app process with its own stand-in Inngest (event API and executor)."""

    def __init__(self, env: dict[str, str], work: Path, workers: int) -> None:
        from tests.support import FakeInngestApi, ServerThread

        self.events = FakeInngestApi()
        self.events_server = ServerThread(self.events.app).start()
        env = {**env, "INNGEST_DEV": self.events_server.url}
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = (work / f"app-{self.port}.log").open("w")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "uvicorn",
                "main:app",
                "--app-dir",
                str(REPO),
                "--port",
                str(self.port),
                "--log-level",
                "warning",
                "--no-access-log",
            ],
            cwd=work,
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        wait_until(self._up, 60, f"the app (log: {self.log.name})")
        self.executor = bench_executor(self.events, f"{self.url}/api/inngest", workers)
        self.http = httpx.Client(base_url=self.url, headers={"x-api-key": APP_KEY}, timeout=30)

    def _up(self) -> bool:
        if self.proc.poll() is not None:
            self.log.flush()
            tail = Path(self.log.name).read_text()[-3000:]
            raise RuntimeError(f"the app exited; the end of its log:\n{tail}")
        return answers(f"{self.url}/healthz")

    def submit(self, spec: dict[str, Any]) -> str:
        response = self.http.post("/jobs", json=spec)
        if response.status_code != 202:
            raise RuntimeError(f"POST /jobs: {response.status_code} {response.text}")
        job_id: str = response.json()["job_id"]
        return job_id

    def status(self, job_id: str) -> dict[str, Any]:
        status: dict[str, Any] = self.http.get(f"/jobs/{job_id}").json()
        return status

    def cancel(self, job_id: str) -> None:
        self.http.post(f"/jobs/{job_id}/cancel")

    def close(self) -> None:
        self.executor.close()
        self.http.close()
        self.proc.terminate()
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()
        self.events_server.stop()
        if self.executor.errors:
            print(f"  (stand-in executor errors: {self.executor.errors[:3]})")


def _import_functions_as_the_app_names_them() -> None:
    """The stand-in executor reads the functions' ids from this process's import of them: the
    same app id as the app's, whatever this shell's .env says."""
    from chunking.settings import Settings, get_settings

    Settings.model_config["env_file"] = None
    os.environ["INNGEST_APP_ID"] = APP_ID
    os.environ.setdefault("INNGEST_DEV", "1")
    get_settings.cache_clear()
    import functions  # noqa: F401


def run_local(
    scenario: Scenario, model: ModelServer, item_concurrency: int, timeout_s: float
) -> Figures:
    _import_functions_as_the_app_names_them()
    with ExitStack() as stack:
        work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="llm-bench-")))
        if scenario.apps > 1:
            from tests.postgres_server import PostgresServer

            postgres = PostgresServer().start()
            stack.callback(postgres.stop)
            store_url = postgres.url()
        else:
            store_url = f"sqlite:///{work / 'jobs.sqlite3'}"
        env = app_env(scenario, work, store_url, model.url, item_concurrency)
        apps = []
        for _ in range(scenario.apps):
            app = LocalApp(env, work, scenario.in_flight)
            stack.callback(app.close)
            apps.append(app)
        _warm_up(scenario, work, apps)
        model.reset()
        # One input per app (two-apps: half the items each), written before any job starts.
        share = scenario.items // len(apps)
        jobs = []
        for n, app in enumerate(apps):
            count = share if n < len(apps) - 1 else scenario.items - share * n
            path = work / f"input-{n}.jsonl"
            path.write_text(input_lines(scenario, f"a{n}-", count, start=share * n))
            jobs.append((app, path))
        started = [
            (app, app.submit(job_spec(str(path), scenario.chunk_size))) for app, path in jobs
        ]
        statuses = [_wait(app.status, app.cancel, job_id, timeout_s) for app, job_id in started]
        return figures(scenario, "local", statuses, model.stats())


def _warm_up(scenario: Scenario, work: Path, apps: list[LocalApp]) -> None:
    """A small job on each app first (imports, the store's tables, the first connections)."""
    path = work / "warm.jsonl"
    path.write_text(input_lines(scenario, "warm-", scenario.in_flight))
    for app in apps:
        _wait(app.status, app.cancel, app.submit(job_spec(str(path), 1)), 120)


def _wait(
    get: Callable[[str], dict[str, Any]],
    cancel: Callable[[str], None],
    job_id: str,
    timeout_s: float,
) -> dict[str, Any]:
    try:
        return poll(lambda: get(job_id), timeout_s)
    except JobTimeout as err:
        print(f"  job {job_id} not done after {timeout_s:.0f} s: cancelled")
        cancel(job_id)
        return {**err.status, "status": f"timeout:{err.status.get('status')}"}


# -- the cloud path ------------------------------------------------------------------------


def template_parameters() -> set[str]:
    """The parameters aws/template.yaml declares (the emulator ignores others)."""
    lines = (REPO / "aws" / "template.yaml").read_text().splitlines()
    names = set()
    for line in lines[lines.index("Parameters:") + 1 :]:
        if line[:1].isalpha():  # the next top-level section
            break
        if found := re.match(r"  ([A-Za-z0-9]+):", line):
            names.add(found[1])
    return names


def warm_up_sizes(in_flight: int, step: int = 2) -> list[int]:
    """Warm-up jobs' chunks: `step` more worker processes started by each."""
    return [*range(step, in_flight, step), in_flight]


def cloud_parameters(scenario: Scenario, model_url: str, item_concurrency: int) -> list[str]:
    parameters = {
        "OpenAiBaseUrl": f"{model_url}/v1",
        "OpenAiModel": MODEL,
        "WorkerConcurrency": str(scenario.in_flight),
        "WorkerBatchSize": "1",  # chunks in flight = WorkerConcurrency
        "LlmItemConcurrency": str(item_concurrency),
    }
    if scenario.rate_limits is not None:
        parameters["LlmRateLimits"] = json.dumps(scenario.rate_limits)
    return [arg for name, value in parameters.items() for arg in ("--parameter", f"{name}={value}")]


class CloudJobs:
    """The emulated stack's API and data bucket: jobs started on an input uploaded there."""

    def __init__(self, emulator: Any) -> None:
        import boto3

        from aws.local.resources import NAMES

        self.emulator = emulator
        self.bucket = NAMES["DataBucket"]
        self.headers = {"x-api-key": emulator.api_key}
        self.s3 = boto3.client(
            "s3",
            endpoint_url=emulator.moto,
            region_name="us-east-1",
            aws_access_key_id="bench",
            aws_secret_access_key="bench",
        )

    def start(self, key: str, body: str, spec: dict[str, Any]) -> str:
        """Upload `body` as `key` and start `spec` on it (its input_uri set to it)."""
        self.s3.put_object(Bucket=self.bucket, Key=key, Body=body.encode())
        spec = {**spec, "input_uri": f"s3://{self.bucket}/{key}"}
        url = f"{self.emulator.api}/Prod/start"
        response = httpx.post(url, json=spec, headers=self.headers, timeout=30)
        if response.status_code != 202:
            raise RuntimeError(f"POST /start: {response.status_code} {response.text}")
        job_id: str = response.json()["job_id"]
        return job_id

    def status(self, job_id: str) -> dict[str, Any]:
        url = f"{self.emulator.api}/Prod/jobs/{job_id}"
        got: dict[str, Any] = httpx.get(url, headers=self.headers, timeout=30).json()
        return got

    def cancel(self, job_id: str) -> None:
        url = f"{self.emulator.api}/Prod/jobs/{job_id}/cancel"
        httpx.post(url, headers=self.headers, timeout=30)

    def wait(self, job_id: str, timeout_s: float) -> dict[str, Any]:
        """The job's status once ended (cancelled past `timeout_s`, the emulator's state shown)."""
        status = _wait(self.status, self.cancel, job_id, timeout_s)
        if status["status"] not in TERMINAL_STATUSES:
            state = httpx.get(f"{self.emulator.api}/_emulator", timeout=10).text
            print(f"  emulator: {state[:1000]}")
        return status

    def warm_up(self, scenario: Scenario, in_flight: int) -> None:
        """Warm the worker processes first, as a busy Lambda function's are: two more each
        time, for five cold starts at once on 2 cores can outlast the emulator's 10 s init
        limit."""
        for n in warm_up_sizes(in_flight):
            body = input_lines(scenario, "warm-", n)
            self.wait(self.start(f"inputs/warm-{n}.jsonl", body, job_spec("", 1)), 180)


def run_cloud(
    scenario: Scenario, model: ModelServer, item_concurrency: int, timeout_s: float
) -> Figures:
    from aws.local.emulator import EmulatorProcess

    # A message whose invocation failed (a cold start past the init limit) comes back after
    # 120 s, not the template's 30 min; the worker's Timeout stays under it (100 s: its chunk
    # continues in a fresh message rather than being run twice at once).
    times = ("--worker-timeout", "100", "--visibility-timeout", "120")
    args = (*times, *cloud_parameters(scenario, model.url, item_concurrency))
    with EmulatorProcess(*args) as emulator:
        cloud = CloudJobs(emulator)
        cloud.warm_up(scenario, scenario.in_flight)
        model.reset()
        body = input_lines(scenario, "c-", scenario.items)
        job_id = cloud.start("inputs/bench.jsonl", body, job_spec("", scenario.chunk_size))
        return figures(scenario, "cloud", [cloud.wait(job_id, timeout_s)], model.stats())


# -- main ----------------------------------------------------------------------------------


def notes() -> list[str]:
    """What this code does not read yet of what the harness passes (it runs regardless)."""
    from chunking.settings import Settings

    said = []
    for setting in ("llm_rate_limits", "llm_item_concurrency"):
        if setting not in Settings.model_fields:
            said.append(f"the app's settings have no {setting.upper()} yet: passed, not read")
    declared = template_parameters()
    for parameter in ("LlmRateLimits", "LlmItemConcurrency"):
        if parameter not in declared:
            said.append(f"aws/template.yaml has no {parameter} parameter yet: passed, ignored")
    return said


def save(rows: list[Figures], args: argparse.Namespace) -> Path:
    """Merge this run's figures into bench/results/llm_throughput.json, one entry per
    "<variant>, <path>" (a later run of the same replaces it)."""
    out = RESULTS / "llm_throughput.json"
    saved: dict[str, Any] = json.loads(out.read_text()) if out.exists() else {}
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True
    ).stdout.strip()
    measured = {
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "commit": commit,
        "item_concurrency": args.item_concurrency,
    }
    for row in rows:
        saved[f"{row.variant}, {row.path}"] = {**measured, **asdict(row)}
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(saved, indent=1) + "\n")
    return out


@contextmanager
def model_server(scenario: Scenario, log_dir: Path) -> Iterator[ModelServer]:
    server = ModelServer(scenario, log_dir)
    try:
        yield server
    finally:
        server.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("scenario", choices=[*SCENARIOS, "all"])
    parser.add_argument("--path", choices=["local", "cloud", "both"], default="both")
    parser.add_argument(
        "--items",
        type=int,
        help="scale down: items of the RPM-bound scenarios (3,000); tpm's 300 scale alike",
    )
    parser.add_argument("--item-concurrency", type=int, default=16, help="LLM_ITEM_CONCURRENCY")
    parser.add_argument(
        "--tenant-concurrency",
        type=int,
        default=DEFAULT_TENANT_CONCURRENCY,
        help="TENANT_CHUNK_CONCURRENCY: chunks in flight (4x over-provisioned)",
    )
    parser.add_argument("--timeout-s", type=float, help="per job (default 120 + 15 x ideal)")
    args = parser.parse_args(argv)
    names = SCENARIOS if args.scenario == "all" else (args.scenario,)
    paths = ("local", "cloud") if args.path == "both" else (args.path,)
    for note in notes():
        print(f"note: {note}")
    rows: list[Figures] = []
    with tempfile.TemporaryDirectory(prefix="llm-bench-logs-") as logs:
        for name in names:
            runs = scenarios(name, args.items, args.tenant_concurrency)
            mine: list[Figures] = []
            for scenario in runs:
                timeout_s = args.timeout_s or 120 + 15 * scenario.ideal_s()
                with model_server(scenario, Path(logs)) as model:
                    for path in [p for p in paths if p in scenario.paths]:
                        in_flight = scenario.in_flight * scenario.apps
                        print(
                            f"{scenario.variant}, {path} path: {scenario.items} items in "
                            f"chunks of {scenario.chunk_size}, {in_flight} in flight, "
                            f"ideal {scenario.ideal_s():.1f} s"
                        )
                        run = run_local if path == "local" else run_cloud
                        mine.append(run(scenario, model, args.item_concurrency, timeout_s))
                        print(table(mine[-1:]).splitlines()[-1])
            if mine:
                out = RESULTS / f"llm_throughput_{name}.png"
                timeline_png(name, mine, limit_per_s(runs[0]), out)
                print(f"chart: {out.relative_to(REPO)}")
            rows += mine
    print()
    print(table(rows))
    print(f"figures: {save(rows, args).relative_to(REPO)}")
    missed = sum(not ok for row in rows for ok in row.checks.values())
    print(f"{missed} of {sum(len(r.checks) for r in rows)} bounds missed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
