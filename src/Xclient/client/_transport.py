"""Thin transports (HTTP and gRPC, sync and asyncio), and the one place errors are translated.

Each server call is described once per protocol as an :class:`Op` (its method, its arguments, how
to read the answer): by :class:`GrpcCalls` over ``tritonclient.grpc``, by
:class:`~Xclient.client._rest.HttpCalls` over Xclient's own REST coding (:mod:`Xclient.client._rest`,
sent by :mod:`Xclient.client._http_wire`; no gevent). A sync transport runs an Op, an asyncio
transport awaits it. A transport knows nothing of argument mapping or batching. ``tritonclient``
is imported here, lazily, so ``import Xclient`` stays light.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import dataclasses
import os
import socket
import ssl
import weakref
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from ..exceptions import (
    AccessDeniedError,
    InferenceServerError,
    ModelUnavailableError,
    ServerUnavailableError,
    XclientError,
    XclientTimeoutError,
    XclientValueError,
)
from ._auth import redact
from ._urls import ServerUrl

if TYPE_CHECKING:
    from ._rest import HttpCalls


@dataclasses.dataclass(frozen=True)
class TlsOptions:
    """TLS files for ``https://`` and ``grpcs://`` URLs (PEM paths); all optional."""

    ca_certs: str | None = None
    client_cert: str | None = None
    client_key: str | None = None

    def check(self) -> TlsOptions:
        """Refuse a path that is not a readable file, naming the option (before anything is sent)."""
        for option in ("ca_certs", "client_cert", "client_key"):
            path = getattr(self, option)
            if path is None:
                continue
            if not isinstance(path, (str, os.PathLike)):
                raise XclientValueError(f"{option}: expected the path of a PEM file, got {path!r}")
            if not os.path.isfile(path):
                raise XclientValueError(f"{option}: no such file {os.fspath(path)!r}")
            if not os.access(path, os.R_OK):
                raise XclientValueError(f"{option}: the file {os.fspath(path)!r} is not readable")
        if self.client_key is not None and self.client_cert is None:
            raise XclientValueError("client_key: given without client_cert (the certificate it is the key of)")
        return self


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
        if status in _TIMEOUT_STATUSES:
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
        if status in _UNAVAILABLE_STATUSES or (status is None and _looks_like_connection_failure(lowered)):
            hint = ""
            if ctx.url.tls and any(m in lowered for m in ("socket closed", "connection reset")):
                hint = (
                    " (a TLS server also closes the socket this way when it requires a client certificate:"
                    " check client_cert and client_key)"
                )
            return ServerUnavailableError(
                f"Cannot reach {ctx.url} ({action} for {where}): {server_message}{hint}",
                model=model,
                status=status,
                server_message=server_message,
                retryable=_never_reached_the_server(lowered),
            )
        if status in _NOT_FOUND_STATUSES or (status in (None, "400") and "unknown model" in lowered):
            return ModelUnavailableError(
                f"{where[:1].upper()}{where[1:]} is not available: {server_message}",
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
    if isinstance(exc, (TimeoutError, socket.timeout, asyncio.TimeoutError)) or type(exc).__name__ == "Timeout":
        return XclientTimeoutError(f"{action} for {where} timed out after {timeout_s} s ({message})", model=model)
    if isinstance(exc, (ConnectionError, socket.gaierror, ssl.SSLError, OSError)):
        # Refused or unresolvable: nothing reached the server, so a retry is safe.
        never_sent = not isinstance(exc, ssl.SSLError) and (
            isinstance(exc, (ConnectionRefusedError, socket.gaierror)) or _never_reached_the_server(message.lower())
        )
        return ServerUnavailableError(
            f"Cannot reach {ctx.url} ({action} for {where}): {message}", model=model, retryable=never_sent
        )
    if _connection_lost(exc):
        # The connection closed under a request in flight (the server died or dropped it): the
        # request may have reached the server, so it is not retryable.
        return ServerUnavailableError(
            f"Lost the connection to {ctx.url} ({action} for {where}): {message}", model=model
        )
    return InferenceServerError(f"{action} for {where} failed: {message}", model=model)


#: How both protocols say that no connection could be made: refused, or the name did not resolve.
_CONNECTION_FAILURES = (
    "failed to connect",
    "connection refused",
    "connect failed",
    "cannot connect",
    "errors resolving",  # gRPC, a name that does not resolve
    "dns resolution failed",
)


def _looks_like_connection_failure(lowered: str) -> bool:
    return any(m in lowered for m in _CONNECTION_FAILURES)


#: TLS failures happen before a request is sent, but sending it again cannot fix a certificate.
_TLS_FAILURES = ("certificate", "handshake", "ssl_error", "sslerror", "[ssl")


def _never_reached_the_server(lowered: str) -> bool:
    """A connection that could not be made (refused, unresolvable), or a request that could not be
    written, so a retry is safe and may succeed."""
    return (_looks_like_connection_failure(lowered) or _not_sent(lowered)) and not any(
        m in lowered for m in _TLS_FAILURES
    )


def _not_sent(lowered: str) -> bool:
    """The HTTP wire could not write the request (its connection was closed): the server cannot have run it."""
    return "the request could not be written" in lowered


#: What the HTTP wires raise when the connection closes under a request and the socket gave no
#: ``OSError``: ``http.client``'s ``IncompleteRead`` and other ``HTTPException``s, asyncio's
#: ``IncompleteReadError``.
_CONNECTION_LOST = ("HTTPException", "IncompleteReadError")


def _connection_lost(exc: BaseException) -> bool:
    return any(cls.__name__ in _CONNECTION_LOST for cls in type(exc).__mro__)


#: Triton's name of each numpy dtype seen so far (``np_to_triton_dtype`` is a chain of comparisons).
_TRITON_DTYPES: dict[np.dtype[Any], str] = {}


def triton_dtype(dtype: np.dtype[Any]) -> str:
    name = _TRITON_DTYPES.get(dtype)
    if name is None:
        from tritonclient.utils import np_to_triton_dtype

        name = _TRITON_DTYPES[dtype] = np_to_triton_dtype(dtype)
    return name


def _index_entries(answer: Any) -> list[dict[str, Any]]:
    """The repository index: gRPC answers (as JSON) ``{"models": [...]}``."""
    return list(answer.get("models", []))


def _nothing(answer: Any) -> None:
    return None


def grpc_metadata(headers: Mapping[str, str] | None) -> dict[str, str] | None:
    """gRPC metadata keys must be lower case."""
    return {key.lower(): value for key, value in headers.items()} if headers else None


@dataclasses.dataclass(frozen=True)
class Op:
    """One ``tritonclient`` call: the method, its arguments, and how to read its answer."""

    method: str
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    parse: Callable[[Any], Any]


Headers = Mapping[str, str] | None


class Calls:
    """Builds the :class:`Op` of each server call; a protocol only says how its arguments look."""

    _json_kwargs: dict[str, Any] = {}  # what makes the protocol answer with JSON dicts

    def _kw(self, timeout_s: float, headers: Headers) -> dict[str, Any]:
        raise NotImplementedError

    def server_live(self, *, timeout_s: float, headers: Headers) -> Op:
        return Op("is_server_live", (), self._kw(timeout_s, headers), bool)

    def server_ready(self, *, timeout_s: float, headers: Headers) -> Op:
        return Op("is_server_ready", (), self._kw(timeout_s, headers), bool)

    def model_ready(self, name: str, version: str, *, timeout_s: float, headers: Headers) -> Op:
        return Op("is_model_ready", (name, version), self._kw(timeout_s, headers), bool)

    def model_config(self, name: str, version: str, *, timeout_s: float, headers: Headers) -> Op:
        return Op("get_model_config", (name, version), self._json(timeout_s, headers), dict)

    def server_metadata(self, *, timeout_s: float, headers: Headers) -> Op:
        return Op("get_server_metadata", (), self._json(timeout_s, headers), dict)

    def repository_index(self, *, timeout_s: float, headers: Headers) -> Op:
        return Op("get_model_repository_index", (), self._json(timeout_s, headers), _index_entries)

    def load_model(self, name: str, config: str | None, *, timeout_s: float, headers: Headers) -> Op:
        return Op("load_model", (name,), {**self._kw(timeout_s, headers), "config": config}, _nothing)

    def unload_model(self, name: str, unload_dependents: bool, *, timeout_s: float, headers: Headers) -> Op:
        kwargs = {**self._kw(timeout_s, headers), "unload_dependents": unload_dependents}
        return Op("unload_model", (name,), kwargs, _nothing)

    def statistics(self, name: str, version: str, *, timeout_s: float, headers: Headers) -> Op:
        return Op("get_inference_statistics", (name, version), self._json(timeout_s, headers), dict)

    def _json(self, timeout_s: float, headers: Headers) -> dict[str, Any]:
        return {**self._kw(timeout_s, headers), **self._json_kwargs}


class GrpcCalls(Calls):
    """gRPC: every call carries its deadline (``client_timeout``); metadata keys in lower case. Inference
    is Xclient's own coding (:mod:`._grpc_wire`), sent by the transport over the channel."""

    _json_kwargs = {"as_json": True}

    def _kw(self, timeout_s: float, headers: Headers) -> dict[str, Any]:
        return {"headers": grpc_metadata(headers), "client_timeout": timeout_s}

    def infer(
        self,
        name: str,
        version: str,
        inputs: Mapping[str, np.ndarray[Any, Any]],
        parameters: Mapping[str, Any] | None,
        *,
        timeout_s: float,
        headers: Headers,
    ) -> Op:
        from ._grpc_wire import build_request, metadata, read_outputs

        request = build_request(name, version, inputs, parameters)
        return Op(MODEL_INFER_OP, (request,), {"timeout_s": timeout_s, "metadata": metadata(headers)}, read_outputs)


#: The Op method of a gRPC inference (the same name as HTTP's): the gRPC transports run it on their own
#: stubs (:mod:`._grpc_wire`), not on the ``tritonclient`` client.
MODEL_INFER_OP = "infer"


def _grpc_tls_kwargs(url: ServerUrl, tls: TlsOptions) -> dict[str, Any]:
    """The ``tritonclient`` gRPC client's options: TLS, and the channel's (:func:`~._grpc_wire.channel_args`)."""
    from ._grpc_wire import channel_args

    return {
        "channel_args": channel_args(),
        "ssl": url.tls,
        "root_certificates": tls.ca_certs,
        "private_key": tls.client_key,
        "certificate_chain": tls.client_cert,
    }


class Transport:
    """A sync transport: runs an :class:`Op` on a ``tritonclient`` client and returns its answer."""

    def __init__(self, url: ServerUrl, tls: TlsOptions) -> None:
        self.url = url
        self.tls = tls
        self.calls: GrpcCalls | HttpCalls = GrpcCalls() if url.protocol == "grpc" else _http_calls()

    def run(self, op: Op, timeout_s: float) -> Any:
        return op.parse(getattr(self._client(timeout_s), op.method)(*op.args, **op.kwargs))

    def _client(self, timeout_s: float) -> Any:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError


def _http_calls() -> HttpCalls:
    from ._rest import HttpCalls

    return HttpCalls()


def protocol_calls(url: ServerUrl) -> GrpcCalls | HttpCalls:
    """The :class:`Op` builder of ``url``'s protocol."""
    return GrpcCalls() if url.protocol == "grpc" else _http_calls()


class HttpTransport(Transport):
    """HTTP over :class:`~Xclient.client._http_wire.SyncWire` (one persistent connection per thread,
    each closed when its thread ends); the deadline comes with each request."""

    def __init__(self, url: ServerUrl, tls: TlsOptions) -> None:
        super().__init__(url, tls)
        from ._http_wire import SyncWire

        self.wire = SyncWire(url, tls)

    def run(self, op: Op, timeout_s: float) -> Any:
        return op.parse(self.wire.send(op.kwargs["request"], timeout_s))

    def close(self) -> None:
        self.wire.close()


class GrpcTransport(Transport):
    """One thread-safe ``tritonclient.grpc`` channel; each call carries its own deadline. Inference and
    streams go over the same channel through :class:`~._grpc_wire.Stubs`."""

    def __init__(self, url: ServerUrl, tls: TlsOptions) -> None:
        super().__init__(url, tls)
        import tritonclient.grpc as grpcclient

        from ._grpc_wire import Stubs

        self._grpc = grpcclient.InferenceServerClient(url.address, **_grpc_tls_kwargs(url, tls))
        self.stubs = Stubs(_channel_of(self._grpc), _probe_address(url))
        _close_at_exit(self._grpc)

    def run(self, op: Op, timeout_s: float) -> Any:
        if op.method == MODEL_INFER_OP:
            return op.parse(self.stubs.infer(*op.args, **op.kwargs))
        try:
            answer = super().run(op, timeout_s)
        except Exception as e:  # a hint added, then raised for translate_error
            raise _grpc_failure(e, self.url) from None  # no local refers to it: no cycle through the frame
        self.stubs.answered()
        return answer

    def _client(self, timeout_s: float) -> Any:
        return self._grpc

    @property
    def client(self) -> Any:
        """The ``tritonclient.grpc`` client."""
        return self._grpc

    def close(self) -> None:
        self._grpc.close()


_OPEN_AT_EXIT: weakref.WeakSet[Any] = weakref.WeakSet()
_EXIT_HOOK: list[bool] = []  # registered once, with the first gRPC client


def _close_at_exit(client: Any) -> None:
    """Close ``client`` at interpreter exit if it is still open, while every thread still runs.

    A ``tritonclient.grpc`` client left open (a script that never closes its client) closes its channel
    in ``__del__`` during interpreter finalization; by then gRPC's daemon threads are frozen, and one may
    hold the channel's connectivity lock: the process then hangs at exit (seen with scripts that ended
    with an open stream client). An atexit hook runs before daemon threads freeze."""
    _OPEN_AT_EXIT.add(client)
    if not _EXIT_HOOK:
        _EXIT_HOOK.append(True)
        atexit.register(_close_open_clients)


def _close_open_clients() -> None:
    for client in list(_OPEN_AT_EXIT):
        with contextlib.suppress(Exception):  # exiting: a failed close must not hide the exit status
            client.close()


def _channel_of(client: Any) -> Any:
    """The gRPC channel of a ``tritonclient`` gRPC client (sync or aio): the one private name used."""
    channel = getattr(client, "_channel", None)
    if channel is None:
        raise XclientError(
            f"This tritonclient's {type(client).__module__} client has no _channel: Xclient cannot call gRPC with it"
        )
    return channel


def _grpc_failure(exc: BaseException, url: ServerUrl) -> BaseException:
    from ._grpc_wire import hint_http_port

    return hint_http_port(exc, _probe_address(url))


def _probe_address(url: ServerUrl) -> str | None:
    """Where a gRPC failure may ask whether the port speaks HTTP: plain-text URLs only."""
    return None if url.tls else url.address


class AsyncTransport:
    """An asyncio transport: awaits an :class:`Op` within its deadline. gRPC sends the deadline with
    the call (``client_timeout``) on one ``tritonclient.grpc.aio`` client; HTTP goes through
    :class:`~Xclient.client._http_wire.AsyncWire`. Clients are made on first use, inside the loop.
    Nothing is resent here: a request that could not be written fails as retryable, and only the
    user's ``retries`` send it again."""

    def __init__(self, url: ServerUrl, tls: TlsOptions) -> None:
        self.url = url
        self.tls = tls
        self._grpc = url.protocol == "grpc"
        self.calls: GrpcCalls | HttpCalls = GrpcCalls() if self._grpc else _http_calls()
        self._grpc_client: Any = None
        self._stubs: Any = None  # gRPC: inference and streams over the aio client's channel
        self._answered = False  # gRPC: a call got an answer, so the channel has been connected
        self._wire: Any = None  # HTTP: Xclient's own asyncio wire
        self.patient = True  # gRPC: wait for a reconnect once connected (False: a replica of several fails at once)

    async def run(self, op: Op, timeout_s: float) -> Any:
        if self._grpc:
            return await self._run_grpc(op)
        if self._wire is None:
            from ._http_wire import AsyncWire

            self._wire = AsyncWire(self.url, self.tls)
        return op.parse(await self._wire.send(op.kwargs["request"], timeout_s))

    async def _run_grpc(self, op: Op) -> Any:
        if op.method == MODEL_INFER_OP:
            return op.parse(await self.stubs.infer(*op.args, **op.kwargs))
        try:
            answer = op.parse(await getattr(self.client, op.method)(*op.args, **op.kwargs))
        except Exception as e:  # a hint added, then raised for translate_error
            raise _grpc_failure(e, self.url) from None  # no local refers to it: no cycle through the frame
        self._answered = True
        if self._stubs is not None:
            self._stubs.answered()
        return answer

    @property
    def client(self) -> Any:
        """The ``tritonclient.grpc.aio`` client (made on first use)."""
        if self._grpc_client is None:
            import tritonclient.grpc.aio as grpc_aio

            self._grpc_client = grpc_aio.InferenceServerClient(self.url.address, **_grpc_tls_kwargs(self.url, self.tls))
        return self._grpc_client

    @property
    def stubs(self) -> Any:
        """Inference and streams over the aio client's channel (:class:`~._grpc_wire.AsyncStubs`)."""
        stubs = self._stubs
        if stubs is None:
            from ._grpc_wire import AsyncStubs

            stubs = self._stubs = AsyncStubs(_channel_of(self.client), _probe_address(self.url))
            stubs.patient = self.patient
            if self._answered:
                stubs.answered()
        return stubs

    async def close(self) -> None:
        self._stubs = None  # it holds the channel
        grpc_client, self._grpc_client = self._grpc_client, None
        wire, self._wire = self._wire, None
        if grpc_client is not None:
            await grpc_client.close()
        if wire is not None:
            await wire.close()


def make_transport(url: ServerUrl, tls: TlsOptions) -> Transport:
    return GrpcTransport(url, tls) if url.protocol == "grpc" else HttpTransport(url, tls)
