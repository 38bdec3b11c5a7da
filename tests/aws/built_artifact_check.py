"""Run the built Lambda artifacts (.aws-sam/build) end to end against moto, in isolation.

Started by tests/aws/test_sam.py as `python built_artifact_check.py BUILD_DIR REPO_DIR` with
PYTHONPATH set to the built layer only, so `chunking`, pydantic and Powertools must come from
what `sam build` produced. boto3 is the Lambda runtime's, here the test environment's.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import boto3
from moto import mock_aws

BUILD, REPO = Path(sys.argv[1]).resolve(), Path(sys.argv[2]).resolve()
FROM_LAYER = ("chunking", "workloads", "stores", "cloud", "pydantic", "pydantic_core",
              "pydantic_settings", "aws_lambda_powertools")  # fmt: skip


def load(name: str, path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def main() -> None:
    # Test scaffolding only, loaded by file path so the repo never lands on sys.path: under
    # their own names, each after the modules it imports.
    local = {name: load(f"aws.local.{name}", REPO / f"aws/local/{name}.py")
             for name in ("lambda_events", "intrinsics", "sqs_event_source", "template",
                          "resources")}  # fmt: skip
    resources, events = local["resources"], local["lambda_events"]
    routes = load("status_events", REPO / "tests/aws/events.py")
    atomic = load("atomic_calls", REPO / "tests/aws/atomic_calls.py")
    from botocore.client import BaseClient

    real_call = getattr(BaseClient, "_make_api_call")  # noqa: B009 - private, typed away
    setattr(BaseClient, "_make_api_call", atomic.one_at_a_time(real_call))  # noqa: B010
    with mock_aws():
        stack = resources.create_resources(boto3.client("dynamodb"), boto3.client("sqs"))
        import os

        os.environ.update(stack.environment())
        starter = load("starter_app", BUILD / "StarterFunction/app.py")
        status = load("status_app", BUILD / "StatusFunction/app.py")
        worker = load("worker_app", BUILD / "WorkerFunction/app.py")

        spec = {"total_items": 500, "chunk_size": 50, "item_delay_ms": 0, "fail_chunks": [3]}
        started = starter.lambda_handler(events.post_start(spec), events.lambda_context())
        job_id = json.loads(started["body"])["job_id"]
        source = local["sqs_event_source"].SqsEventSource
        source(boto3.client("sqs"), stack.queue_url, worker.lambda_handler).drain()
        answer = status.lambda_handler(routes.get_status(job_id), events.lambda_context())

    origins = {name: str(Path(sys.modules[name].__file__ or "").resolve()) for name in FROM_LAYER}
    print(json.dumps({"start_status": started["statusCode"], "status_code": answer["statusCode"],
                      "status": json.loads(answer["body"]), "origins": origins}))  # fmt: skip


if __name__ == "__main__":
    main()
