"""Create the stack's queues and job table as aws/template.yaml defines them.

For the offline emulation and the tests: the properties (visibility timeout, redrive policy,
retention, keys and indexes) are read from the template, so local runs cannot drift from what
`sam deploy` creates.
"""

from __future__ import annotations

import json
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

    def environment(self) -> dict[str, str]:
        """The variables template.yaml gives the functions, pointing at these resources."""
        return {
            "JOB_TABLE": self.table_name,
            "CHUNK_QUEUE_URL": self.queue_url,
            "CHUNK_DLQ_URL": self.dlq_url,
            "MAX_RECEIVE_COUNT": str(self.max_receive_count),
        }


def create_resources(
    dynamodb: Any,
    sqs: Any,
    *,
    prefix: str = "long-jobs",
    overrides: dict[str, Any] | None = None,
    template: dict[str, Any] | None = None,
) -> LocalStack:
    """Create the DLQ, the chunk queue and the job table with boto3 clients (moto or real)."""
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
    queue_url = sqs.create_queue(
        QueueName=f"{prefix}-chunks",
        Attributes={
            **queue_attributes("ChunkQueue"),
            "RedrivePolicy": json.dumps(
                {"deadLetterTargetArn": dlq_arn, "maxReceiveCount": max_receive}
            ),
        },
    )["QueueUrl"]

    table = resources["JobTable"]["Properties"]
    table_name = f"{prefix}-jobs"
    dynamodb.create_table(
        TableName=table_name,
        BillingMode=table["BillingMode"],
        AttributeDefinitions=table["AttributeDefinitions"],
        KeySchema=table["KeySchema"],
        GlobalSecondaryIndexes=table["GlobalSecondaryIndexes"],
    )
    return LocalStack(table_name, queue_url, dlq_url, max_receive)
