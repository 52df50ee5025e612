"""Thin sync transports over ``tritonclient`` (HTTP and gRPC), and the one place errors are translated.

A transport knows nothing of argument mapping or batching: it moves named numpy arrays and
returns named numpy arrays. ``tritonclient`` is imported here, lazily, so ``import Xclient``
stays light.
"""

from __future__ import annotations

import dataclasses
import socket
import ssl
import threading
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from ..exceptions import (
    AccessDeniedError,
    InferenceServerError,
    ModelUnavailableError,
    ServerUnavailableError,
    XclientError,
    XclientTimeoutError,
)
from ._auth import redact
from ._urls import ServerUrl


@dataclasses.dataclass(frozen=True)
class TlsOptions:
    """TLS files for ``https://`` and ``grpcs://`` URLs (PEM paths); all optional."""

    ca_certs: str | None = None
    client_cert: str | None = None
    client_key: str | None = None


@dataclasses.dataclass(frozen=True)
class CallContext:
    """What an error message needs to say where it happened, and which secrets to hide."""

    url: ServerUrl
    model: str | None
    secrets: tuple[str, ...] = ()


_NOT_FOUND_STATUSES = ("404", "StatusCode.NOT_FOUND")
_UNAVAILABLE_STATUSES = ("StatusCode.UNAVAILABLE",)
_TIMEOUT_STATUSES = ("StatusCode.DEADLINE_EXCEEDED",)
_DENIED_STATUSES = ("401", "403", "StatusCode.UNAUTHENTICATED", "StatusCode.PERMISSION_DENIED")


def translate_error(exc: BaseException, ctx: CallContext, action: str, timeout_s: float | None) -> XclientError:
    """Map any exception a transport call raised to the Xclient error tree."""
    if isinstance(exc, XclientError):
        return exc
    from tritonclient.utils import InferenceServerException

    model = ctx.model
    action = action[:1].upper() + action[1:]
    where = f"model {model!r} on {ctx.url}" if model else f"server {ctx.url}"
    if isinstance(exc, InferenceServerException):
        status = str(exc.status()) if exc.status() is not None else None
        server_message = redact(str(exc.message() or ""), ctx.secrets)
        lowered = server_message.lower()
        if status in _TIMEOUT_STATUSES or "timed out" in lowered or "deadline exceeded" in lowered:
            return XclientTimeoutError(
                f"{action} for {where} timed out after {timeout_s} s: {server_message}",
                model=model,
                status=status,
                server_message=server_message,
            )
        if status in _DENIED_STATUSES or "restricted, expecting header" in lowered:
            return AccessDeniedError(
                f"{action} for {where} was refused: {server_message}. Check the API key (api_key=...)",
                model=model,
                status=status,
                server_message=server_message,
            )
        if status in _UNAVAILABLE_STATUSES or _looks_like_connection_failure(lowered):
            return ServerUnavailableError(
                f"Cannot reach {ctx.url} ({action} for {where}): {server_message}",
                model=model,
                status=status,
                server_message=server_message,
            )
        if status in _NOT_FOUND_STATUSES or "unknown model" in lowered:
            return ModelUnavailableError(
                f"{where.capitalize()} is not available: {server_message}",
                model=model,
                status=status,
                server_message=server_message,
            )
        return InferenceServerError(
            f"{action} for {where} failed: {server_message}",
            model=model,
            status=status,
            server_message=server_message,
        )
    message = redact(f"{type(exc).__name__}: {exc}", ctx.secrets)
    if isinstance(exc, (TimeoutError, socket.timeout)) or type(exc).__name__ == "Timeout":
        return XclientTimeoutError(f"{action} for {where} timed out after {timeout_s} s ({message})", model=model)
    if isinstance(exc, (ConnectionError, socket.gaierror, ssl.SSLError, OSError)):
        return ServerUnavailableError(f"Cannot reach {ctx.url} ({action} for {where}): {message}", model=model)
    return InferenceServerError(f"{action} for {where} failed: {message}", model=model)


def _looks_like_connection_failure(lowered: str) -> bool:
    return any(m in lowered for m in ("failed to connect", "connection refused", "connect failed", "socket closed"))


def _output_arrays(result: Any, names: list[str]) -> dict[str, np.ndarray]:
    return {name: result.as_numpy(name) for name in names}


class Transport:
    """Sync transport interface: one method per server call, each with a deadline in seconds."""

    def __init__(self, url: ServerUrl, tls: TlsOptions) -> None:
        self.url = url
        self.tls = tls

    def server_live(self, *, timeout_s: float, headers: Mapping[str, str] | None) -> bool:
        raise NotImplementedError

    def server_ready(self, *, timeout_s: float, headers: Mapping[str, str] | None) -> bool:
        raise NotImplementedError

    def model_ready(self, name: str, version: str, *, timeout_s: float, headers: Mapping[str, str] | None) -> bool:
        raise NotImplementedError

    def model_config(
        self, name: str, version: str, *, timeout_s: float, headers: Mapping[str, str] | None
    ) -> dict[str, Any]:
        raise NotImplementedError

    def infer(
        self,
        name: str,
        version: str,
        inputs: Mapping[str, np.ndarray],
        *,
        timeout_s: float,
        headers: Mapping[str, str] | None,
        parameters: Mapping[str, Any] | None,
    ) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError


class HttpTransport(Transport):
    """HTTP over ``tritonclient.http``. Its clients are not thread-safe, so each thread gets its own;
    and since their deadline is set per client, one client per deadline value (a handful)."""

    def __init__(self, url: ServerUrl, tls: TlsOptions) -> None:
        super().__init__(url, tls)
        import tritonclient.http as httpclient

        self._module = httpclient
        self._local = threading.local()
        self._all: list[Any] = []
        self._lock = threading.Lock()

    def _client(self, timeout_s: float) -> Any:
        clients = getattr(self._local, "clients", None)
        if clients is None:
            clients = self._local.clients = {}
        client = clients.get(timeout_s)
        if client is None:
            ssl_options = {
                key: value
                for key, value in (
                    ("ca_certs", self.tls.ca_certs),
                    ("certfile", self.tls.client_cert),
                    ("keyfile", self.tls.client_key),
                )
                if value
            }
            client = self._module.InferenceServerClient(
                self.url.address,
                connection_timeout=timeout_s,
                network_timeout=timeout_s,
                ssl=self.url.tls,
                ssl_options=ssl_options or None,
            )
            clients[timeout_s] = client
            with self._lock:
                self._all.append(client)
        return client

    def server_live(self, *, timeout_s: float, headers: Mapping[str, str] | None) -> bool:
        return bool(self._client(timeout_s).is_server_live(headers=headers))

    def server_ready(self, *, timeout_s: float, headers: Mapping[str, str] | None) -> bool:
        return bool(self._client(timeout_s).is_server_ready(headers=headers))

    def model_ready(self, name: str, version: str, *, timeout_s: float, headers: Mapping[str, str] | None) -> bool:
        return bool(self._client(timeout_s).is_model_ready(name, version, headers=headers))

    def model_config(
        self, name: str, version: str, *, timeout_s: float, headers: Mapping[str, str] | None
    ) -> dict[str, Any]:
        return dict(self._client(timeout_s).get_model_config(name, version, headers=headers))

    def infer(
        self,
        name: str,
        version: str,
        inputs: Mapping[str, np.ndarray],
        *,
        timeout_s: float,
        headers: Mapping[str, str] | None,
        parameters: Mapping[str, Any] | None,
    ) -> dict[str, np.ndarray]:
        result = self._client(timeout_s).infer(
            name,
            _infer_inputs(self._module.InferInput, inputs),
            model_version=version,
            headers=headers,
            parameters=parameters,
        )
        return _output_arrays(result, [output["name"] for output in result.get_response().get("outputs", ())])

    def close(self) -> None:
        with self._lock:
            clients, self._all = self._all, []
        for client in clients:
            client.close()


class GrpcTransport(Transport):
    """gRPC over ``tritonclient.grpc``: one thread-safe channel, a deadline on every call."""

    def __init__(self, url: ServerUrl, tls: TlsOptions) -> None:
        super().__init__(url, tls)
        import tritonclient.grpc as grpcclient

        self._module = grpcclient
        self._grpc = grpcclient.InferenceServerClient(
            url.address,
            ssl=url.tls,
            root_certificates=tls.ca_certs,
            private_key=tls.client_key,
            certificate_chain=tls.client_cert,
        )

    @property
    def client(self) -> Any:
        """The underlying ``tritonclient.grpc.InferenceServerClient`` (streams use it too)."""
        return self._grpc

    def server_live(self, *, timeout_s: float, headers: Mapping[str, str] | None) -> bool:
        return bool(self._grpc.is_server_live(headers=grpc_metadata(headers), client_timeout=timeout_s))

    def server_ready(self, *, timeout_s: float, headers: Mapping[str, str] | None) -> bool:
        return bool(self._grpc.is_server_ready(headers=grpc_metadata(headers), client_timeout=timeout_s))

    def model_ready(self, name: str, version: str, *, timeout_s: float, headers: Mapping[str, str] | None) -> bool:
        return bool(self._grpc.is_model_ready(name, version, headers=grpc_metadata(headers), client_timeout=timeout_s))

    def model_config(
        self, name: str, version: str, *, timeout_s: float, headers: Mapping[str, str] | None
    ) -> dict[str, Any]:
        return dict(
            self._grpc.get_model_config(
                name, version, headers=grpc_metadata(headers), as_json=True, client_timeout=timeout_s
            )
        )

    def infer(
        self,
        name: str,
        version: str,
        inputs: Mapping[str, np.ndarray],
        *,
        timeout_s: float,
        headers: Mapping[str, str] | None,
        parameters: Mapping[str, Any] | None,
    ) -> dict[str, np.ndarray]:
        result = self._grpc.infer(
            name,
            _infer_inputs(self._module.InferInput, inputs),
            model_version=version,
            headers=grpc_metadata(headers),
            parameters=parameters,
            client_timeout=timeout_s,
        )
        return _output_arrays(result, [output.name for output in result.get_response().outputs])

    def close(self) -> None:
        self._grpc.close()


def grpc_metadata(headers: Mapping[str, str] | None) -> dict[str, str] | None:
    """gRPC metadata keys must be lower case."""
    return {key.lower(): value for key, value in headers.items()} if headers else None


def _infer_inputs(factory: Callable[..., Any], inputs: Mapping[str, np.ndarray]) -> list[Any]:
    from tritonclient.utils import np_to_triton_dtype

    tensors = []
    for name, array in inputs.items():
        tensor = factory(name, list(array.shape), np_to_triton_dtype(array.dtype))
        tensor.set_data_from_numpy(array)
        tensors.append(tensor)
    return tensors


def make_transport(url: ServerUrl, tls: TlsOptions) -> Transport:
    return GrpcTransport(url, tls) if url.protocol == "grpc" else HttpTransport(url, tls)
