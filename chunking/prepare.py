"""Complete a JobSpec from what it points at, before a job is recorded (chunking.lifecycle).

A callback target is checked here; the rest is the job's workload's own `prepare` (the llm
workload checks and counts its input). Problems are raised as a pydantic ValidationError naming
the field (`spec_error`), so every entrypoint reports them exactly as it reports a malformed
body; an input on an S3 that does not answer raises InputUnavailableError (not the caller's).
"""

from __future__ import annotations

from pydantic import ValidationError
from pydantic_core import InitErrorDetails

from chunking import secrets, workload
from chunking.callbacks import CallbackTargetError, check_target
from chunking.settings import get_settings
from chunking.spec import JobSpec
from chunking.status import JobPath


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


def prepare_spec(spec: JobSpec, path: JobPath) -> JobSpec:
    """The spec to record; raises ValidationError when it cannot run. Blocking I/O."""
    if spec.callback_url is not None:
        check_callback(spec.callback_url)
    default_cap = get_settings().max_cost_usd(spec.tenant)
    if spec.max_cost_usd is None and default_cap is not None and workload.of(spec).reports_usage:
        spec = spec.model_copy(update={"max_cost_usd": default_cap})  # the tenant's default
    return workload.of(spec).prepare(spec, path)
