"""The core, pure Python: job spec, planning, the Workload and JobStore protocols, one job
lifecycle, one chunk attempt (runner), the status JSON, errors and settings.

Both the local (Inngest) path and the cloud (AWS SAM) path run this code, so a comparison
between them measures orchestration, not two different programs. It imports no store, workload,
adapter or platform SDK (import contracts in pyproject.toml, checked by `make lint`).
"""
