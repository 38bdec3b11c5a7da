"""A tenant's API key for the local API's tenant mode: a new random key, and the entry that
maps its SHA-256 to the tenant in API_KEYS (the key itself is never stored anywhere).

    python -m tools.tenant_key acme              # a new key for tenant acme
    python -m tools.tenant_key acme --key KEY    # the entry for a key you already have
    python -m tools.tenant_key '*'               # an operator's key: every tenant's jobs

Add the entry to API_KEYS (a JSON object, in .env or the environment) and give the key to the
tenant; to revoke it, remove its entry. In the cloud, tenant keys are API Gateway keys: see the
README's Security section (API_KEY_TENANTS, the stack's ApiKeyTenants parameter).
"""

from __future__ import annotations

import argparse
import json
import re
import secrets

from chunking.settings import TENANT
from chunking.tenancy import OPERATOR, key_digest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("tenant", help="the tenant's name, or '*' for an operator")
    parser.add_argument("--key", help="an existing key (default: a new random one)")
    args = parser.parse_args(argv)
    if args.tenant != OPERATOR and not re.fullmatch(TENANT, args.tenant):
        parser.error(f"a tenant is {TENANT} or '*': {args.tenant!r}")
    key = args.key or secrets.token_urlsafe(32)
    print(f"key (give it to the tenant; it is not stored): {key}")
    print(f"API_KEYS entry: {json.dumps({key_digest(key): args.tenant})}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
