"""Whose request this is: the tenant its API key stands for, and which jobs that tenant may
touch. The same rules on both APIs; only where the key comes from differs.

Two modes:
- **shared** (no tenant keys configured): one key (`API_KEY` locally, the stack's API key in
  the cloud) or none; the caller may touch every job, and a job's `tenant` is what its body
  says (a label for the per-tenant concurrency limit). For one team.
- **tenant keys** (`API_KEYS` locally: the SHA-256 of each key → its tenant; `API_KEY_TENANTS`
  in the cloud: each API Gateway key's id → its tenant): the tenant is the key's, never the
  body's (a body naming another is a 400), and every read, list, page, stream, cancel and
  retry sees only that tenant's jobs (another tenant's job is a 404, as if it did not exist).
  A key mapped to "*" is an operator's: every tenant's jobs. A key mapped to nobody is refused.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from chunking.prepare import spec_error
from chunking.settings import get_settings

OPERATOR = "*"  # a key mapped to this sees every tenant's jobs


@dataclass(frozen=True)
class Caller:
    """Who is asking: one tenant, or (None) every tenant."""

    tenant: str | None

    def sees(self, tenant: str) -> bool:
        return self.tenant is None or self.tenant == tenant


EVERYONE = Caller(None)


def key_digest(key: str) -> str:
    """What API_KEYS keeps of a key: its SHA-256, hex (the key itself is never stored)."""
    return hashlib.sha256(key.encode()).hexdigest()


def _caller(tenant: str | None) -> Caller | None:
    if tenant is None:
        return None
    return EVERYONE if tenant == OPERATOR else Caller(tenant)


def caller_of_key(key: str | None) -> Caller | None:
    """The local API's caller for the `x-api-key` it sent; None when it is refused."""
    settings = get_settings()
    if settings.api_keys:
        return _caller(settings.api_keys.get(key_digest(key))) if key else None
    expected = settings.api_key
    if not expected:
        return EVERYONE  # open: the README says so
    if key is not None and hmac.compare_digest(key.encode(), expected.encode()):
        return EVERYONE
    return None


def caller_of_key_id(key_id: str | None) -> Caller | None:
    """The cloud API's caller for the API Gateway key it was let in with (API Gateway checked
    the key itself); None when tenant keys are configured and this one is mapped to nobody."""
    tenants = get_settings().api_key_tenants
    if not tenants:
        return EVERYONE
    return _caller(tenants.get(key_id or ""))


def claim(body: Any, caller: Caller) -> Any:
    """The JobSpec body with the caller's tenant in it: a tenant key's jobs are its tenant's,
    whatever the body says (a ValidationError naming `tenant`, as any bad field, when it
    names another). A body that is no JSON object is left for the JobSpec to refuse."""
    if caller.tenant is None or not isinstance(body, Mapping):
        return body
    named = body.get("tenant")
    if named is not None and named != caller.tenant:
        message = (
            f"your API key is tenant {caller.tenant!r}'s: leave tenant out (it is taken from "
            "the key) or name that one"
        )
        raise spec_error("tenant", message, named)
    return {**body, "tenant": caller.tenant}
