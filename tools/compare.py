"""Run the same JobSpec through the local path and the cloud path, and compare them side by side.

    python -m tools.compare --items 500 --chunk-size 50
    make compare ITEMS=500 CHUNK_SIZE=50
    python -m tools.compare --chunk-size 4 --spec "$(cat examples/llm-job.json)"   # llm workload

Local: `POST /jobs` on the app (make run), which needs an Inngest Dev Server; its progress comes
from the app's event stream (`GET /jobs/{id}/events`). Cloud: `POST /start`
on AWS_START_URL — the offline emulation by default (make aws-local), or a deployed stack.
Shows progress bars while both run, then one table; writes the figures as JSON and a PNG chart.
A path that cannot run says why and how to start it; the other still runs.
An llm job's local input file is uploaded to the stack's data bucket for the cloud path, and
the table adds each path's tokens, estimated model cost and merged output.
"""

from __future__ import annotations

import argparse
import json
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from httpx_sse import connect_sse
from pydantic import ValidationError
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

import workloads  # noqa: F401 - registers the workloads with the core, as every entrypoint does
from chunking.api_errors import describe
from chunking.settings import get_settings
from chunking.spec import JobSpec
from chunking.status import TERMINAL_STATUSES
from tools.aws_target import add_target_arguments, resolve_target
from tools.cloud_cost import Prices, estimate
from tools.dlq import read_dead_letters, release

DEV_SERVER_HINT = (
    "npx --ignore-scripts=false inngest-cli@latest dev "
    "-u http://127.0.0.1:8000/api/inngest --no-discovery"
)


@dataclass
class PathRun:
    """One path's run: why it could not start, or its status as it goes."""

    name: str
    not_run: str | None = None
    status_url: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    started: float = 0.0
    wall_s: float | None = None
    polls: int = 0
    status: dict[str, Any] = field(default_factory=dict)

    @property
    def done(self) -> bool:
        return self.not_run is not None or self.status.get("status") in TERMINAL_STATUSES


def sent(spec: JobSpec) -> dict[str, Any]:
    return spec.model_dump(mode="json", exclude_unset=True)


def start_local(spec: JobSpec, app_url: str, dev_server_url: str) -> PathRun:
    api_key = get_settings().api_key  # the local API's, when it is set (see the README)
    run = PathRun("local", headers={"x-api-key": api_key} if api_key else {})
    try:
        httpx.get(f"{app_url}/healthz", timeout=5).raise_for_status()
    except httpx.HTTPError:
        run.not_run = f"the app is not reachable at {app_url}: start it with `make run`"
        return run
    try:
        httpx.get(dev_server_url, timeout=5)
    except httpx.HTTPError:
        run.not_run = (
            f"the Inngest Dev Server is not reachable at {dev_server_url}; start it with "
            f"`{DEV_SERVER_HINT}`"
        )
        return run
    run.started = time.monotonic()
    response = httpx.post(f"{app_url}/jobs", json=sent(spec), headers=run.headers, timeout=30)
    if response.status_code != 202:
        run.not_run = f"POST /jobs answered {response.status_code}: {response.text[:300]}"
        return run
    run.status_url = response.json()["status_url"]
    return run


def start_cloud(spec: JobSpec, start_url: str, api_key: str | None) -> PathRun:
    run = PathRun("cloud", headers={"x-api-key": api_key} if api_key else {})
    run.started = time.monotonic()
    try:
        response = httpx.post(start_url, json=sent(spec), headers=run.headers, timeout=30)
    except httpx.HTTPError as err:
        run.not_run = (
            f"{start_url} is not reachable ({err}): start the emulator with `make aws-local`, "
            "or set AWS_START_URL to your stack's StartUrl"
        )
        return run
    if response.status_code not in (200, 202):
        run.not_run = f"POST {start_url} answered {response.status_code}: {response.text[:300]}"
        return run
    run.status_url = response.json()["status_url"]
    return run


def poll(run: PathRun) -> None:
    assert run.status_url
    response = httpx.get(run.status_url, headers=run.headers, timeout=30)
    response.raise_for_status()
    run.polls += 1
    run.status = response.json()
    if run.done:
        run.wall_s = time.monotonic() - run.started


def follow_events(run: PathRun, stop: threading.Event) -> None:
    """The local path's progress from its event stream (GET /jobs/{id}/events) rather than by
    polling; a dropped connection resumes where it left off (Last-Event-ID)."""
    assert run.status_url
    last_id: str | None = None
    while not run.done and not stop.is_set():
        headers = {**run.headers, **({"Last-Event-ID": last_id} if last_id else {})}
        try:
            with (
                httpx.Client(timeout=httpx.Timeout(30, read=None)) as http,
                connect_sse(http, "GET", f"{run.status_url}/events", headers=headers) as events,
            ):
                for event in events.iter_sse():
                    last_id = event.id or last_id
                    if event.event == "chunk":
                        run.status = {**run.status, **event.json(), "status": "running"}
                    elif event.event in ("status", "end"):
                        run.status = event.json()
                    run.polls += 1
                    if run.done or stop.is_set():
                        break
        except httpx.HTTPError:
            stop.wait(0.5)  # the app restarted or the connection dropped: reconnect
    if run.done:
        run.wall_s = time.monotonic() - run.started


def wait(runs: list[PathRun], timeout_s: float, console: Console) -> None:
    active = [r for r in runs if r.not_run is None]
    stop = threading.Event()
    streamed = [r for r in active if r.name == "local"]
    followers = [
        threading.Thread(target=follow_events, args=(r, stop), daemon=True) for r in streamed
    ]
    for follower in followers:
        follower.start()
    columns = (
        TextColumn("{task.description:>6}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("chunks  {task.fields[state]}"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console) as progress:
        tasks = {r.name: progress.add_task(r.name, total=None, state="starting") for r in active}
        deadline = time.monotonic() + timeout_s
        while any(not r.done for r in active) and time.monotonic() < deadline:
            for run in (r for r in active if not r.done):
                if run not in streamed:
                    poll(run)
                if not run.status:
                    continue
                settled = run.status["chunks_succeeded"] + run.status["chunks_failed"]
                progress.update(
                    tasks[run.name],
                    total=run.status["total_chunks"],
                    completed=settled,
                    state=run.status["status"],
                )
            time.sleep(0.25)
    stop.set()
    for run in active:
        if not run.done:
            run.not_run = f"still {run.status.get('status')} after {timeout_s:g}s"


def dead_letters(args: argparse.Namespace, job_id: str) -> int | None:
    """The job's own messages in the DLQ (not the queue's total: earlier jobs' letters may wait
    there too), read and shown again at once (tools/dlq.py)."""
    try:
        target = resolve_target(args)
        letters = read_dead_letters(target)
        release(target, letters)
    except Exception:
        return None  # no access to the stack's queues: the column says n/a
    return sum(1 for letter in letters if letter.job_id == job_id)


def input_uri(spec: JobSpec) -> str | None:
    """The input file of a workload that reads one (llm), if any."""
    uri = (spec.model_extra or {}).get("input_uri")
    return uri if isinstance(uri, str) else None


def cloud_input(spec: JobSpec, args: argparse.Namespace) -> JobSpec:
    """The spec for the cloud path: a local llm input is uploaded to the stack's data bucket."""
    uri = input_uri(spec)
    if uri is None or uri.startswith("s3://"):
        return spec
    target = resolve_target(args)
    if not target.bucket_name:
        raise RuntimeError("the stack has no DataBucketName output to upload the input to")
    key = f"inputs/{Path(uri).name}"
    target.client("s3").upload_file(uri, target.bucket_name, key)
    return spec.model_copy(update={"input_uri": f"s3://{target.bucket_name}/{key}"})


def usage_figures(status: dict[str, Any]) -> dict[str, Any]:
    usage = status.get("usage")
    if not usage:
        return {}
    return {
        "prompt_tokens": usage["prompt_tokens"],
        "completion_tokens": usage["completion_tokens"],
        "items_failed": usage["items_failed"],
        "model_cost_usd": usage["est_cost_usd"],
        "output_uri": status.get("output_uri"),
    }


def figures(run: PathRun) -> dict[str, Any]:
    if run.not_run is not None:
        return {"not_run": run.not_run}
    missing: str | None = None
    try:
        runs = timeline(run)
    except httpx.HTTPError as err:  # the figures stand without the picture
        runs, missing = [], f"chunks not read: {err}"
    s = run.status
    wall = run.wall_s or 0.0
    return {
        **usage_figures(s),
        "status": s["status"],
        "job_id": s["job_id"],
        "total_items": s["total_items"],
        "total_chunks": s["total_chunks"],
        "chunks_succeeded": s["chunks_succeeded"],
        "chunks_failed": s["chunks_failed"],
        "items_processed": s["items_processed"],
        "wall_s": round(wall, 3),
        "items_per_s": round(s["items_processed"] / wall, 1) if wall else None,
        "chunk_p50_ms": s["chunk_latency_ms"]["p50"],
        "chunk_p95_ms": s["chunk_latency_ms"]["p95"],
        "attempts": s["attempts"],
        "retries": s["retries"],
        "failed_chunks": [f["index"] for f in s["failed_chunks"]],
        "status_polls": run.polls,
        "timeline": runs,
        **({"timeline_error": missing} if missing else {}),
    }


def title(report: dict[str, Any]) -> str:
    spec = report["spec"]
    if spec["workload"] == "llm":
        counted = [
            p["total_items"] for p in (report["local"], report["cloud"]) if "total_items" in p
        ]
        items, size = counted[0] if counted else "?", spec["chunk_size"]
        return f"llm: {Path(spec['input_uri']).name} ({items} items), chunks of {size}"
    return (
        f"{spec['total_items']} items, chunks of {spec['chunk_size']}, "
        f"{spec['item_delay_ms']} ms per item"
    )


def render(report: dict[str, Any], console: Console) -> None:
    spec = report["spec"]
    table = Table(title=title(report))
    table.add_column("")
    table.add_column("local (Inngest)")
    table.add_column("cloud (SAM stack)")
    rows = [
        ("status", "status"),
        ("chunks succeeded", "chunks_succeeded"),
        ("chunks failed", "chunks_failed"),
        ("items", "items_processed"),
        ("wall time (s)", "wall_s"),
        ("items/s", "items_per_s"),
        ("chunk p50 (ms)", "chunk_p50_ms"),
        ("chunk p95 (ms)", "chunk_p95_ms"),
        ("attempts", "attempts"),
        ("retries", "retries"),
        ("failed chunk indexes", "failed_chunks"),
    ]
    local, cloud = report["local"], report["cloud"]
    if spec["workload"] == "llm":
        rows += [
            ("prompt tokens", "prompt_tokens"),
            ("completion tokens", "completion_tokens"),
            ("items the model failed", "items_failed"),
            ("est. model cost ($)", "model_cost_usd"),
            ("output", "output_uri"),
        ]
    for label, key in rows:
        table.add_row(label, *(str(p.get(key, "—")) for p in (local, cloud)))
    dlq = report.get("dlq_messages")
    table.add_row("DLQ messages", "n/a (Inngest run history)", "n/a" if dlq is None else str(dlq))
    cost = report.get("cloud_cost")
    table.add_row(
        "est. AWS cost", "n/a (your machine)", "—" if cost is None else f"${cost['usd']:.6f}"
    )
    console.print(table)
    for name in ("local", "cloud"):
        if "not_run" in report[name]:
            console.print(f"[yellow]{name}: not run — {report[name]['not_run']}[/yellow]")
    if cost:
        console.print(
            f"cost estimate: {cost['lambda_invocations']} Lambda invocations, "
            f"{cost['lambda_gb_s']} GB-s, {cost['sqs_requests']} SQS requests, "
            f"{cost['dynamodb_writes']} DynamoDB writes, {cost['dynamodb_reads']:g} reads"
        )


# Chunks whose runs the timeline shows (the first ones, by index): enough to see the pattern,
# few enough that a job of 100,000 chunks costs the compare a few pages, not 100.
TIMELINE_CHUNKS = 2_000
SPAN_COLOURS = {
    "succeeded": "#55a868",
    "failed": "#c44e52",
    "retried": "#dd8452",
    "continued": "#4c72b0",
    "lost": "#8c8c8c",
    "running": "#ccb974",
}


def timeline(run: PathRun) -> list[list[Any]]:
    """The job's chunks' runs as [chunk, attempt, start_s, end_s, outcome], in seconds since
    the job was accepted, read a page at a time from GET /jobs/{id}/chunks (both APIs)."""
    assert run.status_url
    accepted = datetime.fromisoformat(run.status["created_at"])
    spans: list[list[Any]] = []
    after, seen = -1, 0
    while seen < TIMELINE_CHUNKS:
        response = httpx.get(
            f"{run.status_url}/chunks",
            headers=run.headers,
            timeout=30,
            params={"after": after, "limit": 1_000},
        )
        response.raise_for_status()
        page = response.json()
        for chunk in page["chunks"]:
            for span in chunk["timeline"]:
                start = datetime.fromisoformat(span["started_at"]) - accepted
                end = span["ended_at"] and datetime.fromisoformat(span["ended_at"]) - accepted
                spans.append(
                    [
                        chunk["index"],
                        span["attempt"],
                        round(start.total_seconds(), 3),
                        end and round(end.total_seconds(), 3),
                        span["outcome"],
                    ]
                )
        seen += len(page["chunks"])
        if page["next_after"] is None:
            break
        after = page["next_after"]
    return spans


def summary_rows(report: dict[str, Any]) -> list[list[str]]:
    def cell(path: str, key: str) -> str:
        found = report[path]
        return "not run" if "not_run" in found else str(found.get(key, "n/a"))

    keys = [
        ("status", "status"),
        ("wall (s)", "wall_s"),
        ("items/s", "items_per_s"),
        ("chunk p50 (ms)", "chunk_p50_ms"),
        ("chunk p95 (ms)", "chunk_p95_ms"),
        ("attempts", "attempts"),
        ("retries", "retries"),
    ]
    rows = [[label, cell("local", key), cell("cloud", key)] for label, key in keys]
    dlq = report.get("dlq_messages")
    return [*rows, ["DLQ (this job)", "n/a", "n/a" if dlq is None else str(dlq)]]


def chart(report: dict[str, Any], path: Path) -> None:
    """The two paths' timelines, one above the other on one time axis: a row per chunk, a bar
    per run coloured by how it ended; the summary table beside them."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch
    from matplotlib.ticker import MaxNLocator

    fig = plt.figure(figsize=(14, 7))
    grid = fig.add_gridspec(2, 2, width_ratios=(3, 1))
    top = fig.add_subplot(grid[0, 0])
    axes = [top, fig.add_subplot(grid[1, 0], sharex=top)]
    ends = [s[3] or s[2] for p in ("local", "cloud") for s in report[p].get("timeline", [])]
    horizon = max(ends, default=1.0)
    for ax, name in zip(axes, ("local", "cloud"), strict=True):
        spans = report[name].get("timeline", [])
        for outcome, colour in SPAN_COLOURS.items():
            mine = [s for s in spans if s[4] == outcome]
            widths = [
                ((s[3] if s[3] is not None else horizon) - s[2]) or horizon / 500 for s in mine
            ]
            ax.barh(
                [s[0] for s in mine],
                widths,
                left=[s[2] for s in mine],
                height=0.8,
                color=colour,
                linewidth=0,
            )
        label = "local (Inngest)" if name == "local" else "cloud (SQS + Lambda)"
        ax.set_ylabel(f"{label}\nchunk")
        ax.set_xlim(0, horizon * 1.02)
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
        ax.invert_yaxis()
        if "not_run" in report[name]:
            ax.text(0.5, 0.5, "not run", transform=ax.transAxes, ha="center", color="grey")
    axes[1].set_xlabel("seconds since the job was accepted")
    axes[0].legend(
        handles=[Patch(color=c, label=o) for o, c in SPAN_COLOURS.items()],
        loc="upper right",
        fontsize=8,
        ncols=3,
    )
    table_ax = fig.add_subplot(grid[:, 1])
    table_ax.axis("off")
    table = table_ax.table(
        cellText=summary_rows(report),
        colLabels=["", "local", "cloud"],
        loc="center",
        cellLoc="left",
        colWidths=[0.44, 0.28, 0.28],
    )
    table.auto_set_font_size(False)
    table.set_fontsize(9)
    table.scale(1, 1.6)
    fig.suptitle(title(report))
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    settings = get_settings()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, help=f"default {settings.total_items}; llm: counted")
    parser.add_argument("--chunk-size", type=int, default=settings.chunk_size)
    parser.add_argument("--item-delay-ms", type=int, help=f"default {settings.item_delay_ms}")
    parser.add_argument(
        "--spec", default="{}", help='more JobSpec fields as JSON, e.g. {"fail_chunks": [3]}'
    )
    parser.add_argument("--local-url", default="http://127.0.0.1:8000")
    parser.add_argument(
        "--dev-server-url", default=settings.inngest_dev_url or "http://127.0.0.1:8288"
    )
    parser.add_argument("--cloud-url", default=settings.aws_start_url)
    parser.add_argument("--api-key", default=settings.cloud_api_key)
    parser.add_argument("--timeout", type=float, default=900, help="seconds to wait for both")
    parser.add_argument("--out-dir", type=Path, default=Path("data/compare"))
    parser.add_argument("--lambda-memory-mb", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=10, help="the stack's WorkerBatchSize")
    for name, value in Prices().__dict__.items():
        parser.add_argument(f"--price-{name.replace('_', '-')}", type=float, default=value)
    add_target_arguments(parser)
    return parser.parse_args(argv)


def job_spec(args: argparse.Namespace) -> JobSpec:
    """The job to run on both paths; raises ValidationError or JSONDecodeError."""
    settings = get_settings()
    extra = json.loads(args.spec)
    sizes = {
        "total_items": args.items,
        "chunk_size": args.chunk_size,
        "item_delay_ms": args.item_delay_ms,
    }
    if not (isinstance(extra, dict) and extra.get("workload") == "llm"):
        sizes["total_items"] = args.items or settings.total_items
        if args.item_delay_ms is None:
            sizes["item_delay_ms"] = settings.item_delay_ms
    # The servers count an llm input's items (and check it): send only what was given.
    given = {k: v for k, v in sizes.items() if v is not None}
    spec = JobSpec.model_validate({**given, **extra})
    uri = input_uri(spec)
    if uri and not uri.startswith("s3://"):
        # The app may run elsewhere than this shell's folder.
        spec = spec.model_copy(update={"input_uri": str(Path(uri).resolve())})
    return spec


def start_both(spec: JobSpec, args: argparse.Namespace) -> list[PathRun]:
    runs = [start_local(spec, args.local_url, args.dev_server_url)]
    if not args.cloud_url:
        runs.append(PathRun("cloud", not_run="AWS_START_URL is not set"))
        return runs
    try:
        runs.append(start_cloud(cloud_input(spec, args), args.cloud_url, args.api_key))
    except Exception as err:  # no bucket, no credentials, emulator down: say so
        runs.append(PathRun("cloud", not_run=f"could not upload the input: {err}"))
    return runs


def make_report(
    spec: JobSpec, local: PathRun, cloud: PathRun, args: argparse.Namespace
) -> dict[str, Any]:
    report: dict[str, Any] = {
        "spec": {"workload": spec.workload, **sent(spec)},
        "local": figures(local),
        "cloud": figures(cloud),
        "measured_at": datetime.now(UTC).isoformat(),
    }
    if cloud.not_run is None:
        prices = Prices(**{n: getattr(args, f"price_{n}") for n in Prices().__dict__})
        report["cloud_cost"] = estimate(
            cloud.status,
            status_polls=cloud.polls,
            batch_size=args.batch_size,
            memory_mb=args.lambda_memory_mb,
            prices=prices,
        ).as_dict()
        report["dlq_messages"] = dead_letters(args, cloud.status["job_id"])
    return report


def write_report(report: dict[str, Any], spec: JobSpec, out_dir: Path) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    uri = input_uri(spec)
    name = Path(uri).stem if uri else str(spec.total_items)
    stem = out_dir / f"compare-{name}-{spec.chunk_size}"
    stem.with_suffix(".json").write_text(json.dumps(report, indent=2))
    chart(report, stem.with_suffix(".png"))
    return stem


def main(argv: list[str] | None = None) -> int:
    """Start the same job on both paths, wait for both, then show and write the comparison."""
    args = parse_args(argv)
    console = Console()
    try:
        spec = job_spec(args)
    except (ValidationError, json.JSONDecodeError) as err:
        detail = describe(err) if isinstance(err, ValidationError) else f"--spec: {err}"
        console.print(f"[red]invalid job: {detail}[/red]")
        return 2
    runs = start_both(spec, args)
    wait(runs, args.timeout, console)
    local, cloud = runs
    report = make_report(spec, local, cloud, args)
    render(report, console)
    stem = write_report(report, spec, args.out_dir)
    console.print(f"wrote {stem}.json and {stem}.png")
    return 0 if all(r.not_run is None for r in runs) else 1


if __name__ == "__main__":
    raise SystemExit(main())
