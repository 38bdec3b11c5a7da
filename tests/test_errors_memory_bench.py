"""bench/errors_memory.py at a few dozen items, so it cannot rot: its jobs built through the
app's code (plan, keep_results, settle), the errors file written by the finishing unit in a
subprocess and read back line by line, the figures judged and written. The ratios at these
sizes are not the target's (a read block dominates): only that they are there."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from bench import errors_memory as bench


def run(tmp_path: Path, where: str) -> dict[str, Any]:
    results = tmp_path / "errors_memory.json"
    before = dict(os.environ)
    [measured] = bench.main(
        ["--sizes", "20", "60", "--chunk-size", "10", "--where", where, "--results", str(results)]
    )
    assert dict(os.environ) == before  # the variant's settings put back
    assert json.loads(results.read_text())["runs"] == [measured]
    return measured


@pytest.mark.parametrize("where", ["local", "s3"])
def test_the_errors_file_of_a_job_half_failed_item_by_item_half_whole(
    tmp_path: Path, where: str
) -> None:
    measured = run(tmp_path, where)
    rows = measured["rows"]
    # Each size measured for the errors file alone and the whole finishing unit, every line
    # checked by the bench (one per item, in input order, its input, error and attempts).
    assert [(r["step"], r["items"], r["chunks"], r["lines"]) for r in rows] == [
        ("errors", 20, 2, 20),
        ("finish", 20, 2, 20),
        ("errors", 60, 6, 60),
        ("finish", 60, 6, 60),
    ]
    assert all(r["peak"] > 0 and r["bytes"] > 0 for r in rows)
    assert set(measured["verdicts"]) == {"errors", "finish"}


def test_a_wrong_errors_file_is_caught(tmp_path: Path) -> None:
    lines = [json.loads(line) for line in bench.input_lines(4)]
    good = [
        {"id": "item-0000000", "input": lines[0], "error": bench.ITEM_ERRORS[0], "attempts": 1},
        {"id": "item-0000001", "input": lines[1], "error": bench.ITEM_ERRORS[1], "attempts": 2},
        {"id": "item-0000002", "input": lines[2], "error": bench.CHUNK_ERROR, "attempts": 3},
        {"id": "item-0000003", "input": lines[3], "error": bench.CHUNK_ERROR, "attempts": 3},
    ]
    path = tmp_path / "errors.jsonl"

    def check(entries: list[dict[str, object]]) -> int:
        path.write_text("".join(json.dumps(entry) + "\n" for entry in entries))
        return bench.check_errors_file(str(path), 4, 2)

    assert check(good) == 4
    for wrong in (good[:3], [good[1], good[0], *good[2:]], [*good[:2], {**good[2], "attempts": 1}]):
        with pytest.raises(AssertionError):
            check(wrong)
