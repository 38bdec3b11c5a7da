"""What every job store does the same way, written once: the JobStore protocol over primitives.

In the manner of kombu's virtual transport and Powertools' BasePersistenceLayer, the decisions
live here (a repeated job_id with the same spec is the same job, another spec a conflict; which
state a job may move from and what changes; whether an attempt may begin (`_begin_plan`);
whether an outcome is new and whether it finished the job (`_settle_plan`); how
stored fields become records; the status assembly; the clock). A store supplies only its reads
and its conditional writes, each stated in its own terms (SQL, DynamoDB expressions), over rows
with the same field names: the columns of `stores.sql`'s tables, the attributes of
`stores.dynamodb`'s items.
"""

from __future__ import annotations

import json
import random
import time
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from chunking import budget, workload
from chunking.budget import Bucket, Lease, LeaseAsk, Limits
from chunking.errors import TransientError
from chunking.latency import LatencySummary
from chunking.settings import get_settings
from chunking.spec import JobSpec, chunk_count
from chunking.status import (
    FAILED_ERROR_MAX_CHARS,
    FAILED_HEAD_MAX,
    SPAN_ERROR_MAX_CHARS,
    TIMELINE_MAX,
    ChunkRecord,
    ChunkState,
    FailedChunk,
    ItemResult,
    JobPath,
    JobRecord,
    JobState,
    JobStatus,
    Liveness,
    Progress,
    Span,
    Tally,
    build_status,
    finished_status,
)
from chunking.store import JobConflictError, Settlement
from chunking.workload import ChunkUsage

Row = Mapping[str, Any]  # a stored row: absent and null fields alike read as None
Field = str | int | float | None  # a stored value; None clears the field


@dataclass(frozen=True)
class JobGuard:
    """When a job's row may change: its state is one of `states`, or (`failed_unstarted`) it
    failed before it ever started; with `all_settled`, only once every chunk has settled.
    Neither states nor failed_unstarted: whatever its state, as long as the job exists."""

    states: tuple[JobState, ...] = ()
    failed_unstarted: bool = False
    all_settled: bool = False

    def express(
        self, *, in_states: str, failed_unstarted: str, exists: str, all_settled: str
    ) -> str:
        """The guard as a condition, from a store's own words for its parts (SQL, DynamoDB)."""
        alternatives = [in_states] if self.states else []
        alternatives += [failed_unstarted] if self.failed_unstarted else []
        condition = " OR ".join(alternatives) or exists
        return f"({condition}) AND {all_settled}" if self.all_settled else condition


ANY_STATE = JobGuard()
ACTIVE = JobGuard(states=("queued", "running"))
NOT_STARTED = JobGuard(states=("queued",), failed_unstarted=True)
FAILED_BEFORE_START = JobGuard(failed_unstarted=True)
ENDED = JobGuard(states=("finished", "failed", "cancelled"))
# The job-row fields that say whether it may finish, and which chunk finished it.
PROGRESS_FIELDS = ("state", "chunks_settled", "total_chunks", "settled_by")
# The job's tally: counters only ever added to (concurrent writers commute)...
COUNTERS = (
    "chunks_settled",
    "chunks_succeeded",
    "chunks_failed",
    "chunks_running",
    "chunks_begun",
    "attempts",
    "items_processed",
    "prompt_tokens",
    "completion_tokens",
    "items_failed",
    "chunks_resent",
    "rate_limited",
    "rate_wait_ms",
    # Batch mode: provider batches created, requests sent in them (again too), requests the
    # provider has finished as its polls said, sent again (expired), refused for a full queue.
    "batches",
    "batch_requests",
    "batch_done",
    "batch_resubmitted",
    "batch_requeued",
    # Items with no answer that no item result counts: those of a chunk that failed whole.
    "items_lost",
    # Times the job was retried (POST /jobs/{id}/retry, a DLQ redrive).
    "redrives",
    # A capped job's spend, in billionths of a USD at the price paid: what its answers cost,
    # and what is left of its cap once its calls in flight are held (chunking.spend).
    "spent_nano",
    "headroom_nano",
)
# The counters a chunk's batch adds to (`add_batch_counts`).
BATCH_COUNTERS = ("batches", "batch_requests", "batch_done", "batch_resubmitted", "batch_requeued")
# ... and fields recomputed from the row read in the same guarded write (`version` guards it).
SUMMARIES = ("latency", "failed_head", "events_seq", "version")
# What a finished job's status is made of (chunking.status.finished_status).
ENDED_COUNTS = ("chunks_succeeded", "chunks_failed", "items_failed")
# What a settlement reads of the job's row (never its spec, which may be far bigger).
TALLY_FIELDS = tuple(dict.fromkeys((*COUNTERS, *SUMMARIES, *PROGRESS_FIELDS)))
# Writes of a shared budget a lease tries before giving up (each lost only to another's).
LEASE_TRIES = 50
# When a running job last showed life (None once it ended): the writes that begin an attempt
# or settle a chunk set it, to the minute, so it changes (and moves in the stores' index of
# running jobs by it) at most once a minute per job, however fast its chunks settle.
ACTIVE_AT = "active_at"


@dataclass(frozen=True)
class TallyChange:
    """How one write changes the job's row, and what it leaves on the chunk's row."""

    add: dict[str, int]  # counters added to
    put: dict[str, Field]  # fields replaced, computed from the job row the write read
    chunk: dict[str, Field]  # the chunk row's fields this write also sets


def attempt_change(previous_attempts: int | None) -> dict[str, int]:
    """The tally's counters after an attempt begins at a chunk with `previous_attempts`
    (None: the chunk had no row, so it starts running now)."""
    return {
        "attempts": 1,
        "chunks_begun": 1 if not previous_attempts else 0,
        "chunks_running": 1 if previous_attempts is None else 0,
    }


def _version(job: Row) -> int:
    return int(job.get("version") or 0)


def _failed_head(job: Row) -> list[dict[str, Any]]:
    return list(json.loads(job.get("failed_head") or "[]"))


def settle_change(
    job: Row, was_running: bool, attempts: int, outcome: Mapping[str, Field], now: datetime
) -> TallyChange:
    """Settling a chunk (running, or never begun) with `outcome`: counted, numbered, summed;
    the job showed life `now`, and if this was its last chunk, it finished now."""
    succeeded = outcome["state"] == "succeeded"
    add = {
        "chunks_settled": 1,
        "chunks_succeeded" if succeeded else "chunks_failed": 1,
        "chunks_running": -1 if was_running else 0,
        "items_processed": int(outcome.get("items") or 0),
        "prompt_tokens": int(outcome.get("prompt_tokens") or 0),
        "completion_tokens": int(outcome.get("completion_tokens") or 0),
        "items_failed": int(outcome.get("items_failed") or 0),
        "items_lost": int(outcome.get("items_lost") or 0),
    }
    seq = int(job.get("events_seq") or 0) + 1
    put: dict[str, Field] = {
        "events_seq": seq,
        "version": _version(job) + 1,
        ACTIVE_AT: active_minute(now),
    }
    if (latency_ms := outcome.get("latency_ms")) is not None:
        summary = LatencySummary.load(job.get("latency"))
        summary.add(float(latency_ms))
        put["latency"] = summary.dump()
    head = _failed_head(job)
    if not succeeded and len(head) < FAILED_HEAD_MAX:
        error = str(outcome.get("error") or "unknown")[:FAILED_ERROR_MAX_CHARS]
        head.append({"index": outcome["chunk_index"], "error": error, "attempts": attempts})
        put["failed_head"] = json.dumps(head)
    progress = {
        name: _int(job.get(name)) or 0
        for name in ("chunks_settled", "chunks_succeeded", "chunks_failed", "items_processed")
    }
    for name in progress:
        progress[name] += add.get(name, 0)
    if job.get("state") == "running" and progress["chunks_settled"] >= _total(job):
        put.update(_finished(int(str(outcome["chunk_index"])), now))
    return TallyChange(add, put, {"seq": seq, "progress": json.dumps(progress)})


def _total(job: Row) -> int:
    return int(job.get("total_chunks") or 0)


def _finished(chunk_index: int, now: datetime) -> dict[str, Field]:
    """The job's row once every chunk has settled, the last being `chunk_index`."""
    return {
        "state": "finished",
        "finished_at": stored_time(now),
        "settled_by": chunk_index,
        ACTIVE_AT: None,
    }


def active_minute(now: datetime) -> str:
    """`active_at` for a write made `now`: to the minute (see ACTIVE_AT)."""
    return stored_time(now.replace(second=0, microsecond=0))


@dataclass(frozen=True)
class BeginPlan:
    """What beginning an attempt writes: the chunk's row (inserted if it had none) and the
    counters of the job's row, which must be running for any of it to apply."""

    attempt: int
    insert: bool
    chunk: dict[str, Field]
    change: TallyChange
    # A look at a provider's batch under way: it may begin in a stopped job (what is in
    # flight finishes), where nothing else begins.
    poll: bool = False


@dataclass(frozen=True)
class SettlePlan:
    """What a settlement writes (nothing for a duplicate, unless it completes the job), and
    what it tells: whether it recorded the outcome, whether the job is finished by it."""

    settlement: Settlement
    insert: bool = False
    chunk: dict[str, Field] | None = None  # None: the chunk's row is left as it is
    change: TallyChange | None = None  # None: the job's row is left as it is


def reopenable(chunk: Row | None) -> bool:
    """May this settled chunk run again? One that failed, or succeeded with items that did
    not (their failures are forgotten first: `forget_failed_items`)."""
    if chunk is None:
        return False
    return chunk["state"] == "failed" or (
        chunk["state"] == "succeeded" and int(chunk.get("items_failed") or 0) > 0
    )


# A reopened chunk's row: running again, its outcome's fields cleared.
REOPENED_CHUNK: dict[str, Field] = {
    "state": "running",
    "error": None,
    "latency_ms": None,
    "seq": None,
    "progress": None,
    "items": 0,
    "prompt_tokens": 0,
    "completion_tokens": 0,
    "items_failed": 0,
    "items_lost": 0,
    "batch": None,  # batch mode: its unanswered items go in a fresh batch
}


def reopen_change(job: Row, chunk: Row) -> TallyChange:
    """Undoing a settled chunk's outcome (it runs again): what its settlement added goes."""
    succeeded = chunk["state"] == "succeeded"
    add = {
        "chunks_settled": -1,
        "chunks_succeeded" if succeeded else "chunks_failed": -1,
        "chunks_running": 1,
        "items_processed": -int(chunk.get("items") or 0),
        "prompt_tokens": -int(chunk.get("prompt_tokens") or 0),
        "completion_tokens": -int(chunk.get("completion_tokens") or 0),
        "items_failed": -int(chunk.get("items_failed") or 0),
        "items_lost": -int(chunk.get("items_lost") or 0),
    }
    put: dict[str, Field] = {"version": _version(job) + 1}
    if (latency_ms := chunk.get("latency_ms")) is not None:
        summary = LatencySummary.load(job.get("latency"))
        summary.remove(float(latency_ms))
        put["latency"] = summary.dump()
    head = _failed_head(job)
    kept = [entry for entry in head if entry["index"] != int(chunk["chunk_index"])]
    if len(kept) != len(head):
        put["failed_head"] = json.dumps(kept)
    return TallyChange(add, put, {})


def nano_usd(usd: float) -> int:
    """USD as the whole billionths a store counts spend in."""
    return round(usd * 1e9)


def stored_time(moment: datetime) -> str:
    """How every store keeps a time: ISO 8601 with its offset (sorts as text, reads back)."""
    return moment.isoformat()


def read_time(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


# A chunk's timeline, as every store keeps it: JSON text of [attempt, started, ended, outcome,
# error] spans, times in epoch milliseconds. It rides on the writes that begin an attempt and
# settle the chunk, so timing a chunk costs no write of its own; only a retryable failure
# writes once more, to say when and why its run ended (`span_ended` from `end_attempt`).


def _spans(timeline: Any) -> list[list[Any]]:
    spans: list[list[Any]] = json.loads(timeline) if timeline else []
    return spans


def _ms(moment: datetime) -> int:
    return round(moment.timestamp() * 1000)


def span_begun(timeline: Any, attempt: int, now: datetime, continuation: bool) -> str:
    """The timeline with a run begun: the one before it, if still open, ended `continued` (now)
    or `lost` (it never said when: e.g. its process was killed). A run going on from one that
    left the chunk `waiting` (on a provider's batch) opens that span again: a batch's polls
    are one span, from its submission to its end, however many there are."""
    spans = _spans(timeline)
    if continuation and spans and spans[-1][3] == "waiting":
        spans[-1][2:5] = [None, "running", None]
        return json.dumps(spans[-TIMELINE_MAX:], separators=(",", ":"))
    if spans and spans[-1][3] == "running":
        spans[-1][2:4] = [_ms(now), "continued"] if continuation else [None, "lost"]
    spans.append([attempt, _ms(now), None, "running", None])
    return json.dumps(spans[-TIMELINE_MAX:], separators=(",", ":"))


def waiting(timeline: Any) -> bool:
    """Did the chunk's last run leave it waiting on a provider's batch?"""
    spans = _spans(timeline)
    return bool(spans) and spans[-1][3] == "waiting"


def span_ended(timeline: Any, now: datetime, outcome: str, error: str | None) -> str | None:
    """The timeline with its open run ended now, as `outcome`; None when no run is open."""
    spans = _spans(timeline)
    if not spans or spans[-1][3] != "running":
        return None
    spans[-1][2:5] = [_ms(now), outcome, error[:SPAN_ERROR_MAX_CHARS] if error else None]
    return json.dumps(spans, separators=(",", ":"))


def timeline_spans(timeline: Any) -> tuple[Span, ...]:
    return tuple(
        Span(
            attempt=attempt,
            started_at=datetime.fromtimestamp(started / 1000, UTC),
            ended_at=None if ended is None else datetime.fromtimestamp(ended / 1000, UTC),
            outcome=outcome,
            error=error,
        )
        for attempt, started, ended, outcome, error in _spans(timeline)
    )


def _str(value: Any) -> str | None:
    return None if value is None else str(value)


def _int(value: Any) -> int | None:
    return None if value is None else int(value)  # DynamoDB's numbers arrive as Decimal


def _float(value: Any) -> float | None:
    return None if value is None else float(value)


def job_record(row: Row) -> JobRecord:
    created_at = read_time(row["created_at"])
    assert created_at is not None  # every job row has one
    return JobRecord(
        job_id=row["job_id"],
        path=row["path"],
        spec=JobSpec.model_validate_json(row["spec"]),
        state=row["state"],
        total_chunks=int(row["total_chunks"]),
        created_at=created_at,
        started_at=read_time(row.get("started_at")),
        finished_at=read_time(row.get("finished_at")),
        error=row.get("error"),
        stopped_by=row.get("stopped_by"),
        settled_by=_int(row.get("settled_by")),
        output_uri=row.get("output_uri"),
        errors_uri=row.get("errors_uri"),
        total_items=int(row.get("total_items") or 0),
        tally=Tally(
            **{name: int(row.get(name) or 0) for name in COUNTERS},
            latency=LatencySummary.load(row.get("latency")),
            failed_head=tuple(FailedChunk(**entry) for entry in _failed_head(row)),
            events_seq=int(row.get("events_seq") or 0),
            version=_version(row),
        ),
        liveness=Liveness(
            active_at=read_time(row.get(ACTIVE_AT)),
            passes=int(row.get("sweep_passes") or 0),
            after=_int(row.get("sweep_after")),
            swept_at=read_time(row.get("swept_at")),
        ),
    )


def tally_row(job: JobRecord) -> dict[str, Field]:
    """The TALLY_FIELDS of a job already read, as its row holds them."""
    tally = job.tally
    return {
        **{name: int(getattr(tally, name)) for name in COUNTERS},
        "latency": tally.latency.dump(),
        "failed_head": json.dumps([entry.model_dump() for entry in tally.failed_head]),
        "events_seq": tally.events_seq,
        "version": tally.version,
        "state": job.state,
        "total_chunks": job.total_chunks,
        "settled_by": job.settled_by,
    }


def chunk_record(row: Row) -> ChunkRecord:
    return ChunkRecord(
        index=int(row["chunk_index"]),
        state=row["state"],
        attempts=int(row.get("attempts") or 0),
        items=int(row.get("items") or 0),
        latency_ms=_float(row.get("latency_ms")),
        error=row.get("error"),
        seq=_int(row.get("seq")),
        prompt_tokens=int(row.get("prompt_tokens") or 0),
        completion_tokens=int(row.get("completion_tokens") or 0),
        items_failed=int(row.get("items_failed") or 0),
        continuations=int(row.get("continuations") or 0),
        progress=Progress(**json.loads(row["progress"])) if row.get("progress") else None,
        timeline=timeline_spans(row.get("timeline")),
        batch=json.loads(row["batch"]) if row.get("batch") else None,
    )


def item_result(row: Row) -> ItemResult:
    return ItemResult(
        index=int(row["item_index"]),
        chunk_index=int(row["chunk_index"]),
        id=row["id"],
        output=row.get("output"),
        error=row.get("error"),
        prompt_tokens=int(row.get("prompt_tokens") or 0),
        completion_tokens=int(row.get("completion_tokens") or 0),
        latency_ms=_float(row.get("latency_ms")),
        output_uri=row.get("output_uri"),
        attempts=int(row.get("attempts") or 1),
    )


def item_row(result: ItemResult) -> dict[str, Field]:
    return {
        "item_index": result.index,
        "chunk_index": result.chunk_index,
        "id": result.id,
        "output": result.output,
        "error": result.error,
        "prompt_tokens": result.prompt_tokens,
        "completion_tokens": result.completion_tokens,
        "latency_ms": result.latency_ms,
        "output_uri": result.output_uri,
        "attempts": result.attempts,
    }


class BaseJobStore(ABC):
    """The JobStore protocol, given a store's primitives (the abstract methods below)."""

    # --- the primitives: reads ---

    @abstractmethod
    def _job_row(self, job_id: str, *fields: str) -> Row | None:
        """The job's row (only `fields`, when named), or None when there is no such job."""

    @abstractmethod
    def _recent_job_rows(self, limit: int, tenant: str | None) -> list[Row]:
        """The newest jobs' rows (of `tenant` only, when given), newest first, in O(limit)."""

    @abstractmethod
    def _stalled_job_rows(self, active_before: str, limit: int) -> list[Row]:
        """Up to `limit` rows of running jobs whose `active_at` is before `active_before`,
        the longest idle first, read in O(limit) (an index on it: never a scan). A store
        whose index lags its table may include a job that has since moved on: the caller
        checks what it reads."""

    @abstractmethod
    def _chunk_rows(
        self, job_id: str, state: ChunkState | None, after: int, limit: int
    ) -> list[Row]:
        """Up to `limit` chunk rows with an index above `after` (in `state`), in index order."""

    @abstractmethod
    def _settled_rows(self, job_id: str, after_seq: int, limit: int) -> list[Row]:
        """The chunk rows whose settlement is numbered after `after_seq`, in that order."""

    @abstractmethod
    def _item_rows(self, job_id: str, chunk_index: int) -> list[Row]:
        """A chunk's item rows, in item order."""

    # --- the primitives: conditional writes ---

    @abstractmethod
    def claim_once(self, key: str, now: float, ttl_s: float) -> bool:
        """JobStore.claim_once: record `key` until `now + ttl_s`, True only the first time."""

    @abstractmethod
    def _budget_row(self, name: str) -> tuple[str | None, int]:
        """A shared budget's stored state and version ((None, 0): none stored yet)."""

    @abstractmethod
    def _chunk_batch_row(self, job_id: str, chunk_index: int) -> tuple[str | None, int]:
        """A chunk's batch state (JSON text, None when it has none) and its version (0)."""

    @abstractmethod
    def _put_chunk_batch(self, job_id: str, chunk_index: int, state: str, version: int) -> bool:
        """Replace a running chunk's batch state if its version is still `version` (one
        conditional write); False, nothing written, otherwise or once the chunk settled."""

    @abstractmethod
    def _put_budget(self, name: str, state: str, version: int) -> bool:
        """Store the budget's state if its version is still `version` (0: none is stored),
        moving it to `version + 1`; True when written."""

    @abstractmethod
    def _insert_job(self, row: Mapping[str, Field]) -> bool:
        """Insert the job's row unless its job_id exists; True when inserted."""

    @abstractmethod
    def _update_job(self, job_id: str, guard: JobGuard, changes: Mapping[str, Field]) -> bool:
        """Apply `changes` to the job's row if `guard` holds (atomically); True when applied."""

    @abstractmethod
    def _record_outcome(
        self,
        job_id: str,
        chunk_index: int,
        outcome: Mapping[str, Field],
        *,
        begun_only: bool,
        expected: Row | None,
    ) -> Settlement:
        """settle_chunk, in the store's terms: read the job's tally (TALLY_FIELDS) and the
        chunk's row, take `_settle_plan`'s decision, and write what it says atomically, only
        if neither row moved since it was read. `expected`: the tally as the caller read it;
        tried first instead of a read, and read only if the job's row moved since (its version
        or state) or the decision writes nothing to it."""

    @abstractmethod
    def _insert_items(self, job_id: str, rows: Sequence[Mapping[str, Field]]) -> list[bool]:
        """Keep each item's row unless one exists for its index, in as few writes as the
        store allows; for each, True when kept."""

    @abstractmethod
    def _take_headroom(self, job_id: str, nano: int) -> bool:
        """Take `nano` from the job's `headroom_nano` only if that much is left (one
        conditional write); True when taken."""

    @abstractmethod
    def _delete_failed_items(self, job_id: str, chunk_index: int) -> int:
        """Delete the chunk's item results that are failures; how many."""

    @abstractmethod
    def _add_to_job(self, job_id: str, counters: Mapping[str, int]) -> None:
        """Add to counters of the job's tally (nothing else changes, so no guard is needed)."""

    @abstractmethod
    def _begin(self, job_id: str, chunk_index: int, continuation: bool) -> int | None:
        """begin_attempt, in the store's terms: read the chunk's row (not the job's), take
        `_begin_plan`'s decision, and write it atomically with the job's counters, only if the
        job is running (else JobNotRunningError, nothing written) and the chunk did not move."""

    @abstractmethod
    def _reopen(self, job_id: str, chunk_index: int) -> bool:
        """Make a `reopenable` chunk running again (REOPENED_CHUNK), applying
        `reopen_change`, atomically."""

    @abstractmethod
    def _end_run(self, job_id: str, chunk_index: int, error: str, outcome: str) -> None:
        """end_attempt, in the store's terms: a running chunk's timeline, `_run_ended`."""

    # --- what the primitives write of a chunk's timeline ---

    def _run_begun(self, chunk: Row | None, attempt: int, continuation: bool) -> str:
        return span_begun(chunk and chunk.get("timeline"), attempt, self.now(), continuation)

    def _run_ended(self, chunk: Row, outcome: str, error: str | None) -> str | None:
        return span_ended(chunk.get("timeline"), self.now(), outcome, error)

    def _settled_fields(
        self, outcome: Mapping[str, Field], change: TallyChange, chunk: Row | None
    ) -> dict[str, Field]:
        """What a settlement writes to the chunk's row: the outcome, the settlement's number and
        counts, and its last run ended (the same write: no extra round trip)."""
        fields = {**outcome, **change.chunk}
        ended = chunk and self._run_ended(chunk, str(outcome["state"]), _str(outcome["error"]))
        return {**fields, "timeline": ended} if ended else fields

    # --- the decisions, written once: each store reads, asks, and writes what they say ---

    def _begin_plan(self, chunk: Row | None, continuation: bool) -> BeginPlan | None:
        """May an attempt begin at this chunk (its row, None: never begun)? None when it is
        settled, or when a continuation finds no run to go on from: never run it again."""
        if chunk is not None and chunk["state"] != "running":
            return None
        now: dict[str, Field] = {ACTIVE_AT: active_minute(self.now())}
        if continuation:
            if chunk is None:
                return None
            attempt = int(chunk["attempts"])
            polled = waiting(chunk.get("timeline"))  # a poll of a batch, not a continuation
            fields: dict[str, Field] = {
                "continuations": int(chunk.get("continuations") or 0) + (0 if polled else 1),
                "timeline": self._run_begun(chunk, attempt, continuation=True),
            }
            return BeginPlan(attempt, False, fields, TallyChange({}, now, {}), poll=polled)
        previous = None if chunk is None else int(chunk["attempts"])
        attempt = (previous or 0) + 1
        fields = {
            "state": "running",
            "attempts": attempt,
            "timeline": self._run_begun(chunk, attempt, continuation=False),
        }
        return BeginPlan(
            attempt, chunk is None, fields, TallyChange(attempt_change(previous), now, {})
        )

    def _settle_plan(
        self, job: Row | None, chunk: Row | None, outcome: Mapping[str, Field], begun_only: bool
    ) -> SettlePlan:
        """Is this outcome new, and did it complete the job? From the job's tally and the
        chunk's row as read, in the write that records it: nothing is read after."""
        index = int(str(outcome["chunk_index"]))
        if job is None:
            return SettlePlan(Settlement(recorded=False, job_finished=False))
        if chunk is not None and chunk["state"] != "running":
            # Settled already: told again if it finished the job (to announce it), or made to
            # finish a job that runs with every chunk settled (restarted after they settled).
            all_settled = int(job.get("chunks_settled") or 0) >= _total(job)
            if job.get("state") == "running" and all_settled:
                put = {**_finished(index, self.now()), "version": _version(job) + 1}
                ended = finished_status(*(int(job.get(name) or 0) for name in ENDED_COUNTS))
                return SettlePlan(Settlement(False, True, ended), change=TallyChange({}, put, {}))
            return SettlePlan(Settlement(False, _int(job.get("settled_by")) == index))
        if chunk is None and begun_only:
            return SettlePlan(Settlement(recorded=False, job_finished=False))
        attempts = 0 if chunk is None else int(chunk["attempts"])
        change = settle_change(job, chunk is not None, attempts, outcome, self.now())
        fields = self._settled_fields(outcome, change, chunk)
        if change.put.get("settled_by") != index:
            return SettlePlan(Settlement(True, False), chunk is None, fields, change)
        ended = finished_status(
            *(int(job.get(name) or 0) + change.add.get(name, 0) for name in ENDED_COUNTS)
        )
        return SettlePlan(Settlement(True, True, ended), chunk is None, fields, change)

    # --- the protocol, written once ---

    def now(self) -> datetime:
        return datetime.now(UTC)

    def batch(self) -> AbstractContextManager[None]:
        return nullcontext()

    def _now_stored(self) -> str:
        return stored_time(self.now())

    def _active_now(self) -> str:
        return active_minute(self.now())

    def create_job(self, job_id: str, spec: JobSpec, path: JobPath) -> tuple[JobRecord, bool]:
        spec_json = spec.model_copy(update={"job_id": job_id}).model_dump_json()
        items = workload.of(spec).known_items(spec) or 0
        row: dict[str, Field] = {
            "job_id": job_id,
            "path": path,
            "tenant": spec.tenant,  # whose: a tenant's jobs are listed by an index on it
            "spec": spec_json,
            "state": "queued",
            "total_items": items,
            "total_chunks": chunk_count(items, spec.chunk_size),
            "created_at": self._now_stored(),
            **dict.fromkeys(COUNTERS, 0),
            "headroom_nano": nano_usd(spec.max_cost_usd or 0),
            "events_seq": 0,
            "version": 0,
        }
        if self._insert_job(row):
            return job_record(row), True
        job = self.get_job(job_id)
        assert job is not None  # the insert was refused because it exists
        if job.spec.model_dump_json() != spec_json or job.path != path:
            raise JobConflictError(
                f"job_id {job_id!r} is already used by a different job; choose another job_id"
            )
        return job, False  # the same job again: an idempotent repeat

    def set_plan(self, job_id: str, total_items: int) -> bool:
        job = self.get_job(job_id)
        if job is None:
            return False
        chunks = chunk_count(total_items, job.spec.chunk_size)
        changes = {"total_items": total_items, "total_chunks": chunks}
        return self._update_job(job_id, NOT_STARTED, changes)

    def get_job(self, job_id: str) -> JobRecord | None:
        row = self._job_row(job_id)
        return job_record(row) if row else None

    def list_jobs(self, limit: int, tenant: str | None = None) -> list[JobRecord]:
        return [job_record(row) for row in self._recent_job_rows(limit, tenant)]

    def start_job(self, job_id: str) -> bool:
        changes = {
            "state": "running",
            "started_at": self._now_stored(),
            "error": None,
            ACTIVE_AT: self._active_now(),
        }
        return self._update_job(job_id, NOT_STARTED, changes)

    def fail_job(self, job_id: str, error: str) -> None:
        # started_at is cleared: the job never properly started, so it may be requeued.
        changes = {
            "state": "failed",
            "error": error,
            "finished_at": self._now_stored(),
            "started_at": None,
            ACTIVE_AT: None,
        }
        self._update_job(job_id, ACTIVE, changes)

    def cancel_job(self, job_id: str) -> bool:
        changes = {"state": "cancelled", "finished_at": self._now_stored(), ACTIVE_AT: None}
        return self._update_job(job_id, ACTIVE, changes)

    def stop_job(self, job_id: str, stopped_by: str, reason: str) -> bool:
        job = self._job_row(job_id, "stopped_by", "state")
        if job is None or job.get("stopped_by") or job.get("state") != "running":
            return False  # stopped already (the first reason stands), or not running
        changes = {"stopped_by": stopped_by, "error": reason}
        return self._update_job(job_id, JobGuard(states=("running",)), changes)

    def reserve_spend(self, job_id: str, nano: int) -> bool:
        return self._take_headroom(job_id, nano)

    def record_spend(self, job_id: str, held_nano: int, spent_nano: int) -> None:
        if held_nano or spent_nano:
            change = {"headroom_nano": held_nano - spent_nano, "spent_nano": spent_nano}
            self._add_to_job(job_id, change)

    def _running_again(self) -> dict[str, Field]:
        """A finished job's row once one of its chunks runs again (a retry, a redrive): its end,
        its results and why it ended or stopped cleared, to be written anew."""
        return {
            "state": "running",
            "finished_at": None,
            "settled_by": None,
            "output_uri": None,
            "errors_uri": None,
            "error": None,
            "stopped_by": None,
            ACTIVE_AT: self._active_now(),
        }

    def retry_job(self, job_id: str) -> bool:
        job = self._job_row(job_id, "state", "redrives")
        if job is None or job.get("state") != "finished":
            return False
        changes = {**self._running_again(), "redrives": int(job.get("redrives") or 0) + 1}
        return self._update_job(job_id, JobGuard(states=("finished",)), changes)

    def end_retry(self, job_id: str, reason: str) -> bool:
        changes = {
            "state": "finished",
            "finished_at": self._now_stored(),
            "error": reason,
            ACTIVE_AT: None,
        }
        return self._update_job(job_id, JobGuard(states=("running",), all_settled=True), changes)

    def forget_failed_items(self, job_id: str, chunk_index: int) -> int:
        return self._delete_failed_items(job_id, chunk_index)

    def requeue_job(self, job_id: str) -> bool:
        changes = {"state": "queued", "error": None, "finished_at": None}
        return self._update_job(job_id, FAILED_BEFORE_START, changes)

    def set_output_uri(self, job_id: str, uri: str, errors_uri: str | None = None) -> None:
        self._update_job(job_id, ANY_STATE, {"output_uri": uri, "errors_uri": errors_uri})

    def fail_finish(self, job_id: str, error: str) -> bool:
        # Its error now says its results were not written (no longer why it stopped, if it did).
        changes = {"error": error, "stopped_by": None}
        return self._update_job(job_id, JobGuard(states=("finished",)), changes)

    def begin_attempt(
        self, job_id: str, chunk_index: int, *, continuation: bool = False
    ) -> int | None:
        return self._begin(job_id, chunk_index, continuation)

    def end_attempt(
        self, job_id: str, chunk_index: int, error: str, outcome: str = "retried"
    ) -> None:
        self._end_run(job_id, chunk_index, error, outcome)

    def count_resend(self, job_id: str) -> None:
        self._add_to_job(job_id, {"chunks_resent": 1})

    def stalled_jobs(self, idle_since: datetime, limit: int) -> list[JobRecord]:
        rows = self._stalled_job_rows(stored_time(idle_since), limit)
        return [job_record(row) for row in rows]

    def record_sweep(
        self, job_id: str, *, passes: int, after: int | None, swept_at: datetime, resent: int
    ) -> bool:
        changes: dict[str, Field] = {
            "sweep_passes": passes,
            "sweep_after": after,
            "swept_at": stored_time(swept_at),
        }
        if not self._update_job(job_id, JobGuard(states=("running",)), changes):
            return False
        if resent:
            self._add_to_job(job_id, {"chunks_resent": resent})
        return True

    def reopen_chunk(self, job_id: str, chunk_index: int) -> bool:
        if not self._reopen(job_id, chunk_index):
            return False
        # A finished job runs again; one that failed to start, or was cancelled, stays so.
        if not self._update_job(job_id, JobGuard(states=("finished",)), self._running_again()):
            self._update_job(
                job_id, ANY_STATE, {"settled_by": None, "output_uri": None, "errors_uri": None}
            )
        return True

    def settle_chunk(
        self,
        job_id: str,
        chunk_index: int,
        *,
        succeeded: bool,
        items: int = 0,
        latency_ms: float | None = None,
        error: str | None = None,
        begun_only: bool = False,
        usage: ChunkUsage | None = None,
        expected: JobRecord | None = None,
        items_lost: int = 0,
    ) -> Settlement:
        usage = usage or ChunkUsage()
        outcome: dict[str, Field] = {
            "chunk_index": chunk_index,
            "state": "succeeded" if succeeded else "failed",
            "items": items if succeeded else 0,
            "latency_ms": latency_ms,
            "error": error,
            "prompt_tokens": usage.prompt_tokens,
            "completion_tokens": usage.completion_tokens,
            "items_failed": usage.items_failed,
            "items_lost": items_lost,
        }
        # One read of the job's tally (none when the caller read it and nothing moved it
        # since) and one write: whether it was new, and whether it finished the job, are
        # decided from what that write applies (_settle_plan).
        known = tally_row(expected) if expected is not None else None
        return self._record_outcome(
            job_id, chunk_index, outcome, begun_only=begun_only, expected=known
        )

    def take_lease(self, name: str, ask: LeaseAsk, limits: Limits, burst_s: float) -> Lease:
        # Read, decide, write if nobody wrote between: a lost race is read again, after a
        # jittered pause that grows, so a writer that keeps losing is not starved by the rest.
        for tries in range(LEASE_TRIES):
            if tries:
                time.sleep(random.uniform(0, min(0.05, 0.001 * 2**tries)))
            state, version = self._budget_row(name)
            now = self.now().timestamp()
            bucket, lease = budget.take(Bucket.loads(state), ask, limits, now, burst_s)
            if self._put_budget(name, bucket.dumps(), version):
                return lease
        raise TransientError(f"the shared budget {name!r} is contended: {LEASE_TRIES} writes lost")

    def count_rate_limiting(self, job_id: str, refused: int, waited_ms: int) -> None:
        if refused or waited_ms:
            self._add_to_job(job_id, {"rate_limited": refused, "rate_wait_ms": waited_ms})

    def chunk_batch(self, job_id: str, chunk_index: int) -> tuple[dict[str, Any] | None, int]:
        state, version = self._chunk_batch_row(job_id, chunk_index)
        return (json.loads(state) if state else None), version

    def put_chunk_batch(
        self, job_id: str, chunk_index: int, state: Mapping[str, Any], version: int
    ) -> bool:
        text = json.dumps(state, separators=(",", ":"), sort_keys=True)
        return self._put_chunk_batch(job_id, chunk_index, text, version)

    def add_batch_counts(self, job_id: str, counts: Mapping[str, int]) -> None:
        if unknown := set(counts) - set(BATCH_COUNTERS):
            raise ValueError(f"not batch counters: {sorted(unknown)}")
        if any(counts.values()):
            self._add_to_job(job_id, {name: n for name, n in counts.items() if n})

    def record_item(self, job_id: str, result: ItemResult) -> bool:
        return self.record_items(job_id, [result])[0]

    def record_items(self, job_id: str, results: Sequence[ItemResult]) -> list[bool]:
        return self._insert_items(job_id, [item_row(result) for result in results])

    def item_results(self, job_id: str, chunk_index: int) -> list[ItemResult]:
        return [item_result(row) for row in self._item_rows(job_id, chunk_index)]

    def chunk_page(
        self, job_id: str, state: ChunkState | None, after: int, limit: int
    ) -> list[ChunkRecord]:
        return [chunk_record(row) for row in self._chunk_rows(job_id, state, after, limit)]

    def chunk(self, job_id: str, chunk_index: int) -> ChunkRecord | None:
        found = self.chunk_page(job_id, None, chunk_index - 1, 1)
        return found[0] if found and found[0].index == chunk_index else None

    def settled_since(self, job_id: str, after_seq: int, limit: int) -> list[ChunkRecord]:
        return [chunk_record(row) for row in self._settled_rows(job_id, after_seq, limit)]

    def status(self, job_id: str) -> JobStatus | None:
        job = self.get_job(job_id)
        return None if job is None else self.status_of(job)

    def status_of(self, job: JobRecord) -> JobStatus:
        return build_status(job, self.now(), get_settings().llm_prices)
