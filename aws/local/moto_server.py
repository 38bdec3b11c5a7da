"""moto in server mode for the emulator, answering one request at a time, in its own process.

The real services make each call atomic (a conditional write either wins or not); moto's
threaded server does not, so concurrent workers could both win. A lock restores that. The
emulation never long-polls, so the lock is never held while waiting. Its own process gives
moto, the emulation's busiest part, a whole interpreter; `MotoServer` starts it.

    python -m aws.local.moto_server --port 5000
"""

from __future__ import annotations

import argparse
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
from werkzeug.serving import WSGIRequestHandler, make_server

REPO = Path(__file__).resolve().parents[2]


class MotoServer:
    """This module in a subprocess, on `port` (0: a free one)."""

    def __init__(self, port: int) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "aws.local.moto_server", "--port", str(self.port)], cwd=REPO
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"moto server exited ({self.proc.returncode}): is :{self.port} free?"
                )
            try:
                httpx.get(f"{self.url}/moto-api/", timeout=1)
                return
            except httpx.TransportError:
                time.sleep(0.1)
        raise RuntimeError(f"moto server did not answer on {self.url}")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class _QuietHandler(WSGIRequestHandler):
    def log_request(self, *args: Any, **kwargs: Any) -> None:
        pass  # one line per AWS call would drown everything else


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=5000)
    args = parser.parse_args()

    from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app

    from aws.local import moto_patches

    moto_patches.install()
    app = DomainDispatcherApplication(create_backend_app)
    lock = threading.Lock()

    def one_at_a_time(environ: Any, start_response: Any) -> Any:
        with lock:
            return list(app(environ, start_response))

    server = make_server(
        "127.0.0.1", args.port, one_at_a_time, threaded=True, request_handler=_QuietHandler
    )
    server.serve_forever()


if __name__ == "__main__":
    main()
