"""The llm workload's input: a JSONL file (a local path or an s3:// URI), one item a line, each
with an `id` and either a `prompt` or a `text` that the job's `prompt_template` wraps (`{text}`
marks where).

`validate_input` reads the whole file once, before a job is recorded, so a bad line is refused
up front with its line number; `read_items` then gives a chunk only its own lines.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import islice

from chunking import blobs


class InputError(ValueError):
    """The input file cannot be used; the message names the line and what is wrong."""


@dataclass(frozen=True)
class Item:
    index: int  # 0-based line number among the items
    id: str
    prompt: str


def _lines(uri: str) -> Iterator[tuple[int, str]]:
    """(line number in the file, line) of each non-blank line: blank lines are not items."""
    try:
        lines = enumerate(blobs.read_lines(uri), start=1)
        yield from ((number, line) for number, line in lines if line.strip())
    except UnicodeDecodeError as err:
        raise InputError(f"input_uri {uri!r}: not UTF-8 text ({err.reason})") from err
    except (FileNotFoundError, PermissionError, IsADirectoryError) as err:
        raise InputError(f"input_uri {uri!r}: {err}") from err
    # Any other OSError (S3 throttling, a 5xx, a reset) propagates: it is worth a retry.


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
    """Check every line and that ids are unique; returns the number of items."""
    seen: dict[str, int] = {}
    count = 0
    for index, (number, line) in enumerate(_lines(uri)):
        item = _item(index, number, line, template)
        if item.id in seen:
            raise InputError(f"line {number}: id {item.id!r} is also on line {seen[item.id]}")
        seen[item.id] = number
        count += 1
    if count == 0:
        raise InputError(f"input_uri {uri!r}: the file has no items")
    return count


def read_items(uri: str, template: str | None, start: int, stop: int) -> list[Item]:
    """Items start <= index < stop, in file order."""
    items = islice(enumerate(_lines(uri)), start, stop)
    return [_item(index, number, line, template) for index, (number, line) in items]
