"""Faults, against a real local Triton server that these tests kill (SIGKILL, as a crash would) and bring back
on the same ports: every one of the five clients gets a typed error within its deadline, leaks no thread,
descriptor or gRPC stream, and works again on its next call once the server is back. Also: models reloaded
with a new config, and the retry rules (what is retried, and that a stream that delivered data never is).

The module has a server of its own, with three models, so that restarts are quick and the session's server
is never disturbed. To keep restarts few, one fault hits every client at once (8 clients: the three unary
clients on both protocols, the two streaming clients on gRPC); each client's outcome is checked by name.
Slow models past ``inference_timeout_s`` are covered per client in test_model_client, test_futures,
test_asyncio and test_decoupled.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import pytest

from Xclient.client import DecoupledModelClient, ServerClient
from Xclient.exceptions import ModelUnavailableError, ServerUnavailableError, XclientValueError
from Xclient.server import LocalTritonServer

from . import drivers
from .conftest import MODELS
from .drivers import EVERY_CLIENT, STREAMING, every_client, in_threads
from .leaks import Resources, assert_released

#: A quick request to each model: inputs, an output and its expected value.
QUICK: dict[str, tuple[dict[str, Any], str, list[Any]]] = {
    "slow": ({"delay_s": 0.0, "x": [1.5]}, "y", [1.5]),
    "text_stream": ({"text_input": "好"}, "text_output", ["好".encode()]),
    "stream_empty_final": ({"n": 1}, "i", [0]),  # two instances: two streams run at once
}
#: Far longer than any fault takes to show: an error must come from the fault, not from a deadline.
DEADLINE_S = 30.0
#: How soon after the fault the error must come: generous, for a loaded machine.
PROMPTLY_S = 10.0


@pytest.fixture(scope="module")
def server() -> Iterator[LocalTritonServer]:
    with LocalTritonServer(model_repository=MODELS, models=["slow", "text_stream", "stream_empty_final"]) as server:
        for kind, protocol in EVERY_CLIENT:  # warm up what is made once per process (gRPC's, gevent's, asyncio's)
            driver = Driver(kind, server.url(protocol))
            assert driver.works()
            driver.close()
        yield server


@pytest.fixture
def live(server: LocalTritonServer) -> Iterator[LocalTritonServer]:
    """The server, up; brought back after the test if the test left it down."""
    server.start()
    yield server
    server.start()


class Driver(drivers.Driver):
    """A client of the module's server, with a long deadline, and a quick request that proves it works."""

    def __init__(self, kind: str, url: str, model: str | None = None, **options: Any) -> None:
        model = model or ("text_stream" if kind in STREAMING else "slow")
        super().__init__(kind, url, model, inference_timeout_s=DEADLINE_S, **options)

    def works(self) -> bool:
        """True when a quick request gets the right answer."""
        inputs, output, expected = QUICK[self.client.model_name]
        return [outputs[output].tolist() for outputs in self.infer(**inputs)] == [expected]


def test_server_killed_under_requests_and_streams_every_client_raises_a_typed_error_promptly_then_recovers(live):
    baseline = Resources.now()
    drivers = {
        f"{kind} {protocol}": Driver(
            kind, live.url(protocol), model="stream_empty_final" if kind in STREAMING else "slow"
        )
        for kind, protocol in EVERY_CLIENT
    }
    assert all(driver.works() for driver in drivers.values())  # connected before the fault
    received: dict[str, list[Any]] = {name: [] for name, driver in drivers.items() if driver.streaming}

    def long_request(name: str, driver: Driver) -> None:
        if driver.streaming:  # 30 responses, 0.2 s apart
            received[name].extend(driver.stream(n=30, delay_s=0.2))
        else:
            driver.infer(delay_s=DEADLINE_S / 2, x=[2.0])

    killed: list[float] = []

    def kill_once_all_run() -> None:
        while not all(received.values()):  # every stream has had its first response
            time.sleep(0.01)
        time.sleep(0.5)  # the unary requests, sent at the same time, are on the server too
        live.kill()
        killed.append(time.monotonic())

    calls = {name: lambda n=name, d=driver: long_request(n, d) for name, driver in drivers.items()}
    outcomes = in_threads(calls, meanwhile=kill_once_all_run)
    assert time.monotonic() - killed[0] < PROMPTLY_S  # every call ended long before its 30 s deadline
    for name, error in outcomes.items():
        assert isinstance(error, ServerUnavailableError), f"{name}: {error!r}"
        assert not error.retryable, f"{name}: the request may have reached the server: never retried"
        assert error.model == drivers[name].client.model_name
    for name, responses in received.items():  # what came before the fault was delivered, then the error
        assert 1 <= len(responses) < 30 and responses[0]["i"].tolist() == [0], name
    live.start()  # on the same ports
    for name, driver in drivers.items():  # the same client objects
        assert driver.works(), name
        driver.close()
    assert_released(baseline)  # threads, sockets, gRPC streams and channels, event loops: all gone


def test_server_restarted_between_calls_every_client_works_again_without_being_rebuilt(live):
    baseline = Resources.now()
    drivers = [Driver(kind, live.url(protocol)) for kind, protocol in EVERY_CLIENT]
    assert all(driver.works() for driver in drivers)
    live.restart()  # a clean stop this time (the tests above kill it)
    for driver in drivers:
        assert driver.works(), driver.kind
        driver.close()
    assert_released(baseline)


# -- a model reloaded with a new config between calls ---------------------------------------------------


def test_a_model_reloaded_with_a_new_config_is_picked_up_by_the_asyncio_and_streaming_clients(live):
    # Batching models whose max_batch_size the reload lowers: a client with the old config would send a
    # batch the model no longer takes; one with the new config refuses it before sending.
    drivers = {
        "AsyncioModelClient http": Driver("AsyncioModelClient", live.http_url),
        "AsyncioModelClient grpc": Driver("AsyncioModelClient", live.grpc_url),
        "DecoupledModelClient": Driver("DecoupledModelClient", live.grpc_url, model="stream_empty_final"),
        "AsyncioDecoupledModelClient": Driver("AsyncioDecoupledModelClient", live.grpc_url, model="stream_empty_final"),
    }
    rows = {"slow": lambda n: {"delay_s": [[0.0]] * n}, "stream_empty_final": lambda n: {"n": [[1]] * n}}

    def batch_of(driver: Driver, n: int) -> list[dict[str, Any]]:
        return driver.infer(batch=True, **rows[driver.client.model_name](n))

    assert all(len(batch_of(driver, 3)) == 1 for driver in drivers.values())  # the config is fetched
    with ServerClient(live.grpc_url) as admin:
        originals = {model: dict(admin.model_config(model).raw) for model in rows}
        at_once({m: lambda m=m: admin.unload_model(m) for m in rows})
        for driver in drivers.values():
            with pytest.raises(ModelUnavailableError):  # a clear error while it is gone
                driver.works()
        at_once({m: lambda m=m: admin.load_model(m, {**originals[m], "max_batch_size": 2}) for m in rows})
        try:
            for name, driver in drivers.items():
                with pytest.raises(XclientValueError, match="max_batch_size 2"):  # the new config, not the old
                    batch_of(driver, 3)
                assert [list(out.values())[0].shape for out in batch_of(driver, 2)] == [(2, 1)], name
        finally:
            at_once({m: lambda m=m: admin.load_model(m, originals[m]) for m in rows})
    for driver in drivers.values():
        driver.close()


def at_once(calls: dict[str, Callable[[], Any]]) -> None:
    """Run the calls at once (loading two models takes half as long), raising the first error."""
    for outcome in in_threads(calls).values():
        if isinstance(outcome, BaseException):
            raise outcome


# -- retries ----------------------------------------------------------------------------------------


def test_clients_with_retries_ride_out_a_server_that_comes_back_within_the_backoff(live):
    with DecoupledModelClient(live.grpc_url, "text_stream") as client:
        stream_config = client.model_config
    live.kill()
    # Made while the server is down; 8 retries from 0.1 s wait up to 25 s in all, far more than a restart.
    retrying = {f"{kind} {protocol}": Driver(kind, live.url(protocol), retries=8) for kind, protocol in EVERY_CLIENT}
    # A stream whose config is given sends nothing but the stream itself: the stream is what is retried.
    retrying["stream alone"] = Driver(
        "DecoupledModelClient", live.grpc_url, retries=8, model_config=stream_config, ensure_model_is_ready=False
    )
    control = Driver("ModelClient", live.grpc_url)  # no retries: proves the server was down when the calls began
    calls = {name: driver.works for name, driver in retrying.items()}
    outcomes = in_threads({**calls, "control": control.works}, meanwhile=live.start)
    control_error = outcomes.pop("control")
    assert isinstance(control_error, ServerUnavailableError) and control_error.retryable
    assert outcomes == dict.fromkeys(retrying, True)
    for driver in [*retrying.values(), control]:
        driver.close()


@every_client
def test_a_host_name_that_does_not_resolve_is_retryable_like_a_refused_connection(kind, protocol):
    driver = Driver(kind, f"{protocol}://no-such-host.invalid", init_timeout_s=5.0)  # .invalid never resolves
    with pytest.raises(ServerUnavailableError) as info:
        driver.works()
    assert info.value.retryable  # nothing reached a server: safe to send again
    driver.close()


@pytest.mark.parametrize("retries", [0, 2])
@pytest.mark.parametrize("kind", STREAMING)
def test_a_stream_refused_before_its_first_response_is_sent_again_up_to_retries_with_backoff(dead_url, kind, retries):
    config = {
        "name": "text_stream",
        "max_batch_size": 0,
        "model_transaction_policy": {"decoupled": True},
        "input": [{"name": "text_input", "data_type": "TYPE_STRING", "dims": [1]}],
        "output": [{"name": "text_output", "data_type": "TYPE_STRING", "dims": [-1]}],
    }
    driver = Driver(
        kind, dead_url, retries=retries, retry_backoff_s=0.1, model_config=config, ensure_model_is_ready=False
    )
    sent = spy_streams(driver)
    started = time.monotonic()
    with pytest.raises(ServerUnavailableError) as info:
        driver.infer(text_input="x")
    assert info.value.retryable and len(sent) == 1 + retries
    # 0.1 s, then 0.2 s: the backoff doubles (each pause up to 25 % shorter: jitter)
    assert time.monotonic() - started >= 0.75 * 0.1 * (2**retries - 1)
    driver.close()


@pytest.mark.parametrize("kind", STREAMING)
def test_a_stream_that_delivered_a_response_is_never_sent_again(live, kind):
    # The first response comes from the server; then the connection fails as a refused one would (the
    # kind of error that is retried before any response): the stream must raise it, not send again.
    import grpc

    driver = Driver(kind, live.grpc_url, retries=3, retry_backoff_s=0.01)
    sent = spy_streams(driver, fail_after_first_response=grpc)
    responses: list[dict[str, Any]] = []
    with pytest.raises(ServerUnavailableError) as info:
        responses.extend(driver.stream(text_input="一二三"))
    assert info.value.retryable  # retryable in itself, yet not retried: data was delivered
    assert len(sent) == 1 and [r["text_output"].tolist() for r in responses] == [["一".encode()]]
    assert driver.works()  # the client stays usable
    driver.close()


@pytest.fixture
def protocol() -> str:
    """``dead_url`` is a gRPC URL here (the streaming clients speak gRPC only)."""
    return "grpc"


def spy_streams(driver: Driver, fail_after_first_response: Any = None) -> list[Any]:
    """Record each request a streaming client sends; optionally make its second read fail as if the
    server had become unreachable (pass the ``grpc`` module)."""
    stream_infer = driver.client._stream_infer
    failing = _SyncFailingAfterFirstRead if isinstance(driver.client, DecoupledModelClient) else _FailingAfterFirstRead
    sent: list[Any] = []

    def start(message: Any, **kwargs: Any) -> Any:
        sent.append(message)
        call = stream_infer()(message, **kwargs)
        return failing(call, fail_after_first_response) if fail_after_first_response else call

    driver.client._stream_infer = lambda: start
    return sent


class _FailingAfterFirstRead:
    """A gRPC call whose reads after the first fail with UNAVAILABLE 'failed to connect' (retryable)."""

    def __init__(self, call: Any, grpc: Any) -> None:
        self._call = call
        self._grpc = grpc
        self._reads = 0

    async def read(self) -> Any:
        self._reads += 1
        if self._reads > 1:
            self._call.cancel()
            metadata = self._grpc.aio.Metadata()
            raise self._grpc.aio.AioRpcError(
                self._grpc.StatusCode.UNAVAILABLE, metadata, metadata, details="failed to connect to all addresses"
            )
        return await self._call.read()

    def done(self) -> bool:
        return self._call.done()

    def cancel(self) -> bool:
        return self._call.cancel()


class _SyncFailingAfterFirstRead:
    """The same for a sync gRPC call (an iterator of responses)."""

    def __init__(self, call: Any, grpc: Any) -> None:
        self._call = call
        self._grpc = grpc
        self._reads = 0

    def __next__(self) -> Any:
        self._reads += 1
        if self._reads > 1:
            self._call.cancel()
            raise _Unavailable()
        return next(self._call)

    def cancel(self) -> bool:
        return self._call.cancel()


class _Unavailable(grpc.RpcError):
    """A sync gRPC error as a call raises it: UNAVAILABLE, 'failed to connect to all addresses'."""

    def __init__(self) -> None:
        super().__init__("failed to connect to all addresses")
        self._code = grpc.StatusCode.UNAVAILABLE

    def code(self) -> Any:
        return self._code

    def details(self) -> str:
        return "failed to connect to all addresses"

    def debug_error_string(self) -> str:
        return "UNAVAILABLE: failed to connect to all addresses"
