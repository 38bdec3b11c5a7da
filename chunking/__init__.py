"""Shared chunk core: job spec, planning, workloads, error taxonomy, job stores and settings.

Both the local (Inngest) path and the cloud (AWS SAM) path run this code, so a comparison
between them measures orchestration, not two different programs.
"""
