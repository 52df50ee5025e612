"""AsyncioModelClient against the real local server, over HTTP and gRPC."""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest

from Xclient.client import AsyncioModelClient
from Xclient.exceptions import (
    ClientClosedError,
    IncompatibleModelError,
    InferenceServerError,
    ModelUnavailableError,
    ServerUnavailableError,
    XclientTimeoutError,
    XclientValueError,
)


def spy_calls(client: AsyncioModelClient, seen: list[str]) -> None:
    """Record the method of every call the client's real async transport makes."""
    transport = client._transport()
    original = transport.run

    async def run(op, timeout_s, info=None):
        seen.append(op.method)
        return await original(op, timeout_s, info)

    transport.run = run


async def test_infer_sample_and_batch_with_utf8_text(url):
    async with AsyncioModelClient(url, "text") as client:
        config = await client.model_config
        assert config.name == "text" and config.max_batch_size == 8
        result = await client.infer_sample(np.array(["你好".encode()], dtype=object))
        assert result["UPPER"].tolist() == ["你好".encode()] and result["LENGTH"].tolist() == [2]
        batch = await client.infer_batch([["abc"], ["介绍一下你自己"]])
        assert batch["LENGTH"][:, 0].tolist() == [3, 7]


async def test_hundreds_of_concurrent_requests_on_one_client_check_readiness_once(url):
    seen: list[str] = []
    async with AsyncioModelClient(url, "text") as client:
        spy_calls(client, seen)
        texts = ["字" * (i % 17 + 1) for i in range(300)]
        results = await asyncio.gather(*(client.infer_sample(text) for text in texts))
    assert [r["LENGTH"][0] for r in results] == [len(t) for t in texts]
    assert seen.count("get_model_config") == 1 and seen.count("is_model_ready") == 1
    assert seen.count("infer") == 300


async def test_unknown_model_fails_at_once(url):
    client = AsyncioModelClient(url, "no_such_model")
    started = time.monotonic()
    with pytest.raises(ModelUnavailableError, match="not found"):
        await client.infer_sample([1])
    assert time.monotonic() - started < 1.0
    await client.close()


async def test_unreachable_server_and_wait_for_server_timeout(dead_url):
    client = AsyncioModelClient(dead_url, "text")
    with pytest.raises(ServerUnavailableError):
        await client.infer_sample("x")
    with pytest.raises(ServerUnavailableError, match="not ready after 0.3 s"):
        await client.wait_for_server(0.3)
    await client.close()


async def test_silent_server_fails_within_init_timeout(silent_url):
    client = AsyncioModelClient(silent_url, "text", init_timeout_s=1.0)
    started = time.monotonic()
    with pytest.raises((XclientTimeoutError, ServerUnavailableError)):
        await client.infer_sample("x")
    assert time.monotonic() - started < 3.0
    await client.close()


async def test_slow_model_past_inference_timeout_raises_timeout(url):
    async with AsyncioModelClient(url, "slow", inference_timeout_s=0.5) as client:
        with pytest.raises(XclientTimeoutError) as info:
            await client.infer_sample(delay_s=1.5)
        assert isinstance(info.value, TimeoutError)


async def test_server_error_and_decoupled_model_and_bad_input(url):
    async with AsyncioModelClient(url, "failing") as client:
        with pytest.raises(InferenceServerError) as info:
            await client.infer_sample([1.0])
        assert "模型出错" in info.value.server_message
        with pytest.raises(XclientValueError, match="expected numbers"):
            await client.infer_sample(["not a number"])
    async with AsyncioModelClient(url, "stream") as client:
        with pytest.raises(IncompatibleModelError, match="DecoupledModelClient"):
            await client.infer_sample([3])


async def test_lazy_init_false_checks_on_enter_and_closed_client_refuses(url):
    with pytest.raises(ModelUnavailableError):
        async with AsyncioModelClient(url, "no_such_model", lazy_init=False):
            pytest.fail("entering should have failed")
    client = AsyncioModelClient(url, "text")
    await client.wait_for_model(5)
    assert (await client.infer_sample("a"))["LENGTH"].tolist() == [1]
    await client.close()
    await client.close()
    with pytest.raises(ClientClosedError):
        await client.infer_sample("a")


def test_one_client_works_under_successive_event_loops(triton_server, protocol):
    client = AsyncioModelClient(triton_server.url(protocol), "text")

    async def call(text: str) -> list[int]:
        return (await client.infer_sample(text))["LENGTH"].tolist()

    assert asyncio.run(call("一")) == [1]
    assert asyncio.run(call("一二")) == [2]  # a new loop: the client reconnects there
    asyncio.run(client.close())
