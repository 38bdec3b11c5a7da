"""The llm input's index: built in one streaming pass (paused and resumed within a time budget),
it lets every chunk read exactly its own lines and nothing else; and what a submission checks
(`check_input`) stays bounded however big the input is.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto import mock_aws

from tests.chunking.llm_chunks import build_all, chunks_of
from tests.support import free_port
from workloads.llm import blobs, index
from workloads.llm.index import Indexed, Paused, build_index, chunk_items, index_uri
from workloads.llm.input import (
    FULL_CHECK_BYTES,
    MAX_LINE_BYTES,
    InputError,
    InputUnavailableError,
    Item,
    check_input,
)

TEMPLATE = "Say {text}!"
BUCKET = "inputs"


def item(i: int, prompt: str | None = None, *, key: str = "prompt") -> str:
    return json.dumps({"id": f"id-{i}", key: f"p{i}" if prompt is None else prompt})


def renamed(data: bytes, prefix: str) -> bytes:
    """The same lines, their ids not those of another file's (`id-N`)."""
    return data.replace(b'"id-', f'"{prefix}-'.encode())


def naive(data: bytes, template: str | None) -> list[Item]:
    """The items of a whole file, parsed the obvious way: what every chunk must add up to."""
    texts = data.decode("utf-8").split("\n")
    if texts[-1] == "":
        texts.pop()  # after the last newline: no line
    parsed = [json.loads(text) for text in (t.rstrip("\r") for t in texts) if text.strip()]
    return [
        Item(
            i,
            str(d["id"]),
            d["prompt"] if "prompt" in d else str(template).replace("{text}", d["text"]),
        )
        for i, d in enumerate(parsed)
    ]


def at_boundaries() -> bytes:
    return "".join(item(i) + "\n" for i in range(21)).encode()  # 21: whole chunks of 1, 3, 7


def blank_lines() -> bytes:
    lines = ["", "  "]  # before the first item
    for i in range(20):
        if i % 7 == 0:
            lines.append("   ")  # where a chunk of 7 starts
        lines.append(item(i))
        if i % 3 == 2:
            lines += ["", "\t"]  # where a chunk of 3 ends
    return ("\n".join(lines) + "\n\n \n").encode()  # and at the end of the file


def crlf() -> bytes:
    lines = [item(i) for i in range(15)]
    lines.insert(6, "")
    return ("\r\n".join(lines) + "\r\n").encode()


def no_trailing_newline() -> bytes:
    return "\n".join(item(i) for i in range(10)).encode()


def multibyte() -> bytes:
    # Lines of uneven byte lengths, mostly of 3- and 4-byte characters: a byte offset picked
    # without looking at the lines lands inside a character (checked by the test).
    def line(i: int) -> dict[str, object]:
        if i % 2:
            return {"id": f"猫-{i}", "prompt": "猫" * (4 + i % 5) + "🙂" * (3 + i % 4) + "é"}
        return {"id": i, "text": "漢字🙂" * (2 + i % 3)}

    return "".join(json.dumps(line(i), ensure_ascii=False) + "\n" for i in range(30)).encode()


FILES: dict[str, Callable[[], bytes]] = {
    "at-chunk-boundaries": at_boundaries,
    "blank-lines": blank_lines,
    "crlf": crlf,
    "no-trailing-newline": no_trailing_newline,
    "multibyte": multibyte,
}
CHUNK_SIZES = (1, 3, 7, 1_000)


@dataclass
class Place:
    """Where a test's input and index are: local files under LLM_INPUT_ROOT, or S3 (moto)."""

    kind: str
    root: str

    def put(self, data: bytes, name: str = "in.jsonl") -> str:
        uri = blobs.join(self.root, "inputs", name)
        blobs.write_bytes(uri, data)
        return uri

    def get(self, uri: str) -> bytes:
        return blobs.read_range(uri, 0, 2**40)

    def index_at(self, job: str = "job") -> str:
        return index_uri(blobs.join(self.root, "outputs"), job)


@pytest.fixture
def s3(aws_env: None) -> Iterator[Place]:
    with mock_aws():
        blobs.s3_client.cache_clear()
        boto3.client("s3").create_bucket(Bucket=BUCKET)
        yield Place("s3", f"s3://{BUCKET}")
    blobs.s3_client.cache_clear()


@pytest.fixture(params=["local", "s3"])
def place(request: pytest.FixtureRequest, tmp_path: Path) -> Place:
    if request.param == "s3":
        s3_place: Place = request.getfixturevalue("s3")
        return s3_place
    return Place("local", str(tmp_path))  # LLM_INPUT_ROOT is tmp_path (tests/conftest.py)


@dataclass
class Spy:
    """The ranges of the input each read asked for: (start, end) of `blobs.read_line_spans`."""

    ranges: list[tuple[int, int | None]]
    lines: int = 0


@pytest.fixture
def spy(monkeypatch: pytest.MonkeyPatch) -> Spy:
    seen = Spy([])
    real = blobs.read_line_spans

    def counted(
        uri: str, start: int = 0, end: int | None = None, **kwargs: Any
    ) -> Iterator[blobs.Line]:
        if not uri.endswith(".jsonl"):
            return real(uri, start, end, **kwargs)
        seen.ranges.append((start, end))

        def lines() -> Iterator[blobs.Line]:
            for line in real(uri, start, end, **kwargs):
                seen.lines += 1
                yield line

        return lines()

    monkeypatch.setattr(blobs, "read_line_spans", counted)
    return seen


# --- every chunk, through the index, is exactly its own lines ---------------------------------


@pytest.mark.parametrize("name", FILES)
def test_every_chunk_read_through_the_index_is_exactly_its_lines(place: Place, name: str) -> None:
    data = FILES[name]()
    uri = place.put(data)
    expected = naive(data, TEMPLATE)
    if name == "multibyte":  # where a split by bytes alone would fall, a character is cut
        cuts = [len(data) * k // n for n in (3, 7) for k in range(1, n)]
        assert any(0x80 <= data[cut] < 0xC0 for cut in cuts)
    for chunk_size in CHUNK_SIZES:
        index_at = place.index_at(f"job-{chunk_size}")
        assert build_all(uri, TEMPLATE, chunk_size, index_at) == len(expected)
        chunks = chunks_of(uri, TEMPLATE, chunk_size, index_at, len(expected))
        assert [len(c) for c in chunks] == [
            min(chunk_size, len(expected) - first) for first in range(0, len(expected), chunk_size)
        ]
        assert [i for c in chunks for i in c] == expected


def test_the_index_holds_each_chunks_start_then_the_end(tmp_path: Path) -> None:
    data = b"\n" + b"".join(item(i).encode() + b"\r\n" for i in range(5)) + b"\n\n"
    uri = str(tmp_path / "in.jsonl")
    Path(uri).write_bytes(data)
    index_at = str(tmp_path / "input.index")
    assert build_all(uri, None, 2, index_at) == 5
    raw = Path(index_at).read_bytes()
    pairs = [int.from_bytes(raw[at : at + 8], "little") for at in range(0, len(raw), 8)]
    width = len(item(0)) + 2
    # (offset, line) of items 0, 2 and 4, then just past item 4's line (not the blank ones).
    assert pairs == [1, 2, 1 + 2 * width, 4, 1 + 4 * width, 6, 1 + 5 * width, 7]


def test_a_file_of_blank_lines_has_no_items(place: Place) -> None:
    uri = place.put(b"\n  \r\n\t\n")
    with pytest.raises(InputError, match="the file has no items"):
        build_index(uri, None, 3, place.index_at())


# --- errors name the file's own line numbers ---------------------------------------------------


def test_a_bad_line_deep_in_a_large_input_is_named(tmp_path: Path) -> None:
    lines = [item(i) for i in range(50_000)]
    lines[49_730] = lines[49_730][:-1]  # line 49,731 of 50,000
    path = tmp_path / "in.jsonl"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(InputError, match=r"^line 49731: not valid JSON"):
        build_index(str(path), None, 100, str(tmp_path / "input.index"))


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("[1, 2]", "line 4: must be a JSON object"),
        ('{"prompt": "x"}', "line 4: needs an id"),
        ('{"id": "a", "text": "x"}', "line 4: has a text but the job has no prompt_template"),
        ('{"id": "id-0", "prompt": "again"}', "line 4: id 'id-0' is also on line 1"),
        ("x" * (MAX_LINE_BYTES + 1), f"line 4: longer than {MAX_LINE_BYTES} bytes"),
    ],
    ids=["not-an-object", "no-id", "text-without-template", "duplicate-id", "too-long"],
)  # fmt: skip
def test_build_index_refuses_what_check_input_refuses(
    tmp_path: Path, line: str, message: str
) -> None:
    path = tmp_path / "in.jsonl"
    path.write_text(f"{item(0)}\n\n{item(1)}\n{line}\n{item(2)}\n")
    with pytest.raises(InputError, match=message):
        build_index(str(path), None, 2, str(tmp_path / "input.index"))
    if len(line) < FULL_CHECK_BYTES:
        with pytest.raises(InputError, match=message):
            check_input(str(path), None)


def test_text_that_is_not_utf8_is_named_by_its_line(tmp_path: Path) -> None:
    path = tmp_path / "in.jsonl"
    path.write_bytes(item(0).encode() + b'\n{"id": 1, "prompt": "\xff"}\n')
    with pytest.raises(InputError, match=r"^line 2: not UTF-8 text"):
        build_index(str(path), None, 2, str(tmp_path / "input.index"))


# --- pausing and resuming ----------------------------------------------------------------------


def resume_to_the_end(
    uri: str, chunk_size: int, index_at: str, state: dict[str, int] | None = None
) -> tuple[Indexed, list[dict[str, int]]]:
    """Build with a deadline already past, resumed until indexed: the result, each state."""
    states: list[dict[str, int]] = []
    while True:
        result = build_index(
            uri, None, chunk_size, index_at, resume=state, deadline=time.monotonic() - 1
        )
        if isinstance(result, Indexed):
            return result, states
        state = json.loads(json.dumps(result.state))  # as it travels between runs
        assert state is not None
        states.append(state)


def test_resumed_builds_give_the_same_index_and_never_reread_the_start(
    place: Place, spy: Spy, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(index, "MIN_LINES_PER_RUN", 7)
    data = (
        blank_lines()
        + multibyte()
        + renamed(crlf(), "crlf")
        + renamed(no_trailing_newline(), "end")
    )
    uri = place.put(data)
    total = len(naive(data, TEMPLATE))
    assert build_all(uri, TEMPLATE, 4, place.index_at("whole")) == total
    spy.ranges.clear()
    spy.lines = 0

    requested: list[str] = []
    if place.kind == "s3":

        def note_range(params: dict[str, Any], **_: Any) -> None:
            if params["Key"].endswith(".jsonl"):
                requested.append(params.get("Range", "whole"))

        blobs.s3_client().meta.events.register("before-parameter-build.s3.GetObject", note_range)

    states: list[dict[str, int]] = []
    state: dict[str, int] | None = None
    while True:
        result = build_index(
            uri, TEMPLATE, 4, place.index_at("paused"), resume=state, deadline=time.monotonic() - 1
        )
        if isinstance(result, Indexed):
            break
        assert isinstance(result, Paused)
        state = json.loads(json.dumps(result.state))
        assert state is not None
        states.append(state)
    assert result.total_items == total
    assert len(states) >= 10  # Paused again and again, a few lines each time

    assert place.get(place.index_at("paused")) == place.get(place.index_at("whole"))
    # Each run read from where the last one stopped, each line once.
    assert spy.ranges == [(0, None)] + [(s["offset"], None) for s in states]
    assert all(
        earlier < later
        for (earlier, _), (later, _) in zip(spy.ranges, spy.ranges[1:], strict=False)
    )
    assert spy.lines == len(data.split(b"\n"))  # the last line has no newline
    if place.kind == "s3":
        assert requested == ["whole"] + [f"bytes={s['offset']}-" for s in states]


def test_a_run_retried_with_an_earlier_state_still_ends_the_same(
    place: Place, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(index, "MIN_LINES_PER_RUN", 5)
    data = at_boundaries() + renamed(blank_lines(), "b")
    uri = place.put(data)
    assert build_all(uri, None, 3, place.index_at("whole")) == 41
    _, states = resume_to_the_end(uri, 3, place.index_at())
    # A run whose result was lost after it wrote its checkpoint: its retry has the state before.
    again, _ = resume_to_the_end(uri, 3, place.index_at(), states[1])
    assert again.total_items == 41
    assert place.get(place.index_at()) == place.get(place.index_at("whole"))


def test_a_lost_checkpoint_means_reading_again_from_the_start(
    tmp_path: Path, spy: Spy, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(index, "MIN_LINES_PER_RUN", 5)
    uri = str(tmp_path / "in.jsonl")
    Path(uri).write_bytes(at_boundaries())
    index_at = str(tmp_path / "input.index")
    paused = build_index(uri, None, 3, index_at, deadline=0)
    assert isinstance(paused, Paused)
    for lost in tmp_path.glob("input.index.partial-*"):
        lost.unlink()
    assert build_index(uri, None, 3, index_at, resume=paused.state) == Indexed(21)
    assert spy.ranges == [(0, None), (0, None)]


def test_a_duplicate_id_across_a_pause_names_both_lines(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(index, "MIN_LINES_PER_RUN", 10)
    lines = [item(i) for i in range(100)]
    lines[94] = item(4, "again")  # line 95 repeats line 5's id, several pauses later
    uri = str(tmp_path / "in.jsonl")
    Path(uri).write_text("\n".join(lines) + "\n")
    index_at = str(tmp_path / "input.index")
    first = build_index(uri, None, 7, index_at, deadline=0)
    assert isinstance(first, Paused) and first.state["lines"] == 10
    with pytest.raises(InputError, match=r"^line 95: id 'id-4' is also on line 5$"):
        resume_to_the_end(uri, 7, index_at, first.state)


def test_a_deadline_not_reached_builds_in_one_run(tmp_path: Path) -> None:
    uri = str(tmp_path / "in.jsonl")
    Path(uri).write_bytes(at_boundaries())
    result = build_index(
        uri, None, 3, str(tmp_path / "input.index"), deadline=time.monotonic() + 60
    )
    assert result == Indexed(21)


# --- a chunk reads its own bytes, and sees when the file changed --------------------------------


def test_the_last_chunk_reads_only_its_own_bytes(
    place: Place, spy: Spy, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = "".join(item(i) + "\n" for i in range(1_000)).encode()
    uri = place.put(data)
    index_at = place.index_at()
    assert build_all(uri, None, 100, index_at) == 1_000
    index_reads: list[tuple[str, int, int]] = []
    real_read_range = blobs.read_range

    def read_range(uri: str, start: int, end: int, **kwargs: Any) -> bytes:
        index_reads.append((uri, start, end))
        return real_read_range(uri, start, end, **kwargs)

    monkeypatch.setattr(blobs, "read_range", read_range)
    spy.ranges.clear()
    spy.lines = 0

    items = chunk_items(uri, None, index_at, 9, 900, 100)

    assert [i.index for i in items] == list(range(900, 1_000))
    assert index_reads == [(index_at, 9 * 16, 11 * 16)]  # 32 bytes of the index
    line_start = data.index(item(900).encode())
    assert spy.ranges == [(line_start, len(data))]
    assert spy.lines == 100


def changed_files() -> dict[str, tuple[Callable[[bytes], bytes], int, str]]:
    """How the file changed after indexing (chunks of 3), the chunk read, what it says."""
    width = len(item(0)) + 1
    return {
        "a line broken": (
            lambda data: data.replace(item(7).encode(), item(7).encode()[:-1] + b" "),
            2, "changed since it was indexed: line 8: not valid JSON",
        ),
        "a line added before": (
            lambda data: item(99).encode() + b"\n" + data, 3, "changed since it was indexed",
        ),
        "an item blanked": (
            lambda data: data.replace(item(4).encode(), b" " * (width - 1)),
            1, "chunk 1 expected 3 items on lines 4 to 6 but they hold 2 items on 3 lines",
        ),
        "truncated": (
            lambda data: data[: data.index(item(19).encode())],
            6, "chunk 6 expected 3 items .* 1 items on 1 lines",
        ),
        "emptied": (lambda data: b"", 6, "chunk 6 expected 3 items .* 0 items on 0 lines"),
    }  # fmt: skip


@pytest.mark.parametrize("change", changed_files())
def test_a_chunk_sees_that_the_file_changed(place: Place, change: str) -> None:
    data = at_boundaries()
    uri = place.put(data)
    index_at = place.index_at()
    assert build_all(uri, None, 3, index_at) == 21
    edit, chunk, message = changed_files()[change]
    place.put(edit(data))
    with pytest.raises(InputError, match=message):
        chunk_items(uri, None, index_at, chunk, 3 * chunk, 3)


def test_a_chunk_the_index_does_not_have_is_an_input_error(place: Place) -> None:
    uri = place.put(at_boundaries())
    assert build_all(uri, None, 7, place.index_at()) == 21
    for chunk in (-1, 3, 50):
        with pytest.raises(InputError, match=f"has no chunk {chunk}"):
            chunk_items(uri, None, place.index_at(), chunk, 7 * chunk, 7)
    with pytest.raises(InputError, match="the input's index cannot be read"):
        chunk_items(uri, None, place.index_at("no-such-job"), 0, 0, 7)


def test_a_chunk_of_an_input_moved_outside_the_root_is_refused(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    link = tmp_path / "in.jsonl"
    real = tmp_path / "real.jsonl"
    real.write_bytes(at_boundaries())
    link.symlink_to(real)
    index_at = str(tmp_path / "input.index")
    assert build_all(str(link), None, 7, index_at) == 21
    outside = tmp_path_factory.mktemp("outside") / "in.jsonl"
    outside.write_bytes(at_boundaries())
    link.unlink()
    link.symlink_to(outside)
    with pytest.raises(InputError, match="not found or not allowed"):
        chunk_items(str(link), None, index_at, 1, 7, 7)


def test_s3_that_cannot_be_reached_is_unavailable(
    aws_env: None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")  # nothing listens
    blobs.s3_client.cache_clear()
    try:
        with pytest.raises(InputUnavailableError, match="S3 could not be reached"):
            build_index("s3://data/in.jsonl", None, 3, str(tmp_path / "input.index"))
        with pytest.raises(InputUnavailableError, match="S3 could not be reached"):
            check_input("s3://data/in.jsonl", None)
    finally:
        blobs.s3_client.cache_clear()


# --- what a submission checks ------------------------------------------------------------------


def test_check_input_reads_a_small_file_through(place: Place) -> None:
    uri = place.put("".join(item(i) + "\n" for i in range(10)).encode())
    assert check_input(uri, None) == 10
    bad = place.put(f"{item(0)}\n\n{{broken\n".encode(), "bad.jsonl")
    with pytest.raises(InputError, match=r"^line 3: not valid JSON"):
        check_input(bad, None)
    with pytest.raises(InputError, match="the file has no items"):
        check_input(place.put(b"\n\n", "blank.jsonl"), None)


def test_check_input_leaves_a_bigger_file_to_the_index(place: Place, spy: Spy) -> None:
    lines = [item(i, "x" * 100) for i in range(1_000)]
    lines[0] = "{broken"  # not read at submission: build_index finds it
    data = ("\n".join(lines) + "\n").encode()
    assert len(data) > FULL_CHECK_BYTES
    uri = place.put(data)
    assert check_input(uri, None) is None
    assert spy.ranges == [] and spy.lines == 0
    assert check_input(uri, None, full_check_bytes=len(data) - 1) is None
    with pytest.raises(InputError, match=r"^line 1: not valid JSON"):
        check_input(uri, None, full_check_bytes=len(data))


def sparse(path: Path, size: int) -> str:
    with path.open("wb") as f:
        f.truncate(size)  # takes no room; read, it would take a while
    return str(path)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda root, outside: str(root / "missing.jsonl"), "not found or not allowed"),
        (lambda root, outside: str(outside), "not found or not allowed"),
        (lambda root, outside: sparse(root / "huge.jsonl", 8 * 2**30),
         f"{8 * 2**30} bytes, over the limit of {2 * 2**30}"),
        (lambda root, outside: str(root), "a directory, not a regular file"),
    ],
    ids=["missing", "outside-the-root", "too-large", "directory"],
)  # fmt: skip
def test_check_input_refuses_a_location_without_reading_it(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory, spy: Spy, make: Any, message: str
) -> None:
    outside = tmp_path_factory.mktemp("outside") / "in.jsonl"
    outside.write_bytes(at_boundaries())
    started = time.monotonic()
    with pytest.raises(InputError, match=message):
        check_input(make(tmp_path, outside), None)
    assert time.monotonic() - started < 1
    assert spy.ranges == []


def test_check_input_on_s3_asks_only_the_size_of_a_big_file(
    s3: Place, monkeypatch: pytest.MonkeyPatch
) -> None:
    place = s3
    calls: list[str] = []
    blobs.s3_client().meta.events.register(
        "before-call.s3.*", lambda model, **_: calls.append(model.name)
    )
    uri = place.put(b"x" * (FULL_CHECK_BYTES + 1))
    calls.clear()
    assert check_input(uri, None) is None
    assert calls == ["HeadObject"]
    with pytest.raises(InputError, match="no such object"):
        check_input(f"s3://{BUCKET}/missing.jsonl", None)
    monkeypatch.setenv("LLM_INPUT_MAX_BYTES", str(FULL_CHECK_BYTES))
    from chunking.settings import get_settings

    get_settings.cache_clear()
    with pytest.raises(InputError, match=f"over the limit of {FULL_CHECK_BYTES} bytes"):
        check_input(uri, None)


# --- ranged reads and whole writes -------------------------------------------------------------


def test_ranged_reads_sizes_and_whole_writes(place: Place) -> None:
    uri = place.put(b"")
    assert blobs.size_of(uri) == 0
    assert blobs.read_range(uri, 0, 10) == b""
    blobs.write_bytes(uri, "ab\r\n猫\n\nlast".encode())
    assert blobs.size_of(uri) == 13
    assert blobs.read_range(uri, 2, 5) == b"\r\n\xe7"
    assert blobs.read_range(uri, 9, 99) == b"last"
    assert blobs.read_range(uri, 13, 20) == b"" and blobs.read_range(uri, 3, 3) == b""
    assert [tuple(line) for line in blobs.read_line_spans(uri, 4, 13, first_number=2)] == [
        (2, 4, 8, "猫"), (3, 8, 9, ""), (4, 9, 13, "last"),
    ]  # fmt: skip
    assert [tuple(line) for line in blobs.read_line_spans(uri, 0, 4)] == [(1, 0, 4, "ab")]
    assert list(blobs.read_line_spans(uri, 99, 120)) == []
    assert [tuple(line) for line in blobs.read_line_spans(uri, 4)] == [
        (1, 4, 8, "猫"), (2, 8, 9, ""), (3, 9, 13, "last"),
    ]  # fmt: skip
    with pytest.raises(blobs.LineTooLongError, match="line 3 is longer than 3 bytes"):
        list(blobs.read_line_spans(uri, 4, 13, first_number=1, max_line_bytes=3))
    missing = blobs.join(place.root, "inputs", "missing.jsonl")
    with pytest.raises(FileNotFoundError):
        blobs.read_range(missing, 0, 10)
    with pytest.raises(FileNotFoundError):
        blobs.size_of(missing)
