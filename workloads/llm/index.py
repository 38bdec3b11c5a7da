"""The llm input's index: where each chunk's lines are in the file, so a chunk reads only them.

`build_index` is the job's first durable unit, not the submission: one streaming pass over the
input that checks every line (as `input.check_input` does a small file) and records, for every
`chunk_size` items, the byte offset and line number where the chunk's first item starts, then
where the last item's line ends. Given a deadline it stops at a line boundary, keeps what it has
in a checkpoint beside the index and returns `Paused`; run again with that state it goes on from
the byte where it stopped (a seek, or a ranged GET), never re-reading the start.

The index is `array('Q')` little-endian (byte offset, line number) pairs: chunk 0..n-1, then the
end. Chunk i is bytes [16 i, 16 i + 32): its start and the next one's, the one read
`chunk_items` needs before reading exactly that byte range of the input.
"""

from __future__ import annotations

import sys
import time
from array import array
from collections.abc import Mapping
from contextlib import closing
from dataclasses import dataclass, field

from workloads.llm import blobs
from workloads.llm.input import (
    Ids,
    InputError,
    InputUnavailableError,
    Item,
    LineError,
    _lines,
    _parsed,
    no_items,
)

ENTRY_BYTES = 16  # one (byte offset, line number) pair
# Lines a run reads before it looks at its deadline: every run makes progress, so a build
# given too little time still ends.
MIN_LINES_PER_RUN = 1_000
STATE = ("chunk_size", "offset", "lines", "items", "tail_offset", "tail_line")
CHANGED = "the input has changed since it was indexed"


@dataclass(frozen=True)
class Indexed:
    total_items: int


@dataclass(frozen=True)
class Paused:
    state: dict[str, int]  # small and JSON-serialisable: passed between runs


def index_uri(output_root: str, job_id: str) -> str:
    return blobs.join(output_root, job_id, "input.index")


def _checkpoint_uris(index_at: str) -> tuple[str, str]:
    """Where a paused build keeps its chunk starts, and its ids."""
    return f"{index_at}.partial-starts", f"{index_at}.partial-ids"


def _to_bytes(values: array[int]) -> bytes:
    if sys.byteorder == "big":
        values = array("Q", values)
        values.byteswap()
    return values.tobytes()


def _from_bytes(data: bytes) -> array[int]:
    values = array("Q")
    values.frombytes(data[: len(data) - len(data) % values.itemsize])
    if sys.byteorder == "big":
        values.byteswap()
    return values


@dataclass
class _Build:
    """How far a build has read: what a pause keeps."""

    chunk_size: int
    offset: int = 0  # where the next line starts
    lines: int = 0  # lines read (the last one's number)
    items: int = 0
    tail_offset: int = 0  # just past the last item's line
    tail_line: int = 1  # the number of the line that starts there
    # (offset, line) where each chunk's first item starts, flat; and the ids seen.
    starts: array[int] = field(default_factory=lambda: array("Q"))
    ids: Ids = field(default_factory=Ids)

    def state(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in STATE}


def build_index(
    uri: str,
    template: str | None,
    chunk_size: int,
    index_at: str,
    *,
    resume: Mapping[str, int] | None = None,
    deadline: float | None = None,
    max_bytes: int | None = None,
) -> Indexed | Paused:
    """Check every line of the input and write its index to `index_at`.

    `deadline` (a `time.monotonic()` value): once past it, and after at least
    MIN_LINES_PER_RUN lines, stop at a line boundary and return `Paused`; pass its `state` as
    `resume` to go on. `max_bytes` bounds the file's size. Raises InputError for a bad line (its
    number in the message) or an unusable file, InputUnavailableError when S3 does not answer.
    """
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be at least 1, not {chunk_size}")
    build = _resumed(index_at, chunk_size, resume) if resume else _Build(chunk_size)
    lines = _lines(uri, build.offset, first_number=build.lines + 1, max_bytes=max_bytes)
    read = 0
    with closing(lines), closing(_parsed(lines, template, build.ids, build.items)) as parsed:
        for line, item in parsed:
            if item is not None:
                if item.index % chunk_size == 0:
                    build.starts.extend((line.start, line.number))
                build.items += 1
                build.tail_offset, build.tail_line = line.end, line.number + 1
            build.offset, build.lines = line.end, line.number
            read += 1
            if deadline is not None and read >= MIN_LINES_PER_RUN and time.monotonic() >= deadline:
                return _pause(index_at, build)
    if build.items == 0:
        raise no_items(uri)
    build.starts.extend((build.tail_offset, build.tail_line))
    blobs.write_bytes(index_at, _to_bytes(build.starts))
    return Indexed(build.items)


def _pause(index_at: str, build: _Build) -> Paused:
    # Ids in the order they were seen: an older state's are a prefix of a newer checkpoint's,
    # as its chunk starts are, so a run retried with the state before the last pause (its
    # result lost after it wrote the checkpoint) still finds what it needs.
    starts_at, ids_at = _checkpoint_uris(index_at)
    flat = array("Q")
    for digest, number in build.ids.seen.items():
        flat.extend((digest, number))
    blobs.write_bytes(ids_at, _to_bytes(flat))
    blobs.write_bytes(starts_at, _to_bytes(build.starts))
    return Paused(build.state())


def _resumed(index_at: str, chunk_size: int, state: Mapping[str, int]) -> _Build:
    """The build `state` describes, its chunk starts and ids read back from the checkpoint."""
    if int(state["chunk_size"]) != chunk_size:
        raise ValueError(f"resuming a build of chunk_size {state['chunk_size']} with {chunk_size}")
    items = int(state["items"])
    chunks = -(-items // chunk_size)
    starts_at, ids_at = _checkpoint_uris(index_at)
    try:
        starts = _from_bytes(blobs.read_range(starts_at, 0, chunks * ENTRY_BYTES))
        flat = _from_bytes(blobs.read_range(ids_at, 0, items * ENTRY_BYTES))
    except FileNotFoundError:
        starts = flat = array("Q")
    if len(starts) != 2 * chunks or len(flat) != 2 * items:
        # The checkpoint is gone or short: not the input's fault, so read it again from its start.
        return _Build(chunk_size)
    return _Build(
        chunk_size,
        offset=int(state["offset"]),
        lines=int(state["lines"]),
        items=items,
        tail_offset=int(state["tail_offset"]),
        tail_line=int(state["tail_line"]),
        starts=starts,
        ids=Ids(dict(zip(flat[0::2], flat[1::2], strict=True))),
    )


def chunk_items(
    uri: str, template: str | None, index_at: str, chunk_index: int, first_item: int, expected: int
) -> list[Item]:
    """Chunk `chunk_index`'s items (`first_item` the first one's index), reading only the
    chunk's bytes of the input. InputError if that range no longer holds exactly `expected`
    items, each as it was indexed."""
    found = chunk_lines(uri, template, index_at, chunk_index, first_item, expected)
    return [item for item, _ in found]


def chunk_lines(
    uri: str, template: str | None, index_at: str, chunk_index: int, first_item: int, expected: int
) -> list[tuple[Item, str]]:
    """`chunk_items`, each with its line of the input as it is there."""
    start, first_line, end, next_line = _chunk_range(index_at, chunk_index)
    items: list[tuple[Item, str]] = []
    lines_read = 0
    try:
        with closing(_lines(uri, start, end, first_number=first_line)) as lines:
            for line, item in _parsed(lines, template, Ids(), first_item):
                lines_read += 1
                if item is not None:
                    items.append((item, line.text))
    except LineError as err:
        raise InputError(f"{CHANGED}: {err}") from err
    if len(items) != expected or lines_read != next_line - first_line:
        raise InputError(
            f"{CHANGED}: chunk {chunk_index} expected {expected} items on lines {first_line} to "
            f"{next_line - 1} but they hold {len(items)} items on {lines_read} lines"
        )
    return items


def _chunk_range(index_at: str, chunk_index: int) -> tuple[int, int, int, int]:
    """(offset, line) where chunk `chunk_index` starts, then where the next one does."""
    if chunk_index < 0:
        raise InputError(f"the input's index {index_at!r} has no chunk {chunk_index}")
    at = chunk_index * ENTRY_BYTES
    try:
        pairs = _from_bytes(blobs.read_range(index_at, at, at + 2 * ENTRY_BYTES))
    except blobs.StoreUnavailableError as err:
        raise InputUnavailableError(f"the input's index cannot be read now: {err.cause}") from err
    except (FileNotFoundError, blobs.RefusedLocationError) as err:
        raise InputError(f"the input's index cannot be read: {err}") from err
    if len(pairs) != 4:
        raise InputError(f"the input's index {index_at!r} has no chunk {chunk_index}")
    start, first_line, end, next_line = pairs
    return start, first_line, end, next_line
