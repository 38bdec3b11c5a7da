"""Create the stack's queues, job table and data bucket as aws/template.yaml defines them.

For the offline emulation and the tests: the properties (visibility timeout, redrive policy,
retention, keys and indexes) are read from the template, so local runs cannot drift from what
`sam deploy` creates.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

TEMPLATE = Path(__file__).resolve().parents[1] / "template.yaml"


class _CfnLoader(yaml.SafeLoader):
    """YAML loader that reads CloudFormation's short tags (!Ref, !GetAtt, !Sub, ...)."""


def _cfn_tag(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> dict[str, Any]:
    value: Any
    if isinstance(node, yaml.ScalarNode):
        value = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        assert isinstance(node, yaml.MappingNode)
        value = loader.construct_mapping(node, deep=True)
    if suffix == "Ref":
        return {"Ref": value}
    if suffix == "GetAtt" and isinstance(value, str):
        value = value.split(".", 1)
    return {f"Fn::{suffix}": value}


_CfnLoader.add_multi_constructor("!", _cfn_tag)


def load_template(path: Path = TEMPLATE) -> dict[str, Any]:
    with path.open() as f:
        template: dict[str, Any] = yaml.load(f, Loader=_CfnLoader)
    return template


def parameter(template: dict[str, Any], name: str, overrides: dict[str, Any] | None = None) -> Any:
    if overrides and name in overrides:
        return overrides[name]
    return template["Parameters"][name]["Default"]


def resolve(template: dict[str, Any], value: Any, overrides: dict[str, Any] | None = None) -> Any:
    """Resolve a `{"Ref": Parameter}` to the parameter's value; other values pass through."""
    if isinstance(value, dict) and set(value) == {"Ref"} and value["Ref"] in template["Parameters"]:
        return parameter(template, value["Ref"], overrides)
    return value


@dataclass(frozen=True)
class LocalStack:
    table_name: str
    queue_url: str
    dlq_url: str
    max_receive_count: int
    bucket_name: str
    high_queue_url: str

    def environment(self) -> dict[str, str]:
        """The variables template.yaml gives the functions, pointing at these resources."""
        return {
            "JOB_TABLE": self.table_name,
            "CHUNK_QUEUE_URL": self.queue_url,
            "HIGH_PRIORITY_QUEUE_URL": self.high_queue_url,
            "CHUNK_DLQ_URL": self.dlq_url,
            "MAX_RECEIVE_COUNT": str(self.max_receive_count),
            "LLM_OUTPUT_URI": f"s3://{self.bucket_name}/outputs",
        }

    def ref(self, logical_id: str) -> str:
        """What `!Ref` of one of these resources gives in CloudFormation."""
        refs = {"JobTable": self.table_name, "ChunkQueue": self.queue_url,
                "ChunkDeadLetterQueue": self.dlq_url, "DataBucket": self.bucket_name,
                "HighPriorityChunkQueue": self.high_queue_url}  # fmt: skip
        return refs[logical_id]


@dataclass(frozen=True)
class FunctionConfig:
    logical_id: str
    code_dir: Path
    handler: str  # "module.function", as Lambda reads it
    timeout_s: float
    environment: dict[str, str]


def function_config(
    template: dict[str, Any],
    logical_id: str,
    stack: LocalStack,
    overrides: dict[str, Any] | None = None,
) -> FunctionConfig:
    """A function's handler, code, timeout and environment (Globals merged, Refs resolved)."""
    defaults = template["Globals"]["Function"]
    props = template["Resources"][logical_id]["Properties"]
    env: dict[str, str] = {}
    for source in (defaults, props):
        for name, value in source.get("Environment", {}).get("Variables", {}).items():
            value = resolve(template, value, overrides)
            if isinstance(value, dict) and "Ref" in value:
                value = stack.ref(value["Ref"])
            elif isinstance(value, dict) and "Fn::Sub" in value:
                value = re.sub(
                    r"\$\{(\w+)\}",
                    lambda m: (
                        str(resolve(template, {"Ref": m[1]}, overrides))
                        if m[1] in template["Parameters"]
                        else stack.ref(m[1])
                    ),
                    value["Fn::Sub"],
                )
            env[name] = str(value)
    return FunctionConfig(
        logical_id=logical_id,
        code_dir=TEMPLATE.parent / props["CodeUri"],
        handler=props["Handler"],
        timeout_s=float(props.get("Timeout", defaults["Timeout"])),
        environment=env,
    )


@dataclass(frozen=True)
class EventSourceConfig:
    batch_size: int
    batching_window_s: float
    max_concurrency: int


def sqs_event_source(
    template: dict[str, Any],
    logical_id: str,
    overrides: dict[str, Any] | None = None,
    event_name: str = "Chunks",
) -> EventSourceConfig:
    """One of a function's SQS event sources (by its name under Events)."""
    source = template["Resources"][logical_id]["Properties"]["Events"][event_name]
    assert source["Type"] == "SQS", f"{logical_id}.{event_name} is not an SQS event"
    event = source["Properties"]
    return EventSourceConfig(
        batch_size=int(resolve(template, event["BatchSize"], overrides)),
        batching_window_s=float(event.get("MaximumBatchingWindowInSeconds", 0)),
        max_concurrency=int(
            resolve(template, event["ScalingConfig"]["MaximumConcurrency"], overrides)
        ),
    )


def create_resources(
    dynamodb: Any,
    sqs: Any,
    *,
    prefix: str = "long-jobs",
    overrides: dict[str, Any] | None = None,
    template: dict[str, Any] | None = None,
    visibility_timeout_s: int | None = None,
    s3: Any | None = None,
) -> LocalStack:
    """Create the DLQ, the chunk queue, the job table and the bucket with boto3 (moto or real).

    `overrides` are template parameters, as `sam deploy --parameter-overrides` takes them.
    `visibility_timeout_s` replaces the chunk queue's (tests and benchmarks shorten time).
    """
    template = template or load_template()
    resources = template["Resources"]

    def queue_attributes(logical_id: str) -> dict[str, str]:
        props = resources[logical_id]["Properties"]
        attributes = {}
        for key in ("VisibilityTimeout", "MessageRetentionPeriod", "SqsManagedSseEnabled"):
            if key in props:
                attributes[key] = str(resolve(template, props[key], overrides)).lower()
        return attributes

    dlq_url = sqs.create_queue(
        QueueName=f"{prefix}-dlq", Attributes=queue_attributes("ChunkDeadLetterQueue")
    )["QueueUrl"]
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    redrive = resources["ChunkQueue"]["Properties"]["RedrivePolicy"]
    max_receive = int(resolve(template, redrive["maxReceiveCount"], overrides))

    def chunk_queue(logical_id: str, name: str) -> str:
        url: str = sqs.create_queue(
            QueueName=name,
            Attributes={
                **queue_attributes(logical_id),
                **(
                    {"VisibilityTimeout": str(visibility_timeout_s)} if visibility_timeout_s else {}
                ),
                "RedrivePolicy": json.dumps(
                    {"deadLetterTargetArn": dlq_arn, "maxReceiveCount": max_receive}
                ),
            },
        )["QueueUrl"]
        return url

    queue_url = chunk_queue("ChunkQueue", f"{prefix}-chunks")
    high_queue_url = chunk_queue("HighPriorityChunkQueue", f"{prefix}-chunks-high")

    table = resources["JobTable"]["Properties"]
    table_name = f"{prefix}-jobs"
    dynamodb.create_table(
        TableName=table_name,
        BillingMode=table["BillingMode"],
        AttributeDefinitions=table["AttributeDefinitions"],
        KeySchema=table["KeySchema"],
        GlobalSecondaryIndexes=table["GlobalSecondaryIndexes"],
    )
    bucket_name = f"{prefix}-data"
    if s3 is None:
        import boto3

        s3 = boto3.client("s3")
    s3.create_bucket(Bucket=bucket_name)
    return LocalStack(table_name, queue_url, dlq_url, max_receive, bucket_name, high_queue_url)
