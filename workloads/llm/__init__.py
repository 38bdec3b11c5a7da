"""The llm workload: each item a prompt to an OpenAI-compatible model, outputs merged in order.

`Llm` is its Workload: `prepare` checks the input in constant time before a job is recorded
(the location, the size, and the lines of an input small enough to read at once); `plan`, in
the job's first durable unit, validates every line and indexes where each chunk's lines start
(`index`, resumable across budgets: a bad line fails the job with its number); a chunk reads
only its own bytes and answers them (`workload.run_llm_chunk`), leaves its output file behind,
and the job's finishing unit merges them (`outputs`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import ClassVar

from chunking.planning import Chunk
from chunking.prepare import spec_error
from chunking.settings import get_settings
from chunking.spec import JobSpec
from chunking.status import JobRecord, Path
from chunking.store import JobStore
from chunking.workload import ChunkResult, ChunkUsage, PlanError, Planned, PlanPaused, Workload
from workloads.llm import blobs
from workloads.llm.client import missing_model_endpoint
from workloads.llm.index import Indexed, build_index, index_uri
from workloads.llm.input import FULL_CHECK_BYTES, InputError, check_input
from workloads.llm.outputs import merge_outputs, write_chunk_output
from workloads.llm.workload import run_llm_chunk

SETTLE_MARGIN_S = 5.0  # of an attempt's budget, kept for writing its outputs and outcome


class Llm(Workload):
    name = "llm"
    fields: ClassVar[frozenset[str]] = frozenset(
        {"input_uri", "prompt_template", "model", "max_tokens"}
    )
    required: ClassVar[Mapping[str, str]] = {
        "input_uri": "the llm workload needs an input_uri (a JSONL file, one item a line)"
    }
    produces_output = True
    reports_usage = True

    def prepare(self, spec: JobSpec, path: Path) -> JobSpec:
        """Check the input in constant time: where it is, its size, and every line only of an
        input of at most FULL_CHECK_BYTES (a few ms of reading: a demo's bad line is refused
        at once); a larger one is validated and counted by `plan`."""
        uri = spec.input_uri
        assert uri is not None  # required by the spec for this workload
        if path == "cloud" and not blobs.is_s3(uri):
            message = (
                "the cloud path reads its input from S3: upload the file, pass s3://bucket/key"
            )
            raise spec_error("input_uri", message, uri)
        if problem := missing_model_endpoint():
            raise spec_error("workload", f"no model to call: {problem}", spec.workload)
        try:
            # Where a local input may be, and how much is read, is checked as it is read.
            count = check_input(uri, spec.prompt_template, full_check_bytes=FULL_CHECK_BYTES)
        except InputError as err:
            raise spec_error("input_uri", str(err), uri) from err
        if "total_items" in spec.model_fields_set and spec.total_items != count:
            # Counted from the input: one given must agree with it, so it is checked only
            # where the count is known now (what `plan` reads, the caller said nothing about).
            if count is None:
                message = (
                    f"{spec.total_items} given, but an input over {FULL_CHECK_BYTES} bytes is "
                    "counted when the job starts, not here: leave total_items out"
                )
            else:
                message = (
                    f"{spec.total_items} given, but {spec.input_uri} has {count} items: leave "
                    "total_items out, it is counted from the input"
                )
            raise spec_error("total_items", message, spec.total_items)
        return spec

    def known_items(self, spec: JobSpec) -> int | None:
        return None  # counted from the input, by `plan`

    def plan(
        self, job: JobRecord, resume: Mapping[str, int] | None, deadline: float | None
    ) -> Planned | PlanPaused:
        spec = job.spec
        assert spec.input_uri is not None  # required by the spec for this workload
        settings = get_settings()
        try:
            step = build_index(
                spec.input_uri, spec.prompt_template, spec.chunk_size,
                index_uri(settings.llm_output_uri, job.job_id),
                resume=resume, deadline=deadline, max_bytes=settings.llm_input_max_bytes,
            )  # fmt: skip
        except InputError as err:
            raise PlanError(f"input_uri: {err}") from err
        if not isinstance(step, Indexed):
            return PlanPaused(step.state)
        return Planned(step.total_items)

    async def run_chunk(
        self, store: JobStore, job: JobRecord, chunk: Chunk, attempt: int, budget_s: float | None
    ) -> ChunkResult:
        # It stops itself in time (keeping its answers), leaving room to settle; with no
        # budget (the caller's platform sets none) only each call's own timeout bounds it.
        budget = budget_s if budget_s is not None else math.inf
        margin = min(SETTLE_MARGIN_S, budget * 0.1)
        result = await run_llm_chunk(store, job.job_id, job.spec, chunk, budget_s=budget - margin)
        return ChunkResult(items_processed=result.items_processed)

    def before_settle(self, store: JobStore, job: JobRecord, chunk_index: int) -> ChunkUsage:
        results = write_chunk_output(store, job.job_id, chunk_index)
        return ChunkUsage(
            prompt_tokens=sum(r.prompt_tokens for r in results),
            completion_tokens=sum(r.completion_tokens for r in results),
            items_failed=sum(r.error is not None for r in results),
        )

    def after_job_finished(self, store: JobStore, job: JobRecord) -> None:
        if job.output_uri is None:
            store.set_output_uri(job.job_id, merge_outputs(job.job_id, job.total_chunks))
