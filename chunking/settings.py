"""The service's settings, read from the environment and `.env`: one class per owner, so a
reader finds what each part reads, and one `Settings` of them all (`get_settings()`), so every
variable keeps its name and one `.env` (documented in `.env.example`) configures everything.

| class | read by |
|---|---|
| JobDefaults | the JobSpec, for what a job leaves out |
| InngestSettings | the local path's Inngest functions (`functions/`), its serve endpoint |
| ApiSettings | the local app's routes and guards (`main.py`, `guards.py`) |
| StoreSettings | the local app's job store (`stores/factory.py` through `functions/deps.py`) |
| CloudApiSettings | what calls the cloud path's API: the trigger function, the dashboard, tools |
| CloudStackSettings | the Lambda handlers and `cloud/` (set by `aws/template.yaml`) |
| RetrySettings | the runner and both paths' adapters: backoff, resends, continuations |
| CallbackSettings | completion callbacks, on both paths |
| ModelSettings | the llm workload (`workloads/llm/`) |
| WorkloadSettings | the workload registry (`chunking/workload.py`) |
"""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path
from typing import Self

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

# Inngest allows 1,000 steps per run; each poll of the cloud job costs two (poll + sleep).
MAX_CLOUD_POLLS = 400
# The job stores JOB_STORE_URL may name (stores/factory.py opens them).
STORE_SCHEMES = ("sqlite", "postgresql", "postgres", "dynamodb")


TENANT = r"[A-Za-z0-9_-]{1,64}"  # as JobSpec's tenant


class JobDefaults(BaseModel):
    """Defaults for a JobSpec that leaves these out."""

    total_items: int = Field(500, ge=1, le=10_000_000)
    chunk_size: int = Field(50, ge=1, le=100_000)
    item_delay_ms: int = Field(10, ge=0, le=60_000)
    # The spend cap (USD) of a job that calls a model and sets none, per tenant ("*": any
    # other tenant); none when neither is set.
    max_cost_usd_by_tenant: dict[str, float] = Field(default_factory=dict)
    # Times a job may be retried (POST /jobs/{id}/retry, or its chunks redriven from the DLQ).
    job_max_redrives: int = Field(5, ge=0, le=100)

    def max_cost_usd(self, tenant: str) -> float | None:
        return self.max_cost_usd_by_tenant.get(tenant, self.max_cost_usd_by_tenant.get("*"))

    @field_validator("max_cost_usd_by_tenant")
    @classmethod
    def _caps_are_positive(cls, value: dict[str, float]) -> dict[str, float]:
        if bad := {tenant: cap for tenant, cap in value.items() if not 0 < cap <= 1_000_000}:
            raise ValueError(f"a spend cap is 0 < USD <= 1,000,000: {bad}")
        return value


class InngestSettings(BaseModel):
    """The local path's Inngest functions and the serve endpoint they are called through."""

    inngest_app_id: str = "long-jobs"
    inngest_dev: str = "1"
    inngest_signing_key: str | None = None
    inngest_event_key: str | None = None
    # Where Inngest reaches this app (scheme://host[:port]) and the serve path: what a sync
    # registers. Never taken from request headers; required in production (INNGEST_DEV=0).
    inngest_serve_origin: str | None = None
    inngest_serve_path: str = "/api/inngest"
    # Behind a proxy that strips a path prefix (uvicorn --root-path /svc): the path Inngest
    # calls, which a sync registers instead of the serve path (e.g. /svc/api/inngest).
    inngest_public_path: str | None = None
    chunk_retries: int = Field(3, ge=0, le=20)
    chunk_concurrency: int = Field(10, ge=1, le=1_000)
    # At most this many of one tenant's chunks at once, so one big tenant cannot take them all.
    tenant_chunk_concurrency: int = Field(5, ge=1, le=1_000)
    bad_job_timeout_s: float = Field(5.0, gt=0)
    # What one process-chunk step may spend (its run ends after it): keep it under the request
    # timeout of wherever the app is hosted.
    inngest_step_budget_s: float = Field(240.0, gt=0, le=7_200)
    # Deliveries of a failed run's handler beyond the first (Inngest spaces them 15 s, 30 s,
    # 1 min, 2 min, 5 min … apart): the SDK's own on_failure gets none, so an outage of the
    # app lost the handler with the run.
    failure_retries: int = Field(9, ge=0, le=20)
    # The sweep of stalled jobs, an Inngest cron function: when it runs, how long a running
    # job may show no life (no attempt begun, no chunk settled) before its chunks that never
    # began, or whose run was lost, are sent again (at most CHUNK_MAX_RESENDS sweeps each, at
    # least this long apart, then recorded failed), and how many chunks one job's sweep
    # examines per run. Keep SWEEP_IDLE_S above the longest a healthy job may wait:
    # INNGEST_STEP_BUDGET_S, RETRY_BACKOFF_MAX_S, a model's Retry-After.
    sweep_cron: str = "* * * * *"
    sweep_idle_s: float = Field(900.0, ge=60, le=7 * 86_400)
    sweep_window: int = Field(1_000, ge=1, le=10_000)

    @field_validator("inngest_serve_origin")
    @classmethod
    def _origin_only(cls, value: str | None) -> str | None:
        if value and not re.fullmatch(r"https?://[^/?#\s]+", value.rstrip("/")):
            raise ValueError(f"{value!r} is not an origin: give scheme://host[:port], no path")
        return value.rstrip("/") if value else None

    @field_validator("inngest_serve_path", "inngest_public_path")
    @classmethod
    def _url_path(cls, value: str | None, info: ValidationInfo) -> str | None:
        if not value and info.field_name == "inngest_public_path":
            return None  # unset: the serve path is the public one
        if not value or not re.fullmatch(r"/[A-Za-z0-9._~/-]*", value):
            raise ValueError(f"{value!r} is not a URL path: give one like /api/inngest")
        return value

    @field_validator("sweep_cron")
    @classmethod
    def _cron(cls, value: str) -> str:
        fields = value.split()
        if fields and fields[0].startswith("TZ="):  # Inngest's optional time zone prefix
            fields = fields[1:]
        if len(fields) not in (5, 6):
            raise ValueError(f"{value!r} is not a cron schedule: give 5 fields, e.g. '* * * * *'")
        return value.strip()

    @model_validator(mode="after")
    def _production_is_pinned(self) -> Self:
        # In production the URL a sync registers must not come from a request's headers, and
        # no call may run unsigned: refuse to start without what that takes.
        if not self.inngest_dev_mode:
            missing = [
                name
                for name, value in (
                    ("INNGEST_SIGNING_KEY", self.inngest_signing_key),
                    ("INNGEST_SERVE_ORIGIN", self.inngest_serve_origin),
                )
                if not value
            ]
            if missing:
                raise ValueError(
                    f"INNGEST_DEV=0 (production) needs {' and '.join(missing)}: the signing key "
                    "from your Inngest environment, and the public origin Inngest reaches this "
                    "app at (e.g. https://jobs.example.com)"
                )
        return self

    @property
    def inngest_dev_mode(self) -> bool:
        """INNGEST_DEV is "1"/"true", "0"/"false", or the Dev Server's URL (dev mode)."""
        return self.inngest_dev.strip().lower() not in ("", "0", "false")

    @property
    def inngest_dev_url(self) -> str | None:
        value = self.inngest_dev.strip()
        return value if value.startswith(("http://", "https://")) else None


class ApiSettings(BaseModel):
    """The local /jobs API: the key every /jobs route requires in `x-api-key` (unset: open,
    say so), the Host header values the app answers to (comma-separated; "*" for any), and how
    often GET /jobs/{id}/events looks for news in the job store."""

    api_key: str | None = None
    # Tenant keys: each key's SHA-256 (hex) → its tenant ("*": an operator, every tenant), as
    # `python -m tools.tenant_key TENANT` prints them. Set, they replace API_KEY.
    api_keys: dict[str, str] = Field(default_factory=dict)
    # The cloud API's tenant keys: each API Gateway key's id → its tenant ("*": an operator).
    api_key_tenants: dict[str, str] = Field(default_factory=dict)
    allowed_hosts: str = "localhost,127.0.0.1"
    sse_poll_interval_s: float = Field(0.5, gt=0, le=60)

    @field_validator("api_keys")
    @classmethod
    def _digests_of_keys(cls, value: dict[str, str]) -> dict[str, str]:
        if bad := [digest for digest in value if not re.fullmatch(r"[0-9a-f]{64}", digest)]:
            raise ValueError(
                f"API_KEYS maps each key's SHA-256 (64 hex digits), not the key: {bad[:3]} "
                "(python -m tools.tenant_key TENANT prints a key and its entry)"
            )
        return value

    @field_validator("api_keys", "api_key_tenants")
    @classmethod
    def _tenants_are_names(cls, value: dict[str, str]) -> dict[str, str]:
        if bad := [t for t in value.values() if t != "*" and not re.fullmatch(TENANT, t)]:
            raise ValueError(f"a tenant is [A-Za-z0-9_-]{{1,64}} or '*': {bad[:3]}")
        return value


class StoreSettings(BaseModel):
    """The local path's job store: sqlite:///<file> (embedded, one machine), postgresql://…
    (shared by several workers or replicas), or dynamodb://<table> (an app running on AWS);
    and the connections a Postgres store keeps per process."""

    job_store_url: str = "sqlite:///data/jobs.sqlite3"
    job_store_pool_size: int = Field(10, ge=1, le=200)

    @field_validator("job_store_url")
    @classmethod
    def _known_store(cls, value: str) -> str:
        scheme = value.split("://", 1)[0] if "://" in value else ""
        if scheme not in STORE_SCHEMES or not value.split("://", 1)[1].strip("/"):
            raise ValueError(
                f"{value!r} names no job store: give sqlite:///<file>, "
                "postgresql://user:password@host:port/db or dynamodb://<table>"
            )
        return value


class CloudApiSettings(BaseModel):
    """The cloud path's API as the local side calls it: demo/trigger_aws_sam_job, the
    dashboard's /cloud routes, tools/compare.py. The defaults point at the offline emulation
    (make aws-local)."""

    aws_start_url: str | None = "http://127.0.0.1:3000/Prod/start"
    cloud_api_key: str | None = "local-dev-key"
    aws_request_timeout_s: float = Field(10.0, gt=0, le=120)
    aws_poll_interval_s: float = Field(5.0, gt=0)
    aws_poll_timeout_s: float = Field(900.0, gt=0)
    # The dashboard's /cloud proxy: one deadline for a whole call (connect, answer, body), and
    # the most of an answer it reads, decoded. 6 MiB: a Lambda behind API Gateway answers at
    # most 6 MB, so a larger answer is not the cloud API's.
    cloud_proxy_deadline_s: float = Field(15.0, gt=0, le=120)
    cloud_proxy_max_mib: int = Field(6, ge=1, le=64)

    @model_validator(mode="after")
    def _polls_fit_in_one_run(self) -> Self:
        polls = self.aws_poll_timeout_s / self.aws_poll_interval_s
        if polls > MAX_CLOUD_POLLS:
            raise ValueError(
                f"AWS_POLL_TIMEOUT_S / AWS_POLL_INTERVAL_S = {polls:.0f} polls; at most "
                f"{MAX_CLOUD_POLLS} fit in one Inngest run: raise AWS_POLL_INTERVAL_S"
            )
        return self


class CloudStackSettings(BaseModel):
    """The cloud path's resources, set by template.yaml in Lambda (by the offline emulation
    locally)."""

    job_table: str | None = None
    chunk_queue_url: str | None = None
    high_priority_queue_url: str | None = None
    chunk_dlq_url: str | None = None
    # The stack's data bucket (llm inputs and outputs): where POST /inputs sends an upload.
    data_bucket: str | None = None
    max_receive_count: int = Field(3, ge=1, le=1_000)
    # The worker's event sources' MaximumBatchingWindowInSeconds: a retried message is hidden
    # that much less than its backoff, as the event source holds it that long before invoking.
    batching_window_s: float = Field(0.0, ge=0, le=300)


class RetrySettings(BaseModel):
    """How a chunk is tried again, the same on both paths."""

    # The wait before a retry (of a chunk, a callback, a plan or a finish): BASE x
    # FACTOR^(n - 1) seconds after the n-th failure in a row, at most MAX.
    retry_backoff_base_s: float = Field(2.0, ge=0, le=3_600)
    retry_backoff_factor: float = Field(2.0, ge=1, le=10)
    retry_backoff_max_s: float = Field(300.0, ge=0, le=43_200)  # SQS allows at most 12 h
    # Fresh runs a chunk gets when every delivery of its run failed before it began (the app
    # was unreachable): an outage must not spend its retries.
    chunk_max_resends: int = Field(10, ge=0, le=1_000)
    # Runs a chunk may go on in after stopping to respect its budget, none spending a retry
    # (each must have answered something, so a chunk never continues more than its items).
    chunk_max_continuations: int = Field(50, ge=0, le=10_000)


class CallbackSettings(BaseModel):
    """Completion callbacks (JobSpec callback_url): the HMAC-SHA256 key they are signed with
    (or, in the cloud, the name of the SSM SecureString holding it), whether private or
    loopback targets are allowed, and each delivery's timeout."""

    callback_secret: str | None = None
    callback_secret_parameter: str | None = None
    allow_private_callbacks: bool = False
    callback_timeout_s: float = Field(10.0, gt=0, le=120)


class RateLimit(BaseModel):
    """A model's limits: requests and tokens per minute (left out: not limited)."""

    model_config = ConfigDict(extra="forbid")

    rpm: int | None = Field(None, ge=1)
    tpm: int | None = Field(None, ge=1)


DEFAULT_BATCH_DISCOUNT = 0.5  # OpenAI's and Anthropic's Batch APIs charge half


class ModelSettings(BaseModel):
    """The model behind the llm workload: OpenAI, or any OpenAI-compatible server."""

    openai_api_key: str | None = None
    openai_base_url: str | None = None
    openai_model: str = "gpt-4o-mini"
    # Cloud path: the name of the SSM SecureString holding the model's API key, read at run
    # time (Powertools Parameters, cached) instead of OPENAI_API_KEY, which is then unset.
    openai_api_key_parameter: str | None = None
    # USD per million tokens, for the estimated cost in the status JSON.
    llm_price_prompt_per_mtok: float = Field(0.15, ge=0)
    llm_price_completion_per_mtok: float = Field(0.60, ge=0)
    # Longest any one model call may take; a call also never outlives what its run has left.
    llm_call_timeout_s: float = Field(60.0, gt=0, le=900)
    # The only folder (and below) a local llm input_uri may name: the API reads no other file.
    # A folder of its own (created at start), so the app's own files (.env, the job database)
    # are never inputs; names starting with "." are refused in it all the same.
    llm_input_root: Path = Path("data/inputs")
    # Largest llm input (bytes), refused from its size. A submission only stats the file; its
    # lines are read by the job's plan (resumable, each unit within its budget) and each chunk
    # reads only its own bytes, so this bounds how long a plan may index, not a request: 2 GiB
    # takes the README's 1,000,000-line (171 MB) scale input with room to spare.
    llm_input_max_bytes: int = Field(2 * 2**30, ge=1)
    # Where the llm workload writes its outputs: a local folder or an s3:// prefix.
    llm_output_uri: str = "data/outputs"
    # The provider's rate limits, per model ("*": any other), e.g.
    # {"gpt-4o-mini": {"rpm": 5000, "tpm": 4000000}}: every process of a path shares one budget
    # per model in the job store. Unset: the limits the provider announces in its
    # x-ratelimit-* headers, or, with none, a rate found by probing.
    llm_rate_limits: dict[str, RateLimit] = Field(default_factory=dict)
    # Items of a chunk asked at once (the shared budget paces them).
    llm_item_concurrency: int = Field(16, ge=1, le=1_000)
    # At most this much of the rate is sent at once (keep it within the provider's own burst).
    llm_rate_burst_s: float = Field(0.5, gt=0, le=60)
    # A model that answers nothing but 429s for this long fails the chunk (it never lifts).
    llm_rate_limit_give_up_s: float = Field(1_800.0, gt=0)
    # Batch mode (the provider's Batch API, at its discount): a chunk's batch is polled this
    # often, from the first to the longest wait (each wait 1.5 times the last), a delayed
    # message or a durable sleep apart: nothing is held meanwhile. SQS delays at most 900 s.
    llm_batch_poll_min_s: float = Field(30.0, ge=0, le=900)
    llm_batch_poll_max_s: float = Field(600.0, gt=0, le=900)
    # Requests the provider did not finish (expired) are sent again in a new batch this many
    # times at most; then they are those items' failures.
    llm_batch_max_resubmits: int = Field(2, ge=0, le=10)
    # A chunk whose batch has not ended this long after it was first submitted fails (the
    # provider's window is 24 h; a refusal for its queue limit waits and tries again).
    llm_batch_give_up_s: float = Field(3 * 86_400.0, gt=0)
    # The provider's cap per batch: its requests and its input file's bytes.
    llm_batch_max_requests: int = Field(50_000, ge=1)
    llm_batch_max_file_bytes: int = Field(200 * 2**20, ge=1)
    # What batch mode saves per model ("*": any other), as a fraction of the price: 0.5 = half
    # price, OpenAI's and Anthropic's batch discount (the default for every model).
    llm_batch_discounts: dict[str, float] = Field(default_factory=dict)

    def llm_rate_limit(self, model: str) -> RateLimit:
        """The configured limits of `model`, else of "*", else none."""
        return self.llm_rate_limits.get(model) or self.llm_rate_limits.get("*") or RateLimit()

    @property
    def llm_prices(self) -> tuple[float, float]:
        return (self.llm_price_prompt_per_mtok, self.llm_price_completion_per_mtok)

    def llm_batch_discount(self, model: str) -> float:
        """The share of the price batch mode saves on `model` (else "*", else 0.5)."""
        found = self.llm_batch_discounts.get(model, self.llm_batch_discounts.get("*"))
        return DEFAULT_BATCH_DISCOUNT if found is None else found

    @field_validator("llm_batch_discounts")
    @classmethod
    def _discounts_are_fractions(cls, value: dict[str, float]) -> dict[str, float]:
        if bad := {model: d for model, d in value.items() if not 0 <= d < 1}:
            raise ValueError(f"a discount is a fraction of the price, 0 <= d < 1: {bad}")
        return value


class WorkloadSettings(BaseModel):
    """More workloads: modules (comma-separated, importable, e.g. mycompany.workloads.ocr)
    that register one each when imported, beside simulate and llm."""

    workload_modules: str = ""


class Settings(
    JobDefaults,
    InngestSettings,
    ApiSettings,
    StoreSettings,
    CloudApiSettings,
    CloudStackSettings,
    RetrySettings,
    CallbackSettings,
    ModelSettings,
    WorkloadSettings,
    BaseSettings,
):
    """Every setting, from the environment and `.env` (each documented in `.env.example`)."""

    model_config = SettingsConfigDict(env_file=".env", extra="ignore")

    @model_validator(mode="after")
    def _sweep_waits_for_healthy_jobs(self) -> Self:
        # A job waiting out a retry's backoff, or a chunk's whole step, is not stalled.
        longest = max(self.inngest_step_budget_s, self.retry_backoff_max_s)
        if self.sweep_idle_s <= longest:
            raise ValueError(
                f"SWEEP_IDLE_S={self.sweep_idle_s:g} must exceed INNGEST_STEP_BUDGET_S and "
                f"RETRY_BACKOFF_MAX_S ({longest:g} s): a healthy job waits that long"
            )
        if self.sweep_idle_s <= self.llm_batch_poll_max_s:
            raise ValueError(
                f"SWEEP_IDLE_S={self.sweep_idle_s:g} must exceed LLM_BATCH_POLL_MAX_S "
                f"({self.llm_batch_poll_max_s:g} s): a batch job polls no more often than that"
            )
        if self.llm_batch_poll_min_s > self.llm_batch_poll_max_s:
            raise ValueError("LLM_BATCH_POLL_MIN_S must not exceed LLM_BATCH_POLL_MAX_S")
        return self


@lru_cache
def get_settings() -> Settings:
    return Settings()
