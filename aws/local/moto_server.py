"""moto in server mode for the emulator, answering one request at a time, in its own process.

The real services make each call atomic (a conditional write either wins or not); moto's
threaded server does not, so concurrent workers could both win. A lock restores that. The
emulation never long-polls, so the lock is never held while waiting. Its own process gives
moto, the emulation's busiest part, a whole interpreter.

    python -m aws.local.moto_server --port 5000
"""

from __future__ import annotations

import argparse
import threading
from typing import Any

from werkzeug.serving import WSGIRequestHandler, make_server


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
