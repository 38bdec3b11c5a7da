"""What aws/template.yaml promises, checked on the template itself."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from aws.local.template import load_template


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    return load_template()


def resource(template: dict[str, Any], logical_id: str) -> dict[str, Any]:
    props: dict[str, Any] = template["Resources"][logical_id]["Properties"]
    return props


def function_timeout(template: dict[str, Any], logical_id: str) -> int:
    props = resource(template, logical_id)
    return int(props.get("Timeout", template["Globals"]["Function"]["Timeout"]))


def test_queue_visibility_is_at_least_six_worker_timeouts(template: dict[str, Any]) -> None:
    visibility = resource(template, "ChunkQueue")["VisibilityTimeout"]
    assert visibility >= 6 * function_timeout(template, "WorkerFunction")


def test_chunk_queue_redrives_to_the_dlq_after_max_receive_count(template: dict[str, Any]) -> None:
    redrive = resource(template, "ChunkQueue")["RedrivePolicy"]
    assert redrive["deadLetterTargetArn"] == {"Fn::GetAtt": ["ChunkDeadLetterQueue", "Arn"]}
    assert redrive["maxReceiveCount"] == {"Ref": "MaxReceiveCount"}
    assert template["Parameters"]["MaxReceiveCount"]["Default"] == 3
    assert resource(template, "ChunkDeadLetterQueue")["MessageRetentionPeriod"] == 14 * 24 * 3600


def test_high_priority_chunks_have_their_own_queue_and_worker_share(
    template: dict[str, Any],
) -> None:
    high = resource(template, "HighPriorityChunkQueue")
    assert high["RedrivePolicy"] == resource(template, "ChunkQueue")["RedrivePolicy"]
    assert high["VisibilityTimeout"] >= 6 * function_timeout(template, "WorkerFunction")
    event = resource(template, "WorkerFunction")["Events"]["HighPriorityChunks"]["Properties"]
    assert event["Queue"] == {"Fn::GetAtt": ["HighPriorityChunkQueue", "Arn"]}
    assert event["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    assert event["ScalingConfig"]["MaximumConcurrency"] == {"Ref": "HighPriorityWorkerConcurrency"}


def test_worker_reports_partial_batch_failures(template: dict[str, Any]) -> None:
    event = resource(template, "WorkerFunction")["Events"]["Chunks"]
    assert event["Type"] == "SQS"
    props = event["Properties"]
    assert props["Queue"] == {"Fn::GetAtt": ["ChunkQueue", "Arn"]}
    assert props["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    assert props["BatchSize"] == {"Ref": "WorkerBatchSize"}
    assert template["Parameters"]["WorkerBatchSize"]["Default"] == 10
    # One batching window, which the worker takes off a retried message's backoff: the event
    # sources and the worker's BATCHING_WINDOW_S read the same parameter.
    window = {"Ref": "WorkerBatchingWindowS"}
    worker = resource(template, "WorkerFunction")
    windows = [e["Properties"]["MaximumBatchingWindowInSeconds"] for e in worker["Events"].values()]
    assert windows == [window, window]  # the chunk queue's and the high-priority queue's
    assert worker["Environment"]["Variables"]["BATCHING_WINDOW_S"] == window
    assert template["Parameters"]["WorkerBatchingWindowS"]["Default"] >= 0
    assert props["ScalingConfig"]["MaximumConcurrency"] == {"Ref": "WorkerConcurrency"}


def test_both_routes_require_an_api_key(template: dict[str, Any]) -> None:
    api = resource(template, "JobsApi")
    assert api["Auth"]["ApiKeyRequired"] is True
    assert api["Auth"]["UsagePlan"]["CreateUsagePlan"] == "PER_API"
    routes = {}
    for logical_id, res in template["Resources"].items():
        for event in res.get("Properties", {}).get("Events", {}).values():
            if event["Type"] == "Api":
                props = event["Properties"]
                routes[(props["Method"], props["Path"])] = logical_id
                assert props["RestApiId"] == {"Ref": "JobsApi"}
                assert props["Auth"]["ApiKeyRequired"] is True
    assert routes == {
        ("post", "/start"): "StarterFunction",
        ("post", "/jobs/{job_id}/cancel"): "StarterFunction",
        ("post", "/jobs/{job_id}/retry"): "StarterFunction",
        ("get", "/jobs/{job_id}"): "StatusFunction",
        ("get", "/jobs/{job_id}/chunks"): "StatusFunction",
        ("get", "/jobs/{job_id}/chunks/{chunk_index}/items"): "StatusFunction",
        ("get", "/jobs"): "StatusFunction",
        ("post", "/inputs"): "StarterFunction",
        ("get", "/jobs/{job_id}/output"): "StatusFunction",
        ("get", "/jobs/{job_id}/errors"): "StatusFunction",
    }


def test_claims_expire_by_the_attribute_the_store_writes(template: dict[str, Any]) -> None:
    """claim_once's items (a signed call's signature) are deleted by DynamoDB's TTL; jobs,
    which carry no such attribute, are not."""
    from stores.dynamodb import CLAIM_TTL_ATTRIBUTE

    ttl = resource(template, "JobTable")["TimeToLiveSpecification"]
    assert ttl == {"AttributeName": CLAIM_TTL_ATTRIBUTE, "Enabled": True}


def test_encryption_is_on(template: dict[str, Any]) -> None:
    assert resource(template, "ChunkQueue")["SqsManagedSseEnabled"] is True
    assert resource(template, "ChunkDeadLetterQueue")["SqsManagedSseEnabled"] is True
    assert resource(template, "JobTable")["SSESpecification"]["SSEEnabled"] is True


def test_job_table_is_on_demand_and_alarm_watches_the_dlq(template: dict[str, Any]) -> None:
    assert resource(template, "JobTable")["BillingMode"] == "PAY_PER_REQUEST"
    alarm = resource(template, "DeadLetterAlarm")
    assert alarm["MetricName"] == "ApproximateNumberOfMessagesVisible"
    assert alarm["Dimensions"][0]["Value"] == {"Fn::GetAtt": ["ChunkDeadLetterQueue", "QueueName"]}
    assert (alarm["Threshold"], alarm["ComparisonOperator"]) == (0, "GreaterThanThreshold")


def unconditional(policy: dict[str, Any]) -> dict[str, Any]:
    """The policy of `!If [Condition, policy, !Ref AWS::NoValue]`, or the policy itself."""
    if "Fn::If" in policy:
        _, granted, otherwise = policy["Fn::If"]
        assert otherwise == {"Ref": "AWS::NoValue"}
        policy = granted
    return policy


def test_policies_are_sam_templates_scoped_to_our_resources(template: dict[str, Any]) -> None:
    for logical_id in ("StarterFunction", "StatusFunction", "WorkerFunction"):
        for policy in map(unconditional, resource(template, logical_id)["Policies"]):
            assert isinstance(policy, dict) and len(policy) == 1  # a SAM policy template
            [(name, scope)] = policy.items()
            assert name.endswith("Policy") and "Statement" not in str(scope)
    status_policies = [next(iter(p)) for p in resource(template, "StatusFunction")["Policies"]]
    assert status_policies == ["DynamoDBReadPolicy", "S3ReadPolicy"]  # reads only


def test_parameters_and_outputs(template: dict[str, Any]) -> None:
    assert set(template["Parameters"]) == {
        "TotalItems", "ChunkSize", "ItemDelayMs", "MaxReceiveCount", "WorkerConcurrency",
        "WorkerBatchSize", "WorkerBatchingWindowS", "OpenAiBaseUrl", "OpenAiModel",
        "OpenAiApiKeyParameter",
        "LlmPricePromptPerMtok", "LlmPriceCompletionPerMtok", "LlmRateLimits", "LlmItemConcurrency",
        "CallbackSecretParameter",
        "AllowPrivateCallbacks", "HighPriorityWorkerConcurrency", "ApiGatewayCloudWatchRole",
        "WorkloadModules", "LlmBatchPollMinS", "LlmBatchPollMaxS", "LlmBatchDiscounts",
        "MaxCostUsdByTenant", "ApiKeyTenants",
    }  # fmt: skip
    # Secrets are SSM parameters' names, not values (tests/aws/test_secrets.py).
    assert not any(p.get("NoEcho") for p in template["Parameters"].values())
    outputs = set(template["Outputs"])
    assert {"ApiUrl", "StartUrl", "ApiKeyId", "ChunkQueueUrl", "ChunkDeadLetterQueueUrl",
            "JobTableName", "DataBucketName", "ApiAccessLogGroupName"} <= outputs  # fmt: skip
    # The functions see the parameters under the names the core's settings read.
    env = template["Globals"]["Function"]["Environment"]["Variables"]
    assert env["TOTAL_ITEMS"] == {"Ref": "TotalItems"} and env["CHUNK_SIZE"] == {"Ref": "ChunkSize"}
    assert env["WORKLOAD_MODULES"] == {"Ref": "WorkloadModules"}
    assert env["LLM_ITEM_CONCURRENCY"] == {"Ref": "LlmItemConcurrency"}
    assert env["LLM_BATCH_POLL_MIN_S"] == {"Ref": "LlmBatchPollMinS"}
    assert env["LLM_BATCH_POLL_MAX_S"] == {"Ref": "LlmBatchPollMaxS"}
    assert env["LLM_BATCH_DISCOUNTS"] == {
        "Fn::If": ["HasLlmBatchDiscounts", {"Ref": "LlmBatchDiscounts"}, {"Ref": "AWS::NoValue"}]
    }
    # Unset when empty: the settings then use the provider's announced limits.
    assert env["LLM_RATE_LIMITS"] == {
        "Fn::If": ["HasLlmRateLimits", {"Ref": "LlmRateLimits"}, {"Ref": "AWS::NoValue"}]
    }
    worker_env = resource(template, "WorkerFunction")["Environment"]["Variables"]
    assert worker_env["MAX_RECEIVE_COUNT"] == {"Ref": "MaxReceiveCount"}


def test_every_function_variable_is_a_setting(template: dict[str, Any]) -> None:
    from chunking.settings import Settings

    names = set(template["Globals"]["Function"]["Environment"]["Variables"])
    for logical_id in ("StarterFunction", "StatusFunction", "WorkerFunction"):
        names |= set(resource(template, logical_id).get("Environment", {}).get("Variables", {}))
    # Read by Powertools itself.
    names -= {"POWERTOOLS_SERVICE_NAME", "POWERTOOLS_LOG_LEVEL", "POWERTOOLS_METRICS_NAMESPACE"}
    assert {n.lower() for n in names} <= set(Settings.model_fields)


def test_data_bucket_is_private_encrypted_and_reached_only_by_who_needs_it(
    template: dict[str, Any],
) -> None:
    bucket = resource(template, "DataBucket")
    assert all(bucket["PublicAccessBlockConfiguration"].values())
    [rule] = bucket["BucketEncryption"]["ServerSideEncryptionConfiguration"]
    assert rule["ServerSideEncryptionByDefault"]["SSEAlgorithm"] == "AES256"
    env = template["Globals"]["Function"]["Environment"]["Variables"]
    assert env["LLM_OUTPUT_URI"] == {"Fn::Sub": "s3://${DataBucket}/outputs"}

    def s3_policies(logical_id: str) -> dict[str, Any]:
        policies = resource(template, logical_id)["Policies"]
        return {k: v for p in policies for k, v in p.items() if k.startswith("S3")}

    # The starter reads an input once, and writes the items a request gives as the input (and
    # signs POST /inputs' PUT); the status function signs a GET of a job's file, and only that.
    bucket = {"BucketName": {"Ref": "DataBucket"}}
    assert s3_policies("StarterFunction") == {"S3ReadPolicy": bucket, "S3WritePolicy": bucket}
    assert s3_policies("WorkerFunction") == {"S3CrudPolicy": {"BucketName": {"Ref": "DataBucket"}}}
    assert s3_policies("StatusFunction") == {"S3ReadPolicy": bucket}
    starter_env = resource(template, "StarterFunction")["Environment"]["Variables"]
    assert starter_env["DATA_BUCKET"] == {"Ref": "DataBucket"}


def test_functions_run_the_python_of_ci(template: dict[str, Any]) -> None:
    import sys

    runtime = template["Globals"]["Function"]["Runtime"]
    assert runtime == f"python{sys.version_info.major}.{sys.version_info.minor}"


def test_the_dashboard_shows_the_metrics_the_worker_writes() -> None:
    from chunking.metrics import METRICS
    from cloud.metrics import NAMESPACE

    template = load_template()
    text = resource(template, "Dashboard")["DashboardBody"]["Fn::Sub"]
    body = json.loads(re.sub(r"\$\{[^}]+\}", "x", text))
    lines = [line for widget in body["widgets"]
             for line in widget["properties"].get("metrics", [])]  # fmt: skip
    ours = {line[1] for line in lines if line[0] == NAMESPACE}
    assert ours == set(METRICS)  # every metric charted, under the namespace it is written in
    globals_env = template["Globals"]["Function"]["Environment"]["Variables"]
    assert globals_env["POWERTOOLS_METRICS_NAMESPACE"] == NAMESPACE
    alarms = [w for w in body["widgets"] if w["type"] == "alarm"]
    assert alarms and "${DeadLetterAlarm.Arn}" in text
