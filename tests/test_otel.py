"""Xclient.otel: a CLIENT span per request, its W3C traceparent on the wire, GenAI spans for the LLM
classes, against the real local server (OpenTelemetry's SDK, in-memory exporter); and Triton's own
OpenTelemetry tracing joining the client's trace (its OTLP/HTTP export decoded by a tiny receiver)."""

from __future__ import annotations

import http.server
import json
import shutil
import threading
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

pytest.importorskip("opentelemetry.sdk")

from opentelemetry.sdk.trace import TracerProvider  # noqa: E402
from opentelemetry.sdk.trace.export import SimpleSpanProcessor  # noqa: E402
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter  # noqa: E402
from opentelemetry.trace import SpanKind, StatusCode  # noqa: E402

import Xclient.otel  # noqa: E402
from Xclient import exceptions as errors  # noqa: E402
from Xclient.client import DecoupledModelClient, ModelClient, _grpc_wire, _http_wire  # noqa: E402
from Xclient.server import LocalTritonServer  # noqa: E402

from .conftest import MODELS  # noqa: E402

QWEN = "Qwen2-0.5B-Instruct"


@pytest.fixture
def spans() -> Iterator[tuple[TracerProvider, InMemorySpanExporter]]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    Xclient.otel.instrument(provider)
    try:
        yield provider, exporter
    finally:
        Xclient.otel.uninstrument()


def traceparent(span: Any) -> str:
    context = span.get_span_context()
    return f"00-{context.trace_id:032x}-{context.span_id:016x}-{int(context.trace_flags):02x}"


@pytest.fixture
def sent_headers(monkeypatch) -> list[dict[str, str]]:
    """The headers (HTTP) or metadata (gRPC) each inference went out with."""
    sent: list[dict[str, str]] = []
    send, infer, stream = _http_wire.SyncWire.send, _grpc_wire.Stubs.infer, _grpc_wire.Stubs.stream

    def spy_send(self: Any, request: Any, timeout_s: float) -> Any:
        if request.path.endswith("/infer"):
            sent.append({k.lower(): v for k, v in request.headers.items()})
        return send(self, request, timeout_s)

    def spy_infer(self: Any, request: Any, *, timeout_s: float, metadata: Any) -> Any:
        sent.append(dict(metadata or ()))
        return infer(self, request, timeout_s=timeout_s, metadata=metadata)

    def spy_stream(self: Any, request: Any, *, metadata: Any) -> Any:
        sent.append(dict(metadata or ()))
        return stream(self, request, metadata=metadata)

    monkeypatch.setattr(_http_wire.SyncWire, "send", spy_send)
    monkeypatch.setattr(_grpc_wire.Stubs, "infer", spy_infer)
    monkeypatch.setattr(_grpc_wire.Stubs, "stream", spy_stream)
    return sent


def test_every_request_makes_a_client_span_and_sends_its_traceparent(url, protocol, spans, sent_headers):
    provider, exporter = spans
    tracer = provider.get_tracer("test")
    with tracer.start_as_current_span("用户的操作") as outer, ModelClient(url, "identity") as client:
        client.infer_sample(BYTES=["你好"])
    request_span = next(s for s in exporter.get_finished_spans() if s.name == "infer identity")
    assert request_span.kind is SpanKind.CLIENT
    assert request_span.parent.span_id == outer.get_span_context().span_id
    assert request_span.context.trace_id == outer.get_span_context().trace_id
    attributes = dict(request_span.attributes)
    assert attributes["triton.model.name"] == "identity"
    assert attributes["triton.request.id"] == client.last_request_info.request_id
    assert attributes["rpc.system"] == protocol and attributes["server.address"] == "127.0.0.1"
    assert attributes["xclient.responses"] == 1
    (headers,) = sent_headers
    assert headers["traceparent"] == traceparent(request_span)


def test_a_stream_is_one_span_with_its_responses_and_its_traceparent(triton_server, spans, sent_headers):
    _, exporter = spans
    with DecoupledModelClient(triton_server.url("grpc"), "stream") as client:
        assert len(list(client.infer_sample(n=np.array([3], dtype=np.int32)))) == 3
    (span,) = exporter.get_finished_spans()
    assert span.name == "stream stream" and span.attributes["xclient.responses"] >= 3
    assert sent_headers[-1]["traceparent"] == traceparent(span)


def test_a_failed_request_span_has_the_error_status_and_type(url, spans):
    _, exporter = spans
    with ModelClient(url, "failing") as client, pytest.raises(errors.InferenceServerError):
        client.infer_sample(np.zeros(2, dtype=np.float32))
    (span,) = exporter.get_finished_spans()
    assert span.status.status_code is StatusCode.ERROR
    assert span.attributes["error.type"] == "InferenceServerError"


@pytest.mark.parametrize("capture_prompts", [False, True])
def test_chat_model_spans_follow_the_genai_conventions_and_keep_prompts_out(url, spans, capture_prompts):
    from Xclient.llms import ChatMetaLM

    provider, exporter = spans
    Xclient.otel.instrument(provider, capture_prompts=capture_prompts)
    message = ChatMetaLM(server_url=url, model=QWEN, max_tokens=8).invoke("秘密的问题")
    finished = exporter.get_finished_spans()
    chat = next(s for s in finished if s.name == f"chat {QWEN}")
    request = next(s for s in finished if s.name.endswith(QWEN) and s is not chat)
    assert chat.kind is SpanKind.CLIENT and request.parent.span_id == chat.context.span_id
    attributes = dict(chat.attributes)
    assert attributes["gen_ai.operation.name"] == "chat"
    assert attributes["gen_ai.request.model"] == QWEN
    assert attributes["gen_ai.response.finish_reasons"] == (message.response_metadata["finish_reason"],)
    assert attributes["gen_ai.response.id"] == message.response_metadata["request_info"]["request_id"]
    usage = message.usage_metadata
    if usage is not None:
        assert attributes["gen_ai.usage.input_tokens"] == usage["input_tokens"]
        assert attributes["gen_ai.usage.output_tokens"] == usage["output_tokens"]
    else:
        assert "gen_ai.usage.output_tokens" not in attributes  # not reported: never guessed
    everything = json.dumps([dict(s.attributes) for s in finished], ensure_ascii=False)
    assert ("秘密的问题" in everything) is capture_prompts


def test_uninstrument_stops_tracing(url, spans):
    _, exporter = spans
    Xclient.otel.uninstrument()
    with ModelClient(url, "identity") as client:
        client.infer_sample(BYTES=["你好"])
    assert exporter.get_finished_spans() == ()
    assert not Xclient.otel.is_instrumented()


class _Receiver(http.server.BaseHTTPRequestHandler):
    """An OTLP/HTTP traces endpoint: keeps each span (trace id, span id, parent, name). Triton's C++
    exporter posts OTLP/JSON (ids in hex)."""

    received: list[tuple[str, str, str, str]] = []
    protocol_version = "HTTP/1.1"  # keep-alive: the exporter reuses its connection

    def do_POST(self) -> None:  # noqa: N802 (http.server's name)
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))  # OTLP/JSON
        for resource in body.get("resourceSpans", ()):
            for scope in resource.get("scopeSpans", ()):
                for span in scope.get("spans", ()):
                    ids = [span.get(key, "").lower() for key in ("traceId", "spanId", "parentSpanId")]
                    self.received.append((*ids, span.get("name", "")))  # type: ignore[arg-type]
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.mark.timeout(120)
def test_triton_joins_the_clients_trace(tmp_path, spans):
    """Triton started with ``--trace-config mode=opentelemetry`` exports its spans of our requests over
    OTLP/HTTP; the root one is a child of the client's request span, in the same trace."""
    _, exporter = spans
    receiver = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
    _Receiver.received = []
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    shutil.copytree(MODELS / "identity", tmp_path / "identity")
    args = [
        "--trace-config=mode=opentelemetry",
        "--trace-config=rate=1",
        "--trace-config=level=TIMESTAMPS",
        f"--trace-config=opentelemetry,url=http://127.0.0.1:{receiver.server_port}/v1/traces",
        "--trace-config=opentelemetry,bsp_schedule_delay=50",
        "--trace-config=opentelemetry,bsp_max_export_batch_size=1",
    ]
    try:
        with LocalTritonServer(tmp_path, extra_args=args) as server:
            # Triton's batch exporter can drop an export (seen once in CI: the first request's spans never
            # came), so a protocol whose trace has not come back joined sends again, up to 5 times.
            sent: dict[str, set[tuple[str, str]]] = {"http": set(), "grpc": set()}  # (trace id, span id)

            def joined(protocol: str) -> set[tuple[str, str]]:
                return sent[protocol] & {(t, parent) for t, _, parent, _ in _Receiver.received}

            for _ in range(5):
                for protocol in ("http", "grpc"):
                    if joined(protocol):
                        continue
                    before = set(exporter.get_finished_spans())
                    with ModelClient(server.url(protocol), "identity") as client:
                        client.infer_sample(BYTES=["跟踪"])
                    (span,) = [s for s in exporter.get_finished_spans() if s not in before]
                    assert span.name == "infer identity"
                    sent[protocol].add((f"{span.context.trace_id:032x}", f"{span.context.span_id:016x}"))
                deadline = time.monotonic() + 5
                while time.monotonic() < deadline and not all(map(joined, sent)):
                    time.sleep(0.1)
                if all(map(joined, sent)):
                    break
            assert all(map(joined, sent)), (_Receiver.received, sent)
    finally:
        receiver.shutdown()
        receiver.server_close()
