"""The Workload protocol: what a kind of job does, as plug-ins the core knows by no name.

A workload says which JobSpec fields are its own (others may not set them), checks a spec in
constant time before the job is recorded (`prepare`), counts and indexes what it points at in
the job's first durable unit (`plan`: resumable, within a budget, never inside a request), runs
one chunk (`run_chunk`), and may leave something behind per chunk (`before_settle`, which also
reports the chunk's model usage) and per finished job (`after_job_finished`, its own durable
unit; a workload that `produces_output` is not final until then).

Workloads register themselves (`register`) when the `workloads` package is imported, as every
entrypoint does; the spec, the runner, the lifecycle and the status look them up by the spec's
`workload` (`of`). The core imports no workload: a third one touches only `workloads/`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

if TYPE_CHECKING:
    from chunking.planning import Chunk
    from chunking.spec import JobSpec
    from chunking.status import JobRecord, Path
    from chunking.store import JobStore


@dataclass(frozen=True)
class ChunkResult:
    items_processed: int


@dataclass(frozen=True)
class ChunkUsage:
    """A settling chunk's model usage, added to its job's tally by the settlement."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    items_failed: int = 0


@dataclass(frozen=True)
class Planned:
    total_items: int


@dataclass(frozen=True)
class PlanPaused:
    """Planning stopped to respect its budget; `state` (small, JSON) resumes it."""

    state: dict[str, int]


class PlanError(Exception):
    """What the job points at cannot run (e.g. a bad input line): the job fails with this."""


class OutOfBudget(Exception):
    """A chunk stopped to respect its budget having made progress, keeping what it did: it
    goes on in a new run (a continuation), which spends none of its retries."""


class Workload:
    """Base with the defaults: a workload overrides `run_chunk` and what it needs of the rest."""

    name: ClassVar[str]
    # JobSpec fields only this workload reads, and those it cannot run without (-> why).
    fields: ClassVar[frozenset[str]] = frozenset()
    required: ClassVar[Mapping[str, str]] = {}
    produces_output: ClassVar[bool] = False
    reports_usage: ClassVar[bool] = False  # it calls a model: the status carries its usage

    def prepare(self, spec: JobSpec, path: Path) -> JobSpec:
        """The spec to record, checked in constant time (in the request). Blocking; raises a
        pydantic ValidationError naming the field when it cannot run."""
        return spec

    def known_items(self, spec: JobSpec) -> int | None:
        """The job's items when the spec says (None: `plan` counts them)."""
        return spec.total_items

    def plan(
        self, job: JobRecord, resume: Mapping[str, int] | None, deadline: float | None
    ) -> Planned | PlanPaused:
        """Count (and index) the job's items, by `deadline` (time.monotonic()) or paused.
        Blocking; raises PlanError when the job cannot run, InputUnavailableError to retry."""
        known = self.known_items(job.spec)
        assert known is not None  # a workload that counts its items overrides plan
        return Planned(known)

    async def run_chunk(
        self, store: JobStore, job: JobRecord, chunk: Chunk, attempt: int, budget_s: float | None
    ) -> ChunkResult:
        """One attempt (`attempt` 1 for the first); raises the core's errors."""
        raise NotImplementedError

    def before_settle(self, store: JobStore, job: JobRecord, chunk_index: int) -> ChunkUsage | None:
        """Blocking: what a chunk leaves behind before its outcome is recorded, whatever it is,
        and the model usage its outcome adds to the job's tally."""
        return None

    def after_job_finished(self, store: JobStore, job: JobRecord) -> None:
        """Blocking: what a finished job leaves behind. Runs again on a redelivery: idempotent."""


_registered: dict[str, Workload] = {}


def register(workload: Workload) -> None:
    _registered[workload.name] = workload


def names() -> list[str]:
    return sorted(_registered)


def named(name: str) -> Workload:
    try:
        return _registered[name]
    except KeyError:
        known = ", ".join(names()) or "none: import the workloads package first"
        raise KeyError(f"no workload {name!r} (registered: {known})") from None


def of(spec: JobSpec) -> Workload:
    return named(spec.workload)


def owner_of(field: str) -> str | None:
    """The workload whose own field this is, if any."""
    return next((w.name for w in _registered.values() if field in w.fields), None)
