"""Contacts in HubSpot's CRM v3 shapes, and the checks of request bodies, apart from storage and HTTP.

`UpsertInput`, `Contact` and `UpsertResult` with their JSON shapes; `parse_upsert_body` (a batch upsert's inputs,
every bad input reported at once with its position, HubSpot-style) and `parse_batch_ids` (batch read and
archive); `batch_response`, the body of a batch upsert's answer. The limits (batch size, page size) and the
property naming rules live here too.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, NamedTuple

import orjson

from devstack.crm.errors import validation_error

MAX_BATCH_INPUTS = 100
MAX_PAGE_LIMIT = 100
DEFAULT_PAGE_LIMIT = 10
OBJECT_ID_PROPERTY = "hs_object_id"
READ_ONLY_PROPERTIES = frozenset({OBJECT_ID_PROPERTY, "createdate", "lastmodifieddate"})
# HubSpot internal property names: letters, digits and underscores, starting with a letter. Checking them here
# also makes them safe to embed in a JSON path (see ContactStore._register_id_properties).
PROPERTY_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]*")
_NAMES_SEEN: set[str] = set()  # property names already checked against PROPERTY_NAME (they repeat in every input)
EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")

PropertyValue = str | None


def utc_now() -> str:
    """ISO 8601 UTC with milliseconds, the way HubSpot writes timestamps (``2024-05-01T12:00:00.123Z``)."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class UpsertInput(NamedTuple):  # a tuple: cheap to create, a few hundred per batch request
    id_property: str
    id: str
    properties: Mapping[str, PropertyValue]


class Contact(NamedTuple):
    id: int
    properties: dict[str, PropertyValue]
    created_at: str
    updated_at: str

    def to_json(self, property_names: Sequence[str] | None = None) -> dict[str, Any]:
        """HubSpot's object shape. `property_names` narrows `properties` like HubSpot's ``properties=`` param."""
        properties = self.properties
        if property_names is not None:
            wanted = [*property_names, *sorted(READ_ONLY_PROPERTIES)]
            properties = {name: self.properties.get(name) for name in wanted}
        return {
            "id": str(self.id),
            "properties": properties,
            "createdAt": self.created_at,
            "updatedAt": self.updated_at,
            "archived": False,
        }


class UpsertResult(NamedTuple):
    contact: Contact
    new: bool

    def to_json(self) -> dict[str, Any]:
        return {**self.contact.to_json(), "new": self.new}


def _property_value(value: object) -> PropertyValue:
    """HubSpot keeps every property value as a string; None (JSON null) clears the value."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    raise TypeError(type(value).__name__)


def _property_name_ok(name: object) -> bool:
    ok = isinstance(name, str) and PROPERTY_NAME.fullmatch(name) and name not in READ_ONLY_PROPERTIES
    if ok and len(_NAMES_SEEN) < 10_000:
        _NAMES_SEEN.add(name)
        return True
    return isinstance(name, str) and PROPERTY_NAME.fullmatch(name) is not None


_TEXT_TYPES = frozenset({str, type(None)})


def _valid_inputs(raw_inputs: list[object]) -> list[UpsertInput] | None:
    """The usual batch, checked in one cheap pass: every input an object with a known-good idProperty, a string
    id and known-good property names (never read-only) with string or null values, valid emails, no duplicate
    ids. None when anything is off: `parse_upsert_body` then checks every input and reports each problem.

    This keeps the stand-in's per-record CPU low, so a benchmark of its clients measures the clients.
    """
    inputs: list[UpsertInput] = []
    seen: set[tuple[str, str]] = set()
    for raw in raw_inputs:
        if type(raw) is not dict:
            return None
        id_property, id_value, properties = raw.get("idProperty"), raw.get("id"), raw.get("properties", {})
        if id_property not in _NAMES_SEEN or type(id_value) is not str or not id_value or type(properties) is not dict:
            return None
        if not _NAMES_SEEN.issuperset(properties) or not _TEXT_TYPES.issuperset(map(type, properties.values())):
            return None
        email = properties.get("email")
        if (email and not EMAIL.fullmatch(email)) or (id_property, id_value) in seen:
            return None
        seen.add((id_property, id_value))
        inputs.append(UpsertInput(id_property, id_value, dict(properties)))
    return inputs


def parse_upsert_body(body: object) -> list[UpsertInput]:
    """Validate a batch-upsert request body; report every bad input at once, with its position."""
    if not isinstance(body, dict) or not isinstance(body.get("inputs"), list):
        raise validation_error(
            'Expected a JSON object {"inputs": [{"idProperty": ..., "id": ..., "properties": {...}}]}'
        )
    raw_inputs: list[object] = body["inputs"]
    if len(raw_inputs) > MAX_BATCH_INPUTS:
        raise validation_error(
            f"Too many inputs: got {len(raw_inputs)}, at most {MAX_BATCH_INPUTS} are allowed per batch request. "
            f"Split the inputs into batches of {MAX_BATCH_INPUTS}."
        )
    if (valid := _valid_inputs(raw_inputs)) is not None:
        return valid
    inputs: list[UpsertInput] = []
    errors: list[dict[str, str]] = []
    seen: dict[tuple[str, str], int] = {}

    def bad(index: int, where: str, message: str) -> None:
        errors.append({"in": f"inputs[{index}]{where}", "message": message})

    for index, raw in enumerate(raw_inputs):
        if not isinstance(raw, dict):
            bad(index, "", f"expected an object, got {type(raw).__name__}")
            continue
        id_property, id_value, raw_properties = raw.get("idProperty"), raw.get("id"), raw.get("properties", {})
        ok = True
        if not isinstance(id_property, str) or not PROPERTY_NAME.fullmatch(id_property):
            bad(index, ".idProperty", f"expected a property name (letters, digits, _), got {id_property!r}")
            ok = False
        elif id_property in READ_ONLY_PROPERTIES:
            bad(index, ".idProperty", f"{id_property!r} cannot be an idProperty for upserts; use a unique property")
            ok = False
        else:
            _property_name_ok(id_property)  # remembered as known-good for `_valid_inputs`
        if isinstance(id_value, int) and not isinstance(id_value, bool):
            id_value = str(id_value)
        if not isinstance(id_value, str) or not id_value:
            bad(index, ".id", f"expected a non-empty string, got {id_value!r}")
            ok = False
        if not isinstance(raw_properties, dict):
            bad(index, ".properties", f"expected an object, got {type(raw_properties).__name__}")
            continue
        properties: dict[str, PropertyValue] = {}
        for name, value in raw_properties.items():
            if name not in _NAMES_SEEN and not _property_name_ok(name):
                bad(index, f".properties[{name!r}]", "expected a property name (letters, digits, _)")
                ok = False
            elif name in READ_ONLY_PROPERTIES:
                bad(index, f".properties.{name}", "is read-only (set by the CRM)")
                ok = False
            else:
                try:
                    properties[name] = _property_value(value)
                except TypeError as exc:
                    bad(index, f".properties.{name}", f"expected a string, number, boolean or null, got {exc}")
                    ok = False
                    continue
                if name == "email" and properties[name] and not EMAIL.fullmatch(properties[name] or ""):
                    bad(index, ".properties.email", f"INVALID_EMAIL: {properties[name]!r} is not a valid email address")
                    ok = False
        if not ok:
            continue
        key = (id_property, id_value)
        if key in seen:
            bad(index, ".id", f"duplicate of inputs[{seen[key]}] ({id_property}={id_value!r}); ids must be unique")
            continue
        seen[key] = index
        inputs.append(UpsertInput(id_property, id_value, properties))
    if errors:
        shown = "; ".join(f"{e['in']}: {e['message']}" for e in errors[:5])
        more = f" (and {len(errors) - 5} more)" if len(errors) > 5 else ""
        raise validation_error(f"{len(errors)} invalid input(s): {shown}{more}", errors)
    return inputs


def parse_batch_ids(body: object, *, allow_id_property: bool) -> tuple[str, list[str], list[str] | None]:
    """(idProperty, ids, property names) of a batch read or archive body: ``{"inputs": [{"id": ...}], ...}``."""
    if not isinstance(body, dict) or not isinstance(body.get("inputs"), list):
        raise validation_error('Expected a JSON object {"inputs": [{"id": ...}]}')
    inputs = body["inputs"]
    if len(inputs) > MAX_BATCH_INPUTS:
        raise validation_error(f"Too many inputs: got {len(inputs)}, at most {MAX_BATCH_INPUTS} are allowed")
    values = [str(item.get("id")) if isinstance(item, dict) else "" for item in inputs]
    if any(not value or value == "None" for value in values):
        raise validation_error("every input needs a non-empty id")
    id_property = body.get("idProperty") or OBJECT_ID_PROPERTY
    if not allow_id_property and id_property != OBJECT_ID_PROPERTY:
        raise validation_error("batch/archive takes object ids only; read them with batch/read and idProperty first")
    if not isinstance(id_property, str) or not PROPERTY_NAME.fullmatch(id_property):
        raise validation_error(f"idProperty={id_property!r} is not a property name")
    names = body.get("properties")
    return id_property, values, [str(n) for n in names] if isinstance(names, list) else None


def compact_json(value: object) -> str:
    """Compact JSON text (orjson: the stand-in must not be what limits a benchmark of its clients)."""
    return orjson.dumps(value).decode()


def batch_response(results: Sequence[UpsertResult], started_at: str) -> dict[str, Any]:
    return {
        "status": "COMPLETE",
        "results": [result.to_json() for result in results],
        "startedAt": started_at,
        "completedAt": utc_now(),
    }
