"""Offline emulation of the SAM stack: `python -m aws.local.emulator` (or `make aws-local`).

- moto in server mode plays SQS, DynamoDB and S3 on 127.0.0.1:5000, with the queues, table and
  bucket of template.yaml (names: aws/local/resources.py; the data bucket is `long-jobs-data`);
- an HTTP API on 127.0.0.1:3000 serves the template's API routes (`POST /Prod/start`,
  `GET /Prod/jobs/{job_id}`, `POST /Prod/jobs/{job_id}/cancel`) with the real handlers they
  integrate, as API Gateway proxy events, and answers 403 without the right `x-api-key`, as
  the deployed API does (aws/local/api_gateway.py);
- one SQS event source per event source mapping of the template polls its queue and invokes
  the real worker handler with batches of up to BatchSize records, scaled up as Lambda's
  pollers are (5 batches at once, then 300 more a minute while messages remain) to at most
  MaximumConcurrency, each in a worker process kept warm and reused like a Lambda container,
  and killed at the function's Timeout (aws/local/sqs_event_source.py, worker_process.py).
  Cold starts share this machine's cores: one per core runs at once, and an init's 10 s limit
  begins when it runs. It deletes the records that succeeded; failed ones reappear after their
  visibility timeout, and SQS's redrive policy (maxReceiveCount) moves them to the DLQ.

Every setting comes from aws/template.yaml as SAM's translator makes it CloudFormation, with
its parameters (`--parameter Key=Value`, as `sam deploy --parameter-overrides`): see
aws/local/template.py. The model parameters (OpenAiBaseUrl, OpenAiModel, LlmPrice*) and the
callback one (AllowPrivateCallbacks) default to the local settings (.env), so both paths ask
the same model and sign callbacks alike. The local OPENAI_API_KEY and CALLBACK_SECRET go into
moto's SSM as SecureStrings, and the template gets their names (OpenAiApiKeyParameter,
CallbackSecretParameter): the functions see names, never values, as deployed
(aws/local/local_secrets.py).
`--worker-timeout` and `--visibility-timeout` shorten time for tests and benchmarks; they
default to the template's.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field, replace
from typing import Any

import boto3
import httpx
import uvicorn
from fastapi import FastAPI

from aws.local.api_gateway import Integration, api_app
from aws.local.lambda_events import Handler
from aws.local.local_secrets import NO_PLAIN_SECRETS, local_parameters, put_local_secrets
from aws.local.moto_server import MotoServer, free_port
from aws.local.resources import LocalStack, create_resources
from aws.local.sqs_event_source import SqsEventSource
from aws.local.template import REPO, EventSourceMapping, FunctionConfig, StackTemplate
from aws.local.worker_process import WarmWorkers

DEFAULT_API_KEY = "local-dev-key"
CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "local",
    "AWS_SECRET_ACCESS_KEY": "local",
    "AWS_DEFAULT_REGION": "us-east-1",
}


@dataclass
class EventSourceRun:
    """An event source mapping at work: its poller, and the worker processes it invokes."""

    mapping: EventSourceMapping
    worker: FunctionConfig
    source: SqsEventSource
    workers: WarmWorkers

    def snapshot(self) -> dict[str, Any]:
        return {**self.source.snapshot(), **self.workers.snapshot()}

    def stop(self) -> None:
        self.source.stop()
        self.workers.close()


@dataclass
class Emulator:
    api_port: int = 3000
    moto_port: int = 5000
    api_key: str = DEFAULT_API_KEY
    # More keys of the usage plan (a tenant's each): key → its id.
    more_api_keys: dict[str, str] = field(default_factory=dict)
    parameters: dict[str, Any] = field(default_factory=dict)
    worker_timeout_s: float | None = None
    visibility_timeout_s: int | None = None

    def start(self) -> None:
        """One deploy of the template, played on this machine (see the module docstring)."""
        self.template = StackTemplate({**local_parameters(), **self.parameters})
        self.moto = self._start_moto()
        self._keep_local_secrets_in_ssm_only()
        self.stack = self._create_queues_table_and_bucket()
        self.event_sources = [
            self._start_event_source(mapping) for mapping in self.template.event_sources(self.stack)
        ]
        keys = {self.api_key: f"id-{self.api_key}", **self.more_api_keys}
        app = api_app(self._api_integrations(), keys, self.state)
        self.api, self.api_thread = self._serve_until_listening(app)

    def _start_moto(self) -> MotoServer:
        """moto in its own process; from here on, this process's AWS clients talk to it."""
        moto = MotoServer(self.moto_port)
        moto.start()
        os.environ.update({**CREDENTIALS, "AWS_ENDPOINT_URL": moto.url})
        return moto

    def _keep_local_secrets_in_ssm_only(self) -> None:
        """The local secrets go to moto's SSM; from here on the functions (in this process, or
        spawned from it) get their names only."""
        put_local_secrets(boto3.client("ssm"), self.template.parameters)
        os.environ.update(NO_PLAIN_SECRETS)

    def _create_queues_table_and_bucket(self) -> LocalStack:
        return create_resources(
            boto3.client("dynamodb"),
            boto3.client("sqs"),
            template=self.template,
            visibility_timeout_s=self.visibility_timeout_s,
        )

    def _function(self, logical_id: str) -> FunctionConfig:
        shared = {**CREDENTIALS, "AWS_ENDPOINT_URL": self.moto.url}
        return emulated_function(self.template, logical_id, self.stack, shared)

    def _start_event_source(self, mapping: EventSourceMapping) -> EventSourceRun:
        """A poller for one event source mapping, with worker processes of its own."""
        worker = self._function(mapping.function)
        if self.worker_timeout_s:
            worker = replace(worker, timeout_s=self.worker_timeout_s)
        workers = WarmWorkers(worker)
        source = SqsEventSource(
            boto3.client("sqs"),
            self.stack.url_of_queue(mapping.queue_arn),
            workers,
            mapping.config,
            worker.timeout_s,
        )
        source.start()
        return EventSourceRun(mapping, worker, source, workers)

    def _api_integrations(self) -> list[Integration]:
        """Each route with its function, run in this process with the template's environment."""
        routes = self.template.routes()
        functions = {route.function: self._function(route.function) for route in routes}
        for fn in functions.values():
            os.environ.update(fn.environment)
        # Read again before the imports too: an import may read them (WORKLOAD_MODULES).
        _forget_cached_settings()
        handlers = {logical_id: import_handler(fn) for logical_id, fn in functions.items()}
        _forget_cached_settings()
        return [
            Integration(route, handlers[route.function], functions[route.function].timeout_s)
            for route in routes
        ]

    def _serve_until_listening(self, app: FastAPI) -> tuple[uvicorn.Server, threading.Thread]:
        server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=self.api_port, log_level="warning")
        )
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        while not server.started:
            if not thread.is_alive():
                self._stop_event_sources_and_moto()
                raise SystemExit(f"the emulator's API could not listen on :{self.api_port}")
            time.sleep(0.02)
        return server, thread

    def state(self) -> dict[str, Any]:
        """GET /_emulator: the first event source's counters (the chunk queue's: the template
        lists it first), then the others'."""
        main, *others = self.event_sources
        return {**main.snapshot(), "other_sources": [run.snapshot() for run in others]}

    def api_url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.api_port}{path}"

    def stop(self) -> None:
        self.api.should_exit = True
        self.api_thread.join(timeout=10)
        self._stop_event_sources_and_moto()

    def _stop_event_sources_and_moto(self) -> None:
        for run in self.event_sources:
            run.stop()
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
        self.api_port, self.moto_port = free_port(), free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "JOB_", "CHUNK_"))}
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "aws.local.emulator",
                "--api-port",
                str(self.api_port),
                "--moto-port",
                str(self.moto_port),
                "--api-key",
                api_key,
                *args,
            ],
            env=env,
            cwd=REPO,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            text=True,
        )
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


def emulated_function(
    template: StackTemplate, logical_id: str, stack: LocalStack, shared: dict[str, str]
) -> FunctionConfig:
    """A function as the emulator runs it: the template's environment, pointed at moto."""
    fn = template.function(logical_id, stack)
    return replace(fn, environment={**fn.environment, **shared, **NO_PLAIN_SECRETS})


def import_handler(fn: FunctionConfig) -> Handler:
    """A function's handler, imported in this process as a package of the repo: each
    function's module is app.py, its folder keeps them apart."""
    package = ".".join(fn.code_dir.relative_to(REPO).parts)
    module_name, function_name = fn.handler.rsplit(".", 1)
    handler: Handler = getattr(importlib.import_module(f"{package}.{module_name}"), function_name)
    return handler


def _forget_cached_settings() -> None:
    """The handlers' settings and clients, read again from the environment just set."""
    import cloud
    from chunking.settings import get_settings

    get_settings.cache_clear()
    cloud.reset()


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
        "--more-api-key",
        action="append",
        default=[],
        metavar="KEY=ID",
        help="another key of the usage plan and its id, e.g. a tenant's (repeatable)",
    )
    parser.add_argument(
        "--parameter",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a template parameter, e.g. WorkerConcurrency=8 (repeatable)",
    )
    parser.add_argument("--worker-timeout", type=float, help="seconds (default: the template's)")
    parser.add_argument("--visibility-timeout", type=int, help="seconds (default: the template's)")
    args = parser.parse_args()
    emulator = Emulator(
        api_port=args.api_port,
        moto_port=args.moto_port,
        api_key=args.api_key,
        more_api_keys=dict(pair.split("=", 1) for pair in args.more_api_key),
        parameters=parse_parameters(args.parameter),
        worker_timeout_s=args.worker_timeout,
        visibility_timeout_s=args.visibility_timeout,
    )
    emulator.start()
    print(banner(emulator), flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with contextlib.suppress(KeyboardInterrupt):
        stop.wait()
    emulator.stop()


def banner(emulator: Emulator) -> str:
    routes = [
        f"{r.method:<5}{emulator.api_url(f'/{r.stage}{r.path}')}"
        for r in emulator.template.routes()
    ]
    workers = [
        f"  worker ({run.mapping.logical_id}): BatchSize {run.mapping.config.batch_size}, "
        f"MaximumConcurrency {run.mapping.config.max_concurrency}, "
        f"Timeout {run.worker.timeout_s:g}s"
        for run in emulator.event_sources
    ]
    stack = emulator.stack
    return "\n".join(
        [
            "Cloud path emulator ready.",
            f"  API (x-api-key: {emulator.api_key}):",
            *(f"    {route}" for route in routes),
            f"  SQS+DynamoDB+S3 (moto): {emulator.moto.url}  queue {stack.queue_url}",
            f"  data bucket: s3://{stack.bucket_name}  (llm inputs under inputs/)",
            *workers,
            f"  maxReceiveCount {stack.max_receive_count}",
        ]
    )


if __name__ == "__main__":
    main()
