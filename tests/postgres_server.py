"""A real Postgres server for the tests and benchmarks, started from the machine's binaries.

Debian's `postgresql` package provides them (scripts/test.sh installs it when it is missing
and it runs as root): the distribution's maintained server, the same one a user's production
host is likely to run, where a PyPI wheel of it would be one more build to trust. The server
keeps its data in a temporary folder and listens on a free loopback port; each test gets a
schema of its own, so tests never see each other's jobs.
"""

from __future__ import annotations

import glob
import itertools
import os
import pwd
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import psycopg

from tests.support import free_port

INSTALL_HINT = (
    "no Postgres server binaries found (looked for pg_ctl on PATH and in "
    "/usr/lib/postgresql/*/bin): install Debian's package, `apt-get install postgresql` "
    "(scripts/test.sh does when it runs as root)"
)


def server_bin() -> Path:
    """The folder holding `initdb` and `postgres`, newest version first."""
    found = shutil.which("pg_ctl")
    if found:
        return Path(os.path.realpath(found)).parent
    versions = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/postgres"),
        key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0,
    )
    if not versions:
        raise RuntimeError(INSTALL_HINT)
    return Path(versions[-1]).parent


class PostgresServer:
    """initdb + postgres in a temporary folder; `url()` gives each caller a fresh schema."""

    def __init__(self, *, durable: bool = False) -> None:
        self.durable = durable  # benchmarks: commits reach the disk, as in production
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="long-jobs-pg-"))
        self._schemas = itertools.count(1)
        # Postgres refuses to run as root: as root, run it as the package's `postgres` user.
        self._as: list[str] = []
        if os.geteuid() == 0:
            user = pwd.getpwnam("postgres")
            os.chown(self.dir, user.pw_uid, user.pw_gid)
            self._as = ["runuser", "-u", "postgres", "--"]

    @property
    def base_url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def start(self) -> PostgresServer:
        bin_dir = server_bin()
        data = self.dir / "data"
        subprocess.run(
            [*self._as, str(bin_dir / "initdb"), "-D", str(data), "-U", "postgres",
             "--auth=trust", "-E", "UTF8", "--no-sync"],
            check=True, capture_output=True,
        )  # fmt: skip
        settings = ["-c", "max_connections=300", "-c", "shared_buffers=128MB"]
        if not self.durable:  # tests: nothing to keep after the session
            settings += ["-c", "fsync=off", "-c", "synchronous_commit=off"]
            settings += ["-c", "full_page_writes=off"]
        self.log = (self.dir / "server.log").open("w")
        self.proc = subprocess.Popen(
            [*self._as, str(bin_dir / "postgres"), "-D", str(data), "-p", str(self.port),
             "-h", "127.0.0.1", "-k", str(self.dir), *settings],
            stdout=self.log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        deadline = time.monotonic() + 30
        while True:
            try:
                psycopg.connect(self.base_url, connect_timeout=2).close()
                return self
            except psycopg.OperationalError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    log = (self.dir / "server.log").read_text()[-2000:]
                    raise RuntimeError(f"Postgres did not start: {log}") from None
                time.sleep(0.1)

    def url(self) -> str:
        """A new, empty schema of the one database, as a JOB_STORE_URL."""
        schema = f"test_{next(self._schemas)}"
        with psycopg.connect(self.base_url, autocommit=True) as conn:
            conn.execute(f"CREATE SCHEMA {schema}")
        return f"{self.base_url}?options=-csearch_path%3D{schema}"

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()
        shutil.rmtree(self.dir, ignore_errors=True)
