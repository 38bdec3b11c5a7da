"""The stack's queues, job table and data bucket, as aws/template.yaml defines them; their names.

Every SQS queue, DynamoDB table and S3 bucket of the translated template is created from its
properties as one deploy resolves them (aws/local/template.py): visibility timeout, retention,
redrive policy, keys and indexes cannot drift from what `sam deploy` creates. A resource is
created the first time something refers to it, so the DLQ exists before the queue whose
redrive policy names its ARN, as CloudFormation orders them.

The resources' names live here, and only here: CloudFormation would call the chunk queue
<stack>-ChunkQueue-<random>; the emulator gives each a fixed name, which tools/, bench/ and the
tests import from `NAMES`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from aws.local.intrinsics import STACK_NAME

if TYPE_CHECKING:  # imported when needed: tools/ read NAMES without loading SAM's translator
    from aws.local.template import StackTemplate

# Logical id in aws/template.yaml -> the name the emulator creates it under.
NAMES = {
    "ChunkQueue": "long-jobs-chunks",
    "HighPriorityChunkQueue": "long-jobs-chunks-high",
    "ChunkDeadLetterQueue": "long-jobs-dlq",
    "JobTable": "long-jobs-jobs",
    "DataBucket": "long-jobs-data",
}
# CreateTable takes these properties of an AWS::DynamoDB::Table as CloudFormation spells them.
TABLE_PROPERTIES = (
    "BillingMode",
    "AttributeDefinitions",
    "KeySchema",
    "GlobalSecondaryIndexes",
    "LocalSecondaryIndexes",
    "ProvisionedThroughput",
    "StreamSpecification",
)


@dataclass(frozen=True)
class LocalStack:
    table_name: str
    queue_url: str
    dlq_url: str
    max_receive_count: int
    bucket_name: str
    high_queue_url: str
    # (logical id, attribute) -> what Fn::GetAtt gives, e.g. ("ChunkQueue", "Arn").
    attributes: Mapping[tuple[str, str], str] = field(default_factory=dict)

    def environment(self) -> dict[str, str]:
        """The variables template.yaml gives the functions, pointing at these resources."""
        return {
            "JOB_TABLE": self.table_name,
            "CHUNK_QUEUE_URL": self.queue_url,
            "HIGH_PRIORITY_QUEUE_URL": self.high_queue_url,
            "CHUNK_DLQ_URL": self.dlq_url,
            "MAX_RECEIVE_COUNT": str(self.max_receive_count),
            "LLM_OUTPUT_URI": f"s3://{self.bucket_name}/outputs",
            "DATA_BUCKET": self.bucket_name,
        }

    def ref(self, logical_id: str) -> str:
        """What `!Ref` of one of these resources gives in CloudFormation."""
        refs = {
            "JobTable": self.table_name,
            "ChunkQueue": self.queue_url,
            "ChunkDeadLetterQueue": self.dlq_url,
            "DataBucket": self.bucket_name,
            "HighPriorityChunkQueue": self.high_queue_url,
        }
        return refs[logical_id]

    def get_att(self, logical_id: str, attribute: str) -> str:
        return self.attributes[(logical_id, attribute)]

    def url_of_queue(self, arn: str) -> str:
        """The URL of the queue with this ARN (an event source mapping names its queue so)."""
        [logical_id] = [
            logical_id
            for (logical_id, attribute), value in self.attributes.items()
            if attribute == "Arn" and value == arn
        ]
        return self.get_att(logical_id, "QueueUrl")


def create_resources(
    dynamodb: Any,
    sqs: Any,
    *,
    overrides: dict[str, Any] | None = None,
    template: StackTemplate | None = None,
    visibility_timeout_s: int | None = None,
    s3: Any | None = None,
) -> LocalStack:
    """Create the queues, the table and the bucket with boto3 (moto or real).

    `overrides` are template parameters, as `sam deploy --parameter-overrides` takes them (or
    give the `template` of a deploy). `visibility_timeout_s` replaces the chunk queues' (tests
    and benchmarks shorten time).
    """
    if template is None:
        from aws.local.template import StackTemplate

        template = StackTemplate(overrides)
    if s3 is None:
        import boto3

        s3 = boto3.client("s3")
    creating = _Creating(template, dynamodb, sqs, s3, visibility_timeout_s)
    for logical_id in creating.types:
        creating.ref(logical_id)
    refs = creating.refs
    redrive = creating.properties["ChunkQueue"]["RedrivePolicy"]
    return LocalStack(
        refs["JobTable"],
        refs["ChunkQueue"],
        refs["ChunkDeadLetterQueue"],
        int(redrive["maxReceiveCount"]),
        refs["DataBucket"],
        refs["HighPriorityChunkQueue"],
        attributes=creating.attributes,
    )


class _Creating:
    """The stack's resources as the resolver sees them, each created on its first Ref/GetAtt."""

    def __init__(
        self,
        template: StackTemplate,
        dynamodb: Any,
        sqs: Any,
        s3: Any,
        visibility_timeout_s: int | None,
    ) -> None:
        self.template, self.dynamodb, self.sqs, self.s3 = template, dynamodb, sqs, s3
        self.visibility_timeout_s = visibility_timeout_s
        creators: dict[str, Callable[[str, dict[str, Any]], tuple[str, dict[str, str]]]] = {
            "AWS::SQS::Queue": self._queue,
            "AWS::DynamoDB::Table": self._table,
            "AWS::S3::Bucket": self._bucket,
        }
        self.types = {
            logical_id: creators[resource_type]
            for resource_type in creators
            for logical_id in template.resources(resource_type)
        }
        self.resolver = template.resolver(self)
        self.refs: dict[str, str] = {}
        self.attributes: dict[tuple[str, str], str] = {}
        self.properties: dict[str, dict[str, Any]] = {}

    def ref(self, logical_id: str) -> str:
        if logical_id not in self.refs:
            self._create(logical_id)
        return self.refs[logical_id]

    def get_att(self, logical_id: str, attribute: str) -> str:
        self.ref(logical_id)
        return self.attributes[(logical_id, attribute)]

    def _create(self, logical_id: str) -> None:
        if logical_id not in self.types:
            raise ValueError(f"the emulator creates no {logical_id}")
        resource = self.template.cfn["Resources"][logical_id]
        props = self.properties[logical_id] = self.resolver.resolve(resource.get("Properties", {}))
        name = NAMES.get(logical_id, f"{STACK_NAME}-{logical_id}")
        self.refs[logical_id], attributes = self.types[logical_id](name, props)
        self.attributes.update({(logical_id, key): value for key, value in attributes.items()})

    def _queue(self, name: str, props: dict[str, Any]) -> tuple[str, dict[str, str]]:
        attributes = {
            key: _attribute(value)
            for key, value in props.items()
            if key not in ("QueueName", "Tags")
        }
        if self.visibility_timeout_s and "RedrivePolicy" in props:  # the queues work is retried on
            attributes["VisibilityTimeout"] = str(self.visibility_timeout_s)
        url: str = self.sqs.create_queue(QueueName=name, Attributes=attributes)["QueueUrl"]
        arn = self.sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])[
            "Attributes"
        ]["QueueArn"]
        return url, {"Arn": arn, "QueueName": name, "QueueUrl": url}

    def _table(self, name: str, props: dict[str, Any]) -> tuple[str, dict[str, str]]:
        # Encryption at rest (SSESpecification) is not emulated: moto stores data in memory.
        settings = {key: props[key] for key in TABLE_PROPERTIES if key in props}
        table = self.dynamodb.create_table(TableName=name, **settings)["TableDescription"]
        if ttl := props.get("TimeToLiveSpecification"):  # a call of its own, as in the API
            self.dynamodb.update_time_to_live(TableName=name, TimeToLiveSpecification=ttl)
        return name, {"Arn": table["TableArn"]}

    def _bucket(self, name: str, props: dict[str, Any]) -> tuple[str, dict[str, str]]:
        # Encryption, public access block, ownership and lifecycle rules are not emulated.
        self.s3.create_bucket(Bucket=name)
        return name, {"Arn": f"arn:aws:s3:::{name}", "DomainName": f"{name}.s3.amazonaws.com"}


def _attribute(value: Any) -> str:
    """A CloudFormation property value as an SQS queue attribute (strings, policies as JSON)."""
    if isinstance(value, dict):
        return json.dumps(value)
    return str(value).lower() if isinstance(value, bool) else str(value)
