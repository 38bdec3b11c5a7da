"""The llm workload's input: a JSONL file (a local path or an s3:// URI), one item a line, each
with an `id` and either a `prompt` or a `text` that the job's `prompt_template` wraps (`{text}`
marks where).

`validate_input` reads the whole file once, before a job is recorded, so a bad line is refused
up front with its line number; `read_items` then gives a chunk only its own lines. Every read of
a local input opens only a regular file under LLM_INPUT_ROOT (checked at each read, not only at
submission), no line may exceed MAX_LINE_BYTES, and validation refuses a file over
LLM_INPUT_MAX_BYTES from its size alone. What cannot be used is an InputError; an S3 that did not
answer is an InputUnavailableError (not the caller's fault: try again later).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import islice

from chunking.errors import InputUnavailableError as InputUnavailableError
from chunking.settings import get_settings
from workloads.llm import blobs

MAX_LINE_BYTES = 2**20  # one item's line; a longer one is refused having read this much of it


class InputError(ValueError):
    """The input file cannot be used; the message names the line and what is wrong."""


@dataclass(frozen=True)
class Item:
    index: int  # 0-based line number among the items
    id: str
    prompt: str


def _named(uri: str) -> str:
    """`input_uri '...'`, a long one shortened so that what follows it is never cut off."""
    shown = repr(uri)
    return f"input_uri {shown if len(shown) <= 120 else f'{shown[:60]}…{shown[-59:]}'}"


def _lines(uri: str, max_bytes: int | None = None) -> Iterator[tuple[int, str]]:
    """(line number in the file, line) of each non-blank line: blank lines are not items."""
    root = get_settings().llm_input_root
    try:
        read = blobs.read_lines(uri, root=root, max_bytes=max_bytes, max_line_bytes=MAX_LINE_BYTES)
        yield from ((number, line) for number, line in enumerate(read, start=1) if line.strip())
    except UnicodeDecodeError as err:
        raise InputError(f"{_named(uri)}: not UTF-8 text ({err.reason})") from err
    except blobs.OutsideRootError as err:
        message = f"local inputs must be under LLM_INPUT_ROOT ({root.resolve()}); this one is not"
        raise InputError(f"{_named(uri)}: {message}") from err
    except blobs.FileTooLargeError as err:
        message = (
            f"{err.size} bytes, over the limit of {err.limit} bytes on an input checked at "
            "submission (LLM_INPUT_MAX_BYTES raises it)"
        )
        raise InputError(f"{_named(uri)}: {message}") from err
    except blobs.LineTooLongError as err:
        message = f"line {err.number}: longer than {err.limit} bytes, the most one item may be"
        raise InputError(message) from err
    except (blobs.RefusedLocationError, FileNotFoundError, PermissionError) as err:
        raise InputError(f"{_named(uri)}: {str(err).removeprefix(f'{uri}: ')}") from err
    except blobs.StoreUnavailableError as err:
        message = f"{_named(uri)} cannot be read now: {err.cause}; try again later"
        raise InputUnavailableError(message) from err
    # Any other OSError (a reset mid-read, a local I/O error) propagates: it is worth a retry.


def _item(index: int, number: int, line: str, template: str | None) -> Item:
    where = f"line {number}"
    try:
        data = json.loads(line)
    except json.JSONDecodeError as err:
        raise InputError(f"{where}: not valid JSON ({err.msg})") from err
    if not isinstance(data, dict):
        raise InputError(f"{where}: must be a JSON object with an id")
    item_id = data.get("id")
    if not isinstance(item_id, (str, int)) or isinstance(item_id, bool) or item_id == "":
        raise InputError(f"{where}: needs an id (a string or a number)")
    if isinstance(data.get("prompt"), str):
        prompt = data["prompt"]
    elif isinstance(data.get("text"), str):
        if template is None:
            raise InputError(f"{where}: has a text but the job has no prompt_template")
        prompt = template.replace("{text}", data["text"])
    else:
        raise InputError(f"{where}: needs a prompt or a text (a string)")
    return Item(index, str(item_id), prompt)


def validate_input(uri: str, template: str | None) -> int:
    """Check every line and that ids are unique; returns the number of items.

    Bounded: a file over LLM_INPUT_MAX_BYTES is refused from its size, before it is read.
    """
    seen: dict[str, int] = {}
    count = 0
    max_bytes = get_settings().llm_input_max_bytes
    for index, (number, line) in enumerate(_lines(uri, max_bytes)):
        item = _item(index, number, line, template)
        if item.id in seen:
            raise InputError(f"line {number}: id {item.id!r} is also on line {seen[item.id]}")
        seen[item.id] = number
        count += 1
    if count == 0:
        raise InputError(f"{_named(uri)}: the file has no items")
    return count


def read_items(uri: str, template: str | None, start: int, stop: int) -> list[Item]:
    """Items start <= index < stop, in file order; where the file is, is checked at this read."""
    items = islice(enumerate(_lines(uri)), start, stop)
    return [_item(index, number, line, template) for index, (number, line) in items]
