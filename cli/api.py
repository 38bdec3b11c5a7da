"""The two APIs as one client: the same calls whichever path answers, and every failure turned
into one line a person can act on (`CliError`), with the exit code a script can rely on."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any
from urllib.parse import quote

import httpx
from httpx_sse import connect_sse

from cli.target import Target

# Exit codes (README, "The command line"): what a script branches on.
SUCCEEDED, NOT_SUCCEEDED, USAGE, UNREACHABLE, DETACHED = 0, 1, 2, 3, 130

READ_BLOCK = 1 << 20


class CliError(Exception):
    """One line for the person at the terminal, and the exit code."""

    def __init__(self, message: str, code: int = USAGE) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class Submitted:
    job_id: str
    created: bool  # False: the same job was already there (this command ran before)


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(READ_BLOCK):
            digest.update(block)
    return digest.hexdigest()


def _message(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text.strip()[:300] or response.reason_phrase
    if isinstance(body, dict):
        return str(body.get("message") or body.get("detail") or body)
    return str(body)


class Api:
    """One target's API over HTTP. Routes are the local path's; the cloud's differ only in
    where a job is submitted (POST /start) and in streaming (none: polled)."""

    def __init__(self, target: Target, timeout_s: float = 30) -> None:
        self.target = target
        headers = {"x-api-key": target.api_key} if target.api_key else {}
        self.http = httpx.Client(base_url=target.base_url, headers=headers, timeout=timeout_s)

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> Api:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    # --- one request, and what its failures mean ---------------------------------------------

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = self.http.request(method, path, **kwargs)
        except httpx.HTTPError as err:
            raise self.unreachable(err) from err
        self.check(response)
        return response

    def unreachable(self, err: Exception) -> CliError:
        where = self.target.base_url
        local = self.target.name == "local"
        start = "make run" if local else "make aws-local, or set AWS_START_URL"
        reason = type(err).__name__ if not str(err) else str(err)
        return CliError(
            f"the {self.target.name} API at {where} is unreachable ({reason}): start it ({start})",
            UNREACHABLE,
        )

    def check(self, response: httpx.Response) -> None:
        code = response.status_code
        if code < 400:
            return
        message = _message(response)
        if code == 401 or (code == 403 and message == "Forbidden"):
            # 403 "Forbidden" is API Gateway's answer to a missing or wrong key.
            raise CliError(
                f"{code} from the {self.target.name} API: {message} — set {self.target.key_hint} "
                "(or pass --api-key) to a key it accepts"
            )
        if code >= 500:
            raise CliError(f"{code} from the {self.target.name} API: {message}", UNREACHABLE)
        raise CliError(f"{code}: {message}")

    def json(self, method: str, path: str, **kwargs: Any) -> Any:
        return self.request(method, path, **kwargs).json()

    # --- jobs -----------------------------------------------------------------------------------

    @staticmethod
    def job_path(job_id: str, *rest: str) -> str:
        return "/".join([f"/jobs/{quote(job_id, safe='')}", *rest])

    def submit(self, spec: dict[str, Any]) -> Submitted:
        route = "/jobs" if self.target.name == "local" else "/start"
        response = self.request("POST", route, json=spec)
        return Submitted(response.json()["job_id"], response.status_code == 202)

    def status(self, job_id: str) -> dict[str, Any]:
        status: dict[str, Any] = self.json("GET", self.job_path(job_id))
        return status

    def chunks(self, job_id: str, state: str | None, limit: int = 200) -> Iterator[dict[str, Any]]:
        """Every chunk (in `state`), a page at a time."""
        after = -1
        while True:
            params: dict[str, Any] = {"after": after, "limit": limit}
            if state:
                params["state"] = state
            page = self.json("GET", self.job_path(job_id, "chunks"), params=params)
            yield from page["chunks"]
            if page["next_after"] is None:
                return
            after = page["next_after"]

    def cancel(self, job_id: str) -> dict[str, Any]:
        status: dict[str, Any] = self.json("POST", self.job_path(job_id, "cancel"))
        return status

    def retry(self, job_id: str) -> dict[str, Any]:
        status: dict[str, Any] = self.json("POST", self.job_path(job_id, "retry"))
        return status

    def jobs(self, limit: int) -> list[dict[str, Any]]:
        jobs: list[dict[str, Any]] = self.json("GET", "/jobs", params={"limit": limit})
        return jobs

    def events(self, job_id: str, after: str | None) -> Iterator[tuple[str, dict[str, Any], str]]:
        """The local app's progress stream: (event, data, id), resumed after the id `after`."""
        headers = {"last-event-id": after} if after else {}
        url = self.job_path(job_id, "events")
        try:
            # No read timeout: between two settlements a stream may rightly say nothing.
            with connect_sse(self.http, "GET", url, headers=headers, timeout=None) as source:
                self.check(source.response)
                for sse in source.iter_sse():
                    yield sse.event, json.loads(sse.data) if sse.data else {}, sse.id
        except httpx.HTTPError as err:
            raise self.unreachable(err) from err

    # --- files ----------------------------------------------------------------------------------

    def upload(self, path: Path) -> str:
        """Put the input where the target's jobs read it (the app's inputs folder, the stack's
        data bucket), once: named by its content, so a second run sends nothing."""
        size = path.stat().st_size
        place = self.json("POST", "/inputs", json={"sha256": file_sha256(path), "bytes": size})
        upload = place.get("upload")
        if upload:
            url = str(upload["url"])
            # A presigned URL (the cloud) carries its own credential: not our API key.
            send = httpx.request if url.startswith(("http://", "https://")) else self.http.request
            headers = {**upload.get("headers", {}), "content-length": str(size)}
            with path.open("rb") as f:
                try:
                    response = send(
                        upload["method"], url, content=_blocks(f), headers=headers, timeout=None
                    )
                except httpx.HTTPError as err:
                    raise self.unreachable(err) from err
            self.check(response)
        return str(place["input_uri"])

    def download(self, job_id: str, which: str, out: Path) -> int:
        """The job's merged `output` or `errors` file into `out` (written whole, then renamed
        into place); returns its lines."""
        path = self.job_path(job_id, which)
        try:
            with self.http.stream("GET", path, timeout=None) as response:
                if response.is_redirect:  # the cloud: a presigned URL of the file in S3
                    response.read()
                    location = response.headers["location"]
                    with httpx.stream("GET", location, timeout=None) as file:
                        self.check(file)
                        return _save(file, out)
                if response.status_code >= 400:
                    response.read()
                self.check(response)
                return _save(response, out)
        except httpx.HTTPError as err:
            raise self.unreachable(err) from err


def _blocks(f: IO[bytes]) -> Iterator[bytes]:
    while block := f.read(READ_BLOCK):
        yield block


def _save(response: httpx.Response, out: Path) -> int:
    part = out.with_name(out.name + ".part")
    lines = 0
    with part.open("wb") as f:
        for block in response.iter_bytes(READ_BLOCK):
            lines += block.count(b"\n")
            f.write(block)
    part.replace(out)
    return lines
