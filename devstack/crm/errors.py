"""Errors in HubSpot's shape: `CrmError`, which the request handlers raise, and `error_response`, the JSON body
every error answer of the CRM stand-in has (``status``, ``message``, ``correlationId``, ``category``, ``errors``).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from starlette.responses import JSONResponse


class CrmError(Exception):
    """An error the API reports in HubSpot's shape; `errors` lists per-input details."""

    def __init__(self, status_code: int, category: str, message: str, errors: Sequence[Mapping[str, str]] = ()) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.category = category
        self.message = message
        self.errors = list(errors)


def validation_error(message: str, errors: Sequence[Mapping[str, str]] = ()) -> CrmError:
    return CrmError(400, "VALIDATION_ERROR", message, errors)


def error_response(
    status_code: int,
    category: str,
    message: str,
    errors: Sequence[Mapping[str, str]] = (),
    headers: Mapping[str, str] | None = None,
) -> JSONResponse:
    body: dict[str, Any] = {
        "status": "error",
        "message": message,
        "correlationId": str(uuid.uuid4()),
        "category": category,
    }
    if errors:
        body["errors"] = list(errors)
    return JSONResponse(body, status_code=status_code, headers=headers)
