"""Errors raised by Xclient.

Every error Xclient raises derives from :class:`XclientError`. The tree::

    XclientError
    ├── XclientValueError (also ValueError)        bad input or options, raised before anything is sent
    │   ├── InvalidUrlError                       a server URL that cannot be parsed
    │   └── BatchingNotSupportedError             infer_batch on a model with max_batch_size 0
    ├── IncompatibleModelError                    the model does not fit this client (decoupled vs coupled)
    ├── ModelUnavailableError                     unknown model or version, or not ready in time
    ├── ServerUnavailableError (also ConnectionError)  the server cannot be reached
    ├── XclientTimeoutError (also TimeoutError)   a deadline passed
    ├── InferenceServerError                      the server answered a request with an error
    │   └── AccessDeniedError                     the server refused the credentials (API key)
    ├── ClientClosedError                         the client was closed
    ├── QueueFullError                            a futures client's queue is full
    └── ServerStartError                          the local Triton server did not start

Each error carries, where they apply, ``model`` (name), ``input`` (the input's name),
``status`` and ``server_message`` (what the server said), and ``retryable``: True when the
request surely never reached the server (connection refused, DNS), so sending it again is safe. Messages never contain
credentials: see :func:`Xclient.client._auth.redact`.
"""

from __future__ import annotations

__all__ = [
    "XclientError",
    "XclientValueError",
    "InvalidUrlError",
    "BatchingNotSupportedError",
    "IncompatibleModelError",
    "ModelUnavailableError",
    "ServerUnavailableError",
    "XclientTimeoutError",
    "InferenceServerError",
    "AccessDeniedError",
    "ClientClosedError",
    "QueueFullError",
    "ServerStartError",
]


class XclientError(Exception):
    """Base class of every Xclient error."""

    def __init__(
        self,
        message: str,
        *,
        model: str | None = None,
        input: str | None = None,
        status: str | None = None,
        server_message: str | None = None,
        retryable: bool = False,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.retryable = retryable
        self.model = model
        self.input = input
        self.status = status
        self.server_message = server_message


class XclientValueError(XclientError, ValueError):
    """Bad input or options, detected before any request is sent."""


class InvalidUrlError(XclientValueError):
    """The server URL cannot be parsed."""


class BatchingNotSupportedError(XclientValueError):
    """``infer_batch`` was called on a model that does not batch (``max_batch_size`` 0)."""


class IncompatibleModelError(XclientError):
    """The model does not fit this client (a decoupled model on a coupled client, or the reverse)."""


class ModelUnavailableError(XclientError):
    """The model (or version) is unknown to the server, or was not ready in time."""


class ServerUnavailableError(XclientError, ConnectionError):
    """The server cannot be reached (connection refused, DNS failure, TLS failure...)."""


class XclientTimeoutError(XclientError, TimeoutError):
    """A deadline passed before the server answered."""


class InferenceServerError(XclientError):
    """The server answered a request with an error."""


class AccessDeniedError(InferenceServerError):
    """The server refused the request's credentials: a missing or wrong API key."""


class ClientClosedError(XclientError):
    """The client was closed and refuses further calls."""


class QueueFullError(XclientError):
    """A futures client's queue is full and the client is non-blocking."""


class ServerStartError(XclientError):
    """The local Triton server failed to start; the message ends with its log."""
