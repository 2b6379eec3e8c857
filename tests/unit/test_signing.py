"""Webhook signing: the headers a sender adds and every way `verify` must refuse a request."""

from __future__ import annotations

import hashlib
import hmac
import json
import math

import pytest

from pipeline.activation.signing import (
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    SignatureError,
    json_body,
    sign,
    verify,
)

SECRET = "whsec-test"
NOW = 1_718_035_200
BODY = json_body({"event": "contact.updated", "id": 42, "email": "ada@example.com", "name": "Ada Lovelace"})


@pytest.mark.parametrize("secret", ["whsec-test", b"\x00raw-bytes\xff", "ключ-🔑"])
@pytest.mark.parametrize(
    "body",
    [b"", b"{}", BODY, json_body({"name": "Zoë", "emoji": "🎉"}), b"\x00\xffnot utf-8", b"a" * 100_000],
    ids=["empty", "empty-object", "json", "unicode", "binary", "large"],
)
def test_round_trip(secret: str | bytes, body: bytes) -> None:
    headers = sign(secret, body, timestamp=NOW)
    verify(secret, body, headers, now=NOW)


def test_headers_match_the_documented_algorithm() -> None:
    headers = sign(SECRET, BODY, timestamp=NOW)
    expected = hmac.new(SECRET.encode(), f"{NOW}.".encode() + BODY, hashlib.sha256).hexdigest()
    assert headers == {TIMESTAMP_HEADER: str(NOW), SIGNATURE_HEADER: f"v1={expected}"}


def test_timestamp_defaults_to_now() -> None:
    headers = sign(SECRET, BODY)
    verify(SECRET, BODY, headers)  # now defaults to the clock too


@pytest.mark.parametrize(
    "tampered",
    [BODY + b" ", BODY.replace(b"42", b"43"), BODY[:-1], b"", json.dumps(json.loads(BODY), indent=2).encode()],
    ids=["trailing-space", "changed-value", "truncated", "emptied", "re-serialised"],
)
def test_tampered_body_is_rejected(tampered: bytes) -> None:
    headers = sign(SECRET, BODY, timestamp=NOW)
    with pytest.raises(SignatureError, match="does not match"):
        verify(SECRET, tampered, headers, now=NOW)


@pytest.mark.parametrize("wrong", ["whsec-other", "whsec-test ", "WHSEC-TEST", b"whsec-tes"])
def test_wrong_secret_is_rejected(wrong: str | bytes) -> None:
    headers = sign(SECRET, BODY, timestamp=NOW)
    with pytest.raises(SignatureError, match="does not match"):
        verify(wrong, BODY, headers, now=NOW)


def test_timestamp_header_is_signed() -> None:
    headers = sign(SECRET, BODY, timestamp=NOW)
    headers[TIMESTAMP_HEADER] = str(NOW + 1)  # a replay with a refreshed timestamp
    with pytest.raises(SignatureError, match="does not match"):
        verify(SECRET, BODY, headers, now=NOW)


@pytest.mark.parametrize(
    ("signed_at", "reason"),
    [(NOW - 301, "301s old"), (NOW - 86_400, "86400s old"), (NOW + 301, "301s in the future"), (0, "old")],
)
def test_timestamp_beyond_tolerance_is_rejected(signed_at: int, reason: str) -> None:
    headers = sign(SECRET, BODY, timestamp=signed_at)
    with pytest.raises(SignatureError, match=reason):
        verify(SECRET, BODY, headers, now=NOW)


@pytest.mark.parametrize("offset", [-300, -1, 0, 1, 300])
def test_timestamp_within_tolerance_is_accepted(offset: int) -> None:
    verify(SECRET, BODY, sign(SECRET, BODY, timestamp=NOW + offset), now=NOW)


def test_tolerance_is_configurable() -> None:
    headers = sign(SECRET, BODY, timestamp=NOW - 30)
    verify(SECRET, BODY, headers, now=NOW, tolerance_seconds=30)
    with pytest.raises(SignatureError, match="30s old"):
        verify(SECRET, BODY, headers, now=NOW, tolerance_seconds=29)


@pytest.mark.parametrize(
    ("drop", "missing"),
    [
        ([TIMESTAMP_HEADER], TIMESTAMP_HEADER),
        ([SIGNATURE_HEADER], SIGNATURE_HEADER),
        ([TIMESTAMP_HEADER, SIGNATURE_HEADER], f"{TIMESTAMP_HEADER}, {SIGNATURE_HEADER}"),
    ],
)
def test_missing_headers_are_named(drop: list[str], missing: str) -> None:
    headers = {k: v for k, v in sign(SECRET, BODY, timestamp=NOW).items() if k not in drop}
    with pytest.raises(SignatureError, match=f"missing header\\(s\\): {missing}$"):
        verify(SECRET, BODY, headers, now=NOW)


@pytest.mark.parametrize("header", [TIMESTAMP_HEADER, SIGNATURE_HEADER])
def test_empty_header_counts_as_missing(header: str) -> None:
    headers = sign(SECRET, BODY, timestamp=NOW) | {header: ""}
    with pytest.raises(SignatureError, match=f"missing header\\(s\\): {header}$"):
        verify(SECRET, BODY, headers, now=NOW)


@pytest.mark.parametrize("case", [str.lower, str.upper, str.swapcase, lambda name: name])
def test_header_names_are_case_insensitive(case) -> None:
    headers = {case(name): value for name, value in sign(SECRET, BODY, timestamp=NOW).items()}
    verify(SECRET, BODY, headers, now=NOW)


def test_rotation_accepts_either_of_two_signatures() -> None:
    old, new = "whsec-old", "whsec-new"
    headers = sign([old, new], BODY, timestamp=NOW)
    signatures = headers[SIGNATURE_HEADER].split(",")
    assert len(signatures) == 2 and all(s.startswith("v1=") for s in signatures)
    assert signatures == [sign(s, BODY, timestamp=NOW)[SIGNATURE_HEADER] for s in (old, new)]
    verify(old, BODY, headers, now=NOW)  # a receiver not yet switched over
    verify(new, BODY, headers, now=NOW)  # a receiver already on the new secret
    with pytest.raises(SignatureError, match="does not match"):
        verify("whsec-retired", BODY, headers, now=NOW)


@pytest.mark.parametrize(
    "signature_header",
    ["v1={old}, v1={new}", "v0=deadbeef,v1={new}", " v1={new} ", "v1=zz,v1={new}", "v1=\u00e9,v1={new}"],
    ids=["space-after-comma", "unknown-scheme-ignored", "padded", "garbage-first", "non-ascii-first"],
)
def test_signature_list_parsing(signature_header: str) -> None:
    old = sign("whsec-old", BODY, timestamp=NOW)[SIGNATURE_HEADER].removeprefix("v1=")
    new = sign("whsec-new", BODY, timestamp=NOW)[SIGNATURE_HEADER].removeprefix("v1=")
    headers = {TIMESTAMP_HEADER: str(NOW), SIGNATURE_HEADER: signature_header.format(old=old, new=new)}
    verify("whsec-new", BODY, headers, now=NOW)


@pytest.mark.parametrize("signature_header", ["deadbeef", "v2=deadbeef", "v1=", ",", "sha256=abc"])
def test_header_without_v1_signature_is_rejected(signature_header: str) -> None:
    headers = {TIMESTAMP_HEADER: str(NOW), SIGNATURE_HEADER: signature_header}
    with pytest.raises(SignatureError, match="no v1=<hex> signature"):
        verify(SECRET, BODY, headers, now=NOW)


@pytest.mark.parametrize(
    "stamp",
    ["abc", "1718035200.5", "1.7e9", "-1718035200", "+1718035200", "1_718_035_200", "9" * 5000, "0x66", "١٢٣", "12 34"],
)
def test_non_integer_timestamp_is_rejected(stamp: str) -> None:
    headers = sign(SECRET, BODY, timestamp=NOW) | {TIMESTAMP_HEADER: stamp}
    with pytest.raises(SignatureError, match="must be integer unix seconds"):
        verify(SECRET, BODY, headers, now=NOW)


def test_signature_error_is_a_value_error() -> None:
    assert issubclass(SignatureError, ValueError)


def test_sign_refuses_str_body_and_empty_secret() -> None:
    with pytest.raises(TypeError, match="json_body"):
        sign(SECRET, '{"a":1}', timestamp=NOW)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="empty"):
        sign("", BODY, timestamp=NOW)
    with pytest.raises(ValueError, match="at least one"):
        sign([], BODY, timestamp=NOW)


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        ({"b": 1, "a": [1, 2], "c": {"z": None, "y": True}}, b'{"a":[1,2],"b":1,"c":{"y":true,"z":null}}'),
        ({"name": "Zoë"}, '{"name":"Zoë"}'.encode()),
        ([], b"[]"),
    ],
)
def test_json_body_is_compact_sorted_utf8(payload: object, expected: bytes) -> None:
    assert json_body(payload) == expected
    assert json.loads(json_body(payload)) == payload


def test_json_body_is_stable_across_key_order() -> None:
    assert json_body({"a": 1, "b": 2}) == json_body({"b": 2, "a": 1})


def test_json_body_refuses_nan() -> None:
    with pytest.raises(ValueError):
        json_body({"score": math.nan})
