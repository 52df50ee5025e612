"""FuturesModelClient against the real local Triton server, over HTTP and gRPC (the `url` fixture)."""

from __future__ import annotations

import asyncio
import gc
import json
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future

import pytest

from Xclient.client import FuturesModelClient
from Xclient.exceptions import (
    ClientClosedError,
    InferenceServerError,
    ModelUnavailableError,
    QueueFullError,
    XclientTimeoutError,
    XclientValueError,
)


def wait_until(predicate: Callable[[], bool], timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.005)


def workers() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("FuturesModelClient")]


def start_running(client: FuturesModelClient, **inputs: object) -> Future:
    """A call on the slow model that is running (so no longer queued) when this returns."""
    future = client.infer_sample(**inputs)
    wait_until(future.running)
    return future


class Spy:
    """Watches the requests a client sends on its real transport (the server still answers): how many are in
    flight at once, at most, which config fetches and how many inferences were sent. Made before the client's
    first inference."""

    def __init__(self, client: FuturesModelClient, config_fetch_s: float = 0.0) -> None:
        client.wait_for_server(5).result()  # makes the client's transport on its loop; fetches no config
        transport = client._client._transport_obj
        original = transport.run
        self.in_flight = self.most = 0
        self.config_fetches: list[str] = []
        self.inferences = 0

        async def run(op, timeout_s, info=None):  # on the client's loop thread: no lock needed
            self.inferences += op.method == "infer"
            if op.method == "get_model_config":
                self.config_fetches.append(op.args[0])
                await asyncio.sleep(config_fetch_s)  # widen the window in which other calls want the config too
            self.in_flight += 1
            self.most = max(self.most, self.in_flight)
            try:
                return await original(op, timeout_s, info)
            finally:
                self.in_flight -= 1

        transport.run = run


def test_issue_example_resolves_after_leaving_with(url):
    with FuturesModelClient(url, "text", "1") as client:
        res = client.infer_sample("你好")
    assert isinstance(res, Future)
    result = res.result(timeout=0)  # leaving `with` finished the queued work
    assert result["UPPER"].tolist() == ["你好".encode()] and result["LENGTH"].tolist() == [2]


def test_many_concurrent_calls_with_eight_workers_are_correct_and_in_order(url):
    texts = [f"{word}{i}" for i in range(12) for word in ("你好", "hello", "世界", "Triton")]
    with FuturesModelClient(url, "text", max_workers=8) as client:
        futures = [client.infer_sample(text) for text in texts]
        batch = client.infer_batch([["abc"], ["中文字符"]])
        assert [f.result()["UPPER"][0].decode() for f in futures] == [text.upper() for text in texts]
        assert [f.result()["LENGTH"].tolist() for f in futures] == [[len(text)] for text in texts]
        assert batch.result()["UPPER"][:, 0].tolist() == [b"ABC", "中文字符".encode()]


def test_workers_send_calls_in_parallel(url):
    # Count the calls in flight at once on the real transport (no timing: the overlap is observed).
    with FuturesModelClient(url, "slow", max_workers=4) as client:
        spy = Spy(client)
        client.model_config().result()
        futures = [client.infer_sample(delay_s=0.3, x=[float(i)]) for i in range(4)]
        assert [f.result()["y"].tolist() for f in futures] == [[0.0], [1.0], [2.0], [3.0]]
    assert spy.most >= 2


@pytest.mark.parametrize("max_workers", [1, 3])
def test_at_most_max_workers_calls_run_at_once(url, max_workers):
    # The slow model runs two requests at once (two instances, no batching): one worker halves that, so
    # the server's own timing proves the bound; three workers show that the bound is not the server's.
    delay_s, calls = 0.2, 6
    with FuturesModelClient(url, "slow", max_workers=max_workers) as client:
        spy = Spy(client)
        client.model_config().result()
        started = time.monotonic()
        futures = [client.infer_sample(delay_s=delay_s, x=[float(i)]) for i in range(calls)]
        wait_until(lambda: sum(f.running() for f in futures) == max_workers)  # the others wait, queued
        assert [f.result()["y"].tolist() for f in futures] == [[float(i)] for i in range(calls)]
        elapsed = time.monotonic() - started
    assert spy.most == max_workers  # requests in flight at once on the transport
    if max_workers == 1:
        assert elapsed >= calls * delay_s  # one after the other, though the server could have run two at once


def test_config_is_fetched_once_for_all_workers(url):
    client = FuturesModelClient(url, "text", max_workers=8)
    spy = Spy(client, config_fetch_s=0.05)
    futures = [client.infer_sample("字" * (i + 1)) for i in range(16)]
    assert [f.result()["LENGTH"].tolist() for f in futures] == [[i + 1] for i in range(16)]
    assert client.model_config().result().name == "text"
    assert spy.config_fetches == ["text"]
    client.close()


def test_full_queue_non_blocking_raises_at_once_and_a_cancelled_call_frees_its_slot(url):
    with FuturesModelClient(
        url, "slow", max_workers=1, max_queue_size=1, non_blocking=True, inference_timeout_s=5
    ) as client:
        running = start_running(client, delay_s=0.3, x=[1.0])
        queued = client.infer_sample(delay_s=0.0, x=[2.0])
        started = time.monotonic()
        with pytest.raises(QueueFullError, match=r"queue is full \(1 calls waiting for 1 workers; non_blocking") as e:
            client.infer_sample(delay_s=0.0, x=[3.0])
        assert time.monotonic() - started < 1.0 and e.value.model == "slow"  # not after a 5 s wait
        assert queued.cancel()
        after_cancel = client.infer_sample(delay_s=0.0, x=[4.0])
        assert running.result()["y"].tolist() == [1.0] and after_cancel.result()["y"].tolist() == [4.0]
        assert queued.cancelled()


def test_a_cancelled_queued_call_is_never_sent_and_a_running_one_cannot_be_cancelled(url):
    with FuturesModelClient(url, "slow", max_workers=1) as client:
        spy = Spy(client)
        running = start_running(client, delay_s=0.2, x=[1.0])
        queued = client.infer_sample(delay_s=0.0, x=[2.0])
        assert queued.cancel() and not running.cancel()
        assert client.infer_sample(delay_s=0.0, x=[3.0]).result()["y"].tolist() == [3.0]
        assert running.result()["y"].tolist() == [1.0] and queued.cancelled()
    assert spy.inferences == 2


def test_full_queue_blocking_waits_for_a_slot(url):
    with FuturesModelClient(url, "slow", max_workers=1, max_queue_size=1, inference_timeout_s=5) as client:
        running = start_running(client, delay_s=0.3, x=[1.0])
        queued = client.infer_sample(delay_s=0.0, x=[2.0])
        started = time.monotonic()
        waited = client.infer_sample(delay_s=0.0, x=[3.0])  # room comes when `queued` starts
        assert 0.15 < time.monotonic() - started < 2.0
        assert [f.result()["y"].tolist() for f in (running, queued, waited)] == [[1.0], [2.0], [3.0]]


def test_full_queue_blocking_raises_after_inference_timeout(url):
    # Waiting for a model that does not exist holds the one worker for 0.6 s, longer than the
    # 0.2 s the queue may be waited for (an inference could not: its own deadline is 0.2 s too).
    with FuturesModelClient(url, "no_such_model", max_workers=1, max_queue_size=1, inference_timeout_s=0.2) as client:
        busy = client.wait_for_model(0.6)
        wait_until(busy.running)
        queued = client.wait_for_model(0.05)
        started = time.monotonic()
        with pytest.raises(QueueFullError, match=r"\(1 calls waiting for 1 workers; still full after 0.2 s\)"):
            client.wait_for_model(0.05)
        assert 0.15 < time.monotonic() - started < 1.5
        for future in (busy, queued):
            with pytest.raises(ModelUnavailableError, match="not ready after"):
                future.result()


def test_close_finishes_queued_calls(url):
    client = FuturesModelClient(url, "slow", max_workers=1)
    futures = [client.infer_sample(delay_s=0.05, x=[float(i)]) for i in range(4)]
    client.close()
    assert all(f.done() and not f.cancelled() for f in futures)
    assert [f.result()["y"].tolist() for f in futures] == [[0.0], [1.0], [2.0], [3.0]]


def test_close_without_wait_cancels_queued_calls_and_still_joins_the_workers(url):
    client = FuturesModelClient(url, "slow", max_workers=1)
    running = start_running(client, delay_s=0.3, x=[1.0])
    queued = [client.infer_sample(delay_s=0.0, x=[2.0]) for _ in range(3)]
    client.close(wait=False)
    assert running.done() and running.result()["y"].tolist() == [1.0]
    assert all(f.cancelled() for f in queued)
    assert not workers()


def test_closed_client_refuses_calls_and_closing_twice_is_fine(url):
    client = FuturesModelClient(url, "text", max_queue_size=1, non_blocking=True)
    assert client.infer_sample("a").result()["LENGTH"].tolist() == [1]
    client.close()
    client.close(wait=False)
    calls = [
        lambda: client.infer_sample("a"),
        lambda: client.infer_batch([["a"]]),
        lambda: client.model_config(),
        lambda: client.wait_for_model(1),
        lambda: client.wait_for_server(1),
    ]
    for call in calls:
        with pytest.raises(ClientClosedError, match="FuturesModelClient.*is closed"):
            call()


def test_calls_during_close_are_refused_at_once_and_waiting_callers_are_released(url):
    client = FuturesModelClient(url, "slow", max_workers=1, max_queue_size=1, inference_timeout_s=5)
    running = start_running(client, delay_s=1.5, x=[1.0])
    queued = client.infer_sample(delay_s=0.0, x=[2.0])
    refused: list[BaseException] = []

    def call_on_full_queue() -> None:
        try:
            client.infer_sample(delay_s=0.0, x=[3.0])
        except ClientClosedError as e:
            refused.append(e)

    waiting = threading.Thread(target=call_on_full_queue)
    waiting.start()
    time.sleep(0.05)  # let it block on the full queue (if it has not yet, it is refused at once: same outcome)
    closing = threading.Thread(target=client.close)  # finishes `running` and `queued` first
    closing.start()
    wait_until(lambda: client._closed)
    started = time.monotonic()
    with pytest.raises(ClientClosedError):
        client.infer_sample(delay_s=0.0, x=[4.0])
    assert time.monotonic() - started < 1.0  # not after the queue has drained (1.5 s)
    closing.join()
    waiting.join()
    assert len(refused) == 1 and running.result()["y"].tolist() == [1.0] and queued.result()["y"].tolist() == [2.0]


def test_one_loop_thread_serves_every_worker_and_no_thread_outlives_close(url):
    def new_threads() -> list[str]:
        # Less gRPC's poller: one thread for all the grpc.aio channels of the process, while any is open.
        return [t.name for t in set(threading.enumerate()) - before if not t.name.endswith("(_poll_wrapper)")]

    before = set(threading.enumerate())
    with FuturesModelClient(url, "text", max_workers=8) as client:
        assert new_threads() == []  # started on first use
        futures = [client.infer_sample("线程" * (i + 1)) for i in range(32)]
        assert new_threads() == ["FuturesModelClient-loop"]
        assert [f.result()["LENGTH"].tolist() for f in futures] == [[2 * (i + 1)] for i in range(32)]
        assert new_threads() == ["FuturesModelClient-loop"]
    assert set(threading.enumerate()) - before == set()  # gRPC's poller included


def test_an_unclosed_client_finishes_its_calls_and_stops_its_loop_thread_when_garbage_collected(url):
    before = set(threading.enumerate())
    future = FuturesModelClient(url, "slow").infer_sample(delay_s=0.2, x=[5.0])  # the client is garbage at once
    gc.collect()
    assert future.done() and future.result()["y"].tolist() == [5.0]
    assert set(threading.enumerate()) - before == set()


def test_a_done_callback_may_close_the_client_without_deadlock(url):
    client = FuturesModelClient(url, "slow", max_workers=1)
    future = client.infer_sample(delay_s=0.05, x=[1.0])
    queued = client.infer_sample(delay_s=0.0, x=[2.0])
    future.add_done_callback(lambda _: client.close())  # runs on the loop thread: closes without waiting there
    assert future.result()["y"].tolist() == [1.0]
    client.close()  # waits for the close under way: the queued call finishes, the thread ends
    assert queued.result(timeout=0)["y"].tolist() == [2.0] and not workers()
    with pytest.raises(ClientClosedError):
        client.infer_sample(delay_s=0.0, x=[3.0])


def test_keyboard_interrupt_in_with_cancels_the_queued_calls_and_lets_the_running_one_end(url):
    with pytest.raises(KeyboardInterrupt), FuturesModelClient(url, "slow", max_workers=1) as client:
        running = start_running(client, delay_s=0.3, x=[1.0])
        queued = [client.infer_sample(delay_s=0.0, x=[2.0]) for _ in range(3)]
        raise KeyboardInterrupt
    assert running.result(timeout=0)["y"].tolist() == [1.0]
    assert all(f.cancelled() for f in queued) and not workers()


@pytest.mark.parametrize(
    ("model", "options", "call", "error", "message"),
    [
        ("no_such_model", {}, lambda c: c.infer_sample([1.0]), ModelUnavailableError, "not found"),
        ("failing", {}, lambda c: c.infer_sample([1.0]), InferenceServerError, "模型出错"),
        ("slow", {"inference_timeout_s": 0.2}, lambda c: c.infer_sample(delay_s=0.5), XclientTimeoutError, "timed out"),
        ("text", {}, lambda c: c.infer_batch([["x"]] * 9), XclientValueError, "max_batch_size 8"),
        ("text", {}, lambda c: c.infer_sample(["a"], INPUT_TEXT=["b"]), XclientValueError, "not both"),
    ],
)
def test_errors_come_out_of_the_future_typed(url, model, options, call, error, message):
    with FuturesModelClient(url, model, **options) as client:
        future = call(client)  # raises nothing itself
        with pytest.raises(error) as info:
            future.result()
    assert message in str(info.value) + (info.value.server_message or "") and info.value.model == model


def test_model_config_wait_for_model_and_wait_for_server_return_futures(url):
    with FuturesModelClient(url, "text") as client:
        config = client.model_config()
        assert isinstance(config, Future) and config.result().name == "text"
        assert client.wait_for_server(5).result() is None and client.wait_for_model(5).result() is None
    with FuturesModelClient(url, "no_such_model") as client, pytest.raises(ModelUnavailableError, match="0.3 s"):
        client.wait_for_model(0.3).result()


def test_per_call_parameters_reach_the_model(url):
    with FuturesModelClient(url, "params") as client:
        out = client.infer_sample([1.0], parameters={"语言": "中文", "n": 3}, headers={"x-request-id": "7"})
        assert json.loads(out.result()["parameters"][0]) == {"语言": "中文", "n": 3}


def test_lazy_init_false_fails_on_enter_and_leaves_no_thread(url):
    before = set(threading.enumerate())
    with pytest.raises(ModelUnavailableError), FuturesModelClient(url, "no_such_model", lazy_init=False):
        pytest.fail("entering should have failed")
    assert set(threading.enumerate()) - before == set()


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"max_workers": 0}, "max_workers: expected a positive int, got 0"),
        ({"max_workers": True}, "max_workers: expected a positive int, got True"),
        ({"max_queue_size": 0}, "max_queue_size: expected None (unbounded) or a positive int, got 0"),
        ({"max_queue_size": 2.5}, "max_queue_size: expected None (unbounded) or a positive int, got 2.5"),
        ({"inference_timeout_s": -1}, "inference_timeout_s: expected a positive number"),
    ],
)
def test_bad_options_are_refused_by_the_constructor(dead_url, options, message):
    with pytest.raises(XclientValueError) as info:
        FuturesModelClient(dead_url, "text", **options)
    assert message in str(info.value)


def test_constructor_does_no_io_and_repr_hides_the_api_key(dead_url):
    client = FuturesModelClient(dead_url, "text", 2, max_workers=3, api_key="sk-secret-123")  # nothing listens
    assert repr(client) == (
        f"FuturesModelClient({dead_url!r}, 'text', model_version='2', max_workers=3, "
        "max_queue_size=None, non_blocking=False)"
    )
    assert "sk-secret" not in repr(client)
    client.close()
