"""The Workload protocol: what a kind of job does, as plug-ins the core knows by no name.

A workload declares its own JobSpec fields as a pydantic model (`Fields`, a WorkloadFields:
the JobSpec validates them with it, refuses them on a job of another workload, and publishes
them in its JSON schema, which the API's docs and the dashboard's start form are built from),
checks a spec in constant time before the job is recorded (`prepare`), counts and indexes what
it points at in the job's first durable unit (`plan`: resumable, within a budget, never inside
a request), runs one chunk (`run_chunk`), and may leave something behind per chunk
(`before_settle`, which also reports the chunk's model usage) and per finished job
(`after_job_finished`, its own durable unit; a workload that `produces_output` is not final
until then).

Workloads register themselves (`register`) when their module is imported: the `workloads`
package, which every entrypoint imports, registers `simulate` and `llm`; the registry imports
the modules WORKLOAD_MODULES names when it is first asked. The spec, the runner, the lifecycle
and the status look them up by the spec's `workload` (`of`). The core imports no workload,
and nothing else names one: a new workload is one module (in any importable package named in
WORKLOAD_MODULES; `tests/plugins/stride.py` is one) touching no other file, or one in
`workloads/` plus its `register` line in `workloads/__init__.py`.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar, Self

from pydantic import BaseModel, ConfigDict

from chunking.settings import get_settings

if TYPE_CHECKING:
    from chunking.planning import Chunk
    from chunking.spec import JobSpec
    from chunking.status import JobPath, JobRecord
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
    items_answered: int = 0


@dataclass(frozen=True)
class Planned:
    total_items: int


@dataclass(frozen=True)
class PlanPaused:
    """Planning stopped to respect its budget; `state` (small, JSON) resumes it."""

    state: dict[str, int]


class PlanError(Exception):
    """What the job points at cannot run (e.g. a bad input line): the job fails with this."""


class WaitFor(Exception):
    """The chunk waits on something outside (a provider's batch) that will take a while: its
    next run starts in `wait_s`, holding no process meanwhile (a durable sleep, a delayed
    message) and spending no retry. The workload bounds how long it waits in all."""

    def __init__(self, wait_s: float, why: str) -> None:
        super().__init__(why)
        self.wait_s = wait_s


class StopJob(Exception):
    """The whole job must stop (e.g. its spend cap is reached): the chunk is settled failed
    with this reason, and no other chunk of the job begins (chunking.store's `stop_job`)."""

    def __init__(self, stopped_by: str, reason: str) -> None:
        super().__init__(reason)
        self.stopped_by = stopped_by


class OutOfBudget(Exception):
    """A chunk stopped to respect its budget having made progress, keeping what it did: it
    goes on in a new run (a continuation), which spends none of its retries."""


class WorkloadFields(BaseModel):
    """A workload's own JobSpec fields (none, here): subclass it with them and their checks.
    Validated with a context of the job's `total_items` and `chunk_size` (when they are
    valid), for checks that depend on them."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    @classmethod
    def of(cls, spec: JobSpec) -> Self:
        """The spec's own fields, typed: what the workload that owns this model reads."""
        own = spec.own
        if not isinstance(own, cls):
            raise TypeError(f"a {spec.workload} job has no {cls.__name__}")
        return own


class Workload:
    """Base with the defaults: a workload overrides `run_chunk` and what it needs of the rest."""

    name: ClassVar[str]
    # The JobSpec fields only this workload reads (a job of another workload may not set them).
    Fields: ClassVar[type[WorkloadFields]] = WorkloadFields
    produces_output: ClassVar[bool] = False
    reports_usage: ClassVar[bool] = False  # it calls a model: the status carries its usage

    def prepare(self, spec: JobSpec, path: JobPath) -> JobSpec:
        """The spec to record, checked in constant time (in the request). Blocking; raises a
        pydantic ValidationError naming the field when it cannot run."""
        return spec

    def batch_discount(self, spec: JobSpec) -> float | None:
        """The share of the model's price the job saves by going through the provider's
        batch API (its status then shows its batches), or None when it does not."""
        return None

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

    async def wind_down(self, store: JobStore, job: JobRecord, chunk_index: int) -> str | None:
        """The job was cancelled while this chunk was begun: stop what it started outside
        (e.g. cancel its provider batch) and keep what came back; WaitFor while that is under
        way. Returns what it kept, in words, for the chunk's record (None: nothing)."""
        return None

    async def stop_outside(self, store: JobStore, job: JobRecord, after: int) -> int | None:
        """The job was cancelled: stop at once what its running chunks started outside (e.g.
        cancel their provider batches; each chunk's own run keeps what came back), a page of
        chunks after index `after` at a time. The index to go on from, or None when done.
        Idempotent: run again on a redelivery."""
        return None

    def after_job_finished(self, store: JobStore, job: JobRecord) -> None:
        """Blocking: what a finished job leaves behind. Runs again on a redelivery: idempotent."""


_registered: dict[str, Workload] = {}
_imported = ""  # the WORKLOAD_MODULES whose modules were imported


def register(workload: Workload) -> None:
    _registered[workload.name] = workload


def _import_named_modules() -> None:
    """Import the modules WORKLOAD_MODULES names (each registers its workload), once per
    value: asked for on every lookup, so it holds whatever was imported first, in any process
    (an emulator sets its functions' environment after its own imports)."""
    global _imported
    modules = get_settings().workload_modules
    if modules != _imported:
        for module in filter(None, (name.strip() for name in modules.split(","))):
            importlib.import_module(module)
        _imported = modules


def names() -> list[str]:
    _import_named_modules()
    return sorted(_registered)


def named(name: str) -> Workload:
    _import_named_modules()
    try:
        return _registered[name]
    except KeyError:
        known = ", ".join(names()) or "none: import the workloads package first"
        raise KeyError(f"no workload {name!r} (registered: {known})") from None


def of(spec: JobSpec) -> Workload:
    return named(spec.workload)


def owner_of(field: str) -> str | None:
    """The workload whose own field this is, if any."""
    return next((w.name for w in _registered.values() if field in w.Fields.model_fields), None)
