"""Workloads defined in the tests alone, to show what a new workload touches (nothing else)."""
