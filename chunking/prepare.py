"""Complete a JobSpec from what it points at, before a job is recorded: the entrypoints' step.

For the llm workload the input is read once, whole (at most LLM_INPUT_MAX_BYTES; a local one
only under LLM_INPUT_ROOT, see workloads.llm.input): every line is checked (a bad one is refused
with its line number), the items are counted (`total_items`), and the model endpoint must be
configured. Problems are raised as a pydantic ValidationError naming the field, so every
entrypoint reports them exactly as it reports a malformed body; an input on an S3 that does not
answer raises InputUnavailableError (not the caller's fault).
"""

from __future__ import annotations

from pydantic import ValidationError
from pydantic_core import InitErrorDetails

from chunking import secrets
from chunking.callbacks import CallbackTargetError, check_target
from chunking.settings import get_settings
from chunking.spec import JobSpec
from chunking.status import Path
from workloads.llm import blobs
from workloads.llm.client import missing_model_endpoint
from workloads.llm.input import InputError, validate_input


def check_callback(url: str) -> None:
    settings = get_settings()
    if not secrets.callbacks_configured():  # the starter may not read it: only its name
        raise spec_error("callback_url", "CALLBACK_SECRET is not set: callbacks are signed", url)
    try:
        check_target(url, settings.allow_private_callbacks)
    except CallbackTargetError as err:
        raise spec_error("callback_url", str(err), url) from err


def spec_error(field: str, message: str, value: object) -> ValidationError:
    detail = InitErrorDetails(
        type="value_error", loc=(field,), input=value, ctx={"error": ValueError(message)}
    )
    return ValidationError.from_exception_data("JobSpec", [detail])


def prepare_spec(spec: JobSpec, path: Path) -> JobSpec:
    """The spec to record; raises ValidationError when it cannot run. Blocking I/O."""
    if spec.callback_url is not None:
        check_callback(spec.callback_url)
    if spec.workload != "llm" or spec.input_uri is None:
        return spec
    uri = spec.input_uri
    if path == "cloud" and not blobs.is_s3(uri):
        message = "the cloud path reads its input from S3: upload the file, pass s3://bucket/key"
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
