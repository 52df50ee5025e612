"""ModelClient against the real local Triton server, over HTTP and gRPC (the `url` fixture)."""

from __future__ import annotations

import json
import logging
import threading
import time

import numpy as np
import pytest

from Xclient.client import ModelClient, ModelConfig
from Xclient.exceptions import (
    BatchingNotSupportedError,
    ClientClosedError,
    IncompatibleModelError,
    InferenceServerError,
    ModelUnavailableError,
    ServerUnavailableError,
    XclientError,
    XclientTimeoutError,
    XclientValueError,
)

DTYPES = {
    "FP16": np.float16,
    "FP32": np.float32,
    "FP64": np.float64,
    "INT8": np.int8,
    "INT16": np.int16,
    "INT32": np.int32,
    "INT64": np.int64,
    "UINT8": np.uint8,
    "UINT16": np.uint16,
    "UINT32": np.uint32,
    "UINT64": np.uint64,
    "BOOL": np.bool_,
    "BYTES": object,
}


def sample_of(triton_dtype: str, shape: tuple[int, ...]) -> np.ndarray:
    if triton_dtype == "BYTES":
        return np.array([f"中文 {i}" for i in range(int(np.prod(shape)))], dtype=object).reshape(shape)
    if triton_dtype == "BOOL":
        return (np.arange(np.prod(shape)) % 2 == 0).reshape(shape)
    info = np.iinfo(DTYPES[triton_dtype]) if triton_dtype[0] in "IU" else None
    values = np.arange(np.prod(shape)).reshape(shape)
    if info is not None:  # include the extremes of the type
        values = values.astype(DTYPES[triton_dtype])
        values.flat[0], values.flat[-1] = info.min, info.max
        return values
    return (values / 3).astype(DTYPES[triton_dtype])


def count_calls(client, seen: list[str]) -> None:
    """Record the tritonclient method of every call the client's real transport makes."""
    transport = client._transport()
    original = transport.run

    def run(op, timeout_s, info=None):
        seen.append(op.method)
        return original(op, timeout_s, info)

    transport.run = run


def test_seed_example_bytes_model_sample_and_batch(url):
    with ModelClient(url, "text") as client:
        result = client.infer_sample(np.array([b".."], dtype=object))
        assert result["UPPER"].shape == (1,) and result["UPPER"][0] == b".."
        batch = client.infer_batch(np.array([[b"abc"], ["中文字符".encode()]], dtype=object))
        assert batch["UPPER"].shape == (2, 1)
        assert batch["UPPER"][:, 0].tolist() == [b"ABC", "中文字符".encode()]
        assert batch["LENGTH"][:, 0].tolist() == [3, 4]


def test_str_input_is_sent_as_utf8_and_bytes_outputs_come_back_as_bytes(url):
    with ModelClient(url, "text") as client:
        result = client.infer_sample("介绍一下你自己")
        assert result["UPPER"].dtype == object
        assert result["UPPER"][0].decode("utf-8") == "介绍一下你自己"
        assert result["LENGTH"].tolist() == [7]


@pytest.mark.parametrize("dtype", list(DTYPES))
def test_every_dtype_round_trips_as_sample_and_batch(url, dtype):
    with ModelClient(url, "identity") as client:
        sample = sample_of(dtype, (3,))
        out = client.infer_sample(**{dtype: sample})[f"OUT_{dtype}"]
        expected = np.char.encode(sample.astype(str)) if dtype == "BYTES" else sample
        assert out.dtype == np.dtype(DTYPES[dtype]) and out.shape == (3,)
        assert out.tolist() == expected.tolist()
        batch = sample_of(dtype, (2, 4))
        out = client.infer_batch(**{dtype: batch})[f"OUT_{dtype}"]
        assert out.shape == (2, 4)


@pytest.mark.parametrize("dtype", ["FP32", "INT64", "BOOL", "BYTES"])
def test_non_batching_model_takes_the_full_shape(url, dtype):
    with ModelClient(url, "identity_nobatch") as client:
        assert not client.is_batching_supported
        value = sample_of(dtype, (2, 3))
        out = client.infer_sample(**{dtype: value})[f"OUT_{dtype}"]
        assert out.shape == (2, 3)
        with pytest.raises(BatchingNotSupportedError, match="does not support batching"):
            client.infer_batch(**{dtype: value[np.newaxis]})


def test_plain_python_values_are_cast_losslessly(url):
    with ModelClient(url, "identity") as client:
        out = client.infer_sample(INT8=[1, -2, 127], FP32=[1, 2], UINT64=[2**63], FP16=0.5, BOOL=[1, 0])
        assert out["OUT_INT8"].dtype == np.int8 and out["OUT_INT8"].tolist() == [1, -2, 127]
        assert out["OUT_FP32"].tolist() == [1.0, 2.0] and out["OUT_UINT64"].tolist() == [2**63]
        assert out["OUT_FP16"].tolist() == [0.5] and out["OUT_BOOL"].tolist() == [True, False]
        with pytest.raises(XclientValueError, match=r"INT8 values in \[-128, 127\]"):
            client.infer_sample(INT8=[128])
        with pytest.raises(XclientValueError, match="NaN"):
            client.infer_sample(INT32=[1.0, float("nan")])


def test_positional_arguments_map_in_config_order_and_optional_inputs_can_be_left_out(url):
    with ModelClient(url, "optional") as client:
        both = client.infer_sample([1.0, 2.0], [10.0, 20.0])
        assert both["sum"].tolist() == [11.0, 22.0] and both["b_given"].tolist() == [True]
        only_a = client.infer_sample(a=[1.0, 2.0])
        assert only_a["sum"].tolist() == [1.0, 2.0] and only_a["b_given"].tolist() == [False]
        assert client.infer_sample([1.0], None)["b_given"].tolist() == [False]
        batch = client.infer_batch(b=[[1.0], [2.0]], a=[[3.0], [4.0]])
        assert batch["sum"].tolist() == [[4.0], [6.0]]


def test_batch_larger_than_max_batch_size_is_refused_with_the_limit(url):
    with ModelClient(url, "text") as client:
        with pytest.raises(XclientValueError, match="max_batch_size 8"):
            client.infer_batch([["x"]] * 9)
        assert client.infer_batch([["x"]] * 8)["LENGTH"].shape == (8, 1)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda c: c.infer_sample([1.0], b=[2.0]), "not both"),
        (lambda c: c.infer_sample([1.0], [2.0], [3.0]), "takes at most 2 inputs"),
        (lambda c: c.infer_sample(c=[1.0]), "has no input 'c'"),
        (lambda c: c.infer_sample(b=[1.0]), "missing required input 'a'"),
        (lambda c: c.infer_sample(a=["text"]), "expected numbers (FP32)"),
        (lambda c: c.infer_sample(a=[[1.0]]), "expected shape [-1], got shape [1, 1]"),
    ],
)
def test_bad_input_is_refused_before_anything_is_sent(dead_url, call, message):
    # A client whose config is given and whose server does not exist: any request sent would
    # fail with ServerUnavailableError, so a value error proves nothing was sent.
    config = ModelConfig.from_dict(
        {
            "name": "optional",
            "max_batch_size": 8,
            "input": [
                {"name": "a", "data_type": "TYPE_FP32", "dims": [-1]},
                {"name": "b", "data_type": "TYPE_FP32", "dims": [-1], "optional": True},
            ],
            "output": [{"name": "sum", "data_type": "TYPE_FP32", "dims": [-1]}],
        }
    )
    client = ModelClient(dead_url, "optional", model_config=config, ensure_model_is_ready=False)
    with pytest.raises(XclientValueError) as info:
        call(client)
    assert message in str(info.value) and "'optional'" in str(info.value)
    with pytest.raises(ServerUnavailableError):
        client.infer_sample([1.0])
    client.close()


def test_model_versions_are_selected(url):
    for version, expected in (("1", 1), (2, 2), (None, 2)):
        with ModelClient(url, "versioned", version) as client:
            out = client.infer_sample([7])
            assert out["version"].tolist() == [expected] and out["y"].tolist() == [7]


@pytest.mark.parametrize(("model", "version"), [("no_such_model", None), ("versioned", "3")])
def test_unknown_model_or_version_fails_at_once(url, model, version):
    client = ModelClient(url, model, version, init_timeout_s=30)
    started = time.monotonic()
    with pytest.raises(ModelUnavailableError) as info:
        client.infer_sample([1])
    assert time.monotonic() - started < 1.0
    assert repr(model) in str(info.value) and "not found" in info.value.server_message
    client.close()


def test_unreachable_server_fails_at_once(dead_url):
    started = time.monotonic()
    with pytest.raises(ServerUnavailableError, match="Cannot reach") as info:
        ModelClient(dead_url, "text").infer_sample("x")
    assert isinstance(info.value, ConnectionError)
    assert time.monotonic() - started < 2.0


def test_silent_server_fails_within_init_timeout(silent_url):
    started = time.monotonic()
    with pytest.raises((XclientTimeoutError, ServerUnavailableError)):
        ModelClient(silent_url, "text", init_timeout_s=1.0).infer_sample("x")
    assert time.monotonic() - started < 3.0


def test_wait_for_server_rides_out_nothing_and_times_out(dead_url):
    client = ModelClient(dead_url, "text")
    started = time.monotonic()
    with pytest.raises(ServerUnavailableError, match="not ready after 0.5 s"):
        client.wait_for_server(0.5)
    assert 0.4 < time.monotonic() - started < 2.5


def test_wait_for_server_and_model_on_a_live_server(url):
    with ModelClient(url, "text") as client:
        client.wait_for_server(5)
        client.wait_for_model(5)
        assert client.model_config.name == "text"
    with pytest.raises(ModelUnavailableError, match="not ready after 0.3 s"):
        ModelClient(url, "no_such_model").wait_for_model(0.3)


def test_slow_model_past_inference_timeout_raises_timeout(url):
    with ModelClient(url, "slow", inference_timeout_s=0.5) as client:
        started = time.monotonic()
        with pytest.raises(XclientTimeoutError, match="timed out") as info:
            client.infer_sample(delay_s=2.0)
        assert isinstance(info.value, TimeoutError)
        assert time.monotonic() - started < 1.5
    with ModelClient(url, "slow") as client:  # the server is still busy with the slow request: wait for it
        assert client.infer_sample(delay_s=0.0, x=[1.0])["y"].tolist() == [1.0]


def test_model_error_carries_the_server_message(url):
    with ModelClient(url, "failing") as client, pytest.raises(InferenceServerError) as info:
        client.infer_sample([1.0])
    assert "模型出错" in info.value.server_message
    assert "'failing'" in str(info.value) and info.value.model == "failing"


def test_decoupled_model_is_refused_pointing_to_the_decoupled_clients(url):
    with ModelClient(url, "stream") as client, pytest.raises(IncompatibleModelError, match="DecoupledModelClient"):
        client.infer_sample(3)


def test_config_is_fetched_once_and_a_given_config_never(url):
    calls: list[str] = []
    client = ModelClient(url, "text")
    count_calls(client, calls)
    for _ in range(3):
        client.infer_sample("x")
    assert client.model_config.name == "text" and calls.count("get_model_config") == 1
    given = ModelClient(url, "text", model_config=client.model_config)
    count_calls(given, calls)
    assert given.infer_sample("y")["UPPER"].tolist() == [b"Y"]
    assert calls.count("get_model_config") == 1
    client.close()
    given.close()


def test_config_is_the_same_from_both_protocols(triton_server):
    with ModelClient(triton_server.http_url, "identity") as h, ModelClient(triton_server.grpc_url, "identity") as g:
        assert h.model_config == g.model_config
        assert len(h.model_config.inputs) == 13 and h.model_config.max_batch_size == 8


def test_constructor_does_no_io_and_lazy_init_false_initializes_on_enter(dead_url, url):
    client = ModelClient(dead_url, "text")  # nothing listens: constructing must still work
    assert repr(client).startswith("ModelClient(")
    with pytest.raises(ModelUnavailableError), ModelClient(url, "no_such_model", lazy_init=False):
        pytest.fail("entering should have failed")


def test_closed_client_refuses_calls_and_closing_twice_is_fine(url):
    client = ModelClient(url, "text")
    assert client.infer_sample("a")["LENGTH"].tolist() == [1]
    client.close()
    client.close()
    with pytest.raises(ClientClosedError, match="closed"):
        client.infer_sample("a")
    with pytest.raises(ClientClosedError):
        _ = client.model_config


def test_per_call_parameters_reach_the_model(url):
    with ModelClient(url, "params") as client:
        out = client.infer_sample([1.0], parameters={"temperature": 0.5, "语言": "中文", "flag": True, "n": 3})
        assert json.loads(out["parameters"][0]) == {"temperature": 0.5, "语言": "中文", "flag": True, "n": 3}


def test_one_client_is_safe_to_share_between_threads(url):
    results: list[list[int]] = []
    errors: list[BaseException] = []
    with ModelClient(url, "text") as client:

        def work(i: int) -> None:
            try:
                for j in range(5):
                    results.append(client.infer_sample("字" * (i + j + 1))["LENGTH"].tolist())
            except BaseException as e:
                errors.append(e)

        threads = [threading.Thread(target=work, args=(i,)) for i in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert not errors and len(results) == 30


def test_every_error_is_an_xclient_error_and_logs_stay_quiet(url, caplog):
    caplog.set_level(logging.DEBUG)
    with ModelClient(url, "failing") as client, pytest.raises(XclientError):
        client.infer_sample([1.0])
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_readiness_is_checked_once_even_after_wait_for_server(url):
    seen: list[str] = []
    with ModelClient(url, "text") as client:
        count_calls(client, seen)
        client.infer_sample("a")
        client.wait_for_server(5)
        client.infer_sample("b")
    assert seen.count("is_model_ready") == 1 and seen.count("get_model_config") == 1


def test_short_lived_threads_leave_no_http_clients_behind(triton_server):
    with ModelClient(triton_server.http_url, "text") as client:
        for _ in range(10):
            thread = threading.Thread(target=client.infer_sample, args=("线程",))
            thread.start()
            thread.join()
        client.infer_sample("main")
        open_connections = list(client._transport().wire._open)
    assert len(open_connections) == 1  # the main thread's: each worker's closed when the worker ended


def test_failed_enter_with_lazy_init_false_closes_the_client(url):
    client = ModelClient(url, "no_such_model", lazy_init=False)
    with pytest.raises(ModelUnavailableError), client:
        pass
    with pytest.raises(ClientClosedError):
        client.infer_sample("x")


def test_retries_resend_only_what_never_reached_the_server(dead_url, silent_url):
    seen: list[str] = []
    client = ModelClient(dead_url, "text", retries=2, retry_backoff_s=0.01)
    count_calls(client, seen)
    with pytest.raises(ServerUnavailableError) as info:
        client.infer_sample("x")
    assert info.value.retryable and seen == ["get_model_config"] * 3  # the first try and 2 retries
    seen.clear()
    silent = ModelClient(silent_url, "text", retries=2, init_timeout_s=0.5)
    count_calls(silent, seen)
    with pytest.raises((XclientTimeoutError, ServerUnavailableError)) as info:
        silent.infer_sample("x")
    assert not info.value.retryable and len(seen) == 1  # it may have reached the server: no retry


def test_a_model_reloaded_with_a_new_config_is_picked_up(triton_server, protocol):
    from Xclient.client import ServerClient

    url = triton_server.url(protocol)
    with ServerClient(url) as server, ModelClient(url, "optional") as client:
        original = dict(client.model_config.raw)
        assert client.infer_batch(a=[[1.0]] * 6)["sum"].shape == (6, 1)
        server.unload_model("optional")
        with pytest.raises(ModelUnavailableError):
            client.infer_sample([1.0])
        server.load_model("optional", {**original, "max_batch_size": 4})
        try:
            with pytest.raises(XclientValueError, match="max_batch_size 4"):  # the new config, not a stale one
                client.infer_batch(a=[[1.0]] * 6)
            assert client.infer_batch(a=[[1.0]] * 4)["sum"].shape == (4, 1)
        finally:
            server.load_model("optional", original)
