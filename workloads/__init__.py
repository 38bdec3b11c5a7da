"""The workloads, registered with the core when this package is imported (every entrypoint
does): `simulate` and `llm`. One of your own is a module that defines it and calls `register`,
here or in any importable package named in WORKLOAD_MODULES (chunking.workload imports it)."""

from __future__ import annotations

from chunking.workload import register
from workloads.llm.workload import Llm
from workloads.simulate import Simulate

register(Simulate())
register(Llm())
