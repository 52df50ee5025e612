"""The gateway's Prometheus metrics, in a registry of its own (one per app: two apps in one process do
not collide): requests, latency, time to the first streamed token, tokens, and what is in flight."""

from __future__ import annotations

import asyncio
import contextlib

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)

CONTENT_TYPE = CONTENT_TYPE_LATEST


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "xclient_gateway_requests",
            "Requests answered, by route, model and HTTP status",
            ["route", "model", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "xclient_gateway_request_duration_seconds",
            "Time from the request to the end of its answer (the last event of a stream)",
            ["route", "model"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.first_token = Histogram(
            "xclient_gateway_time_to_first_token_seconds",
            "Time from a streamed request to its first text",
            ["route", "model"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.tokens = Counter(
            "xclient_gateway_tokens",
            "Tokens as the models report them (prompt and completion)",
            ["model", "type"],
            registry=self.registry,
        )
        self.in_flight = Gauge(
            "xclient_gateway_generations_in_flight", "Triton generations running now", registry=self.registry
        )
        self.tasks = Gauge(
            "xclient_gateway_asyncio_tasks", "asyncio tasks of the gateway's loop", registry=self.registry
        )
        self._loop: asyncio.AbstractEventLoop | None = None
        self.tasks.set_function(self._count_tasks)

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        """The loop whose tasks are counted (the server's)."""
        self._loop = loop

    def _count_tasks(self) -> float:
        if self._loop is None:
            return 0.0
        with contextlib.suppress(RuntimeError):  # the set changed while being read
            return float(len(asyncio.all_tasks(self._loop)))
        return float("nan")

    def count_tokens(self, model: str, usage: dict[str, int] | None) -> None:
        if usage:
            self.tokens.labels(model, "prompt").inc(usage["prompt_tokens"])
            self.tokens.labels(model, "completion").inc(usage["completion_tokens"])

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
