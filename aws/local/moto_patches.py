"""Make moto's TransactWriteItems cost O(items in the transaction), not O(table size).

moto deep-copies every table a transaction touches before running it, to roll back on
failure. The job table grows by one item per chunk, so every chunk's outcome (a transaction)
got slower as the emulator ran. This backs up only the items the transaction names and
restores those on failure: the same all-or-nothing outcome, at a cost that does not grow.
Only for the emulator's moto server, which runs one call at a time.
"""

from __future__ import annotations

import copy
from typing import Any

_installed = False


def install() -> None:
    global _installed
    if _installed:
        return
    from moto.dynamodb.models import DynamoDBBackend
    from moto.dynamodb.models.table import Table

    original = DynamoDBBackend.transact_write_items

    def transact_write_items(self: Any, transact_items: list[dict[str, Any]]) -> None:
        backups = []
        try:
            for entry in transact_items:
                _, op = next(iter(entry.items()))
                name = op["TableName"]
                if "Key" in op:
                    key = op["Key"]
                else:
                    table = self.get_table(name)
                    attrs = [a for a in (table.hash_key_attr, table.range_key_attr) if a]
                    key = {a: op["Item"][a] for a in attrs}
                backups.append((name, key, copy.deepcopy(self.get_item(name, key))))
        except Exception:
            return original(self, transact_items)  # malformed: moto's own errors, its own way
        deepcopy = getattr(Table, "__deepcopy__", None)
        Table.__deepcopy__ = lambda table, memo: table  # type: ignore[attr-defined]
        try:
            original(self, transact_items)
        except Exception:
            for name, key, item in backups:
                if item is None:
                    if self.get_item(name, key) is not None:
                        self.delete_item(name, key)
                else:
                    self.put_item(name, item.to_json()["Attributes"])
            raise
        finally:
            if deepcopy is None:
                del Table.__deepcopy__  # type: ignore[attr-defined]
            else:
                Table.__deepcopy__ = deepcopy  # type: ignore[attr-defined]

    DynamoDBBackend.transact_write_items = transact_write_items  # type: ignore[method-assign]
    _installed = True
