"""schemathesis hooks for scripts/contract.sh (loaded through `hooks` in schemathesis.toml).

One rule, about the harness and not about the API: generated requests that would change the
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

import os

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
