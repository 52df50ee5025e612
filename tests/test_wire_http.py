"""Xclient's own HTTP layer (the KServe v2 REST coding in ``_rest``, the wires in ``_http_wire``), against the
real server: error bodies, the generate extension's SSE-framed refusals, a gRPC port reached over HTTP, the
names in messages, TLS files checked at construction, and nothing printed at exit by unclosed asyncio clients.
"""

from __future__ import annotations

import asyncio
import json
import pathlib
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from Xclient import AsyncioDecoupledModelClient, MetaLMEmbeddings, MetaLMRerank
from Xclient.client import (
    AsyncioModelClient,
    AsyncioServerClient,
    DecoupledModelClient,
    FuturesModelClient,
    ModelClient,
    ServerClient,
)
from Xclient.client import _rest as rest
from Xclient.client._http_wire import RequestNotSentError
from Xclient.client._transport import CallContext, translate_error
from Xclient.client._urls import parse_url
from Xclient.exceptions import (
    InferenceServerError,
    ModelUnavailableError,
    ServerUnavailableError,
    XclientValueError,
)
from Xclient.llms import ChatMetaLM

ROOT = pathlib.Path(__file__).parent.parent


# -- the coding, without a server ---------------------------------------------------------------------------


def test_infer_request_is_a_json_header_then_the_raw_buffers_of_each_input():
    inputs = {"TEXT": np.array([["中文".encode()]], dtype=object), "N": np.array([[1, 2]], dtype=np.int32)}
    request = rest.infer("模型", "2", inputs, {"温度": 0.5}, {"Authorization": "Bearer k"})
    length = int(request.headers["Inference-Header-Content-Length"])
    header = json.loads(request.body[:length])
    assert request.path == "/v2/models/%E6%A8%A1%E5%9E%8B/versions/2/infer"
    assert header["parameters"] == {"温度": 0.5, "binary_data_output": True}
    assert [(t["name"], t["shape"], t["datatype"]) for t in header["inputs"]] == [
        ("TEXT", [1, 1], "BYTES"),
        ("N", [1, 2], "INT32"),
    ]
    text_size = header["inputs"][0]["parameters"]["binary_data_size"]
    assert request.body[length : length + text_size] == len("中文".encode()).to_bytes(4, "little") + "中文".encode()
    assert request.body[length + text_size :] == np.array([1, 2], dtype="<i4").tobytes()


@pytest.mark.parametrize("name", ["priority", "binary_data_output", "triton_x"])
def test_reserved_parameters_are_refused_before_anything_is_sent(name):
    with pytest.raises(XclientValueError, match=name):
        rest.infer("m", "", {}, {name: 1}, None)


def test_a_request_that_could_not_be_written_is_a_retryable_server_unavailable_error():
    ctx = CallContext(parse_url("http://127.0.0.1:1"), "text")
    error = translate_error(RequestNotSentError("the request could not be written to 127.0.0.1:1"), ctx, "inference", 1)
    assert isinstance(error, ServerUnavailableError) and error.retryable


# -- against the server ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["ModelClient", "AsyncioModelClient"])
def test_an_unknown_model_is_named_exactly_as_given_on_both_protocols(url, kind):
    name = "No_Such_Model-实验"
    with pytest.raises(ModelUnavailableError) as info:
        if kind == "ModelClient":
            with ModelClient(url, name) as client:
                client.infer_sample("x")
        else:

            async def call() -> None:
                async with AsyncioModelClient(url, name) as client:
                    await client.infer_sample("x")

            asyncio.run(call())
    assert f"Model {name!r} on " in str(info.value)
    assert name.lower() not in str(info.value)


def test_error_bodies_become_typed_errors_with_the_server_message(triton_server):
    with ServerClient(triton_server.http_url) as server, pytest.raises(ModelUnavailableError) as unknown:
        server.model_config("no_such_model")
    assert "unknown model" in (unknown.value.server_message or "").lower()
    with ModelClient(triton_server.http_url, "text") as client:
        transport = client._transport()  # past the client's own checks: the server is what refuses
        op = transport.calls.infer(
            "text", "", {"TEXT": np.array([[1]], dtype=np.int32)}, None, timeout_s=5, headers=None
        )
        with pytest.raises(Exception) as raw:
            transport.run(op, 5)
    error = translate_error(raw.value, CallContext(parse_url(triton_server.http_url), "text"), "inference", 5)
    assert type(error) is InferenceServerError and error.status == "400"
    assert "TEXT" in (error.server_message or "") and "{" not in (error.server_message or "")[:1]


def test_a_generate_stream_refused_before_any_response_reads_as_the_plain_server_message(triton_server):
    messages = {}
    for protocol in ("http", "grpc"):
        llm = ChatMetaLM(server_url=triton_server.url(protocol), model="vllm_failing")
        with pytest.raises(InferenceServerError) as info:
            llm.invoke("你好")
        messages[protocol] = info.value.server_message or ""
    http = messages["http"]
    assert "生成失败" in http and not http.startswith("data:") and '{"error"' not in http
    assert messages["grpc"] in http  # the same text (Triton's HTTP side prefixes "Error generating stream: ")


@pytest.mark.parametrize("kind", ["ModelClient", "AsyncioModelClient", "ServerClient"])
def test_an_http_client_at_a_grpc_port_says_to_use_grpc(triton_server, kind):
    address = triton_server.grpc_url.removeprefix("grpc://")
    url = f"http://{address}"
    with pytest.raises(ServerUnavailableError) as info:
        if kind == "ModelClient":
            with ModelClient(url, "text", init_timeout_s=5) as client:
                client.infer_sample("x")
        elif kind == "ServerClient":
            with ServerClient(url, timeout_s=5) as server:
                server.metadata()
        else:

            async def call() -> None:
                async with AsyncioModelClient(url, "text", init_timeout_s=5) as client:
                    await client.infer_sample("x")

            asyncio.run(call())
    assert "HTTP/2 (gRPC?)" in str(info.value) and f"use grpc://{address}" in str(info.value)
    assert not info.value.retryable


CLIENTS = [ModelClient, FuturesModelClient, AsyncioModelClient, DecoupledModelClient, AsyncioDecoupledModelClient]


@pytest.mark.parametrize("option", ["ca_certs", "client_cert", "client_key"])
@pytest.mark.parametrize("protocol", ["https", "grpcs"])
def test_a_tls_file_that_does_not_exist_is_refused_at_construction_naming_option_and_file(tmp_path, protocol, option):
    existing = tmp_path / "存在.pem"
    existing.write_text("not read at construction")
    missing = str(tmp_path / "缺失.pem")
    options = {"client_cert": str(existing)} if option == "client_key" else {}
    options[option] = missing
    url = f"{protocol}://127.0.0.1:1"
    makers = [
        lambda c=c: c(url, "text", **options) for c in CLIENTS if protocol == "grpcs" or "Decoupled" not in c.__name__
    ]
    makers += [lambda: ServerClient(url, **options), lambda: AsyncioServerClient(url, **options)]
    for make in makers:
        with pytest.raises(XclientValueError) as info:
            make()
        assert option in str(info.value) and missing in str(info.value)


EXIT_QUIETLY = """
    import asyncio, sys
    from Xclient import MetaLMEmbeddings
    from Xclient.client import AsyncioModelClient

    url = sys.argv[1]
    emb = MetaLMEmbeddings(model="bge-m3-v", base_url=url)
    assert len(asyncio.run(emb.aembed_documents(["你好", "世界"]))) == 2

    async def unclosed():
        client = AsyncioModelClient(url, "text")
        return (await client.infer_sample("没关"))["LENGTH"].tolist()

    assert asyncio.run(unclosed()) == [2]
    kept = AsyncioModelClient(url, "text")  # alive until the interpreter exits
    assert asyncio.run(kept.infer_sample("留着"))["LENGTH"].tolist() == [2]
    print("ok")
"""


def test_unclosed_asyncio_clients_over_http_print_nothing_at_exit(triton_server):
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(EXIT_QUIETLY), triton_server.http_url],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr
    assert result.stderr == ""


def test_embeddings_and_rerank_async_match_sync_over_http_with_no_unraisable_exception(triton_server):
    url = triton_server.http_url
    emb = MetaLMEmbeddings(model="bge-m3-v", base_url=url)
    assert np.allclose(asyncio.run(emb.aembed_query("你好")), emb.embed_query("你好"), atol=1e-5)
    rerank = MetaLMRerank(model="bge-reranker-v2-m3", base_url=url)
    from langchain_core.documents import Document

    docs = [Document(page_content="北京是中国的首都"), Document(page_content="猫")]
    sync = [d.metadata["relevance_score"] for d in rerank.compress_documents(docs, "中国的首都")]
    asynced = [d.metadata["relevance_score"] for d in asyncio.run(rerank.acompress_documents(docs, "中国的首都"))]
    assert np.allclose(sync, asynced, atol=1e-5)
