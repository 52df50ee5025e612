"""RequestInfo: what every request did, on every client and both protocols, against the real server.

``identity`` echoes its inputs (unary), ``failing`` answers every request with an error, ``stream``
sends ``n`` responses, ``stream_failing`` fails after ``k``; ChatMetaLM runs on the demo LLM.
"""

from __future__ import annotations

import asyncio
import json
import logging
import subprocess
import sys
import threading
from typing import Any

import numpy as np
import pytest

from Xclient import exceptions as errors
from Xclient.client import (
    AsyncioDecoupledModelClient,
    AsyncioModelClient,
    DecoupledModelClient,
    FuturesModelClient,
    ModelClient,
    RequestInfo,
    _grpc_wire,
    _rest,
)

TEXT = "你好，世界"


def assert_timings_in_order(info: RequestInfo) -> None:
    marks = [info.start_ns, info.built_ns, info.sent_ns, info.first_response_ns, info.last_response_ns, info.end_ns]
    assert all(marks), info
    assert marks == sorted(marks), info
    assert info.latency_s is not None and info.latency_s > 0
    assert info.started_at > 1.6e9  # the wall clock, seconds since the epoch


def test_a_request_reports_where_it_went_its_id_and_its_timings_once(url, protocol):
    seen: list[RequestInfo] = []
    with ModelClient(url, "identity", on_request=seen.append) as client:
        assert client.last_request_info is None
        result = client.infer_sample(BYTES=[TEXT])
        assert result["OUT_BYTES"][0].decode() == TEXT
        (info,) = seen
        assert client.last_request_info is info
        client.infer_sample(BYTES=[TEXT])
    assert len(seen) == 2 and seen[1] is not info
    assert (info.url, info.model, info.version, info.protocol) == (client.url, "identity", None, protocol)
    assert info.ok and not info.stream and not info.cancelled
    assert (info.responses, info.gaps_s, info.attempts) == (1, [], 1)
    assert info.request_id.startswith("xc-") and info.request_id != seen[1].request_id
    assert_timings_in_order(info)
    assert info.as_dict()["request_id"] == info.request_id
    json.dumps(info.as_dict())  # plain values only (LangChain metadata, logs)


def test_the_request_id_is_sent_to_triton_which_answers_with_it(url, protocol, monkeypatch):
    answered: list[str] = []
    if protocol == "http":
        parse = _rest.infer_outputs

        def spy(response: Any) -> Any:
            answered.append(json.loads(response.body[: int(response.headers[_rest.HEADER_LENGTH])])["id"])
            return parse(response)

        monkeypatch.setattr(_rest, "infer_outputs", spy)
    else:
        read = _grpc_wire.read_outputs

        def spy(response: Any) -> Any:
            answered.append(response.id)
            return read(response)

        monkeypatch.setattr(_grpc_wire, "read_outputs", spy)
    with ModelClient(url, "identity") as client:
        client.infer_sample(BYTES=[TEXT])
        assert answered == [client.last_request_info.request_id]


def test_failures_are_reported_with_their_error_type_bad_input_before_anything_is_sent(url):
    seen: list[RequestInfo] = []
    with ModelClient(url, "failing", on_request=seen.append) as client:
        with pytest.raises(errors.InferenceServerError):
            client.infer_sample(np.zeros(2, dtype=np.float32))
        with pytest.raises(errors.XclientValueError):
            client.infer_sample(np.zeros(2, dtype=np.float32), unknown=1)
    served, refused = seen
    assert served.error == "InferenceServerError" and not served.ok and served.sent_ns and served.end_ns
    assert refused.error == "XclientValueError" and refused.sent_ns == 0 and refused.attempts == 0
    assert client.last_request_info is refused


def test_a_failing_hook_is_logged_and_never_breaks_the_request(url, caplog):
    def broken(info: RequestInfo) -> None:
        raise RuntimeError("钩子坏了")

    with ModelClient(url, "identity", on_request=broken) as client, caplog.at_level(logging.ERROR, "Xclient"):
        assert client.infer_sample(BYTES=[TEXT])["OUT_BYTES"][0].decode() == TEXT
    assert "钩子坏了" in caplog.text


def test_on_request_must_be_callable():
    with pytest.raises(errors.XclientValueError, match="on_request: expected a callable"):
        ModelClient("http://127.0.0.1:1", "identity", on_request="print")  # type: ignore[typeddict-item]


def test_last_request_info_is_per_thread(url):
    with ModelClient(url, "identity") as client:
        mine: dict[str, tuple[str, str]] = {}

        def work(name: str) -> None:
            client.infer_sample(BYTES=[name])
            info = client.last_request_info
            assert info is not None
            mine[name] = (info.request_id, threading.current_thread().name)

        threads = [threading.Thread(target=work, args=(n,), name=n) for n in ("线程一", "线程二")]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert client.last_request_info is None  # this thread sent nothing
        assert mine["线程一"][0] != mine["线程二"][0]


async def test_last_request_info_is_per_asyncio_task_and_the_hook_sees_every_one(url):
    seen: list[RequestInfo] = []
    async with AsyncioModelClient(url, "identity", on_request=seen.append) as client:

        async def task(count: int) -> RequestInfo | None:
            for _ in range(count):
                await client.infer_sample(BYTES=[TEXT])
            return client.last_request_info

        one, two = await asyncio.gather(task(1), task(2))
        assert client.last_request_info is None  # the tasks' contexts are their own
        await client.infer_sample(BYTES=[TEXT])
        assert client.last_request_info is seen[-1]
    assert len(seen) == 4 and one in seen[:3] and two in seen[:3] and one is not two
    for info in seen:
        assert_timings_in_order(info)


def test_futures_client_reports_each_call_and_keeps_the_last_one_finished(url):
    seen: list[RequestInfo] = []
    with FuturesModelClient(url, "identity", on_request=seen.append) as client:
        futures = [client.infer_sample(BYTES=[f"第{i}个"]) for i in range(3)]
        for future in futures:
            future.result()
        assert client.last_request_info in seen
    assert len(seen) == 3 and len({info.request_id for info in seen}) == 3


@pytest.fixture
def grpc_url(triton_server) -> str:
    return triton_server.url("grpc")


async def drain(client: Any, **inputs: Any) -> list[dict[str, Any]]:
    stream = client.infer_sample(**inputs)
    if isinstance(client, AsyncioDecoupledModelClient):
        return [outputs async for outputs in stream]
    return await asyncio.to_thread(list, stream)


@pytest.mark.parametrize("cls", [DecoupledModelClient, AsyncioDecoupledModelClient])
async def test_a_stream_reports_its_responses_and_the_gaps_between_them(grpc_url, cls):
    seen: list[RequestInfo] = []
    client = cls(grpc_url, "stream", on_request=seen.append)
    try:
        outputs = await drain(client, n=np.array([4], dtype=np.int32))
        assert [int(o["i"][0]) for o in outputs] == [0, 1, 2, 3]
        (info,) = seen
        assert info.stream and info.ok and not info.cancelled and info.protocol == "grpc"
        assert info.responses >= 4 and len(info.gaps_s) == info.responses - 1 and min(info.gaps_s) >= 0
        assert_timings_in_order(info)
        if cls is AsyncioDecoupledModelClient:
            assert client.last_request_info is info
    finally:
        closing = client.close()
        if asyncio.iscoroutine(closing):
            await closing


@pytest.mark.parametrize("cls", [DecoupledModelClient, AsyncioDecoupledModelClient])
async def test_a_stream_left_early_is_cancelled_and_a_failed_one_says_why(grpc_url, cls):
    seen: list[RequestInfo] = []
    client = cls(grpc_url, "stream", on_request=seen.append)
    failing = cls(grpc_url, "stream_failing", on_request=seen.append)
    try:
        stream = client.infer_sample(n=np.array([50], dtype=np.int32), delay_s=np.array([0.05], dtype=np.float32))
        if cls is AsyncioDecoupledModelClient:
            await stream.__anext__()
            await stream.close()
        else:
            next(stream)
            stream.close()
        with pytest.raises(errors.InferenceServerError):
            await drain(failing, k=np.array([2], dtype=np.int32))
    finally:
        for each in (client, failing):
            closing = each.close()
            if asyncio.iscoroutine(closing):
                await closing
    left, failed = seen
    assert left.cancelled and left.ok and left.responses == 1
    assert failed.error == "InferenceServerError" and not failed.cancelled and failed.responses == 3


def test_chat_model_puts_the_request_info_in_response_metadata(url, protocol):
    from Xclient.llms import ChatMetaLM

    llm = ChatMetaLM(server_url=url, model="Qwen2-0.5B-Instruct", max_tokens=8)
    message = llm.invoke("你好")
    info = message.response_metadata["request_info"]
    assert info["model"] == "Qwen2-0.5B-Instruct" and info["url"] == url and info["protocol"] == protocol
    assert info["stream"] is True and info["responses"] >= 1 and info["error"] is None
    assert info["first_response_s"] <= info["last_response_s"] <= info["latency_s"]
    chunks = list(llm.stream("你好"))
    assert chunks[-1].response_metadata["request_info"]["request_id"] != info["request_id"]


async def test_async_llm_calls_carry_request_info_in_generation_info(url, protocol):
    from Xclient.llms import MetaLM

    llm = MetaLM(server_url=url, model="Qwen2-0.5B-Instruct", max_tokens=16)
    first, second = (await llm.agenerate(["介绍一下你自己", "你好"])).generations
    infos = [first[0].generation_info["request_info"], second[0].generation_info["request_info"]]
    assert [i["protocol"] for i in infos] == [protocol, protocol] and infos[0]["request_id"] != infos[1]["request_id"]
    assert all(i["error"] is None and not i["cancelled"] and i["responses"] >= 1 for i in infos)


def test_without_observers_nothing_of_opentelemetry_or_prometheus_is_imported(triton_server):
    script = f"""
import sys
from Xclient.client import ModelClient
with ModelClient({triton_server.url("grpc")!r}, "identity") as client:
    client.infer_sample(BYTES=["你好"])
    assert client.last_request_info is not None
loaded = sorted(m for m in sys.modules if m.startswith(("opentelemetry", "prometheus_client")))
assert not loaded, loaded
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
