from __future__ import annotations

import json
from pathlib import Path

import pytest

from workloads.llm import blobs
from workloads.llm.input import MAX_LINE_BYTES, InputError, read_items, validate_input


def write(tmp_path: Path, *lines: object) -> str:
    path = tmp_path / "input.jsonl"
    path.write_text("\n".join(x if isinstance(x, str) else json.dumps(x) for x in lines) + "\n")
    return str(path)


def test_prompts_and_templated_texts(tmp_path: Path) -> None:
    uri = write(tmp_path, {"id": "a", "prompt": "Say hi"}, {"id": 2, "text": "a cat"}, "")
    assert validate_input(uri, "Describe {text} briefly.") == 2
    items = read_items(uri, "Describe {text} briefly.", 0, 5)
    assert [(i.index, i.id, i.prompt) for i in items] == [
        (0, "a", "Say hi"), (1, "2", "Describe a cat briefly."),
    ]  # fmt: skip


def test_a_chunk_reads_only_its_own_items(tmp_path: Path) -> None:
    uri = write(tmp_path, *({"id": i, "prompt": f"p{i}"} for i in range(10)))
    assert [i.id for i in read_items(uri, None, 3, 6)] == ["3", "4", "5"]
    assert [i.index for i in read_items(uri, None, 8, 20)] == [8, 9]


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
        validate_input(write(tmp_path, *lines), template)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no such file"):
        validate_input(str(tmp_path / "nope.jsonl"), None)


def test_errors_name_the_files_own_line_numbers_past_blank_lines(tmp_path: Path) -> None:
    uri = write(tmp_path, {"id": "a", "prompt": "x"}, "", "   ", "{broken")
    with pytest.raises(InputError, match="line 4: not valid JSON"):
        validate_input(uri, None)
    uri = write(tmp_path, {"id": "a", "prompt": "x"}, "", {"id": "a", "prompt": "y"})
    with pytest.raises(InputError, match="line 3: id 'a' is also on line 1"):
        validate_input(uri, None)
    uri = write(tmp_path, "", {"id": "a", "prompt": "x"}, "", {"id": "b", "prompt": "y"})
    assert [(i.index, i.id) for i in read_items(uri, None, 0, 9)] == [(0, "a"), (1, "b")]


def test_lines_are_split_on_newlines_across_read_blocks(tmp_path: Path) -> None:
    # Lines longer than a read block, CRLF endings, and a last line without a newline.
    prompts = [f"{i}" * (blobs.READ_BLOCK_BYTES + 7 * i) for i in range(1, 4)]
    lines = [json.dumps({"id": i, "prompt": p}) for i, p in enumerate(prompts)]
    path = tmp_path / "input.jsonl"
    path.write_bytes(("\r\n".join(lines)).encode())
    assert validate_input(str(path), None) == 3
    assert [i.prompt for i in read_items(str(path), None, 0, 9)] == prompts


def test_a_line_of_exactly_the_bound_is_an_item(tmp_path: Path) -> None:
    head = '{"id": 1, "prompt": "'
    line = head + "x" * (MAX_LINE_BYTES - len(head) - 2) + '"}'
    assert len(line) == MAX_LINE_BYTES
    assert validate_input(write(tmp_path, line), None) == 1
    with pytest.raises(InputError, match=f"line 1: longer than {MAX_LINE_BYTES} bytes"):
        validate_input(write(tmp_path, line[:-2] + 'x"}'), None)
