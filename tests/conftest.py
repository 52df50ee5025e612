"""One real Triton server per test session (tests/models), and a URL fixture for both protocols."""

from __future__ import annotations

import contextlib
import pathlib
import socket
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from Xclient.server import DEMO_MODELS, LocalTritonServer

MODELS = pathlib.Path(__file__).parent / "models"


@pytest.fixture(scope="session")
def triton_server() -> Iterator[LocalTritonServer]:
    with LocalTritonServer(model_repository=[MODELS, DEMO_MODELS]) as server:
        yield server


@pytest.fixture(params=["http", "grpc"])
def protocol(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def url(triton_server: LocalTritonServer, protocol: str) -> str:
    return triton_server.url(protocol)


@pytest.fixture
def dead_url(protocol: str) -> str:
    """A URL on which nothing listens: any request sent there fails with a connection error."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"{protocol}://127.0.0.1:{port}"


@pytest.fixture
def silent_url(protocol: str) -> Iterator[str]:
    """A server that accepts connections and never answers."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.1)
        while not stop.is_set():
            with contextlib.suppress(OSError):
                accepted.append(listener.accept()[0])

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"{protocol}://127.0.0.1:{listener.getsockname()[1]}"
    stop.set()
    thread.join()
    for conn in accepted:
        conn.close()
    listener.close()


@pytest.fixture
def sent(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Every (call, request) the LLM engine starts: what goes to the server."""
    from Xclient.llms import _engine as engine_module

    seen: list[Any] = []
    real = engine_module.start

    def spy(connection: Any, call: Any) -> Any:
        generation, request = real(connection, call)
        seen.append((call, request))
        return generation, request

    monkeypatch.setattr(engine_module, "start", spy)
    return seen
