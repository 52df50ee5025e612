"""What PyTriton users meet: the opt-in wait for a server that is still starting, and which error a
deadline gives (a call's: XclientTimeoutError; a wait's: Model/ServerUnavailableError)."""

from __future__ import annotations

import socket
import threading
from typing import Any

import pytest

from Xclient.client import AsyncioModelClient, ModelClient
from Xclient.exceptions import ModelUnavailableError, ServerUnavailableError, XclientTimeoutError
from Xclient.server import DEMO_MODELS, LocalTritonServer


def refuses(url: str) -> bool:
    host, port = url.split("://")[1].rsplit(":", 1)
    try:
        socket.create_connection((host, int(port)), timeout=5).close()
    except ConnectionRefusedError:
        return True
    return False


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_the_first_call_waits_for_a_server_started_after_it_began(protocol):
    server = LocalTritonServer(DEMO_MODELS, models=["text"])
    url = server.url(protocol)
    client = ModelClient(url, "text", wait_for_server_on_first_call=True, init_timeout_s=120)
    began = threading.Event()
    outcome: dict[str, Any] = {}
    waiting = client._ready_flow

    def first_wait(*args: Any, **kwargs: Any) -> Any:
        began.set()
        return (yield from waiting(*args, **kwargs))

    client._ready_flow = first_wait  # type: ignore[method-assign]

    def call() -> None:
        try:
            outcome["result"] = client.infer_sample("你好")
        except BaseException as e:  # handed to the test thread
            outcome["error"] = e

    thread = threading.Thread(target=call)
    thread.start()
    try:
        assert began.wait(60)
        assert refuses(url)  # the call began while nothing listened
        server.start()
        thread.join(120)
    finally:
        server.stop()
        client.close()
    assert not thread.is_alive() and "error" not in outcome, outcome
    assert outcome["result"]["LENGTH"].tolist() == [2]


def test_without_the_opt_in_a_refused_first_call_fails_at_once(dead_url):
    with pytest.raises(ServerUnavailableError) as info:
        ModelClient(dead_url, "text", init_timeout_s=300).infer_sample("你好")
    assert info.value.retryable


def test_with_the_opt_in_an_unknown_model_still_fails_at_once(url):
    client = ModelClient(url, "no_such_model", wait_for_server_on_first_call=True, init_timeout_s=300)
    with pytest.raises(ModelUnavailableError, match="no_such_model"):
        client.infer_sample("你好")
    client.close()


def test_with_the_opt_in_a_server_that_never_comes_fails_after_init_timeout(dead_url):
    client = ModelClient(dead_url, "text", wait_for_server_on_first_call=True, init_timeout_s=0.5)
    with pytest.raises(ServerUnavailableError, match="not ready after 0.5 s"):
        client.infer_sample("你好")


def test_a_call_deadline_is_a_timeout_and_a_wait_deadline_is_unavailability(url, dead_url):
    with ModelClient(url, "slow", inference_timeout_s=0.05) as client, pytest.raises(XclientTimeoutError):
        client.infer_sample(delay_s=0.5)
    with pytest.raises(ServerUnavailableError) as info:
        ModelClient(dead_url, "text").wait_for_server(0.3)
    assert not isinstance(info.value, TimeoutError)
    with pytest.raises(ModelUnavailableError) as model_info:
        ModelClient(url, "no_such_model").wait_for_model(0.3)
    assert not isinstance(model_info.value, TimeoutError)


async def test_the_asyncio_client_waits_too_for_a_server_started_after_its_first_call_began():
    import asyncio

    server = LocalTritonServer(DEMO_MODELS, models=["text"])
    url = server.url("grpc")
    client = AsyncioModelClient(url, "text", wait_for_server_on_first_call=True, init_timeout_s=120)
    call = asyncio.ensure_future(client.infer_sample("你好"))
    try:
        await asyncio.sleep(0)  # the call starts: it finds nothing listening
        assert refuses(url) and not call.done()
        await asyncio.to_thread(server.start)
        result = await asyncio.wait_for(call, 120)
    finally:
        call.cancel()
        await asyncio.to_thread(server.stop)
        await client.close()
    assert result["LENGTH"].tolist() == [2]
