"""The gRPC wire coding, once for unary calls and streams, sync and asyncio: the ``ModelInferRequest``
is built from the public protobuf modules (``tritonclient.grpc.service_pb2``), and the
``ModelInferResponse`` is read back into numpy arrays. No ``InferInput`` objects.

- :func:`build_request`: a copy of the request template of the model (name, version and, for streams,
  the empty-final flag: made once per config and kept in its :class:`~Xclient.client._config.RequestPlan`),
  the checked parameters (:func:`~Xclient.client._coding.check_parameters`), and each input's raw bytes
  (numbers: the array's bytes; BYTES: :func:`bytes_contents`, ``serialize_byte_tensor``'s format).
- :func:`read_outputs`: each output from ``raw_output_contents`` (BYTES deserialized).
- :class:`Stubs` / :class:`AsyncStubs`: ``ModelInfer`` and ``ModelStreamInfer`` over the channel of the
  ``tritonclient`` client (its ``_channel``: the one private name used), so one client has one connection
  and one set of channel options (TLS, message sizes, keepalive). Calls wait for the channel to reconnect
  (gRPC ``wait_for_ready``) once it has been connected, so a call right after a server restart waits
  within its deadline instead of failing at once; a channel that never connected fails at once.
- :func:`rpc_failure`: a gRPC error as the ``InferenceServerException`` ``tritonclient`` would raise, so the
  one translation into the Xclient error tree handles it; with a hint when the port speaks HTTP/1.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from ._coding import check_parameters
from ._config import TRITON_TO_NUMPY, RequestPlan

MODEL_INFER = "/inference.GRPCInferenceService/ModelInfer"
MODEL_STREAM_INFER = "/inference.GRPCInferenceService/ModelStreamInfer"
#: Asks Triton to flag the end of every stream, even when the model ends it with no response (PyTriton).
EMPTY_FINAL_PARAMETER = "triton_enable_empty_final_response"
FINAL_PARAMETER = "triton_final_response"
_PARAMETER_FIELDS = {str: "string_param", bool: "bool_param", int: "int64_param", float: "double_param"}


#: How soon a channel tries to connect again after losing its server, and at the most how long it waits
#: between tries (gRPC's own default: 1 s, growing to 120 s): a call made after a server restart waits for the
#: reconnect within its deadline, so the wait between tries must stay short.
RECONNECT_BACKOFF_MS = (100, 1000)


def channel_args() -> list[tuple[str, Any]]:
    """The gRPC channel options: ``tritonclient``'s (message sizes up to 2 GiB, its keepalive defaults),
    plus a short reconnect backoff (:data:`RECONNECT_BACKOFF_MS`)."""
    from tritonclient.grpc import MAX_GRPC_MESSAGE_SIZE, KeepAliveOptions

    keepalive = KeepAliveOptions()
    first, most = RECONNECT_BACKOFF_MS
    return [
        ("grpc.max_send_message_length", MAX_GRPC_MESSAGE_SIZE),
        ("grpc.max_receive_message_length", MAX_GRPC_MESSAGE_SIZE),
        ("grpc.keepalive_time_ms", keepalive.keepalive_time_ms),
        ("grpc.keepalive_timeout_ms", keepalive.keepalive_timeout_ms),
        ("grpc.keepalive_permit_without_calls", keepalive.keepalive_permit_without_calls),
        ("grpc.http2.max_pings_without_data", keepalive.http2_max_pings_without_data),
        ("grpc.initial_reconnect_backoff_ms", first),
        ("grpc.max_reconnect_backoff_ms", most),
        # not grpc.min_reconnect_backoff_ms: it is also each connection attempt's deadline (20 s), which a
        # slow TLS handshake, or a server that accepts but never answers, needs
    ]


def _pb() -> Any:
    from tritonclient.grpc import service_pb2

    return service_pb2


def _template(plan: RequestPlan | None, name: str, version: str, stream: bool) -> Any:
    """The request every call of this model starts from; kept in the config's plan (built once)."""
    key = ("grpc", name, version, stream)
    template = plan.templates.get(key) if plan is not None else None
    if template is None:
        template = _pb().ModelInferRequest(model_name=name, model_version=version)
        if stream:
            template.parameters[EMPTY_FINAL_PARAMETER].bool_param = True
        if plan is not None:
            plan.templates[key] = template
    return template


def build_request(
    name: str,
    version: str,
    inputs: Mapping[str, np.ndarray[Any, Any]],
    parameters: Mapping[str, Any] | None,
    *,
    stream: bool = False,
) -> Any:
    """The ``ModelInferRequest`` of one call (``stream``: for ``ModelStreamInfer``, asking for an empty
    final response). ``inputs``: the coded arrays (:func:`~Xclient.client._coding.prepare_request`'s,
    whose plan gives the datatypes; from a plain dict they come from the arrays' dtypes)."""
    plan: RequestPlan | None = getattr(inputs, "plan", None)
    checked = check_parameters(parameters)
    request = _pb().ModelInferRequest()
    request.CopyFrom(_template(plan, name, version, stream))
    for key, value in checked.items():
        setattr(request.parameters[key], _PARAMETER_FIELDS[type(value)], value)
    datatypes = plan.datatypes if plan is not None else {}
    add_input = request.inputs.add
    raw_contents = request.raw_input_contents
    for input_name, array in inputs.items():
        datatype = datatypes.get(input_name) or _datatype(array.dtype)
        add_input(name=input_name, datatype=datatype, shape=array.shape)
        if datatype == "BYTES":
            raw_contents.append(bytes_contents(array))
        else:
            raw_contents.append(array.tobytes())  # C order, whatever the array's layout
    return request


def bytes_contents(array: np.ndarray[Any, Any]) -> bytes:
    """A BYTES tensor's raw contents: each element (C order) as a 4-byte little-endian length, then its
    bytes; ``tritonclient.utils.serialize_byte_tensor``'s format (a str element as UTF-8), without its
    per-element ``nditer`` (a tenth of the time for a short text)."""
    if array.dtype.kind == "S":  # numpy's fixed-width bytes: as tritonclient reads them (trailing NULs dropped)
        array = array.astype(object)
    parts = []
    for item in array.reshape(-1).tolist():
        if type(item) is not bytes:
            item = item if isinstance(item, bytes) else str(item).encode("utf-8")
        parts.append(len(item).to_bytes(4, "little"))
        parts.append(item)
    return b"".join(parts)


def _datatype(dtype: np.dtype[Any]) -> str:
    from ._transport import triton_dtype

    return triton_dtype(dtype)


def read_outputs(response: Any) -> dict[str, np.ndarray[Any, Any]]:
    """A ``ModelInferResponse``'s outputs as numpy arrays, by name (BYTES: object arrays of bytes)."""
    raw_contents = response.raw_output_contents
    if len(raw_contents) != len(response.outputs):  # not all raw (Triton always sends raw): tritonclient reads it
        from tritonclient.grpc import InferResult

        result = InferResult(response)
        return {tensor.name: result.as_numpy(tensor.name) for tensor in response.outputs}
    outputs: dict[str, np.ndarray[Any, Any]] = {}
    for tensor, raw in zip(response.outputs, raw_contents, strict=True):
        shape = tuple(tensor.shape)
        datatype = tensor.datatype
        if datatype == "BYTES":
            from tritonclient.utils import deserialize_bytes_tensor

            array = deserialize_bytes_tensor(raw) if raw else np.empty(0, dtype=object)
        else:
            dtype = TRITON_TO_NUMPY.get(datatype)
            if dtype is None:  # BF16 and newer: numpy has no dtype; tritonclient decodes what it can
                from tritonclient.grpc import InferResult

                outputs[tensor.name] = InferResult(response).as_numpy(tensor.name)
                continue
            array = np.frombuffer(raw, dtype=dtype)
        outputs[tensor.name] = array.reshape(shape)
    return outputs


def read_stream_response(infer_response: Any) -> tuple[dict[str, np.ndarray[Any, Any]], bool]:
    """A streamed response's outputs, and whether it is flagged final."""
    flag = infer_response.parameters.get(FINAL_PARAMETER)
    return read_outputs(infer_response), flag is not None and flag.bool_param


def metadata(headers: Mapping[str, str] | None) -> tuple[tuple[str, str], ...] | None:
    """gRPC metadata: keys in lower case."""
    return tuple((key.lower(), value) for key, value in headers.items()) if headers else None


class _Stubs:
    """``ModelInfer`` and ``ModelStreamInfer`` over one channel; the sync and asyncio twins differ only in
    how :meth:`infer` waits. ``address``: where to ask whether a port that closed the connection speaks
    HTTP (plain-text URLs only). Once a call has been answered (:meth:`answered`), the channel has been
    connected, and later calls wait for it to reconnect (``wait_for_ready``) within their deadline, unless
    :attr:`patient` is False: a replica of several (:mod:`._fleet`) fails at once, and its call goes to another."""

    wait_for_ready = False
    patient = True

    def __init__(self, channel: Any, address: str | None = None) -> None:
        pb = _pb()
        self.channel = channel
        self.address = address
        serializer = pb.ModelInferRequest.SerializeToString
        self._infer = channel.unary_unary(
            MODEL_INFER, request_serializer=serializer, response_deserializer=pb.ModelInferResponse.FromString
        )
        self._stream = channel.unary_stream(
            MODEL_STREAM_INFER,
            request_serializer=serializer,
            response_deserializer=pb.ModelStreamInferResponse.FromString,
        )

    def answered(self) -> None:
        self.wait_for_ready = self.patient

    def stream(self, request: Any, *, metadata: Any) -> Any:
        """A ``ModelStreamInfer`` call of one request (its per-response deadline is the caller's)."""
        return self._stream(request, metadata=metadata, wait_for_ready=self.wait_for_ready)

    def _failure(self, exc: BaseException) -> BaseException:
        return rpc_failure(exc, self.channel if self.wait_for_ready else None, self.address)


class Stubs(_Stubs):
    """Over a sync ``grpc`` channel."""

    def infer(self, request: Any, *, timeout_s: float, metadata: Any) -> Any:
        """One ``ModelInfer`` call; a gRPC error is raised as :func:`rpc_failure` makes it (the inference
        that called it drops the tracebacks of the whole chain, so no frame or channel is kept)."""
        import grpc

        try:
            response = self._infer(request, timeout=timeout_s, metadata=metadata, wait_for_ready=self.wait_for_ready)
        except grpc.RpcError as e:
            raise self._failure(e) from None
        self.wait_for_ready = self.patient
        return response


class AsyncStubs(_Stubs):
    """Over a ``grpc.aio`` channel."""

    async def infer(self, request: Any, *, timeout_s: float, metadata: Any) -> Any:
        import grpc

        try:
            response = await self._infer(
                request, timeout=timeout_s, metadata=metadata, wait_for_ready=self.wait_for_ready
            )
        except grpc.RpcError as e:
            raise self._failure(e) from None
        self.wait_for_ready = self.patient
        return response


def rpc_failure(exc: BaseException, waited_on: Any = None, address: str | None = None) -> BaseException:
    """``exc`` (a gRPC error) as ``tritonclient``'s ``InferenceServerException``: its status, details and
    debug string, and a hint when ``address`` (a plain-text gRPC URL's) turns out to speak HTTP/1. A call
    that waited for its channel (``waited_on``) to connect until its deadline is reported as unreachable,
    not as slow. Anything else is returned as is (with the same hint)."""
    import grpc
    from tritonclient.utils import InferenceServerException

    if not isinstance(exc, grpc.RpcError) or not callable(getattr(exc, "code", None)):
        return hint_http_port(exc, address)
    code = exc.code()
    if waited_on is not None and code == grpc.StatusCode.DEADLINE_EXCEEDED and not channel_is_ready(waited_on):
        return not_connected(exc.details() or "")
    details = exc.debug_error_string()
    error = InferenceServerException(msg=exc.details() or "", status=str(code), debug_details=details)
    return hint_http_port(error, address)


def not_connected(details: str) -> BaseException:
    """The failure of a call that waited for a connection that never came (the server is down)."""
    import grpc
    from tritonclient.utils import InferenceServerException

    error: BaseException = InferenceServerException(  # tritonclient is untyped
        msg=f"failed to connect within the deadline, the server is down or unreachable ({details})",
        status=str(grpc.StatusCode.UNAVAILABLE),
    )
    return error


#: gRPC core's connectivity state READY (``grpc_connectivity_state``), as the sync channel reports it.
_READY = 2


def channel_is_ready(channel: Any) -> bool:
    """True when the channel is connected now. ``grpc.aio`` says so publicly; the sync channel only
    through its core channel (a private name): when that is missing, say True (errors stay as they are)."""
    import grpc

    get_state = getattr(channel, "get_state", None)
    if get_state is not None:  # grpc.aio
        return bool(get_state(False) == grpc.ChannelConnectivity.READY)
    check = getattr(getattr(channel, "_channel", None), "check_connectivity_state", None)
    return True if check is None else check(False) == _READY


#: How gRPC reports a plain-text connection that the server closed at once: what an HTTP/1 server
#: (Triton's HTTP port) does with gRPC's HTTP/2 preface.
_CLOSED_AT_ONCE = ("socket closed", "http1.x server")
_HTTP_PROBE_TIMEOUT_S = 0.5


def hint_http_port(exc: BaseException, address: str | None) -> BaseException:
    """When a gRPC connection to ``address`` was closed at once, ask the port (one HTTP/1 request on the
    failure path only, half a second at most): if it answers HTTP/1, say to use ``http://``."""
    from tritonclient.utils import InferenceServerException

    original = exc  # typed: tritonclient is untyped, so isinstance() below makes exc Any
    if address is None or not isinstance(exc, InferenceServerException):
        return original
    message = str(exc.message() or "")
    if not any(sign in message.lower() for sign in _CLOSED_AT_ONCE) or not speaks_http1(address):
        return original
    hinted: BaseException = InferenceServerException(  # tritonclient is untyped
        msg=f"{message}. This port speaks HTTP, not gRPC: use http://{address}, or the server's gRPC port",
        status=exc.status(),
        debug_details=exc.debug_details(),
    )
    return hinted


def speaks_http1(address: str) -> bool:
    """True when ``host:port`` answers an HTTP/1.1 request with an HTTP/1 status line."""
    import socket

    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=_HTTP_PROBE_TIMEOUT_S) as sock:
            sock.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: " + host.encode() + b"\r\nConnection: close\r\n\r\n")
            return sock.recv(16).startswith(b"HTTP/1.")
    except (OSError, ValueError):
        return False
