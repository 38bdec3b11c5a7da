"""The llm workload: each item a prompt to an OpenAI-compatible model, outputs merged in order.

`Llm` is its Workload: `prepare` checks and counts the input before a job is recorded (a bad
line refused with its number); a chunk answers its own lines (`workload.run_llm_chunk`), leaves
its output file behind, and the finished job its merged output (`outputs`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import ClassVar

from chunking.planning import Chunk
from chunking.prepare import spec_error
from chunking.spec import JobSpec
from chunking.status import JobRecord, Path
from chunking.store import JobStore
from chunking.workload import ChunkResult, Workload
from workloads.llm import blobs
from workloads.llm.client import missing_model_endpoint
from workloads.llm.input import InputError, validate_input
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

    def prepare(self, spec: JobSpec, path: Path) -> JobSpec:
        """Check every line of the input and count its items (`total_items`)."""
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
            count = validate_input(uri, spec.prompt_template)
        except InputError as err:
            raise spec_error("input_uri", str(err), uri) from err
        if "total_items" in spec.model_fields_set and spec.total_items != count:
            message = (
                f"{spec.total_items} given, but {uri} has {count} items: leave total_items out, "
                "it is counted from the input"
            )
            raise spec_error("total_items", message, spec.total_items)
        return JobSpec.model_validate({**spec.model_dump(), "total_items": count})

    async def run_chunk(
        self, store: JobStore, job: JobRecord, chunk: Chunk, attempt: int, budget_s: float | None
    ) -> ChunkResult:
        # It stops itself in time (keeping its answers), leaving room to settle; with no
        # budget (the caller's platform sets none) only each call's own timeout bounds it.
        budget = budget_s if budget_s is not None else math.inf
        margin = min(SETTLE_MARGIN_S, budget * 0.1)
        result = await run_llm_chunk(store, job.job_id, job.spec, chunk, budget_s=budget - margin)
        return ChunkResult(items_processed=result.items_processed)

    def before_settle(self, store: JobStore, job: JobRecord, chunk_index: int) -> None:
        write_chunk_output(store, job.job_id, chunk_index)

    def after_job_finished(self, store: JobStore, job: JobRecord) -> None:
        if job.output_uri is None:
            store.set_output_uri(job.job_id, merge_outputs(job.job_id, job.total_chunks))
