"""DecoupledModelClient and AsyncioDecoupledModelClient against the real local server, over gRPC.

Most tests run twice, through the sync and the asyncio client (the ``make_client`` fixture): the two
must behave the same. The test models: ``text_stream`` (vLLM style: the final flag on the last text
response; one instance, and it stops when its request is cancelled, so a prompt next call proves the
server saw the cancel), ``stream`` (the final flag on the last response), ``stream_empty_final``
(PyTriton style: a separate empty final response; batching, two instances) and ``stream_failing``.
"""

from __future__ import annotations

import _thread
import asyncio
import gc
import inspect
import json
import threading
import time
import warnings
from collections.abc import AsyncIterator, Callable
from typing import Any

import numpy as np
import pytest

from Xclient import AsyncioDecoupledModelClient, DecoupledModelClient
from Xclient import exceptions as errors
from Xclient.client._decoupled import EMPTY_FINAL_PARAMETER, AsyncResponseStream, ResponseStream
from Xclient.server import LocalTritonServer

from .conftest import MODELS
from .test_asyncio import spy_calls

KEY = "sk-stream-0123456789abcdef"
WATCHDOG = "DecoupledModelClient-watchdog"
Client = DecoupledModelClient | AsyncioDecoupledModelClient
Stream = ResponseStream | AsyncResponseStream


@pytest.fixture
def protocol() -> str:
    """Streams are gRPC only: ``url`` and ``dead_url`` are gRPC URLs in this module."""
    return "grpc"


@pytest.fixture(params=["sync", "async"])
async def make_client(request: pytest.FixtureRequest) -> AsyncIterator[Callable[..., Client]]:
    """Makes the sync or the asyncio client (the test runs once with each) and closes it afterwards."""
    made: list[Client] = []

    def make(*args: Any, **kwargs: Any) -> Client:
        cls = DecoupledModelClient if request.param == "sync" else AsyncioDecoupledModelClient
        made.append(cls(*args, **kwargs))
        return made[-1]

    yield make
    for client in made:
        closing = client.close()
        if inspect.isawaitable(closing):
            await closing


async def drain(
    stream: Stream, arrivals: list[float] | None = None
) -> tuple[list[dict[str, np.ndarray]], errors.XclientError | None]:
    """Iterate a sync (in a worker thread) or async stream to its end: what it delivered, and the error
    that ended it, if any. ``arrivals`` gets the time each response came."""
    items: list[dict[str, np.ndarray]] = []

    def keep(outputs: dict[str, np.ndarray]) -> None:
        items.append(outputs)
        if arrivals is not None:
            arrivals.append(time.monotonic())

    def iterate() -> None:
        for outputs in stream:
            keep(outputs)

    try:
        if isinstance(stream, AsyncResponseStream):
            async for outputs in stream:
                keep(outputs)
        else:
            await asyncio.to_thread(iterate)
    except errors.XclientError as e:
        return items, e
    return items, None


async def collect(stream: Stream) -> list[dict[str, np.ndarray]]:
    items, error = await drain(stream)
    if error is not None:
        raise error
    return items


def text(items: list[dict[str, np.ndarray]]) -> str:
    return b"".join(item["text_output"][0] for item in items).decode("utf-8")


async def assert_model_is_free(client: Client, within_s: float = 1.5) -> None:
    """``text_stream`` has one instance: a next call is quick only if no earlier request still runs there."""
    started = time.monotonic()
    assert text(await collect(client.infer_sample("好了"))) == "好了"
    assert time.monotonic() - started < within_s


def watchdogs() -> list[threading.Thread]:
    return [thread for thread in threading.enumerate() if thread.name == WATCHDOG]


# -- what a stream delivers --------------------------------------------------------------------


async def test_the_issue_example_streams_the_text_back_one_response_per_character(url, capsys):
    async def main():
        client = AsyncioDecoupledModelClient(url, "text_stream")
        async for answer in client.infer_sample(np.array(["I'm Pickle Rick".encode("utf-8")])):  # noqa: UP012
            print(answer)
        await client.close()

    await main()
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == len("I'm Pickle Rick")
    assert lines[0] == "{'text_output': array([b'I'], dtype=object)}"
    assert lines[-1] == "{'text_output': array([b'k'], dtype=object)}"  # the response flagged final


async def test_utf8_text_streams_back_whole_and_the_final_flagged_response_is_delivered(url, make_client):
    client = make_client(url, "text_stream")
    items = await collect(client.infer_sample("我是Pickle Rick，你好"))
    assert text(items) == "我是Pickle Rick，你好"
    assert [item["text_output"].shape for item in items] == [(1,)] * len(items)
    assert await collect(client.infer_sample(text_input="")) == []  # a request answered by the final flag only


async def test_vllm_style_final_flag_on_the_last_content_response_is_delivered(url, make_client):
    client = make_client(url, "stream")
    items = await collect(client.infer_sample(n=3))
    assert [int(item["i"][0]) for item in items] == [0, 1, 2]
    assert items[-1]["text"].tolist() == ["第2段".encode()]
    assert await collect(client.infer_sample(n=0)) == []


async def test_separate_empty_final_response_ends_the_stream_and_the_batch_axis_is_handled(url, make_client):
    client = make_client(url, "stream_empty_final")
    items = await collect(client.infer_sample(n=3))  # a batching model: the axis is added, then stripped
    assert [item["i"].tolist() for item in items] == [[0], [1], [2]]
    batch = await collect(client.infer_batch(n=[[2], [2], [2]]))
    assert [item["i"].shape for item in batch] == [(3, 1), (3, 1)]
    with pytest.raises(errors.BatchingNotSupportedError):
        await collect(make_client(url, "text_stream").infer_batch([["x"]]))


async def test_every_request_asks_for_an_empty_final_response_and_parameters_pass_through(url, make_client):
    client = make_client(url, "stream_empty_final")
    sent: list[Any] = []
    stream_infer = client._stream_infer

    def spy(message, **kwargs):
        sent.append(message)
        return stream_infer()(message, **kwargs)

    client._stream_infer = lambda: spy
    parameters = {"语言": "中文", "max_tokens": 3, "temperature": 0.5, "stream": True}
    items = await collect(client.infer_sample(n=1, parameters=parameters))
    assert len(sent) == 1 and sent[0].parameters[EMPTY_FINAL_PARAMETER].bool_param
    assert json.loads(items[0]["parameters"][0]) == parameters
    for bad in ({"triton_enable_empty_final_response": False}, {"priority": 1}, {"x": [1, 2]}):
        with pytest.raises(errors.XclientValueError, match="parameters"):
            await collect(client.infer_sample(n=1, parameters=bad))
    assert len(sent) == 1  # refused before anything was sent


# -- construction and first use ------------------------------------------------------------------


def test_http_urls_are_refused_at_construction(triton_server):
    for cls in (DecoupledModelClient, AsyncioDecoupledModelClient):
        for url in (triton_server.http_url, "localhost:8000", "localhost"):  # no scheme, not port 8001: HTTP
            with pytest.raises(errors.XclientValueError, match="gRPC only.*grpc://"):
                cls(url, "text_stream")
        assert cls("localhost:8001", "text_stream").url == "grpc://localhost:8001"  # the no-scheme rule


async def test_coupled_unknown_and_unreachable_models_fail_at_first_use(url, dead_url, make_client):
    with pytest.raises(errors.IncompatibleModelError, match="ModelClient"):
        await collect(make_client(url, "text").infer_sample("x"))
    started = time.monotonic()
    with pytest.raises(errors.ModelUnavailableError):
        await collect(make_client(url, "no_such_model").infer_sample("x"))
    with pytest.raises(errors.ServerUnavailableError):
        await collect(make_client(dead_url, "text_stream").infer_sample("x"))
    assert time.monotonic() - started < 3.0


async def test_config_and_readiness_are_fetched_once_per_client(url):
    seen: list[str] = []
    async with AsyncioDecoupledModelClient(url, "text_stream") as client:
        spy_calls(client, seen)
        results = await asyncio.gather(*(collect(client.infer_sample(word)) for word in ("一二", "三", "四五六")))
        assert [text(items) for items in results] == ["一二", "三", "四五六"]
        assert (await client.model_config).decoupled
    assert seen == ["get_model_config", "is_model_ready"]


def test_lazy_init_false_checks_the_model_when_entering(url):
    with pytest.raises(errors.ModelUnavailableError), DecoupledModelClient(url, "no_such_model", lazy_init=False):
        pytest.fail("entering should have failed")
    with DecoupledModelClient(url, "text_stream", lazy_init=False) as client:
        assert client.model_config.name == "text_stream"


# -- failures: timeouts and server errors ----------------------------------------------------------


async def test_stalled_stream_raises_timeout_after_what_came_and_is_cancelled_on_the_server(url, make_client):
    client = make_client(url, "text_stream", inference_timeout_s=0.5)
    started = time.monotonic()
    items, error = await drain(client.infer_sample(text_input="慢慢", delay_s=3.0))
    assert text(items) == "慢" and isinstance(error, errors.XclientTimeoutError) and isinstance(error, TimeoutError)
    assert time.monotonic() - started < 1.5
    await assert_model_is_free(client)


async def test_a_slow_reader_is_never_timed_out_only_a_silent_server(url, make_client):
    # The deadline bounds how long a read waits for the server, not the reader's pauses between reads.
    client = make_client(url, "stream_empty_final", inference_timeout_s=0.3)
    stream = client.infer_sample(n=3)
    if isinstance(stream, ResponseStream):

        def read_slowly() -> list[int]:
            seen = []
            for item in stream:
                seen.append(int(item["i"][0]))
                time.sleep(0.5)
            return seen

        seen = await asyncio.to_thread(read_slowly)
    else:
        seen = []
        async for item in stream:
            seen.append(int(item["i"][0]))
            await asyncio.sleep(0.5)
    assert seen == [0, 1, 2]


async def test_server_error_is_raised_after_the_responses_before_it_and_the_client_stays_usable(url, make_client):
    client = make_client(url, "stream_failing")
    for k in (2, 0, 3):
        items, error = await drain(client.infer_sample(k=k))
        assert [int(item["i"][0]) for item in items] == list(range(k))
        assert isinstance(error, errors.InferenceServerError) and "生成失败" in error.server_message
        assert error.model == "stream_failing"


# -- leaving early cancels the request on the server --------------------------------------------


def test_sync_break_close_exception_and_garbage_collection_cancel_the_request(url):
    with DecoupledModelClient(url, "text_stream") as client:
        for outputs in client.infer_sample(text_input="慢慢来", delay_s=3.0):
            assert outputs["text_output"].tolist() == ["慢".encode()]
            break
        asyncio.run(assert_model_is_free(client))

        stream = client.infer_sample(text_input="慢慢来", delay_s=3.0)
        next(stream)
        stream.close()
        assert list(stream) == []
        asyncio.run(assert_model_is_free(client))

        with pytest.raises(KeyError), client.infer_sample(text_input="慢慢来", delay_s=3.0) as stream:
            next(stream)
            raise KeyError("the caller failed")
        asyncio.run(assert_model_is_free(client))

        stream = client.infer_sample(text_input="慢慢来", delay_s=3.0)
        next(stream)
        del stream
        gc.collect()
        asyncio.run(assert_model_is_free(client))


async def test_async_break_close_exception_and_garbage_collection_cancel_the_request(url):
    async with AsyncioDecoupledModelClient(url, "text_stream") as client:
        async for outputs in client.infer_sample(text_input="慢慢来", delay_s=3.0):
            assert outputs["text_output"].tolist() == ["慢".encode()]
            break
        await assert_model_is_free(client)

        stream = client.infer_sample(text_input="慢慢来", delay_s=3.0)
        await anext(stream)
        await stream.close()
        assert [outputs async for outputs in stream] == []
        await assert_model_is_free(client)

        with pytest.raises(KeyError):
            async with client.infer_sample(text_input="慢慢来", delay_s=3.0) as stream:
                await anext(stream)
                raise KeyError("the caller failed")
        await assert_model_is_free(client)

        stream = client.infer_sample(text_input="慢慢来", delay_s=3.0)
        await anext(stream)
        del stream
        gc.collect()
        await assert_model_is_free(client)


# -- concurrency and lifecycle -------------------------------------------------------------------


async def test_concurrent_streams_on_one_client_run_at_once_and_do_not_mix(url, make_client):
    client = make_client(url, "stream_empty_final")  # two instances: two streams can run at once
    arrivals: dict[str, list[float]] = {"a": [], "b": []}

    async def timed(name: str) -> None:
        items, error = await drain(client.infer_sample(n=3, delay_s=0.3), arrivals[name])
        assert error is None and [item["i"].tolist() for item in items] == [[0], [1], [2]]

    await asyncio.gather(timed("a"), timed("b"))
    a, b = arrivals["a"], arrivals["b"]
    assert max(a[0], b[0]) < min(a[-1], b[-1])  # both streams were open at the same time

    texts = ["一", "二二", "三三三", "四四四四", "五五五五五", "六六六六六六"]
    words = make_client(url, "text_stream")
    results = await asyncio.gather(*(collect(words.infer_sample(word)) for word in texts))
    assert [text(items) for items in results] == texts


def test_close_cancels_open_streams_and_stops_the_watchdog(url):
    before = set(watchdogs())
    client = DecoupledModelClient(url, "text_stream")
    stream = client.infer_sample(text_input="慢慢来", delay_s=3.0)
    assert next(stream)["text_output"].tolist() == ["慢".encode()]
    (watchdog,) = set(watchdogs()) - before
    raised: list[BaseException] = []
    reader = threading.Thread(target=lambda: raised.extend(_error_of(lambda: next(stream))))
    reader.start()
    time.sleep(0.2)  # the reader now waits for the next response
    started = time.monotonic()
    client.close()
    reader.join(2.0)
    assert time.monotonic() - started < 1.5
    assert not reader.is_alive() and len(raised) == 1 and isinstance(raised[0], errors.ClientClosedError)
    assert raised[0].__context__ is None  # no grpc call (nor its channel) kept alive by the error
    assert not watchdog.is_alive()
    client.close()
    with pytest.raises(errors.ClientClosedError):
        client.infer_sample("x")
    with pytest.raises(errors.ClientClosedError):
        next(stream)
    with DecoupledModelClient(url, "text_stream") as again:
        asyncio.run(assert_model_is_free(again))  # the cancelled request stopped on the server


def test_an_unclosed_client_stops_its_watchdog_when_garbage_collected(url):
    before = watchdogs()
    client = DecoupledModelClient(url, "text_stream")
    assert text(list(client.infer_sample("在"))) == "在"
    assert len(watchdogs()) == len(before) + 1
    del client
    gc.collect()
    assert watchdogs() == before


def test_one_watchdog_per_sync_client_times_out_a_stalled_stream_and_spares_a_slow_reader(url):
    before = watchdogs()
    with DecoupledModelClient(url, "stream_empty_final", inference_timeout_s=0.4) as client:
        assert client.model_config.decoupled
        assert watchdogs() == before  # config and readiness start no thread
        stalled = client.infer_sample(n=3, delay_s=1.5)  # the first response at once, then 1.5 s apart
        slow = client.infer_sample(n=3)
        seen = [int(next(slow)["i"][0])]
        (watchdog,) = set(watchdogs()) - set(before)  # started by the first stream
        assert watchdog.daemon
        assert int(next(stalled)["i"][0]) == 0
        started = time.monotonic()
        with pytest.raises(errors.XclientTimeoutError) as info:
            next(stalled)
        assert 0.3 < time.monotonic() - started < 1.2
        assert info.value.__context__ is None and info.value.model == "stream_empty_final"
        assert list(stalled) == []  # ended
        for item in slow:  # 0.5 s between reads, more than the timeout: the reader's pauses do not count
            time.sleep(0.5)
            seen.append(int(item["i"][0]))
        assert seen == [0, 1, 2]
        assert set(watchdogs()) - set(before) == {watchdog}  # one per client, however many streams
    assert not watchdog.is_alive()


def test_keyboard_interrupt_while_waiting_cancels_the_request(url):
    if threading.current_thread() is not threading.main_thread():
        pytest.skip("KeyboardInterrupt is delivered to the main thread")
    with DecoupledModelClient(url, "text_stream") as client:
        stream = client.infer_sample(text_input="慢慢来", delay_s=3.0)
        next(stream)
        timer = threading.Timer(0.3, _thread.interrupt_main)
        timer.start()
        with pytest.raises(KeyboardInterrupt):
            next(stream)
        timer.join()
        assert list(stream) == []
        asyncio.run(assert_model_is_free(client))


def _error_of(call: Callable[[], object]) -> list[BaseException]:
    try:
        call()
    except BaseException as e:  # the test inspects it
        return [e]
    return []


# -- headers, against a server that enforces an API key ------------------------------------------


@pytest.fixture(scope="module")
def secured_url(tmp_path_factory: pytest.TempPathFactory):
    """A server that checks ``Authorization: Bearer KEY`` (Triton's gRPC restricted protocol), with one model."""
    repository = tmp_path_factory.mktemp("secured_models")
    (repository / "text_stream").symlink_to(MODELS / "text_stream", target_is_directory=True)
    restriction = f"inference,model-config:authorization=Bearer {KEY}"
    with LocalTritonServer(model_repository=repository, extra_args=[f"--grpc-restricted-protocol={restriction}"]) as s:
        yield s.grpc_url


async def test_api_key_and_per_call_headers_reach_the_server_on_the_stream(secured_url, make_client):
    with pytest.raises(errors.AccessDeniedError):
        await collect(make_client(secured_url, "text_stream").infer_sample("x"))
    keyed = make_client(secured_url, "text_stream", api_key=KEY)
    assert text(await collect(keyed.infer_sample("钥匙"))) == "钥匙"
    config = await keyed.model_config if isinstance(keyed, AsyncioDecoupledModelClient) else keyed.model_config
    client = make_client(secured_url, "text_stream", model_config=config, ensure_model_is_ready=False)
    with pytest.raises(errors.AccessDeniedError) as info:  # the stream itself is refused without the key
        await collect(client.infer_sample("x"))
    assert KEY not in str(info.value)
    header = {"triton-grpc-protocol-authorization": f"Bearer {KEY}"}
    assert text(await collect(client.infer_sample("头", headers=header))) == "头"


# -- the closest peer ----------------------------------------------------------------------------


def test_pytriton_decoupled_client_drops_the_final_response_that_xclient_delivers(url):
    pytriton_client = pytest.importorskip("pytriton.client")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # PyTriton warns that gRPC ignores its network timeout
        with pytriton_client.DecoupledModelClient(url, "stream", init_timeout_s=10, inference_timeout_s=10) as theirs:
            dropped = [int(outputs["i"][0]) for outputs in theirs.infer_sample(np.array([3], dtype=np.int32))]
    with DecoupledModelClient(url, "stream") as ours:
        delivered = [int(outputs["i"][0]) for outputs in ours.infer_sample(3)]
    assert delivered == [0, 1, 2]
    assert dropped == [0, 1]  # nvidia-pytriton 0.7.0: the response flagged final is lost
