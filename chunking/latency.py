"""A job's chunk-latency summary: a log-bucket histogram small enough to live in the job's row.

Every settlement adds its latency to the job's histogram in the same write that counts it, so a
status read gets p50/p95/max from one row whatever the number of chunks. Buckets grow by
GAMMA (each covers [GAMMA**k, GAMMA**(k+1)) ms), so a quantile read from a bucket is within
RELATIVE_ERROR of the true nearest-rank value: the mapping of DDSketch, kept as a plain
{bucket: count} map (a few hundred entries at most for latencies from 1 µs to a day) that both
stores can read and write as JSON text, with no binary encoding or extra dependency.
`max` is kept exactly.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field

GAMMA = 1.02
RELATIVE_ERROR = (GAMMA - 1) / (GAMMA + 1)  # ~1%: the representative value is the bucket's mid
_LOG_GAMMA = math.log(GAMMA)
MIN_MS = 0.001  # anything faster is one bucket: nobody needs sub-microsecond quantiles


def _bucket(ms: float) -> int:
    return math.floor(math.log(max(ms, MIN_MS)) / _LOG_GAMMA)


def _value(bucket: int) -> float:
    """The bucket's representative: the point whose relative error to both edges is equal."""
    return 2 * GAMMA**bucket * GAMMA / (GAMMA + 1)


@dataclass
class LatencySummary:
    counts: dict[int, int] = field(default_factory=dict)
    max: float | None = None

    @classmethod
    def load(cls, text: str | None) -> LatencySummary:
        if not text:
            return cls()
        data = json.loads(text)
        return cls({int(k): int(v) for k, v in data["counts"].items()}, data.get("max"))

    def dump(self) -> str:
        counts = {str(k): v for k, v in sorted(self.counts.items())}
        return json.dumps({"counts": counts, "max": self.max}, separators=(",", ":"))

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def add(self, ms: float) -> None:
        key = _bucket(ms)
        self.counts[key] = self.counts.get(key, 0) + 1
        self.max = ms if self.max is None else max(self.max, ms)

    def remove(self, ms: float) -> None:
        """Undo an `add` (a reopened chunk's latency no longer counts)."""
        key = _bucket(ms)
        if self.counts.get(key, 0) <= 1:
            self.counts.pop(key, None)
        else:
            self.counts[key] -= 1
        if not self.counts:
            self.max = None
        elif self.max is not None and ms >= self.max:
            # The exact max left with it: the highest remaining bucket bounds the new one.
            self.max = min(self.max, GAMMA ** (max(self.counts) + 1))

    def quantile(self, q: float) -> float | None:
        """Nearest-rank quantile (q in 0..100), within RELATIVE_ERROR; never above `max`."""
        total = self.total
        if total == 0:
            return None
        rank = max(1, math.ceil(q / 100 * total))
        seen = 0
        for key in sorted(self.counts):
            seen += self.counts[key]
            if seen >= rank:
                value = _value(key)
                return round(min(value, self.max) if self.max is not None else value, 3)
        return self.max  # unreachable: the ranks add up to total
