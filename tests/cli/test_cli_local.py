"""`longjobs` against the local app: served over HTTP, run by the stand-in executor over the SDK's
protocol, the model the OpenAI-compatible test server. The command runs in-process (Typer's
runner) or, for Ctrl-C, as a real process sent SIGINT."""

from __future__ import annotations

import contextlib
import json
import signal
import socket
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from chunking.settings import get_settings
from cli.main import app
from tests.executor import StandInExecutor, ended
from tests.llm_server import FakeModelServer
from tests.support import FakeInngestApi, free_port, longjobs_process

runner = CliRunner()


@pytest.fixture(autouse=True)
def no_developer_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The command reads `.env` from where it runs and LONGJOBS_*/API keys from the
    environment: a developer's own must not leak into these tests."""
    monkeypatch.chdir(tmp_path)
    for name in ("LONGJOBS_TARGET", "LONGJOBS_URL", "LONGJOBS_API_KEY", "API_KEY",
                 "AWS_START_URL", "CLOUD_API_KEY"):  # fmt: skip
        monkeypatch.delenv(name, raising=False)


def longjobs(api: httpx.Client, *args: str) -> Any:
    """The command, in-process, against the app served at `api`."""
    return runner.invoke(app, [*args, "--url", str(api.base_url)])


def write_jsonl(path: Path, lines: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path


def test_a_run_uploads_submits_watches_and_writes_the_merged_output(
    api: httpx.Client, executor: StandInExecutor, model: FakeModelServer, tmp_path: Path
) -> None:
    reviews = [{"id": f"r{i}", "text": f"review {i}"} for i in range(9)]
    reviews[4] = {"id": "r4", "text": "[400-context] far too long"}
    source = write_jsonl(tmp_path / "reviews.jsonl", reviews)

    result = longjobs(api, "run", str(source), "--prompt", "Classify: {text}",
                      "--chunk-size", "2", "--out", "answers.jsonl")  # fmt: skip
    print(result.output)
    assert result.exit_code == 1, result.output  # one item failed: the job is partial
    [job] = api.get("/jobs").json()
    assert job["status"] == "partial" and job["items_failed"] == 1
    assert f"job {job['job_id']} partial" in result.output
    # The file written is the job's merged output, line for line, and its failed item beside.
    written = (tmp_path / "answers.jsonl").read_text().splitlines()
    assert written == Path(job["output_uri"]).read_text().splitlines()
    assert [json.loads(line)["id"] for line in written] == [f"r{i}" for i in range(9)]
    [failed] = [json.loads(line) for line in (tmp_path / "answers.errors.jsonl").read_text()
                .splitlines()]  # fmt: skip
    assert failed["id"] == "r4" and "context_length_exceeded" in failed["error"]
    assert "wrote answers.jsonl (9 lines)" in result.output
    # `results` writes the same files again, from the job alone.
    again = longjobs(api, "results", job["job_id"], "--out", "again.jsonl")
    assert again.exit_code == 1, again.output  # it reports how the job ended
    assert (tmp_path / "again.jsonl").read_text().splitlines() == written
    assert (tmp_path / "again.errors.jsonl").exists()
    # The input went where the app reads inputs, named by its content.
    assert Path(job["output_uri"]).exists()
    assert model.calls  # every answer came from the model


def test_the_same_command_twice_attaches_to_the_same_job(
    api: httpx.Client, executor: StandInExecutor, model: FakeModelServer, tmp_path: Path
) -> None:
    source = write_jsonl(
        tmp_path / "in.jsonl", [{"id": f"q{i}", "prompt": f"q {i}"} for i in range(4)]
    )
    first = longjobs(api, "run", str(source), "--chunk-size", "2", "--out", "a.jsonl")
    assert first.exit_code == 0, first.output
    asked = sum(model.calls.values())
    second = longjobs(api, "run", str(source), "--chunk-size", "2", "--out", "b.jsonl")
    assert second.exit_code == 0, second.output
    assert "already submitted with this file and these options: attaching" in second.output
    assert len(api.get("/jobs").json()) == 1
    assert sum(model.calls.values()) == asked  # nothing asked again
    assert (tmp_path / "a.jsonl").read_text() == (tmp_path / "b.jsonl").read_text()
    # Another option is another job.
    third = longjobs(api, "run", str(source), "--chunk-size", "3", "--out", "c.jsonl")
    assert third.exit_code == 0, third.output
    assert len(api.get("/jobs").json()) == 2


def test_ctrl_c_detaches_and_the_job_runs_on_then_watch_attaches_again(
    api: httpx.Client, executor: StandInExecutor
) -> None:
    slow = {"total_items": 60, "chunk_size": 2, "item_delay_ms": 150}
    job_id = api.post("/jobs", json=slow).json()["job_id"]
    watching = longjobs_process("watch", job_id, "--url", str(api.base_url))
    assert watching.stdout is not None
    line = watching.stdout.readline()
    assert f"watching job {job_id}" in line, line + (
        watching.stderr.read() if watching.stderr else ""
    )
    time.sleep(0.5)
    watching.send_signal(signal.SIGINT)
    out, err = watching.communicate(timeout=30)
    assert watching.returncode == 130, out + err
    assert f"detached: job {job_id} runs on. Attach again: longjobs watch {job_id}" in err
    assert "Traceback" not in out + err
    assert api.get(f"/jobs/{job_id}").json()["status"] in ("queued", "running")  # not cancelled

    again = longjobs(api, "watch", job_id)
    assert again.exit_code == 0, again.output
    assert f"job {job_id} succeeded" in again.output
    assert ended(api, job_id)["chunks_succeeded"] == 30


def test_watch_status_chunks_list_and_exit_codes_of_a_partial_job(
    api: httpx.Client, executor: StandInExecutor
) -> None:
    spec = {"total_items": 20, "chunk_size": 5, "fail_chunks": [2], "item_delay_ms": 0}
    job_id = api.post("/jobs", json=spec).json()["job_id"]
    watched = longjobs(api, "watch", job_id)
    assert watched.exit_code == 1, watched.output
    assert "chunk 2 failed after 1" in watched.output and "fail_chunks" in watched.output

    status = longjobs(api, "status", job_id, "--json")
    assert status.exit_code == 1
    assert json.loads(status.output)["status"] == "partial"
    table = longjobs(api, "status", job_id)
    assert "chunks_failed" in table.output and "partial" in table.output

    failed = longjobs(api, "chunks", job_id, "--state", "failed", "--json")
    assert failed.exit_code == 0, failed.output
    assert [json.loads(line)["index"] for line in failed.output.splitlines()] == [2]
    every = longjobs(api, "chunks", job_id, "--limit", "2")
    assert "… and more" in every.output

    no_file = longjobs(api, "results", job_id, "--out", "x.jsonl")
    assert no_file.exit_code == 2 and "has no output file" in no_file.output, no_file.output

    listed = longjobs(api, "list", "--json")
    assert [job["job_id"] for job in json.loads(listed.output)] == [job_id]
    # Retrying a simulate job runs its failed chunk again (which fails again: it always does).
    retried = longjobs(api, "retry", job_id)
    assert "retry 1 started" in retried.output and retried.exit_code == 1, retried.output
    assert api.get(f"/jobs/{job_id}").json()["redrives"] == 1
    # An ended job cannot be cancelled: the API's 409, in one line.
    late = longjobs(api, "cancel", job_id)
    assert late.exit_code == 2 and late.output.startswith("error: 409: "), late.output
    assert len(late.output.strip().splitlines()) == 1


def test_cancel_says_what_it_did(api: httpx.Client, fake_inngest: FakeInngestApi) -> None:
    job_id = api.post("/jobs", json={"total_items": 10, "chunk_size": 5}).json()["job_id"]
    cancelled = longjobs(api, "cancel", job_id)
    assert cancelled.exit_code == 0 and f"job {job_id}: cancelled" in cancelled.output
    assert api.get(f"/jobs/{job_id}").json()["status"] == "cancelled"


def test_errors_a_person_can_act_on_one_line_each(
    api: httpx.Client, fake_inngest: FakeInngestApi, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    def one_line(result: Any, code: int, *words: str) -> None:
        lines = result.output.strip().splitlines()
        assert result.exit_code == code and len(lines) == 1, result.output
        assert lines[0].startswith("error: ") and all(w in lines[0] for w in words), lines[0]

    # Unreachable: nothing listens there.
    unreachable = runner.invoke(app, ["status", "x", "--url", "http://127.0.0.1:9"])
    one_line(unreachable, 3, "local API at http://127.0.0.1:9 is unreachable", "make run")
    # A missing input file.
    one_line(longjobs(api, "run", str(tmp_path / "nope.jsonl")), 2, "nope.jsonl not found")
    # A 404.
    one_line(longjobs(api, "status", "no-such-job"), 2, "404", "no-such-job")
    # A 400 names the field and its problem.
    source = write_jsonl(tmp_path / "in.jsonl", [{"id": "a", "prompt": "p"}])
    bad = longjobs(api, "run", str(source), "--chunk-size", "0")
    one_line(bad, 2, "400", "chunk_size")
    # A 401 says which key to set.
    monkeypatch.setenv("API_KEY", "s3cret-key")
    get_settings.cache_clear()
    assert get_settings().api_key  # read now: the app keeps it
    monkeypatch.delenv("API_KEY")  # the command must not find it
    one_line(longjobs(api, "list"), 2, "401", "LONGJOBS_API_KEY", "--api-key")
    assert longjobs(api, "list", "--api-key", "s3cret-key").exit_code == 0


def shut(end: socket.socket) -> None:
    with contextlib.suppress(OSError):
        end.shutdown(socket.SHUT_RDWR)


class CuttableLink:
    """A TCP relay between the command and the app that can cut every connection and refuse new
    ones for a while: the network blinking, or the app restarting, as the command sees it."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port, self.port = upstream_port, free_port()
        self.listener = socket.create_server(("127.0.0.1", self.port))
        self.open: list[socket.socket] = []
        self.down_until = 0.0
        self.accepted = 0
        self.lock = threading.Lock()
        threading.Thread(target=self.accept, daemon=True).start()

    def accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if time.monotonic() < self.down_until:
                client.close()  # refused while down
                continue
            upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
            self.accepted += 1
            with self.lock:
                self.open += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self.pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def pipe(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for end in (source, sink):
                shut(end)

    def cut(self, for_s: float) -> None:
        self.down_until = time.monotonic() + for_s
        with self.lock:
            cut, self.open = self.open, []
        for end in cut:
            shut(end)

    def close(self) -> None:
        self.listener.close()
        self.cut(0)


def test_a_watch_outlives_the_link_to_the_app_going_down_and_resumes_its_stream(
    api: httpx.Client, executor: StandInExecutor
) -> None:
    spec = {"total_items": 40, "chunk_size": 2, "item_delay_ms": 100}
    job_id = api.post("/jobs", json=spec).json()["job_id"]
    link = CuttableLink(int(str(api.base_url).rsplit(":", 1)[1].strip("/")))
    try:
        result: list[Any] = []

        def watch() -> None:
            result.append(
                runner.invoke(app, ["watch", job_id, "--url", f"http://127.0.0.1:{link.port}"])
            )

        watcher = threading.Thread(target=watch)
        watcher.start()
        deadline = time.monotonic() + 30
        while api.get(f"/jobs/{job_id}").json()["chunks_succeeded"] < 2:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        link.cut(for_s=3)  # mid-stream: the command's stream and status reads fail for 3 s
        before = link.accepted
        watcher.join(timeout=90)
        [watched] = result
    finally:
        link.close()
    assert watched.exit_code == 0, watched.output
    assert f"job {job_id} succeeded" in watched.output and "40/40 items" in watched.output
    assert ended(api, job_id)["chunks_succeeded"] == 20
    assert link.accepted > before  # it came back through the link, once it was up again
