"""A local receiver for completion callbacks (tests only): records each delivery and answers
with the next status code of a script (then 200), so tests can make it fail first."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI, Request, Response


@dataclass
class Delivery:
    headers: dict[str, str]
    body: bytes


@dataclass
class CallbackReceiver:
    answers: list[int] = field(default_factory=list)  # status codes to answer first, in order
    deliveries: list[Delivery] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.app = FastAPI()

        @self.app.post("/hook")
        async def hook(request: Request) -> Any:
            self.deliveries.append(Delivery(dict(request.headers), await request.body()))
            code = self.answers.pop(0) if self.answers else 200
            return Response(status_code=code, content=b"" if code < 300 else b"try later")
