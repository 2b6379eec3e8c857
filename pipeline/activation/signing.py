"""Signing for the generic webhook, and the helper a receiver uses to check it.

Every POST carries two headers:

    X-Pipeline-Timestamp: 1718035200                  unix seconds when the request was signed
    X-Pipeline-Signature: v1=<hex HMAC-SHA256>        over b"<timestamp>." + the raw body bytes

The timestamp is inside the signed message so a captured request cannot be replayed later with a fresh timestamp,
and the receiver rejects timestamps outside a tolerance window (five minutes by default). The signature covers the
exact bytes on the wire, not re-serialised JSON: key order and whitespace are not stable across JSON libraries, so a
receiver must verify the raw body *before* parsing it. While a secret is being rotated the sender signs with both the
old and the new secret and sends both, comma-separated (``v1=<old>,v1=<new>``); one match is enough.

A receiver in any framework (Flask: ``request.get_data()``; Starlette/FastAPI: ``await request.body()``)::

    import json
    from pipeline.activation.signing import SignatureError, verify

    def handle_webhook(raw_body: bytes, headers) -> tuple[int, str]:
        # Read the raw body before parsing JSON: the signature covers these exact bytes.
        try:
            verify(WEBHOOK_SECRET, raw_body, headers)
        except SignatureError as exc:
            return 401, f"rejected: {exc}"
        payload = json.loads(raw_body)
        ...
        return 200, "ok"

Receivers in other languages: compute HMAC-SHA256 with the shared secret over ``timestamp + "." + raw body``,
hex-encode it, compare it in constant time with each ``v1=`` value, and reject stale timestamps.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import time
from collections.abc import Mapping, Sequence
from typing import Any

TIMESTAMP_HEADER = "X-Pipeline-Timestamp"
SIGNATURE_HEADER = "X-Pipeline-Signature"
SCHEME = "v1"
DEFAULT_TOLERANCE_SECONDS = 300

_INTEGER = re.compile(r"[0-9]{1,15}")  # bounded: int() refuses very long digit strings

Secret = str | bytes


class SignatureError(ValueError):
    """A webhook request failed verification; the message says why (safe to return to the sender)."""


def json_body(payload: Any) -> bytes:
    """The bytes to send *and* sign: compact, sorted keys, UTF-8, so the same payload always signs the same.

    NaN and infinities are refused: they are not JSON and many receivers cannot parse them.
    """
    return json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode(
        "utf-8"
    )


def _key(secret: Secret) -> bytes:
    key = secret.encode("utf-8") if isinstance(secret, str) else bytes(secret)
    if not key:
        raise ValueError("webhook signing secret is empty")
    return key


def _digest(secret: Secret, timestamp: str, body: bytes) -> str:
    return hmac.new(_key(secret), timestamp.encode("ascii") + b"." + body, hashlib.sha256).hexdigest()


def sign(secret: Secret | Sequence[Secret], body: bytes, timestamp: int | None = None) -> dict[str, str]:
    """The two headers for `body`, signed at `timestamp` (default: now).

    `secret` may also be a sequence of secrets (old and new, during a rotation): one ``v1=`` signature each.
    """
    if not isinstance(body, bytes | bytearray | memoryview):
        raise TypeError(f"body must be bytes (the exact bytes sent), got {type(body).__name__}; see json_body()")
    secrets = [secret] if isinstance(secret, str | bytes | bytearray) else list(secret)
    if not secrets:
        raise ValueError("at least one webhook signing secret is required")
    stamp = str(int(time.time()) if timestamp is None else int(timestamp))
    signatures = ",".join(f"{SCHEME}={_digest(s, stamp, bytes(body))}" for s in secrets)
    return {TIMESTAMP_HEADER: stamp, SIGNATURE_HEADER: signatures}


def verify(
    secret: Secret,
    body: bytes,
    headers: Mapping[str, str],
    *,
    tolerance_seconds: int = DEFAULT_TOLERANCE_SECONDS,
    now: int | None = None,
) -> None:
    """Return if `body` and `headers` were signed with `secret` within `tolerance_seconds` of `now`; else raise.

    Header names are matched case-insensitively (HTTP servers often lower-case them). Raises `SignatureError`.
    """
    lowered = {name.lower(): value for name, value in headers.items()}
    stamp = lowered.get(TIMESTAMP_HEADER.lower())
    signature_header = lowered.get(SIGNATURE_HEADER.lower())
    if not stamp or not signature_header:
        missing = [
            name for name, value in ((TIMESTAMP_HEADER, stamp), (SIGNATURE_HEADER, signature_header)) if not value
        ]
        raise SignatureError(f"missing header(s): {', '.join(missing)}")

    stamp = stamp.strip()
    if not _INTEGER.fullmatch(stamp):
        raise SignatureError(f"{TIMESTAMP_HEADER} must be integer unix seconds, got {stamp!r}")
    current = int(time.time()) if now is None else int(now)
    age = current - int(stamp)
    if age > tolerance_seconds:
        raise SignatureError(f"timestamp is {age}s old, beyond the {tolerance_seconds}s tolerance (possible replay)")
    if -age > tolerance_seconds:
        raise SignatureError(f"timestamp is {-age}s in the future, beyond the {tolerance_seconds}s tolerance")

    candidates = []
    for part in signature_header.split(","):
        scheme, sep, value = part.strip().partition("=")
        if sep and scheme == SCHEME and value:
            candidates.append(value.strip())
    if not candidates:
        raise SignatureError(f"{SIGNATURE_HEADER} has no {SCHEME}=<hex> signature")

    expected = _digest(secret, stamp, bytes(body)).encode("ascii")
    # Check every candidate (no early exit) so timing does not reveal which one matched.
    matched = False
    for candidate in candidates:
        matched |= hmac.compare_digest(expected, candidate.encode("utf-8"))
    if not matched:
        raise SignatureError("signature does not match the body and timestamp (wrong secret or altered body)")
