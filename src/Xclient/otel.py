"""OpenTelemetry traces of every Xclient request, opt in: ``Xclient.otel.instrument()``.

Once instrumented (the ``otel`` extra: ``pip install 'llmops-xclient[otel]'``, plus an SDK and
exporter of your choice), every request of every model client makes a CLIENT span and sends W3C
``traceparent`` / ``tracestate`` with it (HTTP headers, gRPC metadata), so Triton's own tracing
(``--trace-config mode=opentelemetry``) joins the same trace. ChatMetaLM and MetaLM add a parent span
per call that follows the GenAI semantic conventions (``gen_ai.operation.name``,
``gen_ai.request.model``, ``gen_ai.usage.input_tokens`` / ``output_tokens``,
``gen_ai.response.finish_reasons``). Prompt text is never recorded unless ``capture_prompts=True``.

Explicit rather than automatic: without :func:`instrument`, Xclient never imports ``opentelemetry``
and a request pays nothing for it (one check of an empty list).
"""

from __future__ import annotations

import json
import urllib.parse
from typing import Any

from .client._observe import Generation, RequestInfo, add_observer, current_generation, remove_observer
from .exceptions import XclientError

__all__ = ["instrument", "is_instrumented", "uninstrument"]

_INSTALLED: list[_Tracer] = []


def instrument(tracer_provider: Any = None, *, capture_prompts: bool = False) -> None:
    """Trace every request from now on, with ``tracer_provider`` (default: the global one, as set
    by ``opentelemetry.trace.set_tracer_provider``). Calling it again replaces the settings."""
    try:
        from opentelemetry import trace
    except ImportError as e:
        raise XclientError(
            "Xclient.otel needs OpenTelemetry's API: pip install 'llmops-xclient[otel]' (and an SDK)"
        ) from e
    from . import __version__

    uninstrument()
    tracer = _Tracer(trace.get_tracer("Xclient", __version__, tracer_provider=tracer_provider), capture_prompts)
    _INSTALLED.append(tracer)
    add_observer(tracer)


def uninstrument() -> None:
    """Stop tracing (requests in flight still end their spans)."""
    while _INSTALLED:
        remove_observer(_INSTALLED.pop())


def is_instrumented() -> bool:
    return bool(_INSTALLED)


class _Trace:
    """What a traced request carries: its span and the headers that propagate it."""

    __slots__ = ("span", "headers")

    def __init__(self, span: Any, headers: dict[str, str]) -> None:
        self.span = span
        self.headers = headers


class _Tracer:
    """The observer: a span per request (child of the LLM call's span, or of the current one)."""

    def __init__(self, tracer: Any, capture_prompts: bool) -> None:
        from opentelemetry import propagate, trace
        from opentelemetry.trace import SpanKind, Status, StatusCode

        self._tracer = tracer
        self._capture_prompts = capture_prompts
        self._trace = trace
        self._propagate = propagate
        self._client = SpanKind.CLIENT
        self._error = Status(StatusCode.ERROR)

    def started(self, info: RequestInfo) -> None:
        generation = current_generation()
        parent = None
        if generation is not None and generation._trace is not None:
            parent = self._trace.set_span_in_context(generation._trace)
        span = self._tracer.start_span(
            f"{'stream' if info.stream else 'infer'} {info.model}",
            context=parent,
            kind=self._client,
            attributes={
                "rpc.system": "grpc" if info.protocol == "grpc" else "http",
                "triton.model.name": info.model,
                "triton.model.version": info.version or "",
                "triton.request.id": info.request_id,
            },
        )
        headers: dict[str, str] = {}
        self._propagate.inject(headers, context=self._trace.set_span_in_context(span, parent))
        info._trace = _Trace(span, headers)

    def finished(self, info: RequestInfo) -> None:
        trace = info._trace
        if trace is None:
            return
        span = trace.span
        parts = urllib.parse.urlsplit(info.url)
        attributes: dict[str, Any] = {
            "server.address": parts.hostname or "",
            "server.port": parts.port or 0,
            "xclient.responses": info.responses,
            "xclient.attempts": info.attempts,
        }
        if info.first_response_ns:
            attributes["xclient.time_to_first_response_s"] = (info.first_response_ns - info.start_ns) / 1e9
        if info.cancelled:
            attributes["xclient.cancelled"] = True
        span.set_attributes(attributes)
        if info.error is not None:
            span.set_attribute("error.type", info.error)
            span.set_status(self._error)
        span.end(end_time=None)

    def generation_started(self, generation: Generation) -> None:
        attributes: dict[str, Any] = {
            "gen_ai.operation.name": generation.operation,
            "gen_ai.request.model": generation.model,
            "gen_ai.provider.name": "triton",
        }
        if self._capture_prompts and generation.prompt is not None:
            message = {"role": "user", "parts": [{"type": "text", "content": generation.prompt}]}
            attributes["gen_ai.input.messages"] = json.dumps([message], ensure_ascii=False)
        generation._trace = self._tracer.start_span(
            f"{generation.operation} {generation.model}", kind=self._client, attributes=attributes
        )

    def generated(self, info: RequestInfo | None, generation: Generation) -> None:
        span = generation._trace
        if span is None:
            return
        attributes: dict[str, Any] = {"gen_ai.response.model": generation.model}
        usage = generation.usage or {}
        if usage.get("input_tokens") is not None:
            attributes["gen_ai.usage.input_tokens"] = usage["input_tokens"]
        if usage.get("output_tokens") is not None:
            attributes["gen_ai.usage.output_tokens"] = usage["output_tokens"]
        if generation.finish_reason is not None:
            attributes["gen_ai.response.finish_reasons"] = (generation.finish_reason,)
        if info is not None:
            attributes["gen_ai.response.id"] = info.request_id
            parts = urllib.parse.urlsplit(info.url)
            attributes["server.address"] = parts.hostname or ""
            attributes["server.port"] = parts.port or 0
        span.set_attributes(attributes)
        if generation.error is not None:
            span.set_attribute("error.type", generation.error)
            span.set_status(self._error)
        span.end()
