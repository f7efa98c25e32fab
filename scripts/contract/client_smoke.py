"""Smoke test of the Python client generated from `keygate openapi` (see docs/contract.md).

Run by scripts/contract.sh against a fresh `keygate serve`:

    python client_smoke.py BASE_URL        # the operator key in the CONTRACT_API_KEY variable

It goes through the generated package the way a user would (api/<tag>/<operation>.py,
`sync_detailed`), so a change to the document that breaks the client or its typed models fails
here. Prints one line per check; exits 1 on the first mismatch.
"""

from __future__ import annotations

import os
import sys
import uuid

from keygate_client import AuthenticatedClient, errors
from keygate_client.api.api_keys import create_api_key, get_api_key, list_api_keys
from keygate_client.models import (
    ApiKey,
    ApiKeyList,
    CreatedKey,
    CreateKeyRequest,
    Problem,
)
from keygate_client.types import UNSET

MISSING_KEY_ID = "key_01JABCDEFGHJKMNPQRSTVWXYZ0"
SCOPES = ["tenants:read", "billing:read"]


class Mismatch(Exception):
    pass


def check(condition: bool, what: str, got: object = None) -> None:
    if not condition:
        raise Mismatch(f"{what}; got: {got!r}")
    print(f"  ok  {what}")


def plain(value: object) -> object:
    """A generated enum member's value, or the value itself."""
    return getattr(value, "value", value)


def body_of(response) -> str:
    return response.content.decode("utf-8", "replace")[:500]


def main() -> int:
    if len(sys.argv) != 2 or not os.environ.get("CONTRACT_API_KEY"):
        print(
            "usage: CONTRACT_API_KEY=sk_live_… python client_smoke.py BASE_URL",
            file=sys.stderr,
        )
        return 2
    base_url = sys.argv[1]
    client = AuthenticatedClient(
        base_url=base_url,
        token=os.environ["CONTRACT_API_KEY"],
        raise_on_unexpected_status=True,
        timeout=10.0,
    )
    name = f"contract smoke {uuid.uuid4().hex[:8]}"

    with client:
        print(f"POST /v1/api-keys (name={name!r}, scopes={SCOPES})")
        # from_dict, not the constructor: the generated types of fields (a scope enum, its
        # name) follow the document, and the smoke test should not have to.
        body = CreateKeyRequest.from_dict({"name": name, "scopes": SCOPES})
        created = create_api_key.sync_detailed(client=client, body=body)
        check(
            created.status_code == 201,
            "status is 201",
            f"{created.status_code} {body_of(created)}",
        )
        key = created.parsed
        check(
            isinstance(key, CreatedKey), "body parses as CreatedKey", type(key).__name__
        )
        check(key.key.startswith("sk_live_"), "key starts with sk_live_", key.key[:8])
        check(key.id.startswith("key_"), "id starts with key_", key.id)
        check(key.name == name, "name is the one sent", key.name)
        check(
            sorted(plain(s) for s in key.scopes or []) == sorted(SCOPES),
            "scopes are the ones sent",
            key.scopes,
        )
        check(key.status == "active", "status is active", key.status)
        check(
            created.headers.get("content-type", "").startswith("application/json"),
            "content type is JSON",
            created.headers.get("content-type"),
        )

        print("GET /v1/api-keys (name filter)")
        listed = list_api_keys.sync_detailed(client=client, name=name)
        check(
            listed.status_code == 200,
            "status is 200",
            f"{listed.status_code} {body_of(listed)}",
        )
        page = listed.parsed
        check(
            isinstance(page, ApiKeyList),
            "body parses as ApiKeyList",
            type(page).__name__,
        )
        found = [k for k in page.data if k.id == key.id]
        check(len(found) == 1, "the new key is in the list", [k.id for k in page.data])
        entry = found[0]
        check(isinstance(entry, ApiKey), "entry parses as ApiKey", type(entry).__name__)
        check(
            "key" not in entry.additional_properties,
            "entry carries no plaintext key",
            sorted(entry.additional_properties),
        )
        check(
            key.key not in body_of(listed)
            and key.key[8:] not in listed.content.decode(),
            "the list response does not contain the key's secret",
        )
        check(
            entry.masked.startswith("sk_live_") and entry.masked != key.key,
            "entry is masked",
            entry.masked,
        )
        check(
            entry.masked.endswith(key.key[-4:]),
            "masked form ends with the key's last 4 characters",
            entry.masked,
        )
        check(
            entry.masked == key.masked,
            "masked form matches the one create returned",
            (entry.masked, key.masked),
        )
        check(page.next_cursor in (None, UNSET), "one page only", page.next_cursor)

        print(f"GET /v1/api-keys/{MISSING_KEY_ID}")
        missing = get_api_key.sync_detailed(MISSING_KEY_ID, client=client)
        check(
            missing.status_code == 404,
            "status is 404",
            f"{missing.status_code} {body_of(missing)}",
        )
        problem = missing.parsed
        check(
            isinstance(problem, Problem),
            "body parses as the typed Problem model",
            type(problem).__name__,
        )
        check(problem.code == "not_found", "code is not_found", problem.code)
        check(problem.status == 404, "problem status is 404", problem.status)
        check(bool(problem.request_id), "problem has a request_id", problem.request_id)
        check(
            missing.headers.get("content-type", "").startswith(
                "application/problem+json"
            ),
            "content type is application/problem+json",
            missing.headers.get("content-type"),
        )

        past = "2000-01-01T00:00:00Z"
        print(f"POST /v1/api-keys (expires_at={past}: in the past)")
        body = CreateKeyRequest.from_dict(
            {"name": f"{name} expired", "expires_at": past}
        )
        invalid = create_api_key.sync_detailed(client=client, body=body)
        check(
            invalid.status_code == 422,
            "status is 422",
            f"{invalid.status_code} {body_of(invalid)}",
        )
        problem = invalid.parsed
        check(
            isinstance(problem, Problem),
            "body parses as the typed Problem model",
            type(problem).__name__,
        )
        check(
            problem.code == "validation_failed",
            "code is validation_failed",
            problem.code,
        )
        errors = [] if problem.errors in (None, UNSET) else problem.errors
        check(
            any(e.field == "expires_at" for e in errors),
            "errors name the field expires_at",
            [e.to_dict() for e in errors],
        )

    print("client smoke test: all checks passed")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except Mismatch as mismatch:
        print(f"  FAIL {mismatch}", file=sys.stderr)
        sys.exit(1)
    except errors.UnexpectedStatus as unexpected:
        # A status the document does not declare for the operation.
        print(f"  FAIL undeclared status: {unexpected}", file=sys.stderr)
        sys.exit(1)
