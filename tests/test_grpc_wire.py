"""The gRPC wire layer: one request coding for unary calls and streams, the per-config request plan, the one
check of request parameters (every client, both protocols), reconnecting after a server restart, and a gRPC
URL given Triton's HTTP port.

Against a server of this module's own (two small models), which the restart tests stop and start on the same
ports, so the session's server is never disturbed.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from Xclient.client import ModelConfig
from Xclient.client._coding import RESERVED_PARAMETERS, prepare_request
from Xclient.client._grpc_wire import EMPTY_FINAL_PARAMETER, build_request, read_outputs
from Xclient.exceptions import ModelUnavailableError, ServerUnavailableError, XclientValueError
from Xclient.server import LocalTritonServer

from .conftest import MODELS
from .drivers import STREAMING, UNARY, Driver, every_client

PARAMS_CONFIG = {
    "name": "params",
    "max_batch_size": 8,
    "input": [{"name": "x", "data_type": "TYPE_FP32", "dims": [-1]}],
    "output": [{"name": "parameters", "data_type": "TYPE_STRING", "dims": [1]}],
}
STREAM_CONFIG = {
    "name": "stream_empty_final",
    "max_batch_size": 8,
    "model_transaction_policy": {"decoupled": True},
    "input": [{"name": "n", "data_type": "TYPE_INT32", "dims": [1]}],
    "output": [{"name": "i", "data_type": "TYPE_INT32", "dims": [1]}],
}
#: Every gRPC client, the unary ones on ``params`` and the streaming ones on ``stream_empty_final``.
GRPC_CLIENTS = [*UNARY, *STREAMING]
#: Far longer than a reconnect takes: a failure must come from the fault, not from the deadline.
DEADLINE_S = 30.0
#: How soon a failure that needs no waiting must come: generous, for a loaded machine.
PROMPTLY_S = 10.0


@pytest.fixture(scope="module")
def server() -> Iterator[LocalTritonServer]:
    with LocalTritonServer(model_repository=MODELS, models=["params", "stream_empty_final"]) as server:
        yield server


@pytest.fixture
def live(server: LocalTritonServer) -> Iterator[LocalTritonServer]:
    """The server, up; brought back after the test if the test left it down."""
    server.start()
    yield server
    server.start()


def driver(kind: str, url: str, **options: Any) -> Driver:
    return Driver(kind, url, "stream_empty_final" if kind in STREAMING else "params", **options)


def works(client: Driver, parameters: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """One quick request; the parameters the model saw (it echoes them)."""
    if client.streaming:
        outputs = client.infer(n=1, parameters=parameters)
        assert [out["i"].tolist() for out in outputs] == [[0]]
    else:
        outputs = client.infer(x=[1.0], parameters=parameters)
    return [json.loads(out["parameters"][0]) for out in outputs]


# -- one request coding, one plan per config ---------------------------------------------------------


def test_the_request_plan_is_made_once_per_config_and_unary_calls_and_streams_start_from_its_templates():
    config = ModelConfig.from_dict({**PARAMS_CONFIG, "input": [*PARAMS_CONFIG["input"], _text_input()]})
    plan = config.plan
    assert plan is config.plan and plan.datatypes == {"x": "FP32", "text": "BYTES"} and plan.outputs == ("parameters",)
    first = prepare_request(config, ([1.5, -2.0], "你好"), {}, batch=False)
    second = prepare_request(config, ([3.0], b"\xff"), {}, batch=False)
    assert first.inputs.plan is plan and second.inputs.plan is plan
    unary = build_request("params", "1", first.inputs, {"标签": "中文"})
    template = plan.templates[("grpc", "params", "1", False)]
    assert build_request("params", "1", second.inputs, None) is not template  # a copy of it, filled
    assert plan.templates[("grpc", "params", "1", False)] is template  # made once
    stream = build_request("params", "1", first.inputs, None, stream=True)
    assert stream.parameters[EMPTY_FINAL_PARAMETER].bool_param and EMPTY_FINAL_PARAMETER not in unary.parameters
    assert (unary.model_name, unary.model_version, unary.parameters["标签"].string_param) == ("params", "1", "中文")
    tensors = [(t.name, t.datatype, list(t.shape)) for t in unary.inputs]
    assert tensors == [("x", "FP32", [1, 2]), ("text", "BYTES", [1, 1])]
    assert unary.raw_input_contents[0] == np.array([[1.5, -2.0]], dtype=np.float32).tobytes()
    assert unary.raw_input_contents[1] == len("你好".encode()).to_bytes(4, "little") + "你好".encode()


def test_a_response_is_read_into_numpy_from_its_raw_contents_bytes_deserialized():
    from tritonclient.grpc import service_pb2

    response = service_pb2.ModelInferResponse(model_name="m")
    response.outputs.add(name="y", datatype="FP16", shape=[2, 2])
    response.raw_output_contents.append(np.arange(4, dtype=np.float16).tobytes())
    response.outputs.add(name="text", datatype="BYTES", shape=[2])
    response.raw_output_contents.append(b"".join(len(b).to_bytes(4, "little") + b for b in ("中文".encode(), b"")))
    response.outputs.add(name="empty", datatype="INT64", shape=[0, 3])
    response.raw_output_contents.append(b"")
    outputs = read_outputs(response)
    assert outputs["y"].dtype == np.float16 and outputs["y"].tolist() == [[0, 1], [2, 3]]
    assert outputs["text"].tolist() == ["中文".encode(), b""] and outputs["empty"].shape == (0, 3)


@pytest.mark.parametrize("kind", ["ModelClient", "FuturesModelClient", "AsyncioModelClient"])
def test_grpc_inference_builds_no_infer_input_and_reads_no_infer_result(live, kind, monkeypatch):
    import tritonclient.grpc as grpcclient
    import tritonclient.grpc.aio as grpc_aio

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("tritonclient's InferInput / InferResult used for inference")

    for module in (grpcclient, grpc_aio):
        monkeypatch.setattr(module, "InferInput", refuse)
        monkeypatch.setattr(module, "InferResult", refuse)
    client = driver(kind, live.grpc_url)
    assert works(client, {"语言": "中文"}) == [{"语言": "中文"}]
    client.close()


# -- request parameters: one rule, every client, both protocols ---------------------------------------


@every_client
def test_reserved_and_malformed_parameters_are_refused_before_anything_is_sent(kind, protocol, dead_url):
    # Nothing listens on dead_url: a request that was sent would fail with ServerUnavailableError.
    config = STREAM_CONFIG if kind in STREAMING else PARAMS_CONFIG
    client = driver(kind, dead_url, model_config=config, ensure_model_is_ready=False)
    for name in sorted(RESERVED_PARAMETERS):
        with pytest.raises(XclientValueError, match=f"'{name}' cannot be set: Triton reserves it"):
            works(client, {name: 1})
    for bad, message in [
        ({"triton_enable_empty_final_response": False}, "the 'triton_' prefix is Triton's"),
        ({"列表": [1, 2]}, "'列表' must be a str, bool, int or float, got list"),
        ({"big": 2**63}, "out of range for an int64"),
        ({3: "x"}, "a parameter name is a non-empty str"),
    ]:
        with pytest.raises(XclientValueError, match=message):
            works(client, bad)
    client.close()


@every_client
def test_custom_parameters_reach_the_model_on_every_client(live, kind, protocol):
    client = driver(kind, live.url(protocol))
    parameters = {"请求": "中文", "n": 3, "ok": True, "t": 0.5}
    assert works(client, parameters) == [parameters]
    client.close()


# -- a server restart on the same ports ---------------------------------------------------------------


def test_every_grpc_client_calls_again_at_once_after_the_server_restarts(live):
    clients = {kind: driver(kind, live.grpc_url, inference_timeout_s=DEADLINE_S) for kind in GRPC_CLIENTS}
    assert all(works(client) for client in clients.values())
    live.restart()
    for kind, client in clients.items():  # at once, no retries: each call waits for its channel to reconnect
        assert works(client) == [{}], kind
        client.close()


def test_a_grpc_call_to_a_server_that_stays_down_fails_within_its_deadline_as_unavailable(live):
    clients = {kind: driver(kind, live.grpc_url, inference_timeout_s=2.0) for kind in GRPC_CLIENTS}
    assert all(works(client) for client in clients.values())  # connected
    live.kill()
    for kind, client in clients.items():
        with pytest.raises(ServerUnavailableError, match="failed to connect|Cannot reach") as info:
            works(client)
        assert info.value.model == client.client.model_name, kind
    live.start()
    for kind, client in clients.items():
        assert works(client) == [{}], kind
        client.close()


@pytest.mark.parametrize("kind", GRPC_CLIENTS)
def test_an_unknown_model_still_fails_at_once_on_a_channel_that_waits_for_reconnects(live, kind):
    config = {**(STREAM_CONFIG if kind in STREAMING else PARAMS_CONFIG), "name": "no_such_model"}
    options = {"model_config": config, "ensure_model_is_ready": False, "inference_timeout_s": DEADLINE_S}
    client = Driver(kind, live.grpc_url, "no_such_model", **options)
    client.wait(client.client.wait_for_server(5.0))  # the channel has answered: calls now wait for reconnects
    started = time.monotonic()
    with pytest.raises(ModelUnavailableError):
        works(client)
    assert time.monotonic() - started < PROMPTLY_S  # the server answered at once, not the deadline
    client.close()


# -- a gRPC URL given the HTTP port -------------------------------------------------------------------


@pytest.mark.parametrize("given_config", [False, True], ids=["config-fetched", "config-given"])
@pytest.mark.parametrize("kind", GRPC_CLIENTS)
def test_a_grpc_client_given_the_http_port_says_to_use_http(live, kind, given_config):
    http_port = live.http_url.rsplit(":", 1)[1]
    options: dict[str, Any] = {"init_timeout_s": 5.0, "inference_timeout_s": 5.0}
    if given_config:
        options.update(model_config=STREAM_CONFIG if kind in STREAMING else PARAMS_CONFIG, ensure_model_is_ready=False)
    client = driver(kind, f"grpc://127.0.0.1:{http_port}", **options)
    with pytest.raises(ServerUnavailableError, match=f"speaks HTTP, not gRPC: use http://127.0.0.1:{http_port}"):
        works(client)
    client.close()


def _text_input() -> dict[str, Any]:
    return {"name": "text", "data_type": "TYPE_STRING", "dims": [1]}


def test_one_module_builds_and_reads_every_grpc_inference_message():
    # The duplicates tool finds copies after the fact; this pins the rule itself: the protobuf of an
    # inference (unary or stream) is built and read in _grpc_wire.py only.
    import pathlib

    import Xclient

    root = pathlib.Path(Xclient.__file__).parent
    markers = ("ModelInferRequest(", "raw_input_contents", "raw_output_contents", "InferResult(")
    users = {
        path.relative_to(root).as_posix()
        for path in root.rglob("*.py")
        if any(marker in path.read_text(encoding="utf-8") for marker in markers)
    }
    assert users == {"client/_grpc_wire.py"}
