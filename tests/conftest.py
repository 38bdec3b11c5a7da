"""Shared fixtures: isolated settings and job store per test, the Inngest API stand-in."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

import workloads  # noqa: F401 - registers the workloads with the core, as every entrypoint does
from chunking.settings import Settings
from tests.callback_receiver import CallbackReceiver
from tests.executor import StandInExecutor, serving
from tests.llm_server import FakeModelServer
from tests.postgres_server import PostgresServer
from tests.support import FakeInngestApi, ServerThread

# A developer's own .env must not change what the tests see.
Settings.model_config["env_file"] = None

# The app's Inngest client is built at import time from settings, so the stand-in must be
# listening, and the environment set, before any test imports `main` or `functions`.
FAKE_INNGEST = FakeInngestApi()
FAKE_INNGEST_SERVER = ServerThread(FAKE_INNGEST.app).start()
os.environ.update(
    {
        "INNGEST_DEV": FAKE_INNGEST_SERVER.url,
        "ITEM_DELAY_MS": "0",
        "TOTAL_ITEMS": "500",
        "CHUNK_SIZE": "50",
        "CHUNK_RETRIES": "3",
        "CHUNK_CONCURRENCY": "10",
    }
)
for _var in ("INNGEST_SIGNING_KEY", "INNGEST_EVENT_KEY", "AWS_START_URL", "CLOUD_API_KEY"):
    os.environ.pop(_var, None)


# One event loop for the SDK's in-process executor across the whole session: its HTTP client
# keeps pooled connections bound to the loop that opened them, as in the app (one loop).
SESSION_LOOP = asyncio.new_event_loop()


@pytest.fixture(autouse=True)
def session_loop() -> None:
    asyncio.set_event_loop(SESSION_LOOP)


@pytest.fixture(autouse=True)
def isolated_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Each test gets its own SQLite file and fresh settings."""
    from chunking.runner import forget_jobs
    from chunking.settings import get_settings
    from functions.deps import get_store

    forget_jobs()
    db = tmp_path / "jobs.sqlite3"
    monkeypatch.setenv("JOB_STORE_URL", f"sqlite:///{db}")
    monkeypatch.setenv("LLM_OUTPUT_URI", str(tmp_path / "outputs"))
    monkeypatch.setenv("LLM_INPUT_ROOT", str(tmp_path))
    get_settings.cache_clear()
    get_store.cache_clear()
    yield db
    get_settings.cache_clear()
    get_store.cache_clear()


MODEL_RETRY_AFTER_S = 6  # what the test model server's 429s ask for


@pytest.fixture(scope="session")
def model_server() -> Iterator[tuple[FakeModelServer, str]]:
    fake = FakeModelServer(retry_after=str(MODEL_RETRY_AFTER_S), hang_s=30)
    server = ServerThread(fake.app).start()
    yield fake, f"{server.url}/v1"
    server.stop()


@pytest.fixture
def model(
    model_server: tuple[FakeModelServer, str], monkeypatch: pytest.MonkeyPatch
) -> FakeModelServer:
    """The OpenAI-compatible test server as the configured model, its call counts cleared."""
    from chunking.settings import get_settings

    fake, url = model_server
    monkeypatch.setenv("OPENAI_BASE_URL", url)
    get_settings.cache_clear()
    fake.calls.clear()
    fake.batch.asked.clear()
    # Its Batch API as it starts, whatever an earlier test set (each batch keeps its own).
    for knob, value in {"turnaround_s": 1.0, "cancel_s": 0.5, "enqueued_token_limit": None,
                        "max_requests_per_batch": 50_000}.items():  # fmt: skip
        monkeypatch.setattr(fake.batch, knob, value)
    return fake


CALLBACK_SECRET = "test-callback-secret"


@pytest.fixture
def receiver(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[CallbackReceiver, str]]:
    from chunking.settings import get_settings

    monkeypatch.setenv("CALLBACK_SECRET", CALLBACK_SECRET)
    monkeypatch.setenv("ALLOW_PRIVATE_CALLBACKS", "1")  # the receiver listens on loopback
    get_settings.cache_clear()
    hook = CallbackReceiver()
    server = ServerThread(hook.app).start()
    yield hook, f"{server.url}/hook"
    server.stop()


@pytest.fixture
def api(fake_inngest: FakeInngestApi) -> Iterator[httpx.Client]:
    """The app served over HTTP on a free port, its events going to the Inngest stand-in."""
    from main import app

    server = ServerThread(app).start()
    with httpx.Client(base_url=server.url, timeout=30) as http:
        yield http
    server.stop()


@pytest.fixture
def executor(api: httpx.Client, fake_inngest: FakeInngestApi) -> Iterator[StandInExecutor]:
    """The stand-in Inngest executor running the app's functions (tests/executor.py). A module
    that needs something set first (a model, tenant keys, a workload) overrides this fixture,
    asking for that and then for this one."""
    with serving(api, fake_inngest) as running:
        yield running


@pytest.fixture
def fake_inngest() -> Iterator[FakeInngestApi]:
    FAKE_INNGEST.reset()
    yield FAKE_INNGEST
    FAKE_INNGEST.reset()


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "POWERTOOLS_SERVICE_NAME": "long-jobs-test",
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)


@pytest.fixture
def atomic_moto(monkeypatch: pytest.MonkeyPatch) -> None:
    """One AWS call at a time (see tests/aws/atomic_calls.py)."""
    from botocore.client import BaseClient

    from tests.aws.atomic_calls import one_at_a_time

    real_call = getattr(BaseClient, "_make_api_call")  # noqa: B009 - private, typed away
    monkeypatch.setattr(BaseClient, "_make_api_call", one_at_a_time(real_call))


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """One real Postgres server for the session (tests/postgres_server.py)."""
    server = PostgresServer().start()
    yield server
    server.stop()


@pytest.fixture
def stride_workload(monkeypatch: pytest.MonkeyPatch) -> None:
    """tests/plugins/stride.py's workload registered in this process, for one test only, and
    the app's API schema built again to publish it."""
    import importlib

    from chunking import workload
    from main import app

    monkeypatch.setattr(workload, "_registered", dict(workload._registered))
    plugin = importlib.import_module("tests.plugins.stride")
    workload.register(plugin.Stride())  # the import registers it only the first time
    monkeypatch.setattr(app, "openapi_schema", None)  # built once per app: maybe without it
