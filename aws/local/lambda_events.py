"""Lambda events and contexts as AWS builds them, for running the handlers locally.

API Gateway events follow the REST API proxy format (v1). SQS events are built from messages
really received from the queue (moto here), so receipt handles and ApproximateReceiveCount are
real (aws/local/sqs_event_source.py receives them). Used by the offline emulation, the
benchmarks and the tests (which keep their own status-route events in tests/aws/events.py).
"""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, cast

from aws_lambda_powertools.utilities.typing import LambdaContext

API_ID = "abc123defg"
DOMAIN = f"{API_ID}.execute-api.us-east-1.amazonaws.com"


@dataclass
class FakeLambdaContext:
    """What Lambda passes as `context`; Powertools reads these attributes."""

    function_name: str = "test-function"
    memory_limit_in_mb: int = 256
    invoked_function_arn: str = "arn:aws:lambda:us-east-1:123456789012:function:test-function"
    aws_request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    timeout_s: float = 60
    started: float = field(default_factory=time.monotonic)

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self.timeout_s - (time.monotonic() - self.started)) * 1000))


def lambda_context(timeout_s: float = 60) -> LambdaContext:
    """A context whose remaining time counts down from `timeout_s`, as Lambda's does."""
    return cast(LambdaContext, FakeLambdaContext(timeout_s=timeout_s))


def api_event(
    method: str,
    path: str,
    *,
    body: str | bytes | None = None,
    resource: str | None = None,
    path_parameters: dict[str, str] | None = None,
    api_key: str = "test-api-key",
    api_key_id: str | None = None,
    stage: str = "Prod",
    domain: str = DOMAIN,
    proto: str = "https",
    query: list[tuple[str, str]] | None = None,
) -> dict[str, Any]:
    encoded = False
    if isinstance(body, bytes):
        # As API Gateway does with a body that is not UTF-8 text: pass it base64-encoded.
        raw = body
        try:
            body = raw.decode("utf-8")
        except UnicodeDecodeError:
            body, encoded = base64.b64encode(raw).decode("ascii"), True
    headers = {
        "Host": domain,
        "X-Forwarded-Proto": proto,
        "x-api-key": api_key,
        "Content-Type": "application/json",
        "User-Agent": "pytest",
    }
    resource = resource or path
    return {
        "resource": resource,
        "path": path,
        "httpMethod": method,
        "headers": headers,
        "multiValueHeaders": {k: [v] for k, v in headers.items()},
        # As API Gateway gives them: the last value of each name, and every value; null if none.
        "queryStringParameters": dict(query) if query else None,
        "multiValueQueryStringParameters": (
            {name: [v for n, v in query if n == name] for name, _ in query} if query else None
        ),
        "pathParameters": path_parameters,
        "stageVariables": None,
        "requestContext": {
            "resourceId": "abc123",
            "resourcePath": resource,
            "httpMethod": method,
            "extendedRequestId": str(uuid.uuid4()),
            "requestTime": time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime()),
            "path": f"/{stage}{path}",
            "accountId": "123456789012",
            "protocol": "HTTP/1.1",
            "stage": stage,
            "domainPrefix": API_ID,
            "requestTimeEpoch": int(time.time() * 1000),
            "requestId": str(uuid.uuid4()),
            "identity": {
                "apiKey": api_key,
                # The key's id in the usage plan (what API_KEY_TENANTS maps to a tenant).
                "apiKeyId": api_key_id or f"id-{api_key}",
                "sourceIp": "127.0.0.1",
                "userAgent": "pytest",
            },
            "domainName": domain,
            "apiId": API_ID,
        },
        "body": body,
        "isBase64Encoded": encoded,
    }


def post_start(body: str | bytes | dict[str, Any] | None) -> dict[str, Any]:
    text = body if isinstance(body, (str, bytes)) or body is None else json.dumps(body)
    return api_event("POST", "/start", body=text)


def sqs_event(messages: list[dict[str, Any]], queue_arn: str) -> dict[str, Any]:
    """The event Lambda's SQS event source builds from a batch of received messages."""
    return {
        "Records": [
            {
                "messageId": m["MessageId"],
                "receiptHandle": m["ReceiptHandle"],
                "body": m["Body"],
                "attributes": m["Attributes"],
                "messageAttributes": {
                    name: {
                        "stringValue": a.get("StringValue"),
                        "binaryValue": None,
                        "stringListValues": [],
                        "binaryListValues": [],
                        "dataType": a["DataType"],
                    }
                    for name, a in m.get("MessageAttributes", {}).items()
                },
                "md5OfBody": m["MD5OfBody"],
                "eventSource": "aws:sqs",
                "eventSourceARN": queue_arn,
                "awsRegion": "us-east-1",
            }
            for m in messages
        ]
    }


Handler = Callable[[dict[str, Any], Any], Any]  # a Lambda handler: (event, context) -> response
