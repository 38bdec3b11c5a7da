"""Benchmark: the `longjobs run` command's peak memory for a 100,000 vs a 1,000,000 item input.

The command hashes its input and sends it to the app (POST /inputs, then PUT /inputs/{sha256})
a block at a time, so its memory must not grow with the file: the target is
peak(1M) / peak(100k) <= 1.5.

    .venv/bin/python -m bench.cli_upload [--sizes 100000 1000000]

The app runs in a subprocess (uvicorn, a temporary store and inputs folder); no Inngest Dev
Server is started, so each run ends at submission with the app's 503 (exit 3): what is measured
is the command's hash and upload of the whole file. Each command runs in a fresh subprocess that
reports its own resident peak (VmHWM) as it exits.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from tests.support import free_port

TARGET_RATIO = 1.5
LINE = "Arrived a day early and the battery lasts the whole weekend, and the case fits it well."
# Runs the command as `longjobs` does, and reports its resident peak when it exits.
MEASURED = (
    "import atexit, json, runpy, sys;"
    "from bench.merge_memory import proc_status_kib;"
    "atexit.register(lambda: print(json.dumps({'rss_peak_kib': proc_status_kib('VmHWM')}),"
    " file=sys.stderr));"
    "sys.argv = ['longjobs', *sys.argv[1:]];"
    "runpy.run_module('cli', run_name='__main__')"
)


def write_input(path: Path, items: int) -> None:
    with path.open("w") as f:
        for i in range(items):
            f.write(json.dumps({"id": f"r{i:07d}", "text": LINE}) + "\n")


def measure(source: Path, url: str) -> dict[str, float]:
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", MEASURED, "run", str(source), "--prompt", "Classify: {text}",
         "--url", url],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    seconds = time.perf_counter() - started
    report = json.loads(done.stderr.strip().splitlines()[-1])
    print(f"  {source.name}: exit {done.returncode}, {done.stderr.splitlines()[0][:90]}")
    return {"seconds": seconds, "rss_peak_kib": report["rss_peak_kib"]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("--sizes", type=int, nargs=2, default=[100_000, 1_000_000])
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        port = free_port()
        env = {
            **os.environ,
            "JOB_STORE_URL": f"sqlite:///{root / 'jobs.sqlite3'}",
            "LLM_INPUT_ROOT": str(root / "inputs"),
            "LLM_OUTPUT_URI": str(root / "outputs"),
            "OPENAI_BASE_URL": "http://127.0.0.1:9/v1",  # checked at submission, never called
            "API_KEY": "",
            "API_KEYS": "{}",
        }
        app = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "main:app", "--port", str(port)],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            url = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 30
            while True:
                try:
                    httpx.get(f"{url}/healthz").raise_for_status()
                    break
                except httpx.HTTPError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.2)
            figures = {}
            for items in args.sizes:
                source = root / f"in{items}.jsonl"
                write_input(source, items)
                figures[items] = {"bytes": source.stat().st_size, **measure(source, url)}
        finally:
            app.terminate()
            app.wait(timeout=10)
    small, large = args.sizes
    for items, f in figures.items():
        peak, mb = f["rss_peak_kib"] / 1024, f["bytes"] / 1e6
        print(f"{items:>9} items, {mb:.0f} MB: peak RSS {peak:.1f} MiB, {f['seconds']:.1f} s")
    ratio = figures[large]["rss_peak_kib"] / figures[small]["rss_peak_kib"]
    verdict = "met" if ratio <= TARGET_RATIO else "MISSED"
    print(f"ratio {large} / {small}: peak RSS {ratio:.2f} (target <= {TARGET_RATIO}: {verdict})")
    return 0 if ratio <= TARGET_RATIO else 1


if __name__ == "__main__":
    raise SystemExit(main())
