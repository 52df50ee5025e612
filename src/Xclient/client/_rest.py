"""Triton's KServe v2 REST protocol, coded once and without I/O (the sync and asyncio HTTP wires send it).

A :class:`Request` is what to send (method, path, headers, body); a :class:`Response` is what came
back. This module builds the request of each server call and reads its answer:

- health and readiness (``200`` is yes, anything else no), server metadata, the model config;
- inference: a JSON header followed by the raw input buffers (the binary tensor extension: the
  header's length in ``Inference-Header-Content-Length``, each input's size in its
  ``binary_data_size``); every output is asked for in binary and read back as a numpy array
  (BYTES through ``tritonclient.utils``, which imports no gevent);
- model management (repository index, load with a config override, unload with its dependents)
  and statistics;
- the generate extension's ``generate_stream`` (server-sent events, :class:`SseParser`).

An error answer (``{"error": "..."}``, or an SSE-framed one from ``generate_stream``) raises
``tritonclient.utils.InferenceServerException`` with the status and the server's message: what
:func:`~Xclient.client._transport.translate_error` turns into the Xclient error tree, as over gRPC.
"""

from __future__ import annotations

import dataclasses
import json
import urllib.parse
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from ._coding import check_parameters
from ._transport import Headers, Op, triton_dtype

if TYPE_CHECKING:
    import numpy.typing as npt

HEADER_LENGTH = "inference-header-content-length"
_BINARY = "application/octet-stream"
_JSON = "application/json"


@dataclasses.dataclass(frozen=True)
class Request:
    """One HTTP request, without the host (the wire adds it)."""

    method: str
    path: str
    headers: Mapping[str, str]
    body: bytes = b""


@dataclasses.dataclass(frozen=True)
class Response:
    """One HTTP answer: the status, the headers (names in lower case), the whole body."""

    status: int
    headers: Mapping[str, str]
    body: bytes


class WrongProtocolError(ConnectionError):
    """The server does not speak HTTP/1.1: an ``http://`` client reached a gRPC port."""


def check_http1(first_bytes: bytes, address: str) -> None:
    """Raise :class:`WrongProtocolError` when a server's first bytes are an HTTP/2 frame, not a status line.

    A gRPC server answers an HTTP/1.1 request with its HTTP/2 SETTINGS frame (frame type 4 in the
    fourth byte).

    >>> check_http1(b"HTTP/1.1 200 OK", "h:1")
    >>> check_http1(b"\\x00\\x00\\x18\\x04\\x00\\x00\\x00\\x00\\x00", "h:1")
    Traceback (most recent call last):
    ...
    Xclient.client._rest.WrongProtocolError: the server at h:1 answered with HTTP/2 (gRPC?): use grpc://h:1
    """
    if first_bytes and not first_bytes.startswith(b"HTTP/") and len(first_bytes) >= 4 and first_bytes[3] == 4:
        raise WrongProtocolError(f"the server at {address} answered with HTTP/2 (gRPC?): use grpc://{address}")


# -- paths and headers ---------------------------------------------------------------------------------


def model_path(name: str, version: str) -> str:
    """``/v2/models/{name}[/versions/{version}]``, each part quoted (CJK names included)."""
    path = f"/v2/models/{urllib.parse.quote(name, safe='')}"
    if version:
        path += f"/versions/{urllib.parse.quote(version, safe='')}"
    return path


def _headers(headers: Mapping[str, str] | None, **extra: str) -> dict[str, str]:
    merged = dict(headers) if headers else {}
    merged.update(extra)
    return merged


def get(path: str, headers: Mapping[str, str] | None) -> Request:
    return Request("GET", path, _headers(headers))


def post_json(path: str, payload: Any, headers: Mapping[str, str] | None) -> Request:
    body = json.dumps(payload, ensure_ascii=False).encode() if payload is not None else b""
    return Request("POST", path, _headers(headers, **{"Content-Type": _JSON}), body)


# -- answers ----------------------------------------------------------------------------------------------


def is_ok(response: Response) -> bool:
    """Health and readiness: yes when the server answers 200."""
    return response.status == 200


def json_body(response: Response) -> Any:
    """The JSON answer, or raise the server's error."""
    raise_for_error(response)
    return json.loads(response.body) if response.body else {}


def nothing(response: Response) -> None:
    raise_for_error(response)


def raise_for_error(response: Response) -> None:
    """Raise ``InferenceServerException`` (status, server message) for a non-200 answer."""
    if response.status != 200:
        from tritonclient.utils import InferenceServerException

        raise InferenceServerException(msg=error_message(response.body), status=str(response.status))


def error_message(body: bytes) -> str:
    """The message of an error body: ``{"error": "..."}``, or the same framed as a server-sent event
    (``data: {"error": ...}``, how ``generate_stream`` refuses a request before any response).

    >>> error_message(b'{"error":"unknown model"}')
    'unknown model'
    >>> error_message(b'data: {"error":"\\xe5\\x87\\xba\\xe9\\x94\\x99"}\\n\\n')
    '出错'
    """
    text = body.decode("utf-8", "replace").strip()
    if not text:
        return "the server sent an empty error answer"
    if text.startswith("data:"):
        events = SseParser().feed(body + b"\n\n")
        if events:
            text = events[0].decode("utf-8", "replace").strip()
    try:
        parsed = json.loads(text)
    except ValueError:
        return text
    return str(parsed.get("error", parsed)) if isinstance(parsed, dict) else text


# -- inference ----------------------------------------------------------------------------------------------


#: Triton's name -> numpy dtype, as met (``tritonclient.utils`` compares a chain of names).
_NUMPY_DTYPES: dict[str, Any] = {}


def _numpy_dtype(datatype: str) -> Any:
    dtype = _NUMPY_DTYPES.get(datatype)
    if dtype is None:
        from tritonclient.utils import triton_to_np_dtype

        dtype = _NUMPY_DTYPES[datatype] = triton_to_np_dtype(datatype)
    return dtype


def raw_tensor(array: npt.NDArray[Any], datatype: str) -> bytes:
    """A tensor's bytes as Triton takes them: BYTES length-prefixed, the rest little-endian row-major."""
    if datatype == "BYTES":
        from tritonclient.utils import serialize_byte_tensor

        return serialize_byte_tensor(array).item() if array.size else b""
    if array.dtype.byteorder == ">":
        array = array.astype(array.dtype.newbyteorder("<"))
    return np.ascontiguousarray(array).tobytes()


def infer(
    name: str,
    version: str,
    inputs: Mapping[str, npt.NDArray[Any]],
    parameters: Mapping[str, Any] | None,
    headers: Mapping[str, str] | None,
    request_id: str = "",
) -> Request:
    """``POST .../infer``: the JSON header, then each input's raw buffer; every output asked for in binary."""
    tensors = []
    buffers = []
    for input_name, array in inputs.items():
        datatype = triton_dtype(array.dtype)
        raw = raw_tensor(array, datatype)
        buffers.append(raw)
        tensors.append(
            {"name": input_name, "shape": list(array.shape), "datatype": datatype,
             "parameters": {"binary_data_size": len(raw)}}
        )  # fmt: skip
    request_parameters = dict(check_parameters(parameters))
    request_parameters["binary_data_output"] = True
    body: dict[str, Any] = {"id": request_id} if request_id else {}
    body["inputs"], body["parameters"] = tensors, request_parameters
    header = json.dumps(body, ensure_ascii=False).encode()
    extra = {"Content-Type": _BINARY, "Inference-Header-Content-Length": str(len(header))}
    path = model_path(name, version) + "/infer"
    return Request("POST", path, _headers(headers, **extra), b"".join([header, *buffers]))


def infer_outputs(response: Response) -> dict[str, npt.NDArray[Any]]:
    """The outputs of an ``/infer`` answer, by name, as numpy arrays (views of the body where binary)."""
    raise_for_error(response)
    body = response.body
    length = response.headers.get(HEADER_LENGTH)
    header_length = int(length) if length is not None else len(body)
    result = json.loads(body[:header_length])
    buffer = memoryview(body)[header_length:]
    offset = 0
    outputs: dict[str, npt.NDArray[Any]] = {}
    for output in result.get("outputs", ()):
        datatype = output["datatype"]
        size = (output.get("parameters") or {}).get("binary_data_size")
        if size is None:  # sent as JSON
            array = np.array(output["data"], dtype=_numpy_dtype(datatype))
        else:
            raw = buffer[offset : offset + size]
            offset += size
            if datatype == "BYTES":
                from tritonclient.utils import deserialize_bytes_tensor

                array = deserialize_bytes_tensor(raw.tobytes()) if size else np.empty(0, dtype=object)
            else:
                array = np.frombuffer(raw, dtype=_numpy_dtype(datatype))
        outputs[output["name"]] = array.reshape(output["shape"])
    return outputs


# -- model management -------------------------------------------------------------------------------------


def repository_index(headers: Mapping[str, str] | None) -> Request:
    return post_json("/v2/repository/index", {}, headers)


def load_model(name: str, config: str | None, headers: Mapping[str, str] | None) -> Request:
    """Load (or reload) ``name``; ``config`` (Triton's JSON model config) overrides its config.pbtxt."""
    payload: dict[str, Any] = {"parameters": {"config": config}} if config is not None else {}
    return post_json(f"/v2/repository/models/{urllib.parse.quote(name, safe='')}/load", payload, headers)


def unload_model(name: str, unload_dependents: bool, headers: Mapping[str, str] | None) -> Request:
    payload = {"parameters": {"unload_dependents": unload_dependents}}
    return post_json(f"/v2/repository/models/{urllib.parse.quote(name, safe='')}/unload", payload, headers)


def statistics(name: str, version: str, headers: Mapping[str, str] | None) -> Request:
    return get((model_path(name, version) if name else "/v2/models") + "/stats", headers)


# -- the generate extension ---------------------------------------------------------------------------------


def generate_stream(name: str, version: str, payload: Mapping[str, Any], headers: Mapping[str, str] | None) -> Request:
    """``POST .../generate_stream``: the request as the extension's JSON; the answer is server-sent events."""
    return post_json(model_path(name, version) + "/generate_stream", dict(payload), headers)


class SseParser:
    """Server-sent events -> the ``data`` payload of each event, fed bytes as they arrive.

    >>> parser = SseParser()
    >>> parser.feed(b'data: {"a": 1}\\n\\nda'), parser.feed(b'ta: {"b": 2}\\n\\n')
    ([b'{"a": 1}'], [b'{"b": 2}'])
    """

    def __init__(self) -> None:
        self._buffer = b""
        self._data: list[bytes] = []

    def feed(self, chunk: bytes) -> list[bytes]:
        self._buffer += chunk
        events = []
        while b"\n" in self._buffer:
            line, self._buffer = self._buffer.split(b"\n", 1)
            line = line.rstrip(b"\r")
            if not line:  # a blank line ends an event
                if self._data:
                    events.append(b"\n".join(self._data))
                    self._data = []
            elif line.startswith(b"data:"):
                self._data.append(line[5:].removeprefix(b" "))
        return events


# -- HTTP/1.1 framing (what the asyncio wire writes and reads itself) ---------------------------------------


def request_head(request: Request, host: str) -> bytes:
    """The request line and headers of ``request``, ready to write before its body."""
    lines = [f"{request.method} {request.path} HTTP/1.1", f"Host: {host}"]
    lines += [f"{key}: {value}" for key, value in request.headers.items()]
    if request.body or request.method == "POST":
        lines.append(f"Content-Length: {len(request.body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def parse_head(head: bytes, address: str) -> tuple[int, dict[str, str]]:
    """The status and headers (names in lower case) of an answer's head, up to its blank line.

    >>> parse_head(b"HTTP/1.1 200 OK\\r\\nContent-Length: 2\\r\\n\\r\\n", "h:1")
    (200, {'content-length': '2'})
    """
    check_http1(head, address)
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(None, 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
        raise ConnectionError(f"the server at {address} sent no HTTP status line: {lines[0][:80]!r}")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        key, sep, value = line.partition(":")
        if sep:
            headers[key.strip().lower()] = value.strip()
    return int(parts[1]), headers


def chunk_size(line: bytes) -> int:
    """The size of a chunk of a chunked body, from its size line (extensions ignored).

    >>> chunk_size(b"1a;name=value\\r\\n")
    26
    """
    try:
        return int(line.split(b";", 1)[0].strip(), 16)
    except ValueError:
        raise ConnectionError(f"a chunked answer with a bad chunk size line {line[:40]!r}") from None


def keeps_alive(headers: Mapping[str, str]) -> bool:
    return headers.get("connection", "").lower() != "close"


# -- the Op of each server call ---------------------------------------------------------------------------


def _index_entries(response: Response) -> list[dict[str, Any]]:
    return list(json_body(response) or [])


def _op(method: str, args: tuple[Any, ...], request: Request, parse: Any) -> Op:
    return Op(method, args, {"request": request}, parse)


class HttpCalls:
    """Builds the :class:`~Xclient.client._transport.Op` of each server call over REST: the method and
    its arguments are named as ``tritonclient`` names them (the model first), ``kwargs["request"]`` is
    the :class:`Request` to send, ``parse`` reads the :class:`Response`. The deadline is the wire's
    (the transport gets it with the Op)."""

    def server_live(self, *, timeout_s: float, headers: Headers) -> Op:
        return _op("is_server_live", (), get("/v2/health/live", headers), is_ok)

    def server_ready(self, *, timeout_s: float, headers: Headers) -> Op:
        return _op("is_server_ready", (), get("/v2/health/ready", headers), is_ok)

    def model_ready(self, name: str, version: str, *, timeout_s: float, headers: Headers) -> Op:
        return _op("is_model_ready", (name, version), get(model_path(name, version) + "/ready", headers), is_ok)

    def model_config(self, name: str, version: str, *, timeout_s: float, headers: Headers) -> Op:
        return _op("get_model_config", (name, version), get(model_path(name, version) + "/config", headers), json_body)

    def server_metadata(self, *, timeout_s: float, headers: Headers) -> Op:
        return _op("get_server_metadata", (), get("/v2", headers), json_body)

    def repository_index(self, *, timeout_s: float, headers: Headers) -> Op:
        return _op("get_model_repository_index", (), repository_index(headers), _index_entries)

    def load_model(self, name: str, config: str | None, *, timeout_s: float, headers: Headers) -> Op:
        return _op("load_model", (name,), load_model(name, config, headers), nothing)

    def unload_model(self, name: str, unload_dependents: bool, *, timeout_s: float, headers: Headers) -> Op:
        return _op("unload_model", (name,), unload_model(name, unload_dependents, headers), nothing)

    def statistics(self, name: str, version: str, *, timeout_s: float, headers: Headers) -> Op:
        return _op("get_inference_statistics", (name, version), statistics(name, version, headers), json_body)

    def infer(
        self,
        name: str,
        version: str,
        inputs: Mapping[str, npt.NDArray[Any]],
        parameters: Mapping[str, Any] | None,
        *,
        timeout_s: float,
        headers: Headers,
        request_id: str = "",
    ) -> Op:
        request = infer(name, version, inputs, parameters, headers, request_id)
        return _op("infer", (name, version), request, infer_outputs)
