"""The llm workload's input: a JSONL file (a local path or an s3:// URI), one item a line, each
with an `id` and either a `prompt` or a `text` that the job's `prompt_template` wraps (`{text}`
marks where).

`check_input` is what a submission does, in bounded time: it checks where the file is and its
size, and reads it through only when it is small (FULL_CHECK_BYTES), so a small bad file is
still refused up front with its line number. A larger one is read by the job's first durable
unit, which indexes it (`workloads.llm.index`); a chunk then reads only its own byte range.
What each line must hold (`_item`), that ids are unique (`Ids`), and how lines are read and
their errors named (`_lines`, `_parsed`) is here, used by every one of those readers.

Every read of a local input opens only a regular file under LLM_INPUT_ROOT (checked at each
read, not only at submission), no line may exceed MAX_LINE_BYTES, and a file over
LLM_INPUT_MAX_BYTES is refused from its size; a missing file, one outside the root and a dotfile
are refused with the same words. What cannot be used is an InputError (a LineError
when it is on a line); an S3 that did not answer is an InputUnavailableError (not the caller's
fault: try again later).
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Generator, Iterable, Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass

from chunking.errors import InputUnavailableError as InputUnavailableError
from chunking.settings import get_settings
from workloads.llm import blobs

logger = logging.getLogger(__name__)
NOT_AN_INPUT = (
    "not found or not allowed (a local input is a file under LLM_INPUT_ROOT, "
    'no name in its path starting with ".")'
)
MAX_LINE_BYTES = 2**20  # one item's line; a longer one is refused having read this much of it
# A submission reads an input through only up to this size: that much is quick to check inside
# the request; a larger one is checked as it is indexed, by the job.
FULL_CHECK_BYTES = 64 * 2**10


class InputError(ValueError):
    """The input file cannot be used; the message names the line and what is wrong."""


class LineError(InputError):
    """What is wrong is on a line of the file (not where the file is, or whether it is there)."""


@dataclass(frozen=True)
class Item:
    index: int  # 0-based line number among the items
    id: str
    prompt: str


def _named(uri: str) -> str:
    """`input_uri '...'`, a long one shortened so that what follows it is never cut off."""
    shown = repr(uri)
    return f"input_uri {shown if len(shown) <= 120 else f'{shown[:60]}…{shown[-59:]}'}"


def no_items(uri: str) -> InputError:
    return InputError(f"{_named(uri)}: the file has no items")


@contextmanager
def _reading(uri: str) -> Iterator[None]:
    """What reading `uri` raised, as an InputError naming it (InputUnavailableError: retry)."""
    try:
        yield
    except blobs.NotTextError as err:
        raise LineError(f"line {err.number}: not UTF-8 text ({err.reason})") from err
    except blobs.LineTooLongError as err:
        message = f"line {err.number}: longer than {err.limit} bytes, the most one item may be"
        raise LineError(message) from err
    except (blobs.OutsideRootError, FileNotFoundError, PermissionError) as err:
        if blobs.is_s3(uri):
            raise InputError(f"{_named(uri)}: {str(err).removeprefix(f'{uri}: ')}") from err
        # Missing, elsewhere, hidden or unreadable: the same words, so a caller cannot map
        # which paths exist on this machine (the log keeps why).
        logger.info("local input %r refused: %s", uri, err)
        raise InputError(f"{_named(uri)}: {NOT_AN_INPUT}") from err
    except blobs.FileTooLargeError as err:
        message = (
            f"{err.size} bytes, over the limit of {err.limit} bytes on an input "
            "(LLM_INPUT_MAX_BYTES raises it)"
        )
        raise InputError(f"{_named(uri)}: {message}") from err
    except blobs.RefusedLocationError as err:
        raise InputError(f"{_named(uri)}: {str(err).removeprefix(f'{uri}: ')}") from err
    except blobs.StoreUnavailableError as err:
        message = f"{_named(uri)} cannot be read now: {err.cause}; try again later"
        raise InputUnavailableError(message) from err
    # Any other OSError (a reset mid-read, a local I/O error) propagates: it is worth a retry.


def ensure_input_root() -> None:
    """Create LLM_INPUT_ROOT if it is missing (the local app does at start): a fresh checkout
    has a place to put inputs."""
    get_settings().llm_input_root.mkdir(parents=True, exist_ok=True)


def _lines(
    uri: str,
    start: int = 0,
    end: int | None = None,
    *,
    first_number: int = 1,
    max_bytes: int | None = None,
) -> Generator[blobs.Line, None, None]:
    """The input's lines from byte `start` (where line `first_number` starts) to `end`; where
    the file is, and the bounds, are checked at this read."""
    root = get_settings().llm_input_root
    with _reading(uri):
        yield from blobs.read_line_spans(
            uri,
            start,
            end,
            root=root,
            max_bytes=max_bytes,
            max_line_bytes=MAX_LINE_BYTES,
            first_number=first_number,
        )


def _item(index: int, number: int, line: str, template: str | None) -> Item:
    where = f"line {number}"
    try:
        data = json.loads(line)
    except json.JSONDecodeError as err:
        raise LineError(f"{where}: not valid JSON ({err.msg})") from err
    if not isinstance(data, dict):
        raise LineError(f"{where}: must be a JSON object with an id")
    item_id = data.get("id")
    if not isinstance(item_id, (str, int)) or isinstance(item_id, bool) or item_id == "":
        raise LineError(f"{where}: needs an id (a string or a number)")
    if isinstance(data.get("prompt"), str):
        prompt = data["prompt"]
    elif isinstance(data.get("text"), str):
        if template is None:
            raise LineError(f"{where}: has a text but the job has no prompt_template")
        prompt = template.replace("{text}", data["text"])
    else:
        raise LineError(f"{where}: needs a prompt or a text (a string)")
    return Item(index, str(item_id), prompt)


class Ids:
    """The ids seen so far, each with the line it is on, to refuse one seen again.

    Kept as 8-byte blake2b digests (ints), not the ids, so that a build paused and resumed can
    carry them in a checkpoint of a fixed 16 bytes per id. Two different ids share a digest with
    probability about n**2 / 2**65: 3e-8 at a million ids, when one would be refused as a
    duplicate it is not.
    """

    def __init__(self, seen: dict[int, int] | None = None) -> None:
        self.seen: dict[int, int] = {} if seen is None else seen  # digest: line number

    @staticmethod
    def digest(item_id: str) -> int:
        # surrogatepass: JSON may spell a lone surrogate ("\ud800"), which strict UTF-8 refuses.
        raw = hashlib.blake2b(item_id.encode("utf-8", "surrogatepass"), digest_size=8).digest()
        return int.from_bytes(raw, "little")

    def add(self, item_id: str, number: int) -> None:
        digest = self.digest(item_id)
        if (first := self.seen.setdefault(digest, number)) != number:
            raise LineError(f"line {number}: id {item_id!r} is also on line {first}")


def _parsed(
    lines: Iterable[blobs.Line], template: str | None, ids: Ids, first_index: int = 0
) -> Generator[tuple[blobs.Line, Item | None], None, None]:
    """Each line with its item (None for a blank line: not an item, but still a line), its id
    checked against `ids`; `first_index` is the first item's index."""
    index = first_index
    for line in lines:
        if not line.text.strip():
            yield line, None
            continue
        item = _item(index, line.number, line.text, template)
        ids.add(item.id, line.number)
        index += 1
        yield line, item


def check_input(
    uri: str, template: str | None, *, full_check_bytes: int = FULL_CHECK_BYTES
) -> int | None:
    """What a submission checks: where the file is, and its size (no more than
    LLM_INPUT_MAX_BYTES), without reading it; then, for a file of at most `full_check_bytes`,
    every line, returning the number of items. None for a larger file: the job checks its
    lines as it indexes them (`workloads.llm.index.build_index`).
    """
    settings = get_settings()
    with _reading(uri):
        size = blobs.size_of(uri, root=settings.llm_input_root)
        if size > settings.llm_input_max_bytes:
            raise blobs.FileTooLargeError(uri, size, settings.llm_input_max_bytes)
    if size > full_check_bytes:
        return None
    return _count(uri, template, settings.llm_input_max_bytes)


def _count(uri: str, template: str | None, max_bytes: int | None) -> int:
    """Check every line, and that ids are unique; the number of items."""
    with closing(_lines(uri, max_bytes=max_bytes)) as lines:
        count = sum(item is not None for _, item in _parsed(lines, template, Ids()))
    if count == 0:
        raise no_items(uri)
    return count
