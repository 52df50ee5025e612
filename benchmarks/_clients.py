"""The requests every contender sends, and the raw ``tritonclient`` code that is the floor.

Every contender sends the same request to the same model: one short text to ``bench_echo``
(``TEXT`` BYTES [1], batched), or ``N`` = 100 to ``bench_stream``. The raw floor is what a careful
user of ``tritonclient`` writes: the client made once, an ``InferInput`` built by hand per request,
the output read with ``as_numpy``.
"""

from __future__ import annotations

import pathlib
import queue
import time
from collections.abc import Callable
from typing import Any

import numpy as np

MODELS = pathlib.Path(__file__).parent / "models"
ECHO_MODEL = "bench_echo"
STREAM_MODEL = "bench_stream"
EMBED_MODEL = "bench_embed"  # group 4's GPU-like stand-in for bge-m3
MINILM_EMBED_MODEL = "bge-m3-v"  # the demo bge-m3 (real MiniLM on CPU), group 4's table for information
LLM_MODEL = "Qwen2-0.5B-Instruct"
#: The same stand-in pacing its tokens (1 ms before each), as a model on an accelerator does (group 7).
PACED_LLM_MODEL = "Qwen2-0.5B-Instruct-paced"
UNKNOWN_MODEL = "no_such_model"
LARGE_MODEL = "bench_large"  # one FP32 tensor in, the same back (not batched)

TEXT = b"The quick brown fox jumps over the lazy dog."
SAMPLE = np.array([TEXT], dtype=object)  # one sample of bench_echo's input, dims [1]
BATCH = SAMPLE.reshape(1, 1)  # the same with the batch axis, as the raw floor sends it
LARGE = np.linspace(-1.0, 1.0, 1 << 20, dtype=np.float32)  # 4 MB of FP32
STREAM_RESPONSES = 100
STREAM_SAMPLE = np.array([STREAM_RESPONSES], dtype=np.int32)
FINAL_PARAMETER = "triton_final_response"


def address(url: str) -> str:
    """``host:port`` of a ``scheme://host:port`` URL (what ``tritonclient`` takes)."""
    return url.split("://", 1)[-1]


def tritonclient_module(protocol: str) -> Any:
    if protocol == "grpc":
        import tritonclient.grpc as module
    else:
        import tritonclient.http as module
    return module


def raw_sync_client(protocol: str, url: str) -> Any:
    return tritonclient_module(protocol).InferenceServerClient(address(url))


def raw_aio_client(protocol: str, url: str) -> Any:
    """``tritonclient``'s asyncio client; make it inside the event loop that will use it."""
    if protocol == "grpc":
        import tritonclient.grpc.aio as module
    else:
        import tritonclient.http.aio as module
    return module.InferenceServerClient(address(url))


def raw_echo_inputs(module: Any) -> list[Any]:
    """The echo request's input, built by hand (``module``: ``tritonclient.http`` or ``.grpc``)."""
    tensor = module.InferInput("TEXT", [1, 1], "BYTES")
    tensor.set_data_from_numpy(BATCH)
    return [tensor]


def raw_echo(protocol: str, client: Any, model: str = ECHO_MODEL) -> Callable[[], Any]:
    """One echo request with the raw sync client: the floor of the sync groups."""
    module = tritonclient_module(protocol)

    def call() -> Any:
        return client.infer(model, raw_echo_inputs(module)).as_numpy("ECHO")

    return call


def raw_large(protocol: str, client: Any) -> Callable[[], Any]:
    """One 4 MB FP32 request with the raw sync client: the floor of the large-tensor rows."""
    module = tritonclient_module(protocol)

    def call() -> Any:
        tensor = module.InferInput("X", list(LARGE.shape), "FP32")
        tensor.set_data_from_numpy(LARGE)  # HTTP: the binary extension (tritonclient's default)
        return client.infer(LARGE_MODEL, [tensor]).as_numpy("Y")

    return call


def raw_aio_echo(protocol: str, client: Any) -> Callable[[], Any]:
    """One echo request with the raw asyncio client (a coroutine function)."""
    module = tritonclient_module(protocol)

    async def call() -> Any:
        return (await client.infer(ECHO_MODEL, raw_echo_inputs(module))).as_numpy("ECHO")

    return call


class RawStream:
    """The raw streaming floor: one ``tritonclient.grpc`` client and one gRPC stream, started once
    with a callback (``start_stream``); each request goes out with ``async_stream_infer`` and its
    responses are read from the callback's queue until the one flagged final."""

    def __init__(self, url: str) -> None:
        import tritonclient.grpc as grpcclient

        self._grpc = grpcclient
        self._responses: queue.SimpleQueue[tuple[Any, Any]] = queue.SimpleQueue()
        self.client = grpcclient.InferenceServerClient(address(url))
        self.client.start_stream(callback=lambda result, error: self._responses.put((result, error)))

    def tensor(self, name: str, array: np.ndarray, datatype: str) -> Any:
        tensor = self._grpc.InferInput(name, list(array.shape), datatype)
        tensor.set_data_from_numpy(array)
        return tensor

    def stream(self, model: str, inputs: list[Any], output: str) -> tuple[float, float, int]:
        """Send one request; (time to first response, total time, responses with outputs)."""
        start = time.perf_counter()
        self.client.async_stream_infer(model, inputs, enable_empty_final_response=True)
        first, count = None, 0
        while True:
            result, error = self._responses.get(timeout=60)
            if error is not None:
                raise error
            response = result.get_response()
            if response.outputs:
                result.as_numpy(output)
                count += 1
                if first is None:
                    first = time.perf_counter() - start
            flag = response.parameters.get(FINAL_PARAMETER)
            if flag is not None and flag.bool_param:
                return (first if first is not None else float("nan")), time.perf_counter() - start, count

    def close(self) -> None:
        self.client.stop_stream()
        self.client.close()


class RawCallPerRequest:
    """Xclient's stream shape with no Xclient code: one ``ModelStreamInfer`` call per request on the
    channel of a ``tritonclient.grpc.aio`` client, the request protobuf built by hand. Against the
    floor (one long-lived stream), it shows what opening a call per request costs by itself."""

    def __init__(self, url: str) -> None:
        import tritonclient.grpc.aio as grpc_aio
        from tritonclient.grpc import service_pb2

        self._pb = service_pb2
        self.client = grpc_aio.InferenceServerClient(address(url))  # make it inside the event loop
        self._method = self.client._channel.unary_stream(
            "/inference.GRPCInferenceService/ModelStreamInfer",
            request_serializer=service_pb2.ModelInferRequest.SerializeToString,
            response_deserializer=service_pb2.ModelStreamInferResponse.FromString,
        )

    async def stream(self) -> tuple[float, float, int]:
        """One request to ``bench_stream``: (time to first response, total time, responses with outputs)."""
        from tritonclient.grpc import InferResult

        start = time.perf_counter()
        request = self._pb.ModelInferRequest(model_name=STREAM_MODEL)
        request.inputs.add(name="N", datatype="INT32", shape=[1])
        request.raw_input_contents.append(STREAM_SAMPLE.tobytes())
        request.parameters["triton_enable_empty_final_response"].bool_param = True
        first, count = None, 0
        async for response in self._method(request):
            if response.error_message:
                raise RuntimeError(response.error_message)
            if response.infer_response.outputs:
                InferResult(response.infer_response).as_numpy("TOKEN")
                count += 1
                first = first if first is not None else time.perf_counter() - start
            flag = response.infer_response.parameters.get(FINAL_PARAMETER)
            if flag is not None and flag.bool_param:
                break
        return (first if first is not None else float("nan")), time.perf_counter() - start, count
