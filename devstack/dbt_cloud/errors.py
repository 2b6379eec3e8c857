"""dbt Cloud's response envelope: every answer of the Administrative API v2 is ``{"status": {...}, "data": ...}``
(lists add ``extra.pagination``). `DbtCloudError` is what the handlers raise; `envelope` and `error_response` build
the bodies.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from starlette.responses import JSONResponse


class DbtCloudError(Exception):
    """An error the API reports in dbt Cloud's shape (``status.is_success: false``, ``data: null``)."""

    def __init__(self, status_code: int, message: str) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.message = message


def not_found(what: str) -> DbtCloudError:
    return DbtCloudError(404, f"{what} not found.")


def invalid(message: str) -> DbtCloudError:
    return DbtCloudError(400, f"The request was invalid: {message}")


def envelope(data: Any, *, code: int = 200, extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "status": {"code": code, "is_success": code < 400, "user_message": "Success!", "developer_message": ""},
        "data": data,
    }
    if extra is not None:
        body["extra"] = dict(extra)
    return body


def error_response(status_code: int, message: str, headers: Mapping[str, str] | None = None) -> JSONResponse:
    body = envelope(None, code=status_code)
    body["status"]["user_message"] = message
    return JSONResponse(body, status_code=status_code, headers=headers)
