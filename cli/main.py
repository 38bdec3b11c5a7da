"""The `longjobs` commands (Typer): run, watch, status, chunks, cancel, retry, results, list, demo.

Exit codes: 0 the job succeeded (or the command did what it was asked), 1 it ended partial,
failed or cancelled, 2 the request was refused as given (a bad option or file, a 4xx), 3 the API
was unreachable (or answered 5xx), 130 detached with Ctrl-C (the job runs on).
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Literal

import typer
from rich.table import Table
from typer.core import TyperGroup

from cli.api import DETACHED, NOT_SUCCEEDED, SUCCEEDED, UNREACHABLE, Api, CliError
from cli.follow import Status, ended, follow
from cli.show import (
    Bars,
    chunk_table,
    console,
    errors,
    job_table,
    side_by_side,
    status_table,
    summary,
)
from cli.target import resolve


class OneLineErrors(TyperGroup):
    """Every error a person can act on is one line on stderr and an exit code: no traceback,
    no panel (usage errors keep Typer's own, with the usage)."""

    def invoke(self, ctx: Any) -> Any:  # a click Context (Typer vendors click)
        try:
            return super().invoke(ctx)
        except CliError as err:
            errors.print(f"error: {err}", highlight=False, markup=False)
            ctx.exit(err.code)


app = typer.Typer(
    cls=OneLineErrors,
    name="longjobs",
    help="Run a JSONL file through an LLM as a long job, on the local app or the cloud stack; "
    "watch it, and get the answers back.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

# The options every command takes: which API, and the key.
Cloud = Annotated[
    bool | None,
    typer.Option(
        "--cloud/--local",
        help="The cloud stack (AWS_START_URL, CLOUD_API_KEY) or the local app (LONGJOBS_URL, "
        "LONGJOBS_API_KEY or API_KEY). Default: LONGJOBS_TARGET, else local.",
        show_default=False,
    ),
]
Url = Annotated[
    str | None, typer.Option(help="The API's URL (local: the app; cloud: its POST /start URL).")
]
Key = Annotated[str | None, typer.Option(help="The API key (x-api-key).", show_default=False)]
JobId = Annotated[str, typer.Argument(metavar="JOB", help="The job's id.", show_default=False)]
AsJson = Annotated[bool, typer.Option("--json", help="The API's JSON (a chunk a line).")]
OutFile = Annotated[Path, typer.Option("--out", "-o", help="The answers file.")]
Out = Annotated[
    Path | None, typer.Option("--out", "-o", help="Write the merged output here at the end.")
]


def print_json_or(as_json: bool, value: Any, table: Callable[[Any], Table]) -> None:
    """The API's JSON as it came (--json), or a table of it."""
    if as_json:
        console.print_json(json.dumps(value))
    else:
        console.print(table(value))


def outcome(status: Status) -> int:
    return SUCCEEDED if status["status"] == "succeeded" else NOT_SUCCEEDED


def errors_path(out: Path) -> Path:
    """Where a job's failed items go beside its output: answers.jsonl → answers.errors.jsonl."""
    return out.with_name(f"{out.stem}.errors{out.suffix or '.jsonl'}")


def save_results(api: Api, status: Status, out: Path) -> None:
    job_id = status["job_id"]
    if not status.get("output_uri"):
        raise CliError(f"job {job_id} has no output file (an llm job's is written when it ends)")
    lines = api.download(job_id, "output", out)
    console.print(f"wrote {out} ({lines} lines)")
    if status.get("errors_uri"):
        failed = errors_path(out)
        lines = api.download(job_id, "errors", failed)
        console.print(f"wrote {failed} (failed items: {lines})")


def watch_to_end(api: Api, job_id: str, out: Path | None) -> int:
    """The progress bar until the job ends, then its summary (and its files): the exit code.
    Ctrl-C detaches: the job runs on, and the line printed says how to attach again."""
    console.print(f"watching job {job_id} on the {api.target.name} path (Ctrl-C detaches)")
    try:
        with Bars() as bars:
            status = follow(api, job_id, lambda s: bars.show(api.target.name, s))
    except KeyboardInterrupt:
        errors.print(
            f"detached: job {job_id} runs on. Attach again: {api.target.attach_hint(job_id)}"
        )
        return DETACHED
    except CliError as err:
        if err.code != UNREACHABLE:
            raise
        # The API went away for longer than a watch waits: the job itself may well run on.
        hint = api.target.attach_hint(job_id)
        raise CliError(
            f"{err}; job {job_id} may run on: attach again with {hint}", err.code
        ) from err
    console.print(summary(status))
    if out is not None and status.get("output_uri"):
        save_results(api, status, out)
    return outcome(status)


def job_id_for(path_sha: str, spec: dict[str, Any], api_key: str) -> str:
    """The same file and options, sent with the same key, are the same job: running the same
    command twice attaches to it (the API's idempotency key is the job_id). The key takes part
    so that two tenants' identical runs are two jobs."""
    seed = json.dumps(
        {"input": path_sha, "spec": spec, "key": hashlib.sha256(api_key.encode()).hexdigest()},
        sort_keys=True,
    )
    return "cli-" + hashlib.sha256(seed.encode()).hexdigest()[:32]


@app.command()
def run(
    input: Annotated[
        Path,
        typer.Argument(
            help="A JSONL file: one item a line, {id, prompt} or {id, text, ...} with --prompt.",
            show_default=False,
        ),
    ],
    prompt: Annotated[
        str | None,
        typer.Option(help='A template filled from each item\'s fields, e.g. "Classify: {text}".'),
    ] = None,
    model: Annotated[str | None, typer.Option(help="The model (default: the API's).")] = None,
    mode: Annotated[
        Literal["realtime", "batch"],
        typer.Option(help="batch: the provider's batch API, at its batch price."),
    ] = "realtime",
    max_cost: Annotated[
        float | None,
        typer.Option(help="A spend cap in USD: the job stops before it would pass it."),
    ] = None,
    max_failed: Annotated[
        str | None,
        typer.Option(help='A failure threshold: a count of items, or a share such as "10%".'),
    ] = None,
    chunk_size: Annotated[int | None, typer.Option(help="Items per chunk.")] = None,
    max_tokens: Annotated[int | None, typer.Option(help="Most tokens per answer.")] = None,
    out: Annotated[
        Path | None,
        typer.Option(
            "--out", "-o", help="The answers file (default: INPUT's name .answers.jsonl, here)."
        ),
    ] = None,
    detach: Annotated[bool, typer.Option(help="Submit, print the job id, and return.")] = False,
    cloud: Cloud = None,
    url: Url = None,
    api_key: Key = None,
) -> None:
    """Run INPUT through the model as one job: upload it, submit, watch, write the answers."""
    if not input.is_file():
        raise CliError(f"input file {input} not found (or not a file)")
    spec: dict[str, Any] = {"workload": "llm", "mode": mode}
    for field, value in {
        "prompt_template": prompt,
        "model": model,
        "max_cost_usd": max_cost,
        "chunk_size": chunk_size,
        "max_tokens": max_tokens,
        "max_failed_items": int(max_failed) if max_failed and max_failed.isdigit() else max_failed,
    }.items():
        if value is not None:
            spec[field] = value
    with Api(resolve(cloud, url, api_key)) as api:
        spec["input_uri"] = api.upload(input)
        spec["job_id"] = job_id_for(spec["input_uri"], spec, api.target.api_key)
        submitted = api.submit(spec)
        if not submitted.created:
            console.print(
                f"job {submitted.job_id} was already submitted with this file and "
                "these options: attaching to it"
            )
        if detach:
            hint = api.target.attach_hint(submitted.job_id)
            console.print(f"submitted job {submitted.job_id}: {hint}")
            raise typer.Exit(SUCCEEDED)
        raise typer.Exit(
            watch_to_end(api, submitted.job_id, out or Path(f"{input.stem}.answers.jsonl"))
        )


@app.command()
def watch(
    job_id: JobId, out: Out = None, cloud: Cloud = None, url: Url = None, api_key: Key = None
) -> None:
    """Attach to a job: its progress bar until it ends (and its answers, with --out)."""
    with Api(resolve(cloud, url, api_key)) as api:
        raise typer.Exit(watch_to_end(api, job_id, out))


@app.command()
def status(
    job_id: JobId,
    as_json: AsJson = False,
    cloud: Cloud = None,
    url: Url = None,
    api_key: Key = None,
) -> None:
    """A job's status: exit 0 while it runs or once it succeeded, 1 if it ended otherwise."""
    with Api(resolve(cloud, url, api_key)) as api:
        current = api.status(job_id)
    print_json_or(as_json, current, status_table)
    raise typer.Exit(outcome(current) if ended(current) else SUCCEEDED)


@app.command()
def chunks(
    job_id: JobId,
    state: Annotated[
        Literal["pending", "running", "succeeded", "failed", "cancelled"] | None,
        typer.Option(help="Only chunks in this state."),
    ] = None,
    limit: Annotated[int, typer.Option(min=1, help="Show at most this many (the table).")] = 50,
    as_json: AsJson = False,
    cloud: Cloud = None,
    url: Url = None,
    api_key: Key = None,
) -> None:
    """A job's chunks, in index order: their state, attempts and errors."""
    with Api(resolve(cloud, url, api_key)) as api:
        if as_json:  # every chunk, a page at a time: constant memory on a job of any size
            for chunk in api.chunks(job_id, state):
                console.out(json.dumps(chunk), highlight=False)
            return
        shown: list[dict[str, Any]] = []
        for chunk in api.chunks(job_id, state, limit=min(limit + 1, 1000)):
            shown.append(chunk)
            if len(shown) > limit:
                break
    console.print(chunk_table(shown[:limit]))
    if len(shown) > limit:
        console.print("… and more: --limit N, or --json for every chunk")


@app.command()
def cancel(job_id: JobId, cloud: Cloud = None, url: Url = None, api_key: Key = None) -> None:
    """Cancel a job: chunks not yet started will not run; running ones finish."""
    with Api(resolve(cloud, url, api_key)) as api:
        cancelled = api.cancel(job_id)
    console.print(f"job {job_id}: {cancelled['status']} (chunks not yet started will not run)")


@app.command()
def retry(
    job_id: JobId,
    out: Out = None,
    detach: Annotated[bool, typer.Option(help="Start the retry and return.")] = False,
    cloud: Cloud = None,
    url: Url = None,
    api_key: Key = None,
) -> None:
    """Run again only what failed of a job that ended partial or failed, then watch it."""
    with Api(resolve(cloud, url, api_key)) as api:
        retried = api.retry(job_id)
        console.print(f"job {job_id}: retry {retried['redrives']} started")
        if not detach:
            raise typer.Exit(watch_to_end(api, job_id, out))


@app.command()
def results(
    job_id: JobId, out: OutFile, cloud: Cloud = None, url: Url = None, api_key: Key = None
) -> None:
    """Write an ended llm job's merged answers to --out (its failed items beside it)."""
    with Api(resolve(cloud, url, api_key)) as api:
        current = api.status(job_id)
        if not ended(current):
            raise CliError(
                f"job {job_id} is {current['status']}: its answers are written when it "
                f"ends ({api.target.attach_hint(job_id)} --out {out})"
            )
        save_results(api, current, out)
    raise typer.Exit(outcome(current))


@app.command("list")
def list_jobs(
    limit: Annotated[int, typer.Option(min=1, max=100, help="The most recent this many.")] = 20,
    as_json: AsJson = False,
    cloud: Cloud = None,
    url: Url = None,
    api_key: Key = None,
) -> None:
    """The most recent jobs (yours, with a tenant's key)."""
    with Api(resolve(cloud, url, api_key)) as api:
        jobs = api.jobs(limit)
    print_json_or(as_json, jobs, job_table)


def demo_spec(items: int, chunk_size: int) -> dict[str, Any]:
    """The README's demo job: chunk 3 fails twice then succeeds, chunk 7 always fails (each
    where the job has that chunk)."""
    chunks = -(-items // chunk_size)
    spec: dict[str, Any] = {"total_items": items, "chunk_size": chunk_size}
    if chunks > 3:
        spec["flaky_chunks"] = {"3": 2}
    if chunks > 7:
        spec["fail_chunks"] = [7]
    return spec


@app.command()
def demo(
    items: Annotated[int, typer.Option(min=1, help="Items in the demo job.")] = 500,
    chunk_size: Annotated[int, typer.Option(min=1, help="Items per chunk.")] = 50,
) -> None:
    """The README's demo job (a flaky chunk, a failing one) on both paths, side by side."""
    spec = demo_spec(items, chunk_size)
    with Api(resolve(False, None, None)) as local, Api(resolve(True, None, None)) as cloud:
        apis = [local, cloud]
        started: list[tuple[Api, str]] = []
        for api in apis:
            try:
                started.append((api, api.submit(spec).job_id))
            except CliError as err:
                errors.print(f"{api.target.name}: not run: {err}")
        if not started:
            raise CliError("neither path could run the demo", UNREACHABLE)
        ends: dict[str, Status] = {}
        failures: list[str] = []
        try:
            with Bars() as bars:

                def one(api: Api, job_id: str) -> None:
                    try:
                        ends[api.target.name] = follow(
                            api, job_id, lambda s: bars.show(api.target.name, s)
                        )
                    except CliError as err:
                        failures.append(f"{api.target.name}: {err}")

                threads = [threading.Thread(target=one, args=pair, daemon=True) for pair in started]
                for thread in threads:
                    thread.start()
                for thread in threads:
                    thread.join()
        except KeyboardInterrupt:
            for api, job_id in started:
                errors.print(
                    f"detached: {api.target.name} job {job_id} runs on: "
                    f"{api.target.attach_hint(job_id)}"
                )
            raise typer.Exit(DETACHED) from None
        for name, status in ends.items():
            console.print(f"{name}: {summary(status)}")
        if ends:
            console.print(side_by_side(ends))
        for failure in failures:
            errors.print(failure)
        raise typer.Exit(SUCCEEDED if len(ends) == len(apis) else UNREACHABLE)
