"""API Gateway's part of the emulator: the template's routes, the API key check, proxy events.

Each route of the translated REST API (aws/local/template.py) is served under its stage and
calls the Lambda handler it integrates with a REST API proxy event (v1); the handler's answer
is the HTTP response (its status, body, and headers single and multi-valued: a 307's
Location passes through). A route that requires an API key answers 403 without the right
`x-api-key`, and a body over API Gateway's 10 MB is refused before any function runs, as the
deployed API does.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse

from aws.local.lambda_events import Handler, api_event, lambda_context
from aws.local.template import Route

API_GATEWAY_MAX_BODY = 10 * 2**20  # API Gateway refuses larger payloads before any Lambda runs


@dataclass(frozen=True)
class Integration:
    route: Route
    handler: Handler
    timeout_s: float  # the function's Timeout


def api_app(
    integrations: list[Integration], api_keys: dict[str, str], state: Callable[[], dict[str, Any]]
) -> FastAPI:
    """The routes, plus GET /_emulator (not part of the stack): `state()`, the event sources'
    counters and worker processes. `api_keys`: each key the usage plan accepts → its id (what
    the functions see of it, as API Gateway passes them)."""
    app = FastAPI(title="Cloud path emulator", docs_url=None, redoc_url=None)
    for integration in integrations:
        route = integration.route
        app.add_api_route(
            f"/{route.stage}{_fastapi_path(route.path)}",
            _endpoint(integration, api_keys),
            methods=None if route.method == "ANY" else [route.method],
        )

    @app.get("/_emulator")
    async def emulator_state() -> dict[str, Any]:
        return state()

    return app


def _endpoint(integration: Integration, api_keys: dict[str, str]) -> Callable[[Request], Any]:
    route = integration.route

    async def call(request: Request) -> Response:
        api_key = request.headers.get("x-api-key") or ""
        if route.api_key_required and api_key not in api_keys:
            return JSONResponse({"message": "Forbidden"}, status_code=403)
        if int(request.headers.get("content-length") or 0) > API_GATEWAY_MAX_BODY:
            return JSONResponse({"message": "Request Too Long"}, status_code=413)
        body = await request.body() or None
        event = api_event(
            request.method,
            request.url.path.removeprefix(f"/{route.stage}"),
            body=body,
            resource=route.path,
            path_parameters=dict(request.path_params) or None,
            api_key=api_key,
            api_key_id=api_keys.get(api_key),
            stage=route.stage,
            domain=request.headers.get("host", "127.0.0.1"),
            proto="http",
            query=request.query_params.multi_items(),
        )
        result = await asyncio.to_thread(
            integration.handler, event, lambda_context(integration.timeout_s)
        )
        response = Response(content=result.get("body") or "", status_code=result["statusCode"])
        for name, value in _answer_headers(result):
            response.headers.append(name, value)
        return response

    return call


def _answer_headers(result: dict[str, Any]) -> list[tuple[str, str]]:
    """A proxy answer's headers, as API Gateway sends them: `headers` and `multiValueHeaders`
    (what Powertools' REST resolver writes, a redirect's Location among them) merged."""
    single = result.get("headers") or {}
    multi = result.get("multiValueHeaders") or {}
    merged = [(name, str(value)) for name, value in single.items() if name not in multi]
    return merged + [(name, str(value)) for name, values in multi.items() for value in values]


def _fastapi_path(path: str) -> str:
    """API Gateway's greedy `{name+}` is Starlette's `{name:path}`; `{name}` is the same."""
    return path.replace("+}", ":path}")
