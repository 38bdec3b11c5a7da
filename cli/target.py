"""Which API the command talks to, and with which key: `--local` (the app) or `--cloud` (the
stack's API Gateway), from flags, else the environment, else `.env` (what `make run` wrote)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pydantic_settings import BaseSettings, SettingsConfigDict

TargetName = Literal["local", "cloud"]


class CliSettings(BaseSettings):
    """The settings the command reads: the same names the app's `.env` uses, where it has them."""

    model_config = SettingsConfigDict(env_file=".env", extra="ignore")

    longjobs_target: TargetName = "local"
    longjobs_url: str = "http://127.0.0.1:8000"  # the app (make run)
    # The local API's key: a tenant's own (LONGJOBS_API_KEY), else the app's shared API_KEY.
    longjobs_api_key: str = ""
    api_key: str = ""
    aws_start_url: str = "http://127.0.0.1:3000/Prod/start"  # the emulator (make run)
    cloud_api_key: str = ""


@dataclass(frozen=True)
class Target:
    name: TargetName
    base_url: str  # routes are joined to it: /jobs, /inputs, ...
    api_key: str
    key_hint: str  # which setting holds the key, for a 401's message

    @property
    def streams(self) -> bool:
        """The local app streams progress (SSE); the cloud API is polled."""
        return self.name == "local"

    def attach_hint(self, job_id: str) -> str:
        flag = " --cloud" if self.name == "cloud" else ""
        return f"longjobs watch {job_id}{flag}"


def resolve(cloud: bool | None, url: str | None, api_key: str | None) -> Target:
    """The target: `cloud` True/False from the flags, None to take LONGJOBS_TARGET."""
    settings = CliSettings()
    name: TargetName = settings.longjobs_target if cloud is None else "cloud" if cloud else "local"
    if name == "cloud":
        start = url or settings.aws_start_url
        # AWS_START_URL names the stack's POST /start; every other route is beside it.
        base = start.rstrip("/").removesuffix("/start")
        return Target("cloud", base, api_key or settings.cloud_api_key, "CLOUD_API_KEY")
    key = api_key or settings.longjobs_api_key or settings.api_key
    return Target("local", (url or settings.longjobs_url).rstrip("/"), key, "LONGJOBS_API_KEY")
