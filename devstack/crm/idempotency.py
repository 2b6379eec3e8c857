"""``Idempotency-Key`` on batch upsert: a retried request is applied once, and answered like the first time.

The first request with a key applies the batch and records (key, body hash, response) in the same transaction
(`upsert_once`); a later request with that key and the same body (compared as canonical JSON, `body_sha256`) gets
the recorded response back with ``Idempotent-Replayed: true`` and applies nothing; the same key with a different
body is a 422. Failed requests (400/409, injected faults before applying) record nothing. The table
``idempotency_keys`` is part of the store's schema (`devstack.crm.store`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import orjson
from starlette.requests import Request

from devstack.crm.contacts import UpsertInput, batch_response, compact_json, utc_now
from devstack.crm.errors import CrmError, validation_error
from devstack.crm.store import ContactStore

IDEMPOTENCY_KEY_HEADER = "Idempotency-Key"
IDEMPOTENT_REPLAYED_HEADER = "Idempotent-Replayed"
MAX_IDEMPOTENCY_KEY_LENGTH = 255


def idempotency_key(request: Request) -> str | None:
    """The request's ``Idempotency-Key`` (stripped), None without one; a 400 if it is empty or too long."""
    key = request.headers.get(IDEMPOTENCY_KEY_HEADER)
    if key is None:
        return None
    key = key.strip()
    if not key or len(key) > MAX_IDEMPOTENCY_KEY_LENGTH:
        raise validation_error(
            f"{IDEMPOTENCY_KEY_HEADER} must be 1..{MAX_IDEMPOTENCY_KEY_LENGTH} characters, got {len(key)}"
        )
    return key


def body_sha256(body: object) -> str:
    """The hash a key's request body is recorded and compared by: of its canonical JSON (sorted keys)."""
    return hashlib.sha256(orjson.dumps(body, option=orjson.OPT_SORT_KEYS)).hexdigest()


def upsert_once(
    store: ContactStore, inputs: Sequence[UpsertInput], *, key: str, body_sha256: str, started_at: str
) -> tuple[int, str, bool]:
    """Apply `inputs` once per `key`: returns (status, response body as JSON text, replayed).

    The key is looked up inside the write transaction, so concurrent requests with one key serialize on the
    write lock and only the first applies; the others replay its response. A key reused with another body
    raises a 422 `CrmError`. If applying fails (e.g. 409), the transaction rolls back and no key is recorded.
    """
    with store.write() as conn:
        row = conn.execute(
            "SELECT body_sha256, status, response FROM idempotency_keys WHERE key = ?", (key,)
        ).fetchone()
        if row is not None:
            stored_sha256, status, response = row
            if stored_sha256 != body_sha256:
                raise CrmError(
                    422,
                    "VALIDATION_ERROR",
                    f"{IDEMPOTENCY_KEY_HEADER} {key!r} was already used with a different request payload. "
                    "Reuse a key only to retry the identical request; send a new key for a new request.",
                )
            return status, response, True
        body = compact_json(batch_response(store.apply_upserts(conn, inputs, utc_now()), started_at))
        conn.execute(
            "INSERT INTO idempotency_keys (key, body_sha256, status, response, created_at) VALUES (?, ?, ?, ?, ?)",
            (key, body_sha256, 200, body, utc_now()),
        )
    return 200, body, False
