"""schemathesis hooks for scripts/contract.sh (loaded through `hooks` in schemathesis.toml).

Realistic data for what no schema can state (`map_case`), which the document otherwise pins
down exactly (a request it allows is never refused for its shape, one it forbids never accepted):
- every Idempotency-Key is new: the same key with another request is rightly refused (422
  `idempotency_key_reused`), so repeated example values would test only that;
- `expires_at` lies in the future when it is a valid time in the past (the rule is relative to the
  clock); a malformed one is left alone, as the negative case it is;
- tenant ids name the tenant the script created (CONTRACT_TENANT_ID): a key may only name
  tenants of its account that exist.

And one rule about the harness: generated requests that would change the
credential schemathesis itself authenticates with are dropped. schemathesis holds one operator
key; a case such as `PATCH /v1/accounts/<its own account> {"rate_limit_per_minute": 1}` or
`POST /v1/api-keys/<its own key>/revoke` is a valid request that keygate rightly accepts, after
which every later request answers 429 or 401 and the rest of the run tests nothing (schemathesis
then reports operations as passed on 429s alone). The same operations are still tested on every
other account and key (the script creates a partner account up front, and the run creates
more), and read-only requests (GET, HEAD, OPTIONS) on the own account and key are kept.

contract.sh passes the ids in CONTRACT_OWN_ACCOUNT_ID and CONTRACT_OWN_KEY_ID; without them
(e.g. a replay by hand) nothing is dropped.
"""

from __future__ import annotations

import datetime
import os
import re
import uuid

import schemathesis

OWN_IDS = {
    value
    for value in (
        os.environ.get("CONTRACT_OWN_ACCOUNT_ID"),
        os.environ.get("CONTRACT_OWN_KEY_ID"),
    )
    if value
}
READ_ONLY = {"GET", "HEAD", "OPTIONS"}


def _targets_own_credential(case) -> bool:
    if case.method.upper() in READ_ONLY or not OWN_IDS:
        return False
    values = (case.path_parameters or {}).values()
    return any(isinstance(value, str) and value in OWN_IDS for value in values)


@schemathesis.hook
def filter_case(context, case) -> bool:
    return not _targets_own_credential(case)


TENANT_ID = re.compile(r"^ten_[0-7][0-9A-HJKMNP-TV-Z]{25}$")


def _past(value: str) -> bool:
    try:
        when = datetime.datetime.fromisoformat(value)
    except ValueError:
        return False
    return when.tzinfo is not None and when <= datetime.datetime.now(datetime.timezone.utc)


@schemathesis.hook
def map_case(context, case):
    if case.headers and "Idempotency-Key" in case.headers:
        case.headers["Idempotency-Key"] = f"contract-{uuid.uuid4()}"
    if isinstance(case.body, dict):
        expires_at = case.body.get("expires_at")
        if isinstance(expires_at, str) and _past(expires_at):
            soon = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(days=30)
            case.body["expires_at"] = soon.strftime("%Y-%m-%dT%H:%M:%SZ")
        tenant = os.environ.get("CONTRACT_TENANT_ID")
        if tenant and isinstance(case.body.get("tenant_ids"), list):
            case.body["tenant_ids"] = [
                tenant if isinstance(t, str) and TENANT_ID.match(t) else t for t in case.body["tenant_ids"]
            ]
    return case
