"""The workloads, registered with the core when this package is imported (every entrypoint
does): `simulate` and `llm`. A new one is a module here and one `register` line."""

from __future__ import annotations

from chunking.workload import register
from workloads.llm import Llm
from workloads.simulate import Simulate

register(Simulate())
register(Llm())
