"""The cloud API's answers: what the Lambda handlers behind API Gateway reply, in one shape."""

from __future__ import annotations

import json
from typing import Any

from aws_lambda_powertools.event_handler import Response, content_types


def reply(status: int, body: dict[str, Any] | list[Any]) -> Response[str]:
    """A JSON answer: `body` as json.dumps writes it."""
    return Response(status, content_types.APPLICATION_JSON, json.dumps(body))
