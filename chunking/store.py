"""The job store protocol that both paths record outcomes through."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from chunking.budget import Lease, LeaseAsk, Limits
from chunking.spec import JobSpec
from chunking.status import (
    ChunkRecord,
    ChunkState,
    ItemResult,
    JobPath,
    JobRecord,
    JobStatus,
    JobStatusName,
)
from chunking.workload import ChunkUsage


class JobConflictError(Exception):
    """The job_id is already used by a job with a different spec."""


class JobEndedError(Exception):
    """The job has already ended: it cannot be cancelled."""


class JobNotRunningError(Exception):
    """The job is not running (cancelled, ended, or unknown): no attempt may begin."""


@dataclass(frozen=True)
class Settlement:
    """What recording a chunk's outcome did."""

    recorded: bool  # False when the chunk was already settled (a duplicate delivery)
    job_finished: bool  # True when this chunk's outcome is the one that finished the job
    # The status the job finished with, when this write finished it (its metric counts it).
    finished_as: JobStatusName | None = None


class JobStore(Protocol):
    def create_job(self, job_id: str, spec: JobSpec, path: JobPath) -> tuple[JobRecord, bool]:
        """Insert a `queued` job, or return the existing one; the bool says if it was created.

        Its items are the spec's, or 0 until `set_plan` (a workload that counts its input).
        Raises JobConflictError when the job_id exists with a different spec.
        """
        ...

    def batch(self) -> AbstractContextManager[None]:
        """This thread's writes made inside share one transaction (SQLite, Postgres: one
        commit for the jobs submitted together); each is still all or nothing on its own.
        A store without transactions (DynamoDB) changes nothing."""
        ...

    def set_plan(self, job_id: str, total_items: int) -> bool:
        """Record the items (and so the chunks) of a job not started yet; False otherwise."""
        ...

    def get_job(self, job_id: str) -> JobRecord | None: ...

    def list_jobs(self, limit: int, tenant: str | None = None) -> list[JobRecord]:
        """The `limit` newest jobs (of `tenant` only, when given), newest first: one query of
        an index, whatever the number of jobs."""
        ...

    def start_job(self, job_id: str) -> bool:
        """Move a `queued` job (or one that failed before it started) to `running`.

        Returns False when the job already started: a duplicate start must not fan out again.
        """
        ...

    def fail_job(self, job_id: str, error: str) -> None:
        """Mark a job that could not start as failed, with the reason."""
        ...

    def cancel_job(self, job_id: str) -> bool:
        """Cancel a queued or running job: its chunks not yet started will not run.

        False when the job had already ended (or was already cancelled): nothing changes.
        """
        ...

    def requeue_job(self, job_id: str) -> bool:
        """Put a job that failed before it started back to `queued`; False if it had started."""
        ...

    def begin_attempt(
        self, job_id: str, chunk_index: int, *, continuation: bool = False
    ) -> int | None:
        """Count an attempt at a chunk (on the job's tally too) and return its number (1-based).

        `continuation`: a run going on where one that ran out of budget stopped; it is counted
        as a continuation, not an attempt, and the current attempt's number is returned.
        Returns None when the chunk is already settled (or, for a continuation, unknown): the
        caller must not run it again. Raises JobNotRunningError, writing nothing, when the job
        is not running. Reads the chunk's row, never the job's: one write of each.
        """
        ...

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
        """Record a chunk's outcome once per (job_id, chunk_index), whatever the deliveries,
        and add it to the job's tally in the same write, which also finishes the job when this
        was its last chunk (`job_finished`). One read of the job's row, one write.

        `begun_only`: record it only for a chunk whose attempt has begun (never create one).
        `expected`: the job as the caller read it (and no settlement of its since, as far as it
        knows): the write is tried on that, and the row read only if it had moved.
        `items_lost`: a chunk failed whole, its items no item result counts as failed.
        """
        ...

    def end_attempt(
        self, job_id: str, chunk_index: int, error: str, outcome: str = "retried"
    ) -> None:
        """Record that the chunk's current run ended in a retryable failure, now: its span in
        the chunk's timeline ends `retried` with `error` (the settlement ends the last one);
        or `waiting`, for a run that left the chunk waiting on its provider's batch."""
        ...

    def count_resend(self, job_id: str) -> None:
        """Count a chunk sent again as a fresh run because its deliveries all failed before it
        began (on the job's tally: `chunks_resent` in the status)."""
        ...

    def now(self) -> datetime:
        """The store's clock (UTC): what stamps a job's times, its signs of life among them."""
        ...

    def stalled_jobs(self, idle_since: datetime, limit: int) -> list[JobRecord]:
        """Up to `limit` running jobs that have shown no life (no attempt begun, no chunk
        settled) since `idle_since`, the longest idle first; read in O(limit), whatever the
        number of jobs or chunks. Their `liveness` says how far their sweeps got."""
        ...

    def record_sweep(
        self, job_id: str, *, passes: int, after: int | None, swept_at: datetime, resent: int
    ) -> bool:
        """Record how far the sweep of a running job got (`passes` begun, the last index
        examined or None once a pass has ended, when the latest began) and count the chunks it
        sent again (`chunks_resent`). False, and nothing written, when the job is not running."""
        ...

    def reopen_chunk(self, job_id: str, chunk_index: int) -> bool:
        """Undo a chunk's outcome so it can run again (a retry, a DLQ redrive): one that
        failed, or succeeded with failed items (forget those first: `forget_failed_items`).

        The job goes back to `running` if that outcome had finished it. False when the chunk
        is neither (running, succeeded whole, or unknown): nothing changes.
        """
        ...

    def end_retry(self, job_id: str, reason: str) -> bool:
        """A retry whose unit could not be started: the job, running again with every chunk
        still settled, ends again with `reason` as its error. False once a chunk reopened."""
        ...

    def forget_failed_items(self, job_id: str, chunk_index: int) -> int:
        """Delete the chunk's failed item results, so a retry asks those items again (and
        only those: the answered ones are kept); how many."""
        ...

    def stop_job(self, job_id: str, stopped_by: str, reason: str) -> bool:
        """Stop a running job early (`stopped_by` what: its spend cap, its failure threshold;
        `reason` becomes its error): no attempt begins at any of its chunks after this, each is
        settled failed instead, and the job finishes as they settle. The first stop's reason
        stands. False when it was not running or was stopped already."""
        ...

    def reserve_spend(self, job_id: str, nano: int) -> bool:
        """Hold `nano` (billionths of a USD) of a capped job's spend for a model call about
        to begin: False, nothing held, when the cap has less left than that."""
        ...

    def record_spend(self, job_id: str, held_nano: int, spent_nano: int) -> None:
        """A held call came back: release its hold and count what it cost."""
        ...

    def retry_job(self, job_id: str) -> bool:
        """Make a finished job run again (its retry): `running`, its stop, error and output
        cleared, its `redrives` counted. The caller then reopens and sends its chunks. False
        when it was not finished (or another retry won)."""
        ...

    def set_output_uri(self, job_id: str, uri: str, errors_uri: str | None = None) -> None:
        """Record where a finished job's merged output was written, and its file of failed
        items (None: nothing failed)."""
        ...

    def fail_finish(self, job_id: str, error: str) -> bool:
        """Record why a finished job's results could not be left behind (its finishing unit
        gave up): its status is then `failed`, with this error. False if it is not finished."""
        ...

    def take_lease(self, name: str, ask: LeaseAsk, limits: Limits, burst_s: float) -> Lease:
        """Take a lease of the shared budget `name` (a model's), in one conditional write
        shared by every process on this store (chunking.budget decides what it grants)."""
        ...

    def count_rate_limiting(self, job_id: str, refused: int, waited_ms: int) -> None:
        """Add a run's 429s and its requests' wait for the budget to the job's tally."""
        ...

    def chunk_batch(self, job_id: str, chunk_index: int) -> tuple[dict[str, Any] | None, int]:
        """A chunk's batch state (batch mode: its provider batch, JSON; None when it has
        none yet) and the version a `put_chunk_batch` must name (0 for none)."""
        ...

    def put_chunk_batch(
        self, job_id: str, chunk_index: int, state: Mapping[str, Any], version: int
    ) -> bool:
        """Replace a running chunk's batch state, on its row, if nobody did since `version`
        was read (a conditional write): False, and nothing written, if somebody did or the
        chunk has settled. What makes a chunk's batch created once, whatever the deliveries."""
        ...

    def add_batch_counts(self, job_id: str, counts: Mapping[str, int]) -> None:
        """Add to the job's batch counters (stores.base.BATCH_COUNTERS): its status's `batch`."""
        ...

    def record_item(self, job_id: str, result: ItemResult) -> bool:
        """Keep an item's result as soon as it arrives; the first one wins (False after)."""
        ...

    def record_items(self, job_id: str, results: Sequence[ItemResult]) -> list[bool]:
        """record_item for many (a batch's result file), in as few writes as the store allows:
        one transaction (SQL), transactions of up to 100 (DynamoDB). For each, kept or not."""
        ...

    def item_results(self, job_id: str, chunk_index: int) -> list[ItemResult]:
        """The results kept for a chunk's items, in item order."""
        ...

    def chunk_page(
        self, job_id: str, state: ChunkState | None, after: int, limit: int
    ) -> list[ChunkRecord]:
        """Up to `limit` of the job's chunks with an index above `after` (and in `state`, when
        given), in index order: the chunks endpoint's pages, read in O(limit)."""
        ...

    def chunk(self, job_id: str, chunk_index: int) -> ChunkRecord | None: ...

    def claim_once(self, key: str, now: float, ttl_s: float) -> bool:
        """Record `key` as used until `now + ttl_s`: True the first time, False while it is
        recorded, whichever process or replica recorded it (a signed call's signature, run
        once across replicas). An expired claim may be made again."""
        ...

    def settled_since(self, job_id: str, after_seq: int, limit: int) -> list[ChunkRecord]:
        """The next `limit` chunks settled after settlement number `after_seq`, in the order
        they settled; fewer only when there are no more.

        Each settlement takes the job's next number (`ChunkRecord.seq`, from 1), never reused: a
        reopened chunk leaves the list until it settles again, under a new number.
        """
        ...

    def status(self, job_id: str) -> JobStatus | None:
        """The status JSON, from the job's row alone: no chunk or item is read."""
        ...

    def status_of(self, job: JobRecord) -> JobStatus:
        """The status JSON of a job already read (e.g. by list_jobs): no read at all."""
        ...
