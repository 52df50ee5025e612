"""The HTTP wire: sends a :class:`~Xclient.client._rest.Request` and returns its
:class:`~Xclient.client._rest.Response`, blocking (:class:`SyncWire`) or in asyncio (:class:`AsyncWire`).

Both are the standard library, chosen by measurement (``python -m benchmarks.http_libraries URL``:
``http.client``, and asyncio streams, beat ``tritonclient``'s gevent and aiohttp clients, urllib3 and
httpx): a socket per thread for the blocking wire, asyncio streams for the asyncio one, both with
Xclient's own HTTP/1.1 framing (:mod:`Xclient.client._rest`: one request head written in one send,
one head parser; ``http.client`` itself writes head and body in two sends and parses headers with
``email``). No gevent, no aiohttp. The twins differ only in I/O.

Rules both wires keep:

- a pooled connection the server closed while it was idle (a restart, an idle timeout) is seen
  before the request is written (the socket reads as ready) and replaced; nothing is ever resent;
- a request that could not be written raises :class:`RequestNotSentError` (retryable: the server
  cannot have run it), a connection lost after that raises what the socket said (not retryable);
- a failed or timed-out exchange closes its connection (its state is unknown);
- a stream (``generate_stream``) has a connection of its own, closed when the stream is left,
  which makes Triton cancel the request.
"""

from __future__ import annotations

import asyncio
import contextlib
import select
import socket
import ssl
import sys
import threading
import warnings
import weakref
from collections.abc import AsyncIterator, Iterator
from typing import Any

from ._rest import (
    Request,
    Response,
    check_http1,
    chunk_size,
    keeps_alive,
    parse_head,
    raise_for_error,
    request_head,
)
from ._transport import TlsOptions
from ._urls import ServerUrl

_READ_SIZE = 65536
_HEAD_LIMIT = 1 << 20  # the longest answer head the asyncio wire reads


class RequestNotSentError(ConnectionError):
    """The request could not be written (the connection was closed under it): the server cannot have run it."""


def ssl_context(tls: TlsOptions) -> ssl.SSLContext:
    """The TLS context of ``https://`` URLs: the system's CAs or ``ca_certs``, and the client certificate."""
    context = ssl.create_default_context(cafile=tls.ca_certs)
    if tls.client_cert:
        context.load_cert_chain(tls.client_cert, tls.client_key)
    return context


def _dropped(fileno: int) -> bool:
    """An idle connection whose socket reads as ready was closed by the server (or sent what it should not)."""
    try:
        poller = select.poll()
        poller.register(fileno, select.POLLIN)
        return bool(poller.poll(0))
    except (OSError, ValueError):
        return True


def _not_sent(address: str, error: BaseException) -> RequestNotSentError:
    return RequestNotSentError(f"the request could not be written to {address} ({type(error).__name__}: {error})")


# -- blocking --------------------------------------------------------------------------------------------


class _Connection:
    """One thread's socket (and its buffered reader), closed when the thread ends (its thread-local goes)."""

    __slots__ = ("sock", "rfile", "__weakref__")

    def __init__(self) -> None:
        self.sock: socket.socket | None = None
        self.rfile: Any = None

    def close(self) -> None:
        sock, rfile, self.sock, self.rfile = self.sock, self.rfile, None, None
        if rfile is not None:
            rfile.close()
        if sock is not None:
            sock.close()

    __del__ = close


class ConnectionLostError(ConnectionError):
    """The server closed the connection in the middle of its answer."""


class SyncWire:
    """Blocking HTTP/1.1 on sockets, safe to share between threads: each thread has one persistent
    connection; the request is written in one ``sendall`` (head and body, ``TCP_NODELAY``)."""

    def __init__(self, url: ServerUrl, tls: TlsOptions) -> None:
        self._url = url
        self._address = url.address
        self._context = ssl_context(tls) if url.tls else None
        self._local = threading.local()
        self._open: weakref.WeakSet[_Connection] = weakref.WeakSet()
        self._lock = threading.Lock()

    def _connection(self) -> _Connection:
        connection: _Connection | None = getattr(self._local, "connection", None)
        if connection is None:
            connection = self._local.connection = _Connection()
            with self._lock:
                self._open.add(connection)
        return connection

    def _connect(self, connection: _Connection, timeout_s: float) -> None:
        """Connect (refused, unresolvable, TLS failures: raised as they are)."""
        sock = socket.create_connection((self._url.host, self._url.port), timeout=timeout_s)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self._context is not None:
                sock = self._context.wrap_socket(sock, server_hostname=self._url.host)
        except BaseException:
            sock.close()
            raise
        connection.sock, connection.rfile = sock, sock.makefile("rb")

    def send(self, request: Request, timeout_s: float) -> Response:
        connection = self._connection()
        try:
            status, headers = self._exchange(connection, request, timeout_s)
            body = self._body(connection.rfile, headers)
        except BaseException:
            connection.close()
            raise
        if not keeps_alive(headers):
            connection.close()
        return Response(status, headers, body)

    def _exchange(self, connection: _Connection, request: Request, timeout_s: float) -> tuple[int, dict[str, str]]:
        """Write the request (connecting first if needed) and read the answer's head."""
        if connection.sock is not None and _dropped(connection.sock.fileno()):
            connection.close()
        if connection.sock is None:
            self._connect(connection, timeout_s)
        else:
            connection.sock.settimeout(timeout_s)
        assert connection.sock is not None
        try:
            connection.sock.sendall(request_head(request, self._address) + request.body)
        except (BrokenPipeError, ConnectionResetError, ConnectionAbortedError) as e:
            raise _not_sent(self._address, e) from e
        rfile = connection.rfile
        first = rfile.readline(_HEAD_LIMIT)
        if not first:
            raise ConnectionResetError(f"{self._address} closed the connection without an answer")
        check_http1(first, self._address)
        lines = [first]
        while lines[-1] not in (b"\r\n", b"\n"):
            line = rfile.readline(_HEAD_LIMIT)
            if not line:
                raise ConnectionLostError(f"{self._address} closed the connection in the middle of its answer")
            lines.append(line)
        return parse_head(b"".join(lines), self._address)

    def _read(self, rfile: Any, size: int) -> bytes:
        data: bytes = rfile.read(size)
        if len(data) < size:
            raise ConnectionLostError(f"{self._address} closed the connection in the middle of its answer")
        return data

    def _body(self, rfile: Any, headers: dict[str, str]) -> bytes:
        length = headers.get("content-length")
        if length is not None:
            return self._read(rfile, int(length))
        if "chunked" in headers.get("transfer-encoding", "").lower():
            return b"".join(self._chunks(rfile))
        return bytes(rfile.read())  # until the server closes

    def _chunks(self, rfile: Any) -> Iterator[bytes]:
        """A chunked body, chunk by chunk (trailers skipped)."""
        while True:
            size = chunk_size(rfile.readline(_HEAD_LIMIT))
            if size == 0:
                while rfile.readline(_HEAD_LIMIT) not in (b"\r\n", b"\n", b""):
                    pass
                return
            yield self._read(rfile, size + 2)[:-2]

    @contextlib.contextmanager
    def stream(self, request: Request, timeout_s: float) -> Iterator[Iterator[bytes]]:
        """The answer's body as it arrives (an error answer raises); leaving closes the connection."""
        connection = _Connection()
        try:
            status, headers = self._exchange(connection, request, timeout_s)
            if status != 200:
                raise_for_error(Response(status, headers, self._body(connection.rfile, headers)))
            if "chunked" in headers.get("transfer-encoding", "").lower():
                yield self._chunks(connection.rfile)
            else:
                yield iter(lambda: connection.rfile.read1(_READ_SIZE), b"")
        finally:
            connection.close()

    def close(self) -> None:
        with self._lock:
            connections = list(self._open)
        for connection in connections:
            connection.close()


# -- asyncio -------------------------------------------------------------------------------------------------


if sys.version_info >= (3, 11):
    _deadline: Any = asyncio.timeout
else:  # pragma: no cover - Python 3.10

    @contextlib.asynccontextmanager
    async def _deadline(timeout_s: float) -> AsyncIterator[None]:
        task = asyncio.current_task()
        assert task is not None
        expired: list[int] = []

        def expire() -> None:
            expired.append(1)
            task.cancel()

        handle = asyncio.get_running_loop().call_later(timeout_s, expire)
        try:
            yield
        except asyncio.CancelledError:
            if expired:
                raise TimeoutError from None
            raise
        finally:
            handle.cancel()


class _Stream:
    """One asyncio connection."""

    __slots__ = ("reader", "writer")

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    def usable(self) -> bool:
        if self.reader.at_eof() or self.writer.is_closing():
            return False
        sock = self.writer.get_extra_info("socket")
        return sock is not None and not _dropped(sock.fileno())

    def close(self) -> bool:
        """Close the connection; False when its event loop is closed already (a client used under
        successive ``asyncio.run``): then the socket is shut down, and freed with its transport."""
        try:
            self.writer.close()
            return True
        except RuntimeError:
            sock = self.writer.get_extra_info("socket")
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
            return False


class AsyncWire:
    """asyncio HTTP/1.1 on one event loop: a pool of keep-alive connections, one per request in flight."""

    def __init__(self, url: ServerUrl, tls: TlsOptions) -> None:
        self._url = url
        self._address = url.address
        self._context = ssl_context(tls) if url.tls else None
        self._idle: list[_Stream] = []
        self._open: set[_Stream] = set()

    async def _connect(self) -> _Stream:
        reader, writer = await asyncio.open_connection(
            self._url.host, self._url.port, ssl=self._context, limit=_HEAD_LIMIT
        )
        stream = _Stream(reader, writer)
        self._open.add(stream)
        return stream

    def _discard(self, stream: _Stream) -> None:
        self._open.discard(stream)
        stream.close()

    async def send(self, request: Request, timeout_s: float) -> Response:
        async with _deadline(timeout_s):
            stream = None
            while self._idle:
                stream = self._idle.pop()
                if stream.usable():
                    break
                self._discard(stream)
                stream = None
            if stream is None:
                stream = await self._connect()
            try:
                status, headers = await self._exchange(stream, request)
                body = await self._body(stream.reader, headers)
            except BaseException:
                self._discard(stream)
                raise
        if keeps_alive(headers):
            self._idle.append(stream)
        else:
            self._discard(stream)
        return Response(status, headers, body)

    async def _exchange(self, stream: _Stream, request: Request) -> tuple[int, dict[str, str]]:
        if stream.writer.is_closing():
            raise _not_sent(self._address, ConnectionResetError("the connection is closed"))
        try:
            stream.writer.write(request_head(request, self._address) + request.body)
        except (ConnectionError, RuntimeError) as e:
            raise _not_sent(self._address, e) from e
        try:
            head = await stream.reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError as e:
            check_http1(e.partial, self._address)
            if not e.partial:
                raise ConnectionResetError(f"{self._address} closed the connection without an answer") from None
            raise
        return parse_head(head, self._address)

    async def _body(self, reader: asyncio.StreamReader, headers: dict[str, str]) -> bytes:
        length = headers.get("content-length")
        if length is not None:
            return await reader.readexactly(int(length))
        if "chunked" in headers.get("transfer-encoding", "").lower():
            return b"".join([chunk async for chunk in self._chunks(reader)])
        return await reader.read()  # until the server closes

    async def _chunks(self, reader: asyncio.StreamReader) -> AsyncIterator[bytes]:
        """A chunked body, chunk by chunk (trailers skipped)."""
        while True:
            size = chunk_size(await reader.readuntil(b"\r\n"))
            if size == 0:
                while (await reader.readuntil(b"\r\n")) != b"\r\n":
                    pass
                return
            data = await reader.readexactly(size + 2)
            yield data[:-2]

    @contextlib.asynccontextmanager
    async def stream(self, request: Request, timeout_s: float) -> AsyncIterator[AsyncIterator[bytes]]:
        """The answer's body as it arrives, each read within ``timeout_s`` (an error answer raises);
        leaving closes the connection."""
        async with _deadline(timeout_s):
            stream = await self._connect()
        try:
            async with _deadline(timeout_s):
                status, headers = await self._exchange(stream, request)
                if status != 200:
                    raise_for_error(Response(status, headers, await self._body(stream.reader, headers)))
            yield self._stream_body(stream.reader, headers, timeout_s)
        finally:
            self._discard(stream)

    async def _stream_body(
        self, reader: asyncio.StreamReader, headers: dict[str, str], timeout_s: float
    ) -> AsyncIterator[bytes]:
        if "chunked" in headers.get("transfer-encoding", "").lower():
            chunks = self._chunks(reader)
            while True:
                async with _deadline(timeout_s):
                    chunk = await anext(chunks, None)
                if chunk is None:
                    return
                yield chunk
        else:
            while True:
                async with _deadline(timeout_s):
                    chunk = await reader.read(_READ_SIZE)
                if not chunk:
                    return
                yield chunk

    async def close(self) -> None:
        streams, self._open, self._idle = list(self._open), set(), []
        closing = [stream for stream in streams if stream.close()]
        for stream in closing:
            with contextlib.suppress(Exception):
                await stream.writer.wait_closed()

    def __del__(self) -> None:
        if self._open:
            warnings.warn(
                f"An asyncio client of {self._url} was garbage collected with {len(self._open)} open connection(s):"
                " close it (await client.close(), or 'async with')",
                ResourceWarning,
                stacklevel=2,
            )
