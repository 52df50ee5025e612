"""OpenAI's error shape, and Xclient's errors (Triton's answers) mapped onto it.

Every error the gateway answers is ``{"error": {"message", "type", "param", "code"}}`` with the HTTP
status OpenAI's clients expect: 400 for a bad or unsupported field, 401 for a missing or wrong key, 404 for
an unknown model or route, 503 when no Triton server answers, 504 when Triton's answer did not come in time.
"""

from __future__ import annotations

import re
from typing import Any

from ..exceptions import (
    AccessDeniedError,
    IncompatibleModelError,
    InferenceServerError,
    ModelUnavailableError,
    ServerUnavailableError,
    XclientError,
    XclientTimeoutError,
    XclientValueError,
)

#: Triton statuses of a request refused for its inputs (HTTP and gRPC spellings).
_BAD_INPUT = ("400", "StatusCode.INVALID_ARGUMENT")
_NAMED = re.compile(r"^([A-Za-z_][\w.\[\]']*): ")


class ApiError(Exception):
    """An error answered in OpenAI's shape: ``status`` and the ``error`` object's fields."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.param = param
        self.code = code

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


def invalid(param: str, message: str, code: str | None = "invalid_value") -> ApiError:
    """A field with a value the gateway cannot take (400)."""
    return ApiError(400, message, param=param, code=code)


def unsupported(param: str, message: str) -> ApiError:
    """A field the backend cannot honour (400, ``unsupported_parameter``)."""
    return ApiError(400, message, param=param, code="unsupported_parameter")


def unknown_model(model: str, detail: str = "") -> ApiError:
    message = f"The model {model!r} does not exist on the gateway's Triton servers" + (f": {detail}" if detail else "")
    return ApiError(404, message, param="model", code="model_not_found")


def from_xclient(error: XclientError, params: tuple[str, ...] = ()) -> ApiError:
    """Xclient's error (already free of credentials) as an :class:`ApiError`. ``params``: the request's
    fields, one of which a bad-input message may name (``for 'presence_penalty'``)."""
    message = error.message
    if isinstance(error, XclientValueError):
        named = _NAMED.match(message)
        param = named.group(1) if named else next((p for p in params if repr(p) in message), None)
        return ApiError(400, message, param=param, code="invalid_value")
    if isinstance(error, ModelUnavailableError):
        return ApiError(404, message, param="model", code="model_not_found")
    if isinstance(error, IncompatibleModelError):
        return ApiError(400, message, param="model", code="model_not_supported")
    if isinstance(error, ServerUnavailableError):
        return ApiError(503, message, type="server_error", code="triton_unavailable")
    if isinstance(error, XclientTimeoutError):
        return ApiError(504, message, type="server_error", code="triton_timeout")
    if isinstance(error, AccessDeniedError):  # the gateway's Triton key is missing or wrong: not the caller's fault
        return ApiError(502, message, type="server_error", code="triton_access_denied")
    if isinstance(error, InferenceServerError) and error.status in _BAD_INPUT:
        return ApiError(400, message, code="invalid_input")
    return ApiError(500, message, type="server_error", code="triton_error")
