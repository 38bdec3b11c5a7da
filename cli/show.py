"""What the command prints: the live progress bar, and the status, chunks and jobs as tables."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

Status = dict[str, Any]

# No hard wrapping: a line holds a command to copy, or goes to a pipe.
console = Console(soft_wrap=True)
errors = Console(stderr=True, soft_wrap=True)

STATUS_STYLE = {
    "succeeded": "green",
    "partial": "yellow",
    "failed": "red",
    "cancelled": "magenta",
    "running": "cyan",
    "queued": "cyan",
}


def tokens(n: int) -> str:
    return f"{n / 1e6:.1f}M" if n >= 1e6 else f"{n / 1e3:.1f}k" if n >= 1e4 else str(n)


def usd(x: float) -> str:
    return f"${x:,.2f}" if x >= 1 else f"${x:.6f}".rstrip("0").rstrip(".") if x else "$0"


def items_done(status: Status) -> int:
    """Items with an outcome: processed (an llm job's refused ones too), and those of chunks
    that failed whole (`items_failed` less the items that failed on their own)."""
    usage = status.get("usage") or {}
    lost = int(status.get("items_failed", 0)) - int(usage.get("items_failed", 0))
    return int(status.get("items_processed", 0)) + max(lost, 0)


def facts(status: Status) -> str:
    """The progress bar's line: chunks, failures, retries, 429s, tokens, spend."""
    settled = status.get("chunks_succeeded", 0) + status.get("chunks_failed", 0)
    parts = [f"chunks {settled}/{status.get('total_chunks', 0)}"]
    if status.get("chunks_failed"):
        parts[0] += f" ([red]{status['chunks_failed']} failed[/])"
    if status.get("chunks_cancelled"):
        parts[0] += f" ({status['chunks_cancelled']} cancelled)"
    if status.get("items_failed"):
        parts.append(f"[red]items failed: {status['items_failed']}[/]")
    parts.append(f"{status.get('retries', 0)} retries")
    usage = status.get("usage")
    if usage:
        parts.append(f"{usage.get('rate_limited', 0)} 429s")
        parts.append(f"{tokens(usage['prompt_tokens'] + usage['completion_tokens'])} tokens")
        spent = usage.get("spent_usd")
        spend = usd(spent if spent is not None else usage["est_cost_usd"])
        if usage.get("max_cost_usd") is not None:
            spend += f" of {usd(usage['max_cost_usd'])} cap"
        parts.append(spend)
    batch = status.get("batch")
    if batch:
        parts.append(f"batch {batch['requests_done']}/{batch['requests_submitted']} done")
    return " · ".join(parts)


class Bars:
    """One progress bar per job (two for the demo), updated from any thread."""

    def __init__(self) -> None:
        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("items"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            TextColumn("{task.fields[facts]}"),
            console=console,
            # Live only on a terminal: a pipe or a log gets the summary line at the end instead.
            disable=not console.is_terminal,
        )
        self.tasks: dict[str, TaskID] = {}

    def __enter__(self) -> Bars:
        self.progress.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.progress.stop()

    def show(self, name: str, status: Status) -> None:
        state = status.get("status", "?")
        label = f"{name} [{STATUS_STYLE.get(state, 'white')}]{state}[/]"
        total = int(status.get("total_items") or 0) or None  # an llm job's, once counted
        if name not in self.tasks:
            self.tasks[name] = self.progress.add_task(label, total=total, facts="")
        self.progress.update(
            self.tasks[name],
            description=label,
            total=total,
            completed=items_done(status),
            facts=facts(status),
        )


def summary(status: Status) -> str:
    """One line for the end of a run: how it ended, and why where it did not succeed."""
    state = status["status"]
    line = (
        f"job {status['job_id']} [{STATUS_STYLE.get(state, 'white')}]{state}[/] in "
        f"{status.get('duration_s') or 0:.1f}s: {items_done(status)}/{status['total_items']} items"
        f" · {facts(status)}"
    )
    if status.get("error"):
        line += f"\n  [red]{status['error']}[/]"
    for chunk in status.get("failed_chunks") or []:
        line += f"\n  chunk {chunk['index']} failed after {chunk['attempts']}: {chunk['error']}"
    return line


def status_table(status: Status) -> Table:
    table = Table(show_header=False, box=None)
    for key in (
        "job_id",
        "path",
        "status",
        "total_items",
        "items_processed",
        "items_failed",
        "total_chunks",
        "chunks_succeeded",
        "chunks_failed",
        "retries",
        "redrives",
        "stopped_by",
        "error",
        "created_at",
        "finished_at",
        "duration_s",
        "output_uri",
        "errors_uri",
    ):
        if status.get(key) is not None:
            table.add_row(key, str(status[key]))
    if status.get("usage") or status.get("batch"):
        table.add_row("progress", facts(status))
    return table


def chunk_table(chunks: Iterable[dict[str, Any]]) -> Table:
    table = Table("index", "state", "attempts", "items", "latency_ms", "error")
    for chunk in chunks:
        latency = chunk.get("latency_ms")
        table.add_row(
            str(chunk["index"]),
            chunk["state"],
            str(chunk["attempts"]),
            str(chunk["items"]),
            "" if latency is None else f"{latency:.0f}",
            chunk.get("error") or "",
        )
    return table


def job_table(jobs: Iterable[Status]) -> Table:
    table = Table("job_id", "status", "items", "chunks", "created_at")
    for job in jobs:
        state = job["status"]
        table.add_row(
            job["job_id"],
            f"[{STATUS_STYLE.get(state, 'white')}]{state}[/]",
            f"{items_done(job)}/{job['total_items']}",
            str(job["total_chunks"]),
            str(job["created_at"]),
        )
    return table


def latency(status: Status, which: str) -> str:
    value = (status.get("chunk_latency_ms") or {}).get(which)
    if value is None:
        return "-"
    return f"{value:.1f} ms" if value < 10 else f"{value:.0f} ms"


def side_by_side(ends: dict[str, Status]) -> Table:
    """The demo's end: the same job's figures on each path, a column each."""
    table = Table("", *ends)
    rows: dict[str, Callable[[Status], str]] = {
        "status": lambda s: s["status"],
        "wall time": lambda s: f"{s.get('duration_s') or 0:.1f} s",
        "items done": lambda s: f"{items_done(s)}/{s['total_items']}",
        "items failed": lambda s: str(s.get("items_failed", 0)),
        "chunks succeeded": lambda s: f"{s['chunks_succeeded']}/{s['total_chunks']}",
        "chunks failed": lambda s: str(s["chunks_failed"]),
        "attempts": lambda s: str(s["attempts"]),
        "retries": lambda s: str(s["retries"]),
        "chunk latency p50": lambda s: (
            f"{(s.get('chunk_latency_ms') or {}).get('p50') or 0:.0f} ms"
        ),
        "chunk latency p95": lambda s: (
            f"{(s.get('chunk_latency_ms') or {}).get('p95') or 0:.0f} ms"
        ),
    }
    for name, cell in rows.items():
        table.add_row(name, *(cell(status) for status in ends.values()))
    return table
