"""The dashboard's routes: the page (`GET /ui`, its files under /ui/static), what it needs to
know to start (`GET /ui/config`), and the cloud path's API under `/cloud`.

`/cloud/jobs…` answers exactly as the cloud API does (the starter's `POST /start` as
`POST /cloud/jobs`): the app calls `AWS_START_URL`'s API with `CLOUD_API_KEY`, so the key
stays on the server and the page needs no cross-origin access to API Gateway. The routes sit
behind the same guards as /jobs (`API_KEY`, no cross-site changes): whoever may not start a
local job may not start a cloud one either.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Depends, HTTPException, Request, status
from fastapi import Path as PathParam
from fastapi.responses import FileResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from chunking.settings import get_settings
from chunking.spec import JOB_ID_PATTERN
from dashboard import upstream
from guards import no_cross_site, require_api_key, require_json

STATIC = Path(__file__).resolve().parent / "static"

# Another site must not show the page in a frame: its buttons (start, cancel, retry) could be
# clicked through a decoy laid over it. CSP for today's browsers, X-Frame-Options for older ones.
NO_FRAMING = {"Content-Security-Policy": "frame-ancestors 'none'", "X-Frame-Options": "DENY"}


class NoFraming:
    """ASGI middleware: every answer of the dashboard's paths (`/`, `/ui…`, its files and their
    404s alike) carries NO_FRAMING."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "") if scope["type"] == "http" else None
        root = scope.get("root_path", "")
        if path and root and path.startswith(root):  # served under a prefix (ROOT_PATH)
            path = path[len(root) :] or "/"
        if path is None or not (path in ("/", "/ui") or path.startswith("/ui/")):
            await self.app(scope, receive, send)
            return

        async def send_unframed(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in NO_FRAMING.items():
                    headers[name] = value
            await send(message)

        await self.app(scope, receive, send_unframed)


page = APIRouter(include_in_schema=False)
cloud = APIRouter(prefix="/cloud", dependencies=[Depends(require_api_key), Depends(no_cross_site)])
static_files = StaticFiles(directory=STATIC)
JobId = Annotated[str, PathParam(pattern=JOB_ID_PATTERN)]


@page.get("/")
async def home() -> RedirectResponse:
    return RedirectResponse("/ui")


@page.get("/ui")
async def dashboard() -> FileResponse:
    return FileResponse(STATIC / "index.html")


@page.get("/ui/config")
async def config() -> dict[str, Any]:
    """What the page must know before its first call: whether /jobs wants a key, and whether
    the cloud path can be reached (and why not). Says nothing secret."""
    settings = get_settings()
    reason = None if settings.aws_start_url else "AWS_START_URL is not set"
    return {
        "api_key_required": bool(settings.api_key or settings.api_keys),
        "cloud": {"configured": reason is None, "reason": reason},
    }


def cloud_api() -> tuple[str, dict[str, str]]:
    """The cloud API's base URL (AWS_START_URL without its /start) and the headers it needs."""
    settings = get_settings()
    start_url = settings.aws_start_url
    if not start_url:
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE,
            detail="the cloud path is not configured: set AWS_START_URL (and CLOUD_API_KEY)",
        )
    headers = {"x-api-key": settings.cloud_api_key} if settings.cloud_api_key else {}
    return start_url.rstrip("/").removesuffix("/start"), headers


async def forward(method: str, url: str, headers: dict[str, str], **request: Any) -> Response:
    """One call to the cloud API, bounded in time and size (`dashboard/upstream.py`)."""
    return await upstream.call(method, url, headers, **request)


@cloud.get("/jobs")
async def cloud_jobs(request: Request) -> Response:
    base, headers = cloud_api()
    return await forward("GET", f"{base}/jobs", headers, params=request.query_params)


@cloud.post("/jobs", dependencies=[Depends(require_json)])
async def cloud_start(request: Request) -> Response:
    """POST /start of the cloud API, with the body as it came."""
    base, headers = cloud_api()
    headers = {**headers, "content-type": "application/json"}
    return await forward("POST", f"{base}/start", headers, content=await request.body())


@cloud.get("/jobs/{job_id}")
async def cloud_job(job_id: JobId) -> Response:
    base, headers = cloud_api()
    return await forward("GET", f"{base}/jobs/{quote(job_id, safe='')}", headers)


@cloud.get("/jobs/{job_id}/chunks")
async def cloud_chunks(job_id: JobId, request: Request) -> Response:
    base, headers = cloud_api()
    url = f"{base}/jobs/{quote(job_id, safe='')}/chunks"
    return await forward("GET", url, headers, params=request.query_params)


@cloud.post("/jobs/{job_id}/cancel")
async def cloud_cancel(job_id: JobId) -> Response:
    base, headers = cloud_api()
    return await forward("POST", f"{base}/jobs/{quote(job_id, safe='')}/cancel", headers)


@cloud.get("/jobs/{job_id}/chunks/{chunk_index}/items")
async def cloud_items(job_id: JobId, chunk_index: int, request: Request) -> Response:
    base, headers = cloud_api()
    url = f"{base}/jobs/{quote(job_id, safe='')}/chunks/{chunk_index}/items"
    return await forward("GET", url, headers, params=request.query_params)


@cloud.post("/jobs/{job_id}/retry")
async def cloud_retry(job_id: JobId) -> Response:
    base, headers = cloud_api()
    return await forward("POST", f"{base}/jobs/{quote(job_id, safe='')}/retry", headers)
