from __future__ import annotations

import json
from pathlib import Path

import pytest

from chunking.settings import get_settings
from tests.chunking.llm_chunks import build_all, chunks_of, job_items
from workloads.llm import blobs
from workloads.llm.input import MAX_LINE_BYTES, InputError, check_input


def write(tmp_path: Path, *lines: object) -> str:
    path = tmp_path / "input.jsonl"
    path.write_text("\n".join(x if isinstance(x, str) else json.dumps(x) for x in lines) + "\n")
    return str(path)


def count(uri: str, template: str | None) -> int | None:
    """The submission's check, reading the file through whatever its size (as the job's index
    reads a larger one)."""
    return check_input(uri, template, full_check_bytes=get_settings().llm_input_max_bytes)


def test_prompts_and_templated_texts(tmp_path: Path) -> None:
    uri = write(tmp_path, {"id": "a", "prompt": "Say hi"}, {"id": 2, "text": "a cat"}, "")
    assert count(uri, "Describe {text} briefly.") == 2
    items = job_items(uri, "Describe {text} briefly.", 5, str(tmp_path / "input.index"))
    assert [(i.index, i.id, i.prompt) for i in items] == [
        (0, "a", "Say hi"), (1, "2", "Describe a cat briefly."),
    ]  # fmt: skip


def test_a_chunk_reads_only_its_own_items(tmp_path: Path) -> None:
    uri = write(tmp_path, *({"id": i, "prompt": f"p{i}"} for i in range(10)))
    by_3, by_4 = str(tmp_path / "by-3.index"), str(tmp_path / "by-4.index")
    assert build_all(uri, None, 3, by_3) == build_all(uri, None, 4, by_4) == 10
    assert [i.id for i in chunks_of(uri, None, 3, by_3, 10)[1]] == ["3", "4", "5"]
    assert [i.index for i in chunks_of(uri, None, 4, by_4, 10)[2]] == [8, 9]


@pytest.mark.parametrize(
    ("lines", "template", "message"),
    [
        (["{not json"], None, "line 1: not valid JSON"),
        ([[1, 2]], None, "line 1: must be a JSON object"),
        ([{"prompt": "x"}], None, "line 1: needs an id"),
        ([{"id": "a"}], None, "line 1: needs a prompt or a text"),
        ([{"id": "a", "text": "x"}], None, "has a text but the job has no prompt_template"),
        ([{"id": "a", "prompt": "x"}, {"id": "a", "prompt": "y"}], None,
         "line 2: id 'a' is also on line 1"),
        ([""], None, "the file has no items"),
    ],
)  # fmt: skip
def test_bad_input_names_the_line(
    tmp_path: Path, lines: list[object], template: str | None, message: str
) -> None:
    with pytest.raises(InputError, match=message):
        count(write(tmp_path, *lines), template)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="not found or not allowed"):
        count(str(tmp_path / "nope.jsonl"), None)


def test_errors_name_the_files_own_line_numbers_past_blank_lines(tmp_path: Path) -> None:
    uri = write(tmp_path, {"id": "a", "prompt": "x"}, "", "   ", "{broken")
    with pytest.raises(InputError, match="line 4: not valid JSON"):
        count(uri, None)
    uri = write(tmp_path, {"id": "a", "prompt": "x"}, "", {"id": "a", "prompt": "y"})
    with pytest.raises(InputError, match="line 3: id 'a' is also on line 1"):
        count(uri, None)
    uri = write(tmp_path, "", {"id": "a", "prompt": "x"}, "", {"id": "b", "prompt": "y"})
    items = job_items(uri, None, 1, str(tmp_path / "input.index"))
    assert [(i.index, i.id) for i in items] == [(0, "a"), (1, "b")]


def test_lines_are_split_on_newlines_across_read_blocks(tmp_path: Path) -> None:
    # Lines longer than a read block, CRLF endings, and a last line without a newline.
    prompts = [f"{i}" * (blobs.READ_BLOCK_BYTES + 7 * i) for i in range(1, 4)]
    lines = [json.dumps({"id": i, "prompt": p}) for i, p in enumerate(prompts)]
    path = tmp_path / "input.jsonl"
    path.write_bytes(("\r\n".join(lines)).encode())
    assert count(str(path), None) == 3
    assert [i.prompt for i in job_items(str(path), None, 2, str(tmp_path / "in.index"))] == prompts


def test_a_line_of_exactly_the_bound_is_an_item(tmp_path: Path) -> None:
    head = '{"id": 1, "prompt": "'
    line = head + "x" * (MAX_LINE_BYTES - len(head) - 2) + '"}'
    assert len(line) == MAX_LINE_BYTES
    assert count(write(tmp_path, line), None) == 1
    with pytest.raises(InputError, match=f"line 1: longer than {MAX_LINE_BYTES} bytes"):
        count(write(tmp_path, line[:-2] + 'x"}'), None)
