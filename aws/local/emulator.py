"""Offline emulation of the SAM stack: `python -m aws.local.emulator` (or `make aws-local`).

- moto in server mode plays SQS, DynamoDB and S3 on 127.0.0.1:5000, resources created from
  template.yaml (the data bucket is `long-jobs-data`);
- an HTTP API on 127.0.0.1:3000 routes `POST /Prod/start` and `GET /Prod/jobs/{job_id}` to the
  real starter and status handlers as API Gateway proxy events, and answers 403 without the
  right `x-api-key`, as the deployed API does;
- an SQS event source polls the chunk queue and invokes the real worker handler with batches
  of up to BatchSize records, at most MaximumConcurrency at once, each in a worker process kept
  warm and reused like a Lambda container, and killed at the function's Timeout. It deletes
  the records that succeeded; failed ones reappear after their visibility timeout, and SQS's
  redrive policy (maxReceiveCount) moves them to the DLQ.

Every setting comes from aws/template.yaml and its parameters (`--parameter Key=Value`, as
`sam deploy --parameter-overrides`). The model parameters (OpenAiBaseUrl, OpenAiModel, LlmPrice*)
and the callback one (AllowPrivateCallbacks) default to the local settings (.env), so both paths
ask the same model and sign callbacks alike. The local OPENAI_API_KEY and CALLBACK_SECRET go
into moto's SSM as SecureStrings, and the template gets their names (OpenAiApiKeyParameter,
CallbackSecretParameter): the functions see names, never values, as deployed.
`--worker-timeout` and `--visibility-timeout` shorten time for tests and benchmarks; they
default to the template's.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import multiprocessing
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import boto3
import httpx
import uvicorn
from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse

from aws.local.lambda_events import api_event, lambda_context, sqs_event
from aws.local.resources import (
    EventSourceConfig,
    FunctionConfig,
    LocalStack,
    create_resources,
    function_config,
    load_template,
    sqs_event_source,
)

REPO = Path(__file__).resolve().parents[2]
STAGE = "Prod"
DEFAULT_API_KEY = "local-dev-key"
API_GATEWAY_MAX_BODY = 10 * 2**20  # API Gateway refuses larger payloads before any Lambda runs
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "local", "AWS_SECRET_ACCESS_KEY": "local",
               "AWS_DEFAULT_REGION": "us-east-1"}  # fmt: skip


class MotoServer:
    """aws.local.moto_server in a subprocess (see there why one call at a time)."""

    def __init__(self, port: int) -> None:
        self.port = port or _free_port()
        self.url = f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "aws.local.moto_server", "--port", str(self.port)], cwd=REPO
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"moto server exited ({self.proc.returncode}): is :{self.port} free?"
                )
            try:
                httpx.get(f"{self.url}/moto-api/", timeout=1)
                return
            except httpx.TransportError:
                time.sleep(0.1)
        raise RuntimeError(f"moto server did not answer on {self.url}")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)


def _serve_invocations(
    conn: Connection, code_dir: str, handler: str, environment: dict[str, str]
) -> None:
    """A worker process: import the handler once (cold start), then serve invocations."""
    os.environ.update(environment)
    # Like Lambda: the function's code first, then the layer (the repo root holds chunking/).
    sys.path[:0] = [code_dir, str(REPO)]
    module_name, function_name = handler.rsplit(".", 1)
    function = getattr(importlib.import_module(module_name), function_name)
    conn.send(("ready", None))
    while True:
        try:
            event, timeout_s = conn.recv()
        except EOFError:
            return
        try:
            conn.send(("ok", function(event, lambda_context(timeout_s))))
        except Exception as err:  # the invocation failed, as Lambda would report it
            conn.send(("error", f"{type(err).__name__}: {err}"))


class InvocationFailed(Exception):
    """The invocation timed out, crashed or raised: none of its records is deleted."""


INIT_TIMEOUT_S = 10  # Lambda's limit for a function's init phase, apart from its Timeout


class WorkerProcess:
    """One warm 'Lambda container' for a function.

    As on Lambda, the cold start (interpreter and imports) is its own phase with its own limit:
    it does not count against the invocation's Timeout.
    """

    def __init__(self, fn: FunctionConfig) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.conn, child = ctx.Pipe()
        self.process = ctx.Process(
            target=_serve_invocations,
            args=(child, str(fn.code_dir), fn.handler, fn.environment),
            daemon=True,
        )
        self.process.start()
        child.close()
        ready = self.conn.poll(INIT_TIMEOUT_S)
        try:
            if ready and self.conn.recv()[0] == "ready":
                return
        except EOFError:
            pass
        self.kill()
        raise InvocationFailed(f"init of {fn.logical_id} failed or took over {INIT_TIMEOUT_S}s")

    @property
    def pid(self) -> int | None:
        return self.process.pid

    def invoke(self, event: dict[str, Any], timeout_s: float) -> Any:
        self.conn.send((event, timeout_s))
        if not self.conn.poll(timeout_s):
            self.kill()
            raise InvocationFailed(f"Task timed out after {timeout_s:g} seconds")
        try:
            status, value = self.conn.recv()
        except (EOFError, ConnectionResetError) as err:
            self.kill()
            raise InvocationFailed(f"worker process {self.pid} died") from err
        if status == "error":
            raise InvocationFailed(value)
        return value

    def kill(self) -> None:
        if self.process.is_alive() and self.process.pid:
            os.kill(self.process.pid, signal.SIGKILL)
        self.process.join(timeout=5)


@dataclass
class PollerStats:
    invocations: int = 0
    records: int = 0
    failed_invocations: int = 0
    deleted: int = 0
    invocation_s: float = 0.0  # summed wall time of invocations, as Lambda would bill them
    max_in_flight: int = 0
    last_error: str | None = None
    in_flight: dict[int, int] = field(default_factory=dict)  # worker pid -> records


class SqsEventSourcePoller:
    """Lambda's SQS event source, for one queue and one function."""

    def __init__(
        self, sqs: Any, queue_url: str, fn: FunctionConfig, config: EventSourceConfig
    ) -> None:
        self.sqs, self.queue_url, self.fn, self.config = sqs, queue_url, fn, config
        self.queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])[
            "Attributes"
        ]["QueueArn"]
        self.stats = PollerStats()
        self._idle: list[WorkerProcess] = []
        self._slots = threading.Semaphore(config.max_concurrency)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._pool = ThreadPoolExecutor(config.max_concurrency, thread_name_prefix="invoke")
        self._thread = threading.Thread(target=self._run, daemon=True, name="sqs-poller")

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        self._pool.shutdown(wait=False, cancel_futures=True)
        with self._lock:
            for worker in self._idle:
                worker.kill()

    def _run(self) -> None:
        while not self._stop.is_set():
            if not self._slots.acquire(timeout=0.1):
                continue
            messages = self._receive_batch()
            if not messages:
                self._slots.release()
                self._stop.wait(0.05)
                continue
            self._pool.submit(self._invoke, messages)

    def _receive_batch(self) -> list[dict[str, Any]]:
        """Up to BatchSize messages, waiting at most MaximumBatchingWindowInSeconds to fill."""
        deadline = time.monotonic() + self.config.batching_window_s
        messages: list[dict[str, Any]] = []
        while len(messages) < self.config.batch_size and not self._stop.is_set():
            got = self.sqs.receive_message(
                QueueUrl=self.queue_url,
                MaxNumberOfMessages=min(10, self.config.batch_size - len(messages)),
                AttributeNames=["All"],
                MessageAttributeNames=["All"],
            ).get("Messages", [])
            messages += got
            if not messages or time.monotonic() >= deadline:
                break
            if not got:
                time.sleep(0.05)
        return messages

    def _invoke(self, messages: list[dict[str, Any]]) -> None:
        with self._lock:
            worker = self._idle.pop() if self._idle else None
        try:
            worker = worker or WorkerProcess(self.fn)
        except InvocationFailed as err:
            with self._lock:
                self.stats.failed_invocations += 1
                self.stats.last_error = str(err)
            self._slots.release()
            return
        pid = worker.pid or 0
        with self._lock:
            self.stats.invocations += 1
            self.stats.records += len(messages)
            self.stats.in_flight[pid] = len(messages)
            self.stats.max_in_flight = max(self.stats.max_in_flight, len(self.stats.in_flight))
        began = time.monotonic()
        try:
            response = worker.invoke(sqs_event(messages, self.queue_arn), self.fn.timeout_s)
        except InvocationFailed as err:
            # As on Lambda: a failed invocation deletes nothing; every record comes back.
            with self._lock:
                self.stats.failed_invocations += 1
                self.stats.last_error = str(err)
            if not worker.process.is_alive():
                worker = None
        else:
            failed = {f["itemIdentifier"] for f in response.get("batchItemFailures", [])}
            done = [m for m in messages if m["MessageId"] not in failed]
            for lo in range(0, len(done), 10):
                self.sqs.delete_message_batch(
                    QueueUrl=self.queue_url,
                    Entries=[{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]}
                             for i, m in enumerate(done[lo : lo + 10])],
                )  # fmt: skip
            with self._lock:
                self.stats.deleted += len(done)
        finally:
            with self._lock:
                self.stats.invocation_s += time.monotonic() - began
                self.stats.in_flight.pop(pid, None)
                if worker is not None:
                    self._idle.append(worker)
            self._slots.release()

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            stats = replace(self.stats, in_flight=dict(self.stats.in_flight))
            idle = [w.pid for w in self._idle]
        return {**stats.__dict__, "idle_workers": idle}


def api_app(
    starter: Callable[..., Any],
    status: Callable[..., Any],
    api_key: str,
    timeouts: tuple[float, float],
    pollers: list[SqsEventSourcePoller],
) -> FastAPI:
    """API Gateway's part: routes, the API key check, proxy events in and out."""
    app = FastAPI(title="Cloud path emulator", docs_url=None, redoc_url=None)

    async def call(
        handler: Callable[..., Any], timeout_s: float, request: Request, resource: str,
        path: str, path_parameters: dict[str, str] | None,
    ) -> Response:  # fmt: skip
        if request.headers.get("x-api-key") != api_key:
            return JSONResponse({"message": "Forbidden"}, status_code=403)
        if int(request.headers.get("content-length") or 0) > API_GATEWAY_MAX_BODY:
            return JSONResponse({"message": "Request Too Long"}, status_code=413)
        body = await request.body() or None
        event = api_event(
            request.method, path, body=body, resource=resource, path_parameters=path_parameters,
            api_key=api_key, stage=STAGE, domain=request.headers.get("host", "127.0.0.1"),
            proto="http",
        )  # fmt: skip
        result = await asyncio.to_thread(handler, event, lambda_context(timeout_s))
        return Response(
            content=result.get("body") or "",
            status_code=result["statusCode"],
            headers=result.get("headers") or {},
        )

    @app.post(f"/{STAGE}/start")
    async def start(request: Request) -> Response:
        return await call(starter, timeouts[0], request, "/start", "/start", None)

    @app.get(f"/{STAGE}/jobs/{{job_id}}")
    async def get_job(job_id: str, request: Request) -> Response:
        return await call(
            status, timeouts[1], request, "/jobs/{job_id}", f"/jobs/{job_id}", {"job_id": job_id}
        )

    @app.post(f"/{STAGE}/jobs/{{job_id}}/cancel")
    async def cancel_job(job_id: str, request: Request) -> Response:
        resource, path = "/jobs/{job_id}/cancel", f"/jobs/{job_id}/cancel"
        return await call(starter, timeouts[0], request, resource, path, {"job_id": job_id})

    @app.get("/_emulator")
    async def emulator_state() -> dict[str, Any]:
        """Not part of the stack: the event sources' counters and worker processes."""
        main, *others = pollers
        return {**main.snapshot(), "other_sources": [p.snapshot() for p in others]}

    return app


@dataclass
class Emulator:
    api_port: int = 3000
    moto_port: int = 5000
    api_key: str = DEFAULT_API_KEY
    parameters: dict[str, Any] = field(default_factory=dict)
    worker_timeout_s: float | None = None
    visibility_timeout_s: int | None = None

    def start(self) -> None:
        template = load_template()
        self.parameters = {**local_parameters(), **self.parameters}
        self.moto = MotoServer(self.moto_port)
        self.moto.start()
        os.environ.update({**CREDENTIALS, "AWS_ENDPOINT_URL": self.moto.url})
        put_local_secrets(boto3.client("ssm"), self.parameters)
        # From here the functions (in-process, or spawned from this process) get names only.
        os.environ.update(NO_PLAIN_SECRETS)
        self.stack: LocalStack = create_resources(
            boto3.client("dynamodb"), boto3.client("sqs"), overrides=self.parameters,
            template=template, visibility_timeout_s=self.visibility_timeout_s,
        )  # fmt: skip
        shared = {**CREDENTIALS, "AWS_ENDPOINT_URL": self.moto.url}

        def config(logical_id: str) -> FunctionConfig:
            return emulated_function(template, logical_id, self.stack, self.parameters, shared)

        worker = config("WorkerFunction")
        if self.worker_timeout_s:
            worker = replace(worker, timeout_s=self.worker_timeout_s)
        self.worker = worker
        self.event_source = sqs_event_source(template, "WorkerFunction", self.parameters)
        self.poller = SqsEventSourcePoller(
            boto3.client("sqs"), self.stack.queue_url, worker, self.event_source
        )
        # High-priority jobs' queue: the same function, its own event source and concurrency.
        high = sqs_event_source(template, "WorkerFunction", self.parameters, "HighPriorityChunks")
        self.high_poller = SqsEventSourcePoller(
            boto3.client("sqs"), self.stack.high_queue_url, worker, high
        )
        self.poller.start()
        self.high_poller.start()

        # The API's functions run in this process; their environment is the template's.
        starter, status = config("StarterFunction"), config("StatusFunction")
        os.environ.update({**starter.environment, **status.environment})
        import cloud
        from aws.starter.app import lambda_handler as starter_handler
        from aws.status.app import lambda_handler as status_handler
        from chunking.settings import get_settings

        get_settings.cache_clear()
        cloud.reset()
        app = api_app(starter_handler, status_handler, self.api_key,
                      (starter.timeout_s, status.timeout_s),
                      [self.poller, self.high_poller])  # fmt: skip
        self.api = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=self.api_port, log_level="warning")
        )
        self.api_thread = threading.Thread(target=self.api.run, daemon=True)
        self.api_thread.start()
        while not self.api.started:
            if not self.api_thread.is_alive():
                self.poller.stop()
                self.high_poller.stop()
                self.moto.stop()
                raise SystemExit(f"the emulator's API could not listen on :{self.api_port}")
            time.sleep(0.02)

    @property
    def start_url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}/{STAGE}/start"

    def stop(self) -> None:
        self.api.should_exit = True
        self.api_thread.join(timeout=10)
        self.poller.stop()
        self.high_poller.stop()
        self.moto.stop()


class EmulatorProcess:
    """`python -m aws.local.emulator` in a subprocess on free ports (tests and benchmarks)."""

    def __init__(self, *args: str, api_key: str = DEFAULT_API_KEY) -> None:
        self.api_key = api_key
        # A file, not a pipe: nobody reads a pipe while the emulator runs, and a full one
        # would block every process that logs to it.
        self.log = tempfile.NamedTemporaryFile(  # noqa: SIM115 - closed in stop()
            "w+", prefix="cloud-emulator-", suffix=".log"
        )
        self.api_port, self.moto_port = _free_port(), _free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "JOB_", "CHUNK_"))}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "aws.local.emulator", "--api-port", str(self.api_port),
             "--moto-port", str(self.moto_port), "--api-key", api_key, *args],
            env=env, cwd=REPO, stdout=self.log, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
        self.api = f"http://127.0.0.1:{self.api_port}"
        self.moto = f"http://127.0.0.1:{self.moto_port}"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and self.proc.poll() is None:
            try:
                httpx.get(f"{self.api}/_emulator", timeout=1)
                return
            except httpx.TransportError:
                time.sleep(0.1)
        output = (
            self.proc.stdout.read() if self.proc.stdout and self.proc.poll() is not None else ""
        )
        self.stop()
        raise RuntimeError(f"the emulator did not start: {output}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.log.close()

    def __enter__(self) -> EmulatorProcess:
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()


# Where the emulator keeps the local secrets in moto's SSM, as the README's deploy steps do.
LOCAL_SECRET_PARAMETERS = {
    "OpenAiApiKeyParameter": "/long-jobs/openai-api-key",
    "CallbackSecretParameter": "/long-jobs/callback-secret",
}
# Blank, and so unset for the settings: neither this process's environment nor .env may hand a
# function a plaintext secret that the deployed functions would not have.
NO_PLAIN_SECRETS = {"OPENAI_API_KEY": "", "CALLBACK_SECRET": ""}


def local_secrets() -> dict[str, str]:
    """The local settings' secrets, by the template parameter that names their SSM parameter."""
    from chunking.settings import get_settings

    settings = get_settings()
    values = {"OpenAiApiKeyParameter": settings.openai_api_key,
              "CallbackSecretParameter": settings.callback_secret}  # fmt: skip
    return {parameter: value for parameter, value in values.items() if value}


def local_parameters() -> dict[str, Any]:
    """The template's model and callback parameters as the local settings (.env) have them."""
    from chunking.settings import get_settings

    settings = get_settings()
    return {
        "OpenAiBaseUrl": settings.openai_base_url or "",
        "OpenAiModel": settings.openai_model,
        "LlmPricePromptPerMtok": settings.llm_price_prompt_per_mtok,
        "LlmPriceCompletionPerMtok": settings.llm_price_completion_per_mtok,
        "AllowPrivateCallbacks": str(settings.allow_private_callbacks).lower(),
        **{parameter: LOCAL_SECRET_PARAMETERS[parameter] for parameter in local_secrets()},
    }


def put_local_secrets(ssm: Any, parameters: dict[str, Any]) -> None:
    """Store the local secrets as SecureStrings under the names the template parameters give."""
    for parameter, value in local_secrets().items():
        if name := parameters.get(parameter):
            ssm.put_parameter(Name=name, Value=value, Type="SecureString", Overwrite=True)


def emulated_function(
    template: dict[str, Any], logical_id: str, stack: LocalStack, parameters: dict[str, Any],
    shared: dict[str, str],
) -> FunctionConfig:  # fmt: skip
    """A function as the emulator runs it: the template's environment, pointed at moto."""
    fn = function_config(template, logical_id, stack, parameters)
    return replace(fn, environment={**fn.environment, **shared, **NO_PLAIN_SECRETS})


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def parse_parameters(pairs: list[str]) -> dict[str, Any]:
    parameters = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep:
            raise SystemExit(f"--parameter takes Name=Value, got {pair!r}")
        parameters[name] = value
    return parameters


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--api-port", type=int, default=3000)
    parser.add_argument("--moto-port", type=int, default=5000)
    parser.add_argument("--api-key", default=os.environ.get("CLOUD_API_KEY") or DEFAULT_API_KEY)
    parser.add_argument(
        "--parameter", action="append", default=[], metavar="NAME=VALUE",
        help="a template parameter, e.g. WorkerConcurrency=8 (repeatable)",
    )  # fmt: skip
    parser.add_argument("--worker-timeout", type=float, help="seconds (default: the template's)")
    parser.add_argument("--visibility-timeout", type=int, help="seconds (default: the template's)")
    args = parser.parse_args()
    emulator = Emulator(
        api_port=args.api_port, moto_port=args.moto_port, api_key=args.api_key,
        parameters=parse_parameters(args.parameter), worker_timeout_s=args.worker_timeout,
        visibility_timeout_s=args.visibility_timeout,
    )  # fmt: skip
    emulator.start()
    source = emulator.event_source
    print(
        f"Cloud path emulator ready.\n"
        f"  API:        {emulator.start_url}  (x-api-key: {emulator.api_key})\n"
        f"  status:     http://127.0.0.1:{emulator.api_port}/{STAGE}/jobs/{{job_id}}\n"
        f"  SQS+DynamoDB+S3 (moto): {emulator.moto.url}  queue {emulator.stack.queue_url}\n"
        f"  data bucket: s3://{emulator.stack.bucket_name}  (llm inputs under inputs/)\n"
        f"  worker: BatchSize {source.batch_size}, MaximumConcurrency {source.max_concurrency},"
        f" Timeout {emulator.worker.timeout_s:g}s, maxReceiveCount "
        f"{emulator.stack.max_receive_count}",
        flush=True,
    )
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with contextlib.suppress(KeyboardInterrupt):
        stop.wait()
    emulator.stop()


if __name__ == "__main__":
    main()
