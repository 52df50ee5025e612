"""Xclient.metrics: the Prometheus collector, fed by real requests to the local server and scraped
with prometheus_client's own exposition (generate_latest), parsed back."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest

prometheus_client = pytest.importorskip("prometheus_client")

from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

import Xclient.metrics  # noqa: E402
from Xclient import exceptions as errors  # noqa: E402
from Xclient.client import DecoupledModelClient, ModelClient  # noqa: E402

QWEN = "Qwen2-0.5B-Instruct"


@pytest.fixture
def registry() -> Iterator[object]:
    registry = prometheus_client.CollectorRegistry()
    Xclient.metrics.enable(registry)
    try:
        yield registry
    finally:
        Xclient.metrics.disable(registry)


def scrape(registry: object) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of the registry's exposition text, by name and labels."""
    text = prometheus_client.generate_latest(registry).decode()
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: dict, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


def test_enable_registers_once_and_twice_is_harmless(registry):
    assert Xclient.metrics.enable(registry) is Xclient.metrics.enable(registry)
    names = {
        family.name for family in text_string_to_metric_families(prometheus_client.generate_latest(registry).decode())
    }
    assert {"xclient_requests", "xclient_request_errors", "xclient_request_duration_seconds", "xclient_tokens"} <= names


def test_requests_errors_and_latency_are_counted_per_model_and_server(url, protocol, registry):
    with ModelClient(url, "identity") as client:
        client.infer_sample(BYTES=["你好"])
        client.infer_sample(BYTES=["世界"])
    with ModelClient(url, "failing") as failing, pytest.raises(errors.InferenceServerError):
        failing.infer_sample(np.zeros(2, dtype=np.float32))
    samples = scrape(registry)
    assert value(samples, "xclient_requests_total", model="identity", server=url, protocol=protocol) == 2
    assert value(samples, "xclient_requests_total", model="failing", server=url, protocol=protocol) == 1
    assert (
        value(samples, "xclient_request_errors_total", model="failing", server=url, error="InferenceServerError") == 1
    )
    assert (
        value(samples, "xclient_request_errors_total", model="identity", server=url, error="InferenceServerError")
        is None
    )
    assert value(samples, "xclient_request_duration_seconds_count", model="identity", server=url) == 2
    assert value(samples, "xclient_request_duration_seconds_sum", model="identity", server=url) > 0
    assert value(samples, "xclient_time_to_first_response_seconds_count", model="identity", server=url) == 2


def test_a_streams_gaps_between_responses_are_a_histogram(triton_server, registry):
    url = triton_server.url("grpc")
    with DecoupledModelClient(url, "stream") as client:
        list(client.infer_sample(n=np.array([5], dtype=np.int32)))
        responses = client.last_request_info.responses
    samples = scrape(registry)
    assert value(samples, "xclient_response_gap_seconds_count", model="stream", server=url) == responses - 1


def test_llm_tokens_are_counted_as_the_model_reports_them(url, registry):
    from Xclient.llms import ChatMetaLM

    message = ChatMetaLM(server_url=url, model=QWEN, max_tokens=8).invoke("你好")
    samples = scrape(registry)
    usage = message.usage_metadata
    assert usage is not None  # the demo LLM reports its counts (vLLM's num_input_tokens/num_output_tokens)
    for kind in ("input", "output"):
        assert value(samples, "xclient_tokens_total", model=QWEN, server=url, type=kind) == usage[f"{kind}_tokens"]
    assert value(samples, "xclient_requests_total", model=QWEN, server=url, protocol=url[:4]) == 1


def test_disable_stops_counting(url, registry):
    Xclient.metrics.disable(registry)
    with ModelClient(url, "identity") as client:
        client.infer_sample(BYTES=["你好"])
    assert value(scrape(registry), "xclient_requests_total", model="identity", server=url, protocol=url[:4]) is None
