"""Prometheus metrics of every Xclient request, opt in: ``Xclient.metrics.enable()``.

With the ``prometheus`` extra (``pip install 'llmops-xclient[prometheus]'``), :func:`enable` registers
one set of series in a ``prometheus_client`` registry (the default one unless given), fed by every
model client's finished requests (the same :class:`~Xclient.client.RequestInfo` the ``on_request``
hook gets) and by ChatMetaLM / MetaLM's token usage. Labels: ``model``, ``server`` (the replica that
served, its normalized URL) and, for errors, ``error`` (the error's type name).

- ``xclient_requests_total``: finished requests (``protocol``: http or grpc);
- ``xclient_request_errors_total``: failed ones, by error type;
- ``xclient_request_duration_seconds``: latency, start to last response (histogram);
- ``xclient_time_to_first_response_seconds``: start to first response (for an LLM stream, the TTFT);
- ``xclient_response_gap_seconds``: between consecutive responses of a stream (an LLM's ITL);
- ``xclient_tokens_total``: tokens as the model reported them (``type``: input or output).

Calling :func:`enable` twice with the same registry returns the same collector: series are
registered once. The gateway's own ``/metrics`` series (``xclient_gateway_*``) are separate.
"""

from __future__ import annotations

import threading
from typing import Any

from .client._observe import Generation, RequestInfo, add_observer, remove_observer
from .exceptions import XclientError

__all__ = ["Collector", "disable", "enable"]

_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
_GAP_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5)

_LOCK = threading.Lock()
_ENABLED: dict[int, Collector] = {}  # by id of the registry: one set of series per registry


def enable(registry: Any = None) -> Collector:
    """Count every request from now on, in ``registry`` (default: ``prometheus_client.REGISTRY``).
    Idempotent per registry: the second call returns the first call's collector."""
    try:
        import prometheus_client
    except ImportError as e:
        raise XclientError("Xclient.metrics needs prometheus_client: pip install 'llmops-xclient[prometheus]'") from e
    registry = prometheus_client.REGISTRY if registry is None else registry
    with _LOCK:
        collector = _ENABLED.get(id(registry))
        if collector is None:
            collector = _ENABLED[id(registry)] = Collector(registry)
        add_observer(collector)
        return collector


def disable(registry: Any = None) -> None:
    """Stop counting into ``registry`` (default: every registry); its series stay registered, so a
    later :func:`enable` goes on counting in them."""
    with _LOCK:
        for collector in list(_ENABLED.values()):
            if registry is None or collector.registry is registry:
                remove_observer(collector)


class Collector:
    """The series of one registry, and the observer that feeds them."""

    def __init__(self, registry: Any) -> None:
        from prometheus_client import Counter, Histogram

        self.registry = registry
        labels = ["model", "server"]
        self.requests = Counter("xclient_requests", "Finished requests", [*labels, "protocol"], registry=registry)
        self.errors = Counter(
            "xclient_request_errors", "Failed requests, by error type", [*labels, "error"], registry=registry
        )
        self.duration = Histogram(
            "xclient_request_duration_seconds",
            "Start of a request to its last response (or its failure)",
            labels,
            buckets=_BUCKETS,
            registry=registry,
        )
        self.first_response = Histogram(
            "xclient_time_to_first_response_seconds",
            "Start of a request to its first response (an LLM stream: time to the first token)",
            labels,
            buckets=_BUCKETS,
            registry=registry,
        )
        self.gaps = Histogram(
            "xclient_response_gap_seconds",
            "Between consecutive responses of a stream (an LLM: inter-token latency)",
            labels,
            buckets=_GAP_BUCKETS,
            registry=registry,
        )
        self.tokens = Counter(
            "xclient_tokens", "Tokens as the model reported them", [*labels, "type"], registry=registry
        )

    def started(self, info: RequestInfo) -> None:
        pass

    def finished(self, info: RequestInfo) -> None:
        model, server = info.model, info.url
        self.requests.labels(model, server, info.protocol).inc()
        if info.error is not None:
            self.errors.labels(model, server, info.error).inc()
        latency = info.latency_s
        if latency is not None:
            self.duration.labels(model, server).observe(latency)
        first = info.time_to_first_response_s
        if first is not None:
            self.first_response.labels(model, server).observe(first)
        if info.gaps_s:
            gaps = self.gaps.labels(model, server)
            for gap in info.gaps_s:
                gaps.observe(gap)

    def generated(self, info: RequestInfo | None, generation: Generation) -> None:
        usage = generation.usage
        if not usage:
            return  # the model reported no counts: nothing is guessed
        server = info.url if info is not None else ""
        for kind in ("input", "output"):
            count = usage.get(f"{kind}_tokens")
            if count:
                self.tokens.labels(generation.model, server, kind).inc(count)
